//! What every request handler and connection task shares.

use std::sync::Arc;

use crate::config::Config;
use crate::pki::Pki;
use crate::registry::Registry;
use crate::store::Store;

/// Cheap to clone; everything inside is shared.
#[derive(Clone)]
pub struct AppState {
    pub store: Arc<dyn Store>,
    pub registry: Arc<Registry>,
    pub pki: Arc<Pki>,
    pub config: Arc<Config>,
}
