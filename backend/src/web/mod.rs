//! Web UI and JSON API (in progress).
