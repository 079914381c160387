//! What every request handler and connection task shares.

use std::sync::Arc;

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
}

impl AppState {
    pub fn new(db: Db, registry: Arc<Registry>, pki: Arc<Pki>, config: Arc<Config>) -> AppState {
        AppState {
            db,
            registry,
            pki,
            config,
        }
    }
}
