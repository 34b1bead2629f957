//! OpenPGP verification of kernel.org sums files and tarball signatures (being written).
