//! The backend's keys and certificates (in progress).

/// The backend's PKI, loaded from the data directory.
pub struct Pki {}
