//! Throttling and lockout of password sign-in, per account and per source
//! address (the `sign_in_throttle` table, so replicas sharing a database
//! share the counts), and the bound on password verifications running at
//! once.
//!
//! After `*_free_failures` failed attempts, each further attempt must wait
//! a delay that doubles from one second up to `max_delay_secs`; at
//! `*_lockout_failures` the key is locked for `lockout_secs`, and every
//! failure after that locks it again. An attempt that arrives too early is
//! refused before any password is verified, so a flood costs no hashing.
//! A name that matches no account is counted like one that does: the
//! answers never tell whether an account exists. A successful sign-in
//! clears its account's count, not its address's (else one valid account
//! would reset an attacker's address count).

use std::net::IpAddr;
use std::time::Duration;

use crate::audit::checkpoint::AuditKey;
use crate::config::SignInConfig;
use crate::db::{Millis, Result, Tx};
use crate::params;

/// The keys one attempt is counted under.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Keys {
    pub account: String,
    pub address: Option<String>,
}

impl Keys {
    /// The account key is a keyed digest of the lower-cased name (names
    /// that match no account are stored too, and may be passwords typed in
    /// the wrong field); the address key is the address, or its /64 for
    /// IPv6 (one host usually holds a whole /64).
    pub fn new(key: &AuditKey, username: &str, address: Option<&str>) -> Keys {
        Keys {
            account: format!("account:{}", key.name_digest(&username.to_lowercase())),
            address: address.map(|a| format!("address:{}", address_key(a))),
        }
    }

    fn all(&self) -> impl Iterator<Item = (&str, Kind)> {
        std::iter::once((self.account.as_str(), Kind::Account))
            .chain(self.address.as_deref().map(|a| (a, Kind::Address)))
    }
}

fn address_key(address: &str) -> String {
    match address.parse::<IpAddr>() {
        Ok(IpAddr::V6(v6)) if v6.to_ipv4_mapped().is_none() => {
            let s = v6.segments();
            format!("{:x}:{:x}:{:x}:{:x}::/64", s[0], s[1], s[2], s[3])
        }
        Ok(IpAddr::V6(v6)) => v6
            .to_ipv4_mapped()
            .map(|v4| v4.to_string())
            .unwrap_or_default(),
        Ok(IpAddr::V4(v4)) => v4.to_string(),
        Err(_) => address.chars().take(64).collect(),
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Kind {
    Account,
    Address,
}

/// Why an attempt is not even looked at.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Refusal {
    /// Too many recent failures: try again at this time.
    Wait { until: Millis },
    /// Locked until this time.
    Locked { until: Millis },
}

impl Refusal {
    pub fn until(self) -> Millis {
        match self {
            Refusal::Wait { until } | Refusal::Locked { until } => until,
        }
    }

    pub fn as_str(self) -> &'static str {
        match self {
            Refusal::Wait { .. } => "throttled",
            Refusal::Locked { .. } => "locked",
        }
    }

    /// The message the user sees: the same whether or not the account
    /// exists, and whichever key (account or address) is held back.
    pub fn message(self, now: Millis) -> String {
        let secs = ((self.until() - now).max(0) + 999) / 1000;
        let wait = if secs >= 120 {
            format!("about {} minutes", (secs + 59) / 60)
        } else {
            format!("{} second{}", secs.max(1), if secs == 1 { "" } else { "s" })
        };
        match self {
            Refusal::Wait { .. } => {
                format!("Too many failed sign-in attempts. Try again in {wait}.")
            }
            Refusal::Locked { .. } => format!(
                "Too many failed sign-in attempts: sign-in is locked for {wait}. \
                 An administrator can lift the lock."
            ),
        }
    }
}

fn limits(policy: &SignInConfig, kind: Kind) -> (u32, u32) {
    match kind {
        Kind::Account => (
            policy.account_free_failures,
            policy.account_lockout_failures,
        ),
        Kind::Address => (
            policy.address_free_failures,
            policy.address_lockout_failures,
        ),
    }
}

fn window_start(policy: &SignInConfig, now: Millis) -> Millis {
    now.saturating_sub((policy.failure_window_secs.min(i64::MAX as u64 / 1000) * 1000) as Millis)
}

/// The refusal for an attempt at `now`, if any key is held back (the
/// latest one wins, a lock before a delay).
pub fn check(
    tx: &mut Tx<'_>,
    policy: &SignInConfig,
    keys: &Keys,
    now: Millis,
) -> Result<Option<Refusal>> {
    let since = window_start(policy, now);
    let mut refusal: Option<Refusal> = None;
    for (key, _) in keys.all() {
        let row: Option<(Millis, Millis, Option<Millis>)> = tx.query_opt(
            "SELECT last_failure_at, next_attempt_at, locked_until FROM sign_in_throttle WHERE key = $1",
            params![key],
            |r| Ok((r.get(0)?, r.get(1)?, r.get(2)?)),
        )?;
        let Some((last, next, locked)) = row else {
            continue;
        };
        let this = match locked {
            Some(until) if until > now => Some(Refusal::Locked { until }),
            _ if last >= since && next > now => Some(Refusal::Wait { until: next }),
            _ => None,
        };
        refusal = match (refusal, this) {
            (None, r) | (r, None) => r,
            (Some(a @ Refusal::Locked { .. }), Some(Refusal::Wait { .. })) => Some(a),
            (Some(Refusal::Wait { .. }), Some(b @ Refusal::Locked { .. })) => Some(b),
            (Some(a), Some(b)) => Some(if b.until() > a.until() { b } else { a }),
        };
    }
    Ok(refusal)
}

/// Counts a failed attempt under every key; returns the refusal the next
/// attempt would meet, if any (a lock this failure set, a delay).
pub fn record_failure(
    tx: &mut Tx<'_>,
    policy: &SignInConfig,
    keys: &Keys,
    now: Millis,
) -> Result<Option<Refusal>> {
    let since = window_start(policy, now);
    let mut next_refusal: Option<Refusal> = None;
    for (key, kind) in keys.all() {
        // One statement, so concurrent failures each count (the row is
        // locked by the update on PostgreSQL, the database on SQLite).
        let failures: i64 = tx.query_one(
            "INSERT INTO sign_in_throttle (key, failures, last_failure_at, next_attempt_at, locked_until)
             VALUES ($1, 1, $2, $2, NULL)
             ON CONFLICT (key) DO UPDATE SET
                 failures = CASE WHEN sign_in_throttle.last_failure_at < $3 THEN 1
                                 ELSE sign_in_throttle.failures + 1 END,
                 last_failure_at = $2
             RETURNING failures",
            params![key, now, since],
            |r| r.get(0),
        )?;
        let (free, lockout) = limits(policy, kind);
        let failures = failures.max(0) as u64;
        let (next, locked) = if failures >= lockout as u64 {
            let until = now + (policy.lockout_secs.min(i64::MAX as u64 / 1000) * 1000) as Millis;
            (until, Some(until))
        } else if failures > free as u64 {
            let doublings = (failures - free as u64 - 1).min(30) as u32;
            let delay = Duration::from_secs((1u64 << doublings).min(policy.max_delay_secs));
            (now + delay.as_millis() as Millis, None)
        } else {
            (now, None)
        };
        tx.execute(
            "UPDATE sign_in_throttle SET next_attempt_at = $2, locked_until = COALESCE($3, locked_until) WHERE key = $1",
            params![key, next, locked],
        )?;
        let this = match locked {
            Some(until) => Some(Refusal::Locked { until }),
            None if next > now => Some(Refusal::Wait { until: next }),
            None => None,
        };
        next_refusal = match (next_refusal, this) {
            (None, r) | (r, None) => r,
            (Some(a @ Refusal::Locked { .. }), Some(_)) => Some(a),
            (Some(_), Some(b)) => Some(b),
        };
    }
    Ok(next_refusal)
}

/// A successful sign-in: the account's count starts over.
pub fn record_success(tx: &mut Tx<'_>, keys: &Keys) -> Result<()> {
    tx.execute(
        "DELETE FROM sign_in_throttle WHERE key = $1",
        params![&keys.account],
    )?;
    Ok(())
}

/// Lifts a lock on an account (an administrator's `user unlock`). True when
/// there was something to lift.
pub fn unlock_account(tx: &mut Tx<'_>, key: &AuditKey, username: &str) -> Result<bool> {
    let keys = Keys::new(key, username, None);
    Ok(tx.execute(
        "DELETE FROM sign_in_throttle WHERE key = $1",
        params![&keys.account],
    )? > 0)
}

/// Forgets rows whose last failure and lock are both over (housekeeping).
pub fn forget_stale(tx: &mut Tx<'_>, policy: &SignInConfig, now: Millis) -> Result<u64> {
    let since = window_start(policy, now);
    tx.execute(
        "DELETE FROM sign_in_throttle WHERE last_failure_at < $1 AND (locked_until IS NULL OR locked_until < $2)",
        params![since, now],
    )
}

/// Forgets stale rows every ten minutes, for as long as the backend runs.
pub async fn run(state: crate::state::AppState) {
    let mut every = tokio::time::interval(Duration::from_secs(600));
    loop {
        every.tick().await;
        let policy = state.config.sign_in.clone();
        let now = crate::now_millis();
        if let Err(e) = state
            .db
            .write("forget stale sign-in failures", move |tx| {
                forget_stale(tx, &policy, now)?;
                super::factor_store::forget_expired_challenges(tx, now)
            })
            .await
        {
            tracing::warn!(error = %e, "cannot forget stale sign-in failures");
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ipv6_addresses_count_per_64_and_mapped_ipv4_as_ipv4() {
        assert_eq!(address_key("2001:db8:1:2:3:4:5:6"), "2001:db8:1:2::/64");
        assert_eq!(address_key("2001:db8:1:2::9"), "2001:db8:1:2::/64");
        assert_eq!(address_key("::ffff:192.0.2.7"), "192.0.2.7");
        assert_eq!(address_key("192.0.2.7"), "192.0.2.7");
    }

    #[test]
    fn messages_name_the_wait_and_never_the_account() {
        let now = 1_000_000;
        assert_eq!(
            Refusal::Wait { until: now + 1500 }.message(now),
            "Too many failed sign-in attempts. Try again in 2 seconds."
        );
        let locked = Refusal::Locked {
            until: now + 900_000,
        }
        .message(now);
        assert!(locked.contains("locked for about 15 minutes"), "{locked}");
    }
}
