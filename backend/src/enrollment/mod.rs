//! Enrollment: how a new host joins, with a token an operator created.
//!
//! - this file: the token model and the rules checked against it;
//! - [`store`]: token queries and the enrollment transaction;
//! - [`http`]: `POST /api/v1/enroll`, turning a token and a CSR into a host
//!   and a client certificate;
//! - [`cli`]: `token create | list | revoke`.
//!
//! Invariants: a token's secret is stored only as its SHA-256; a wrong secret
//! is indistinguishable from an unknown token; the daily limit, expiry and
//! revocation are checked inside the transaction that creates the host, with
//! the token's row locked, so concurrent enrollments cannot both take the
//! last use; a refusal creates no host; every attempt is audited.

use std::net::IpAddr;

use crate::db::Millis;

pub mod cli;
pub mod http;
pub mod store;
pub mod tokens_http;

#[derive(Debug, Clone, PartialEq)]
pub struct EnrollmentToken {
    /// Public id, the part before the dot in `<id>.<secret>`.
    pub id: String,
    /// SHA-256 of the secret part.
    pub secret_hash: Vec<u8>,
    /// Host group new hosts join (its id).
    pub host_group_id: Option<String>,
    /// Source networks allowed to enroll; empty means any.
    pub cidrs: Vec<ipnet::IpNet>,
    /// Enrollments allowed per rolling 24 hours; `None` means no limit.
    pub max_per_day: Option<u32>,
    pub expires_at: Option<Millis>,
    pub created_at: Millis,
    pub revoked_at: Option<Millis>,
}

/// Why an enrollment token was not accepted.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum EnrollRefusal {
    UnknownToken,
    RevokedToken,
    ExpiredToken,
    AddressNotAllowed,
    RateLimited,
}

/// Checks the token's state inside the enrollment transaction.
pub fn token_check(
    token: &EnrollmentToken,
    uses_last_24h: u32,
    now: Millis,
) -> Result<(), EnrollRefusal> {
    if token.revoked_at.is_some() {
        return Err(EnrollRefusal::RevokedToken);
    }
    if token.expires_at.is_some_and(|e| e <= now) {
        return Err(EnrollRefusal::ExpiredToken);
    }
    if token.max_per_day.is_some_and(|max| uses_last_24h >= max) {
        return Err(EnrollRefusal::RateLimited);
    }
    Ok(())
}

/// True when `ip` may enroll with a token limited to `cidrs` (empty: anyone).
pub fn address_allowed(cidrs: &[ipnet::IpNet], ip: IpAddr) -> bool {
    // An IPv4 client on a dual-stack socket shows up as ::ffff:a.b.c.d.
    let ip = match ip {
        IpAddr::V6(v6) => v6
            .to_ipv4_mapped()
            .map(IpAddr::V4)
            .unwrap_or(IpAddr::V6(v6)),
        v4 => v4,
    };
    cidrs.is_empty() || cidrs.iter().any(|net| net.contains(&ip))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn token() -> EnrollmentToken {
        EnrollmentToken {
            id: "0123456789abcdef".into(),
            secret_hash: vec![],
            host_group_id: None,
            cidrs: vec![],
            max_per_day: Some(2),
            expires_at: Some(1000),
            created_at: 0,
            revoked_at: None,
        }
    }

    #[test]
    fn token_rules() {
        let t = token();
        assert_eq!(token_check(&t, 0, 999), Ok(()));
        assert_eq!(token_check(&t, 0, 1000), Err(EnrollRefusal::ExpiredToken));
        assert_eq!(token_check(&t, 2, 10), Err(EnrollRefusal::RateLimited));
        assert_eq!(token_check(&t, 1, 10), Ok(()));
        let revoked = EnrollmentToken {
            revoked_at: Some(5),
            ..token()
        };
        assert_eq!(
            token_check(&revoked, 0, 10),
            Err(EnrollRefusal::RevokedToken)
        );
        let unlimited = EnrollmentToken {
            max_per_day: None,
            expires_at: None,
            ..token()
        };
        assert_eq!(token_check(&unlimited, 10_000, i64::MAX), Ok(()));
    }

    #[test]
    fn cidr_rules() {
        let nets: Vec<ipnet::IpNet> = vec![
            "10.1.0.0/16".parse().expect("net"),
            "fd00::/8".parse().expect("net"),
        ];
        assert!(address_allowed(&nets, "10.1.2.3".parse().expect("ip")));
        assert!(
            address_allowed(&nets, "::ffff:10.1.2.3".parse().expect("ip")),
            "v4-mapped counts as v4"
        );
        assert!(address_allowed(&nets, "fd12::1".parse().expect("ip")));
        assert!(!address_allowed(&nets, "10.2.0.1".parse().expect("ip")));
        assert!(!address_allowed(&nets, "127.0.0.1".parse().expect("ip")));
        assert!(address_allowed(&[], "192.0.2.1".parse().expect("ip")));
    }
}
