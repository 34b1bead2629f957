//! Downloads with a content-addressed cache, resume and retries (being written).
