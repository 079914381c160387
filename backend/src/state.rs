//! What every request handler and connection task shares.

use std::sync::Arc;

use crate::audit::checkpoint::AuditKey;
use crate::audit::limits::AuditLimiter;
use crate::config::Config;
use crate::db::Db;
use crate::pki::Pki;
use crate::uplink::registry::Registry;

/// Cheap to clone; everything inside is shared.
#[derive(Clone)]
pub struct AppState {
    pub db: Db,
    pub registry: Arc<Registry>,
    pub pki: Arc<Pki>,
    pub config: Arc<Config>,
    /// Bounds what unauthenticated requests add to the audit log.
    pub audit_limiter: Arc<AuditLimiter>,
    /// Signs audit checkpoints; keys digests of unknown sign-in names.
    pub audit_key: Arc<AuditKey>,
    /// Password verifications running at once (`[sign_in]
    /// max_concurrent_hashes`): a flood of sign-ins waits here instead of
    /// taking every core and ~19 MiB per attempt.
    pub hashing: Arc<tokio::sync::Semaphore>,
}

impl AppState {
    pub fn new(
        db: Db,
        registry: Arc<Registry>,
        pki: Arc<Pki>,
        config: Arc<Config>,
        audit_key: Arc<AuditKey>,
    ) -> AppState {
        let hashing = Arc::new(tokio::sync::Semaphore::new(
            config.sign_in.max_concurrent_hashes.max(1),
        ));
        AppState {
            hashing,
            db,
            registry,
            pki,
            config,
            audit_limiter: Arc::new(AuditLimiter::new()),
            audit_key,
        }
    }
}
