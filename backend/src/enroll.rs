//! Enrollment: `POST /api/v1/enroll` turns a token and a CSR into a host and
//! a client certificate.
//!
//! Order of checks, each refusal audited and answered with an `EnrollError`:
//! 1. the body decodes (else 400 malformed);
//! 2. the token id exists and the secret matches its hash (else 401 unknown:
//!    a wrong secret is indistinguishable from an unknown id);
//! 3. the source address is inside one of the token's CIDRs (else 403);
//! 4. the CSR is valid and its key type supported (else 400 malformed); the
//!    certificate is issued for a fresh agent id, but nothing is stored yet;
//! 5. in one store transaction: not revoked, not expired, under the daily
//!    limit (else 403/403/429), then the host and the use are recorded.
//!
//! A refusal creates no host.

use std::net::{IpAddr, SocketAddr};

use axum::Router;
use axum::body::Bytes;
use axum::extract::{ConnectInfo, DefaultBodyLimit, State};
use axum::http::{HeaderMap, StatusCode, header};
use axum::response::{IntoResponse, Response};
use axum::routing::post;
use palisade_proto::frame::encode_body;
use palisade_proto::pb::{self, EnrollErrorCode};

use crate::state::AppState;
use crate::store::{EnrollRefusal, EnrollmentToken, Millis, NewAuditEvent, NewHost};

/// Content type of enrollment bodies.
pub const CONTENT_TYPE: &str = "application/x-protobuf";

/// The enrollment route, with its own small body limit.
pub fn router(state: AppState) -> Router {
    Router::new()
        .route("/api/v1/enroll", post(enroll))
        .layer(DefaultBodyLimit::max(64 * 1024))
        .with_state(state)
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

struct Refusal {
    code: EnrollErrorCode,
    message: String,
}

impl Refusal {
    fn new(code: EnrollErrorCode, message: impl Into<String>) -> Self {
        Refusal {
            code,
            message: message.into(),
        }
    }

    fn status(&self) -> StatusCode {
        match self.code {
            EnrollErrorCode::UnknownToken => StatusCode::UNAUTHORIZED,
            EnrollErrorCode::RevokedToken
            | EnrollErrorCode::ExpiredToken
            | EnrollErrorCode::AddressNotAllowed => StatusCode::FORBIDDEN,
            EnrollErrorCode::RateLimited => StatusCode::TOO_MANY_REQUESTS,
            EnrollErrorCode::MalformedRequest => StatusCode::BAD_REQUEST,
            EnrollErrorCode::Unspecified | EnrollErrorCode::Internal => {
                StatusCode::INTERNAL_SERVER_ERROR
            }
        }
    }
}

impl From<EnrollRefusal> for Refusal {
    fn from(r: EnrollRefusal) -> Self {
        match r {
            EnrollRefusal::UnknownToken => {
                Refusal::new(EnrollErrorCode::UnknownToken, "unknown enrollment token")
            }
            EnrollRefusal::RevokedToken => Refusal::new(
                EnrollErrorCode::RevokedToken,
                "the enrollment token has been revoked",
            ),
            EnrollRefusal::ExpiredToken => Refusal::new(
                EnrollErrorCode::ExpiredToken,
                "the enrollment token has expired",
            ),
            EnrollRefusal::AddressNotAllowed => Refusal::new(
                EnrollErrorCode::AddressNotAllowed,
                "this address is not allowed to enroll with this token",
            ),
            EnrollRefusal::RateLimited => Refusal::new(
                EnrollErrorCode::RateLimited,
                "the enrollment token has reached its daily limit; try again later",
            ),
        }
    }
}

fn protobuf(status: StatusCode, body: Bytes) -> Response {
    (status, [(header::CONTENT_TYPE, CONTENT_TYPE)], body).into_response()
}

async fn enroll(
    State(state): State<AppState>,
    ConnectInfo(remote): ConnectInfo<SocketAddr>,
    headers: HeaderMap,
    body: Bytes,
) -> Response {
    let now = crate::now_millis();
    let user_agent = headers
        .get(header::USER_AGENT)
        .and_then(|v| v.to_str().ok())
        .map(str::to_owned);
    let outcome = enroll_inner(&state, remote.ip(), now, &body).await;
    let (actor, target, outcome_word, details) = match &outcome {
        Ok((token_id, resp)) => (
            format!("agent:{}", resp.agent_id),
            Some(resp.agent_id.clone()),
            "success",
            serde_json::json!({ "token_id": token_id }),
        ),
        Err((token_id, refusal)) => (
            "anonymous".to_owned(),
            None,
            "denied",
            serde_json::json!({ "token_id": token_id, "reason": refusal.message, "code": refusal.code.as_str_name() }),
        ),
    };
    let audit = NewAuditEvent {
        at: now,
        actor,
        action: "host.enroll".into(),
        target,
        source_ip: Some(remote.ip().to_string()),
        user_agent,
        outcome: outcome_word.into(),
        details,
    };
    if let Err(e) = state.store.append_audit(audit).await {
        tracing::error!(error = %e, "could not audit an enrollment attempt");
        let refusal = Refusal::new(EnrollErrorCode::Internal, "internal error");
        return protobuf(
            refusal.status(),
            encode_body(&pb::EnrollError {
                code: refusal.code as i32,
                message: refusal.message,
            }),
        );
    }
    match outcome {
        Ok((_, resp)) => {
            tracing::info!(agent_id = %resp.agent_id, remote = %remote, "host enrolled");
            protobuf(StatusCode::OK, encode_body(&resp))
        }
        Err((_, refusal)) => {
            tracing::warn!(remote = %remote, reason = %refusal.message, "enrollment refused");
            protobuf(
                refusal.status(),
                encode_body(&pb::EnrollError {
                    code: refusal.code as i32,
                    message: refusal.message,
                }),
            )
        }
    }
}

type Outcome = Result<(Option<String>, pb::EnrollResponse), (Option<String>, Refusal)>;

async fn enroll_inner(state: &AppState, ip: IpAddr, now: Millis, body: &[u8]) -> Outcome {
    let req = palisade_proto::msg::decode_enroll_request(body).map_err(|e| {
        (
            None,
            Refusal::new(
                EnrollErrorCode::MalformedRequest,
                format!("malformed enrollment request: {e}"),
            ),
        )
    })?;
    let Some((token_id, secret)) = crate::secrets::split_token(&req.token) else {
        return Err((None, EnrollRefusal::UnknownToken.into()));
    };
    let token_id = token_id.to_owned();
    let some_id = Some(token_id.clone());
    let internal = |e: crate::store::StoreError| {
        tracing::error!(error = %e, "store error during enrollment");
        Refusal::new(EnrollErrorCode::Internal, "internal error")
    };
    let token = state
        .store
        .enrollment_token(&token_id)
        .await
        .map_err(|e| (some_id.clone(), internal(e)))?;
    let Some(token) = token.filter(|t| crate::secrets::secret_matches(secret, &t.secret_hash))
    else {
        return Err((some_id, EnrollRefusal::UnknownToken.into()));
    };
    if !address_allowed(&token.cidrs, ip) {
        return Err((some_id, EnrollRefusal::AddressNotAllowed.into()));
    }
    let agent_id = uuid::Uuid::new_v4().to_string();
    let cert_der = state
        .pki
        .issue_agent_cert(&agent_id, &req.csr_der)
        .map_err(|e| {
            (
                some_id.clone(),
                Refusal::new(EnrollErrorCode::MalformedRequest, e.to_string()),
            )
        })?;
    let host = NewHost {
        id: agent_id.clone(),
        hostname: req.hostname.clone(),
        host_group: token.host_group.clone(),
        enrolled_at: now,
        enrolled_from: ip.to_string(),
        token_id: token_id.clone(),
        cert_sha256: crate::pki::sha256_hex(&cert_der),
    };
    match state
        .store
        .enroll_host(&token_id, now, token_check, host)
        .await
    {
        Err(e) => Err((some_id, internal(e))),
        Ok(Err(refusal)) => Err((some_id, refusal.into())),
        Ok(Ok(_host)) => Ok((
            some_id,
            pb::EnrollResponse {
                agent_id,
                certificate_der: cert_der,
                agent_ca_der: state.pki.agent_ca_der().to_vec(),
                command_signing_key: state.pki.signing_public_key().to_vec(),
            },
        )),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn token() -> EnrollmentToken {
        EnrollmentToken {
            id: "0123456789abcdef".into(),
            secret_hash: vec![],
            host_group: None,
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
