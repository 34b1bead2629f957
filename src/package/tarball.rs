//! Reproducible GNU tar writer shared by deb and ipk (stub).
