//! `POST /api/v1/enroll`: a token and a CSR become a host and a client
//! certificate.
//!
//! Order of checks, each refusal audited and answered with an `EnrollError`:
//! 1. the body decodes (else 400 malformed);
//! 2. the token id exists and the secret matches its hash (else 401 unknown:
//!    a wrong secret is indistinguishable from an unknown id);
//! 3. the source address is inside one of the token's CIDRs (else 403);
//! 4. the CSR is valid and its key type supported (else 400 malformed); the
//!    certificate is issued for a fresh agent id, but nothing is stored yet;
//! 5. in one transaction: not revoked, not expired, under the daily limit
//!    (else 403/403/429), then the host, the use and the audit event.
//!
//! A refusal creates no host; it is audited in a transaction of its own.

use std::net::{IpAddr, SocketAddr};

use axum::body::Bytes;
use axum::extract::{ConnectInfo, DefaultBodyLimit, State};
use axum::http::{HeaderMap, StatusCode, header};
use axum::response::{IntoResponse, Response};
use palisade_proto::frame::encode_body;
use palisade_proto::pb::{self, EnrollErrorCode};

use super::{EnrollRefusal, address_allowed, store};
use crate::audit::{Action, Actor, NewAuditEvent, Outcome};
use crate::db::{DbError, Millis};
use crate::hosts::NewHost;
use crate::state::AppState;
use crate::web::Routes;

/// Content type of enrollment bodies.
pub const CONTENT_TYPE: &str = "application/x-protobuf";
/// Largest enrollment request body.
const MAX_BODY: usize = 64 * 1024;

/// The enrollment route. It is public: the token in the body is the
/// credential, checked here.
pub fn routes() -> Routes {
    Routes::new().with(
        "/api/v1/enroll",
        axum::http::Method::POST,
        crate::web::Access::Public,
        axum::routing::post(enroll).layer(DefaultBodyLimit::max(MAX_BODY)),
    )
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

/// Enroll a new host (called by `palisade-agent enroll`).
#[utoipa::path(post, path = "/api/v1/enroll", tag = "agents",
    request_body(description = "a `palisade.v1.EnrollRequest` (protobuf): token, CSR, hostname", content_type = "application/x-protobuf"),
    responses((status = 200, description = "a `palisade.v1.EnrollResponse`: agent id, certificate, CA, command-signing key", content_type = "application/x-protobuf"),
              (status = 400, description = "a `palisade.v1.EnrollError`: malformed request", content_type = "application/x-protobuf"),
              (status = 401, description = "unknown token", content_type = "application/x-protobuf"),
              (status = 403, description = "token revoked or expired, or address not allowed", content_type = "application/x-protobuf"),
              (status = 429, description = "the token's daily limit is reached", content_type = "application/x-protobuf")))]
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
        .map(|ua| crate::identity::auth::truncate(ua, 512));
    let outcome = enroll_inner(&state, remote.ip(), now, &body, user_agent.clone()).await;
    match outcome {
        Ok(resp) => {
            tracing::info!(agent_id = %resp.agent_id, remote = %remote, "host enrolled");
            protobuf(StatusCode::OK, encode_body(&resp))
        }
        Err((token_id, refusal)) => {
            tracing::warn!(remote = %remote, reason = %refusal.message, "enrollment refused");
            let event =
                NewAuditEvent::new(now, Actor::Anonymous, Action::HostEnroll, Outcome::Denied)
                    .from_client(Some(remote.ip().to_string()), user_agent)
                    .details(serde_json::json!({
                        "token_id": token_id.map(|t| crate::identity::auth::truncate(&t, 64)),
                        "reason": refusal.message,
                        "code": refusal.code.as_str_name(),
                    }));
            let ip = remote.ip().to_string();
            let refusal = match crate::audit::limits::append_unauthenticated(
                &state,
                Some(&ip),
                event,
            )
            .await
            {
                Ok(()) => refusal,
                Err(e) => {
                    tracing::error!(error = %e, "could not audit an enrollment attempt");
                    Refusal::new(EnrollErrorCode::Internal, "internal error")
                }
            };
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

type EnrollOutcome = Result<pb::EnrollResponse, (Option<String>, Refusal)>;

async fn enroll_inner(
    state: &AppState,
    ip: IpAddr,
    now: Millis,
    body: &[u8],
    user_agent: Option<String>,
) -> EnrollOutcome {
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
    let internal = |e: DbError| {
        tracing::error!(error = %e, "database error during enrollment");
        Refusal::new(EnrollErrorCode::Internal, "internal error")
    };
    let lookup = token_id.clone();
    let token = state
        .db
        .read("load enrollment token", move |tx| store::token(tx, &lookup))
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
        host_group_id: token.host_group_id.clone(),
        enrolled_at: now,
        enrolled_from: ip.to_string(),
        token_id: token_id.clone(),
        cert_sha256: crate::pki::sha256_hex(&cert_der),
    };
    let event = NewAuditEvent::new(
        now,
        Actor::Agent(agent_id.clone()),
        Action::HostEnroll,
        Outcome::Success,
    )
    .target(agent_id.clone())
    .from_client(Some(ip.to_string()), user_agent)
    .details(serde_json::json!({ "token_id": token_id }));
    let enrolled = state
        .db
        .write("enroll host", move |tx| {
            let result = store::enroll_host(tx, now, &host)?;
            if result.is_ok() {
                crate::audit::store::append(tx, &event)?;
            }
            Ok(result)
        })
        .await;
    match enrolled {
        Err(e) => Err((some_id, internal(e))),
        Ok(Err(refusal)) => Err((some_id, refusal.into())),
        Ok(Ok(_host)) => Ok(pb::EnrollResponse {
            agent_id,
            certificate_der: cert_der,
            agent_ca_der: state.pki.agent_ca_der().to_vec(),
            command_signing_key: state.pki.signing_public_key().to_vec(),
        }),
    }
}

/// The handler's OpenAPI path, for [`crate::web::openapi`].
pub(crate) fn openapi_paths() -> utoipa::openapi::OpenApi {
    #[derive(utoipa::OpenApi)]
    #[openapi(paths(enroll))]
    struct Paths;
    <Paths as utoipa::OpenApi>::openapi()
}
