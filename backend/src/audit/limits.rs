//! Keeping unauthenticated requests (sign-in, enrollment, rejected API
//! tokens) from growing the audit log without bound: each source address
//! may add at most [`PER_ADDRESS`] events a minute and everyone together
//! [`TOTAL`]; what is over is counted, and one `audit.suppressed` event a
//! minute says how many were left out and from where. Fields of such
//! events are cut short by their writers.

use std::collections::HashMap;
use std::sync::Mutex;

use super::{Action, Actor, NewAuditEvent, Outcome};
use crate::db::{DbError, Millis};
use crate::state::AppState;

/// Events one address may add per minute.
pub const PER_ADDRESS: u32 = 20;
/// Events all unauthenticated requests may add per minute.
pub const TOTAL: u32 = 600;
const WINDOW_MS: Millis = 60_000;
/// Addresses tracked at most (beyond that the window restarts early).
const MAX_ADDRESSES: usize = 10_000;

#[derive(Debug, Default)]
struct Window {
    started: Millis,
    total: u32,
    per_address: HashMap<String, u32>,
    suppressed: u32,
    suppressed_from: HashMap<String, u32>,
}

/// The limiter; one per backend process.
#[derive(Debug, Default)]
pub struct AuditLimiter {
    window: Mutex<Window>,
}

/// What to do with one event.
#[derive(Debug, PartialEq, Eq)]
pub enum Verdict {
    Append,
    /// Over the limit: not appended. When a window ended with suppressed
    /// events, the summary to append (count, top addresses).
    Suppress,
}

impl AuditLimiter {
    pub fn new() -> AuditLimiter {
        AuditLimiter::default()
    }

    /// Decides about one event from `address` at `now`; returns the verdict
    /// and, when a window with suppressed events just closed, its summary.
    pub fn admit(
        &self,
        address: Option<&str>,
        now: Millis,
    ) -> (Verdict, Option<serde_json::Value>) {
        let mut w = self.window.lock().unwrap_or_else(|p| p.into_inner());
        let mut summary = None;
        if now.saturating_sub(w.started) >= WINDOW_MS || w.per_address.len() >= MAX_ADDRESSES {
            if w.suppressed > 0 {
                let mut top: Vec<(&String, &u32)> = w.suppressed_from.iter().collect();
                top.sort_by(|a, b| b.1.cmp(a.1).then(a.0.cmp(b.0)));
                let top: Vec<serde_json::Value> = top
                    .into_iter()
                    .take(10)
                    .map(|(ip, n)| serde_json::json!({ "source_ip": ip, "suppressed": n }))
                    .collect();
                summary = Some(serde_json::json!({
                    "suppressed": w.suppressed,
                    "window_started_at": w.started,
                    "top_sources": top,
                }));
            }
            *w = Window {
                started: now,
                ..Window::default()
            };
        }
        let address = address.unwrap_or("unknown").to_owned();
        let from_address = w.per_address.get(&address).copied().unwrap_or(0);
        if w.total >= TOTAL || from_address >= PER_ADDRESS {
            w.suppressed += 1;
            *w.suppressed_from.entry(address).or_default() += 1;
            return (Verdict::Suppress, summary);
        }
        w.total += 1;
        w.per_address.insert(address, from_address + 1);
        (Verdict::Append, summary)
    }
}

/// Appends an event caused by an unauthenticated request, within the limits.
pub async fn append_unauthenticated(
    state: &AppState,
    address: Option<&str>,
    event: NewAuditEvent,
) -> Result<(), DbError> {
    let (verdict, summary) = state.audit_limiter.admit(address, event.at);
    let summary = summary.map(|details| {
        NewAuditEvent::new(
            event.at,
            Actor::System,
            Action::AuditSuppressed,
            Outcome::Denied,
        )
        .details(details)
    });
    let event = (verdict == Verdict::Append).then_some(event);
    if summary.is_none() && event.is_none() {
        return Ok(());
    }
    state
        .db
        .write("audit an unauthenticated request", move |tx| {
            for e in summary.iter().chain(event.iter()) {
                super::store::append(tx, e)?;
            }
            Ok(())
        })
        .await
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn one_address_is_capped_and_the_excess_summarized() {
        let limiter = AuditLimiter::new();
        for _ in 0..PER_ADDRESS {
            assert_eq!(limiter.admit(Some("192.0.2.1"), 1_000).0, Verdict::Append);
        }
        for _ in 0..5 {
            assert_eq!(limiter.admit(Some("192.0.2.1"), 2_000).0, Verdict::Suppress);
        }
        assert_eq!(
            limiter.admit(Some("192.0.2.2"), 2_000).0,
            Verdict::Append,
            "others are not held back"
        );
        let (verdict, summary) = limiter.admit(Some("192.0.2.1"), 61_000);
        assert_eq!(verdict, Verdict::Append, "a new window");
        let summary = summary.expect("a summary of the last window");
        assert_eq!(summary["suppressed"], 5);
        assert_eq!(summary["top_sources"][0]["source_ip"], "192.0.2.1");
    }

    #[test]
    fn everyone_together_is_capped() {
        let limiter = AuditLimiter::new();
        let mut appended = 0;
        for n in 0..(TOTAL + 100) {
            if limiter
                .admit(Some(&format!("10.0.{}.{}", n / 250, n % 250)), 5)
                .0
                == Verdict::Append
            {
                appended += 1;
            }
        }
        assert_eq!(appended, TOTAL);
    }
}
