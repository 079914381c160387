//! The backend's TOML configuration file.

#![no_main]

use libfuzzer_sys::fuzz_target;
use palisade_backend::config::Config;

fuzz_target!(|text: &str| {
    if let Ok(config) = Config::parse(text) {
        let _ = config.validate();
    }
});
