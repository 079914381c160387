//! One tracing set-up for every agent process: human-readable lines on
//! stderr (journald adds the timestamps under systemd), `RUST_LOG` filters,
//! `PALISADE_LOG_FORMAT=json` for structured output.

use tracing_subscriber::EnvFilter;

/// Installs the global subscriber. `process` names this process in every line.
pub fn init(process: &'static str) {
    let filter = EnvFilter::try_from_default_env().unwrap_or_else(|_| EnvFilter::new("info"));
    let json = std::env::var("PALISADE_LOG_FORMAT").is_ok_and(|v| v == "json");
    use std::io::IsTerminal;
    let builder = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(std::io::stderr)
        .with_ansi(std::io::stderr().is_terminal());
    // A second init (tests) is harmless: try_init fails and the first one stays.
    let _ = if json {
        builder.json().try_init()
    } else {
        builder.try_init()
    };
    tracing::debug!(process, "logging initialised");
}
