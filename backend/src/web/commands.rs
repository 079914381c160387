//! The command API:
//!
//! - `POST /api/v1/hosts/{id}/commands`: issue a command (body: see
//!   [`crate::commands::parse_request`]); admins and operators only (an API
//!   token counts as an admin until tokens get scopes). Answers 202 with the
//!   command, `status` `pending` (the agent is offline; it goes out when the
//!   agent connects) or `delivered` (handed to the agent's connection).
//! - `GET /api/v1/hosts/{id}/commands?limit=N`: a host's commands, newest first.
//! - `GET /api/v1/commands/{id}`: one command and its result.
//!
//! Every command issued is in the audit log (`command.create`), and so is a
//! refused attempt by a role that may not issue commands.

use axum::body::Bytes;
use axum::extract::{Path, Query, State};
use axum::http::StatusCode;
use axum::routing::get;
use axum::{Extension, Json, Router};
use serde::{Deserialize, Serialize};

use super::RequestId;
use super::auth::{ApiCaller, ClientInfo};
use super::error::WebError;
use super::format;
use crate::commands::{self, Requester};
use crate::state::AppState;
use crate::store::{CommandRow, NewAuditEvent, Role};

/// Longest host or command id we look up.
const MAX_ID: usize = 128;
/// Commands listed when the request names no limit, and the most it may name.
const DEFAULT_LIST_LIMIT: u32 = 100;
const MAX_LIST_LIMIT: u32 = 500;

pub(super) fn routes() -> Router<AppState> {
    Router::new()
        .route(
            "/api/v1/hosts/{id}/commands",
            get(list_host_commands).post(create_command),
        )
        .route("/api/v1/commands/{id}", get(get_command))
}

/// A command as the API shows it. Times are RFC 3339; `started_at` and
/// `finished_at` come from the agent's clock, the others from the backend's.
#[derive(Debug, Serialize)]
pub(super) struct CommandJson {
    id: String,
    host_id: String,
    #[serde(rename = "type")]
    kind: String,
    /// The request: `{"type": ...}` and, for `restart_service`, `"unit"`.
    payload: serde_json::Value,
    requested_by: String,
    source_ip: Option<String>,
    status: &'static str,
    issued_at: Option<String>,
    expires_at: Option<String>,
    delivered_at: Option<String>,
    exit_code: Option<i32>,
    output: Option<String>,
    error: Option<String>,
    started_at: Option<String>,
    finished_at: Option<String>,
    result_received_at: Option<String>,
}

impl From<CommandRow> for CommandJson {
    fn from(c: CommandRow) -> Self {
        CommandJson {
            status: c.status.as_str(),
            issued_at: format::rfc3339(c.issued_at),
            expires_at: format::rfc3339(c.expires_at),
            delivered_at: c.delivered_at.and_then(format::rfc3339),
            started_at: c.started_at.and_then(format::rfc3339),
            finished_at: c.finished_at.and_then(format::rfc3339),
            result_received_at: c.result_received_at.and_then(format::rfc3339),
            id: c.id,
            host_id: c.host_id,
            kind: c.kind,
            payload: c.payload,
            requested_by: c.requested_by,
            source_ip: c.source_ip,
            exit_code: c.exit_code,
            output: c.output,
            error: c.error,
        }
    }
}

#[derive(Debug, Serialize)]
pub(super) struct CommandList {
    commands: Vec<CommandJson>,
}

#[derive(Debug, Deserialize)]
pub(super) struct ListQuery {
    limit: Option<u32>,
}

const UNKNOWN_HOST: WebError = WebError::NotFound("no such host");

fn may_issue_commands(role: Role) -> bool {
    matches!(role, Role::Admin | Role::Operator)
}

async fn create_command(
    caller: ApiCaller,
    client: ClientInfo,
    Extension(request_id): Extension<RequestId>,
    State(state): State<AppState>,
    Path(host_id): Path<String>,
    body: Bytes,
) -> Result<(StatusCode, Json<CommandJson>), WebError> {
    let now = crate::now_millis();
    if !may_issue_commands(caller.role) {
        tracing::info!(
            role = caller.role.as_str(),
            "refused a command: role may not issue commands"
        );
        state
            .store
            .append_audit(NewAuditEvent {
                at: now,
                actor: caller.actor.clone(),
                action: "command.create".into(),
                target: (host_id.len() <= MAX_ID).then(|| host_id.clone()),
                source_ip: client.ip.clone(),
                user_agent: client.user_agent.clone(),
                outcome: "denied".into(),
                details: serde_json::json!({
                    "reason": "role",
                    "role": caller.role.as_str(),
                    "request_id": request_id.to_string(),
                }),
            })
            .await?;
        return Err(WebError::Forbidden(
            "only admins and operators may issue commands",
        ));
    }
    if host_id.len() > MAX_ID {
        return Err(UNKNOWN_HOST);
    }
    let request = commands::parse_request(&body).map_err(WebError::BadRequest)?;
    let host = state.store.host(&host_id).await?.ok_or(UNKNOWN_HOST)?;
    if host.revoked_at.is_some() {
        return Err(WebError::Conflict(
            "the host is revoked: its agent can no longer connect",
        ));
    }
    let requester = Requester {
        actor: caller.actor,
        source_ip: client.ip,
        user_agent: client.user_agent,
        request_id: request_id.to_string(),
    };
    let row = commands::issue(&state, &host.id, &request, requester, now).await?;
    Ok((StatusCode::ACCEPTED, Json(row.into())))
}

async fn list_host_commands(
    _caller: ApiCaller,
    State(state): State<AppState>,
    Path(host_id): Path<String>,
    Query(query): Query<ListQuery>,
) -> Result<Json<CommandList>, WebError> {
    if host_id.len() > MAX_ID {
        return Err(UNKNOWN_HOST);
    }
    state.store.host(&host_id).await?.ok_or(UNKNOWN_HOST)?;
    let limit = query
        .limit
        .unwrap_or(DEFAULT_LIST_LIMIT)
        .clamp(1, MAX_LIST_LIMIT);
    let commands = state.store.host_commands(&host_id, limit).await?;
    Ok(Json(CommandList {
        commands: commands.into_iter().map(CommandJson::from).collect(),
    }))
}

async fn get_command(
    _caller: ApiCaller,
    State(state): State<AppState>,
    Path(id): Path<String>,
) -> Result<Json<CommandJson>, WebError> {
    const UNKNOWN: WebError = WebError::NotFound("no such command");
    if id.len() > MAX_ID {
        return Err(UNKNOWN);
    }
    let command = state.store.command(&id).await?.ok_or(UNKNOWN)?;
    Ok(Json(command.into()))
}

#[cfg(test)]
mod tests {
    use std::net::SocketAddr;
    use std::sync::{Arc, OnceLock};

    use axum::body::Body;
    use axum::extract::connect_info::MockConnectInfo;
    use axum::http::{Request, header};
    use palisade_proto::msg::{CommandAction, command_signing_message, decode_command};
    use ring::signature::{ED25519, UnparsedPublicKey};
    use serde_json::Value;
    use tower::ServiceExt;

    use super::*;
    use crate::config::Config;
    use crate::pki::Pki;
    use crate::registry::{Registry, Transport};
    use crate::secrets;
    use crate::store::sqlite::SqliteStore;
    use crate::store::{
        ApiToken, EnrollRefusal, EnrollmentToken, Millis, NewHost, NewSession, NewUser,
    };
    use crate::web::auth::SESSION_COOKIE;

    const HOST: &str = "palisade.test";
    const ORIGIN: &str = "https://palisade.test";
    const AGENT: &str = "6f1c2a52-4f7e-4d3a-9a55-0c1d2e3f4a5b";
    const T0: Millis = 1_700_000_000_000;

    fn pki() -> Arc<Pki> {
        static PKI: OnceLock<Arc<Pki>> = OnceLock::new();
        PKI.get_or_init(|| {
            let dir = tempfile::tempdir().expect("temp dir");
            Arc::new(Pki::load_or_create(dir.path(), &[], None).expect("test pki"))
        })
        .clone()
    }

    fn pass(_: &EnrollmentToken, _: u32, _: Millis) -> Result<(), EnrollRefusal> {
        Ok(())
    }

    /// A backend with one enrolled host, an API token and a session per role.
    struct Fixture {
        state: AppState,
        app: Router,
        token: String,
        token_id: String,
    }

    impl Fixture {
        async fn new() -> Fixture {
            let state = AppState {
                store: Arc::new(SqliteStore::open_in_memory().expect("store")),
                registry: Arc::new(Registry::new()),
                pki: pki(),
                config: Arc::new(Config::default()),
            };
            state
                .store
                .create_enrollment_token(EnrollmentToken {
                    id: "enroll1".into(),
                    secret_hash: secrets::hash_secret("s"),
                    host_group: None,
                    cidrs: Vec::new(),
                    max_per_day: None,
                    expires_at: None,
                    created_at: T0,
                    revoked_at: None,
                })
                .await
                .expect("token");
            let host = NewHost {
                id: AGENT.into(),
                hostname: "web-1".into(),
                host_group: None,
                enrolled_at: T0,
                enrolled_from: "192.0.2.10".into(),
                token_id: "enroll1".into(),
                cert_sha256: "ab".repeat(32),
            };
            state
                .store
                .enroll_host("enroll1", T0, pass, host)
                .await
                .expect("store")
                .expect("enrolled");
            let token = secrets::TokenParts::generate().expect("token");
            state
                .store
                .create_api_token(ApiToken {
                    id: token.id.clone(),
                    name: "ci".into(),
                    secret_hash: secrets::hash_secret(&token.secret),
                    created_at: T0,
                    revoked_at: None,
                })
                .await
                .expect("api token");
            let app = crate::web::router(state.clone())
                .layer(MockConnectInfo(SocketAddr::from(([192, 0, 2, 7], 40_000))));
            Fixture {
                state,
                app,
                token_id: token.id.clone(),
                token: token.to_string(),
            }
        }

        /// A signed-in user with `role`; returns the cookie value.
        async fn session(&self, name: &str, role: Role) -> String {
            let user = self
                .state
                .store
                .create_user(NewUser {
                    username: name.into(),
                    password_hash: "$argon2id$v=19$m=8,t=1,p=1$c2FsdHNhbHQ$aGFzaA".into(),
                    role,
                    created_at: T0,
                })
                .await
                .expect("user");
            let cookie = secrets::random_urlsafe(32).expect("random");
            let now = crate::now_millis();
            self.state
                .store
                .create_session(NewSession {
                    id_hash: secrets::hash_secret(&cookie),
                    user_id: user.id,
                    created_at: now,
                    expires_at: now + 3_600_000,
                    source_ip: "192.0.2.7".into(),
                    user_agent: "test".into(),
                })
                .await
                .expect("session");
            cookie
        }

        async fn send(&self, request: Request<Body>) -> (StatusCode, Value) {
            let response = self
                .app
                .clone()
                .oneshot(request)
                .await
                .expect("router is infallible");
            let status = response.status();
            let body = axum::body::to_bytes(response.into_body(), 1 << 20)
                .await
                .expect("body");
            let json = serde_json::from_slice(&body).unwrap_or(Value::Null);
            (status, json)
        }

        async fn post_with_token(&self, host: &str, body: &str) -> (StatusCode, Value) {
            self.send(
                Request::post(format!("/api/v1/hosts/{host}/commands"))
                    .header(header::HOST, HOST)
                    .header(header::AUTHORIZATION, format!("Bearer {}", self.token))
                    .header(header::CONTENT_TYPE, "application/json")
                    .header(header::USER_AGENT, "ci-bot/2")
                    .body(Body::from(body.to_owned()))
                    .expect("request"),
            )
            .await
        }

        async fn post_with_session(&self, cookie: &str, body: &str) -> (StatusCode, Value) {
            self.send(
                Request::post(format!("/api/v1/hosts/{AGENT}/commands"))
                    .header(header::HOST, HOST)
                    .header(header::ORIGIN, ORIGIN)
                    .header(header::COOKIE, format!("{SESSION_COOKIE}={cookie}"))
                    .header(header::CONTENT_TYPE, "application/json")
                    .body(Body::from(body.to_owned()))
                    .expect("request"),
            )
            .await
        }

        async fn get_with_token(&self, uri: &str) -> (StatusCode, Value) {
            self.send(
                Request::get(uri)
                    .header(header::HOST, HOST)
                    .header(header::AUTHORIZATION, format!("Bearer {}", self.token))
                    .body(Body::empty())
                    .expect("request"),
            )
            .await
        }
    }

    #[tokio::test]
    async fn issuing_needs_a_caller_whose_role_may() {
        let f = Fixture::new().await;
        let (status, body) = f
            .send(
                Request::post(format!("/api/v1/hosts/{AGENT}/commands"))
                    .header(header::HOST, HOST)
                    .body(Body::from(r#"{"type":"ping"}"#))
                    .expect("request"),
            )
            .await;
        assert_eq!(status, StatusCode::UNAUTHORIZED);
        assert!(body["request_id"].is_string(), "{body}");

        for (name, role) in [("vera", Role::Viewer), ("audrey", Role::Auditor)] {
            let cookie = f.session(name, role).await;
            let (status, body) = f.post_with_session(&cookie, r#"{"type":"ping"}"#).await;
            assert_eq!(status, StatusCode::FORBIDDEN, "{name}: {body}");
        }
        let denied = f.state.store.audit_events(10).await.expect("audit");
        assert_eq!(denied.len(), 2);
        assert!(
            denied
                .iter()
                .all(|e| e.action == "command.create" && e.outcome == "denied")
        );
        assert_eq!(denied[0].actor, "user:audrey");

        let cookie = f.session("otto", Role::Operator).await;
        let (status, body) = f.post_with_session(&cookie, r#"{"type":"ping"}"#).await;
        assert_eq!(status, StatusCode::ACCEPTED, "{body}");
        assert_eq!(body["requested_by"], "user:otto");
        assert!(
            f.state
                .store
                .host_commands(AGENT, 10)
                .await
                .expect("list")
                .len()
                == 1
        );
    }

    #[tokio::test]
    async fn bad_bodies_and_unknown_hosts_are_refused_before_anything_is_stored() {
        let f = Fixture::new().await;
        let (status, body) = f.post_with_token(AGENT, r#"{"type":"reboot"}"#).await;
        assert_eq!(status, StatusCode::BAD_REQUEST);
        assert!(
            body["error"]
                .as_str()
                .is_some_and(|e| e.contains("unknown command type")),
            "{body}"
        );
        assert!(body["request_id"].is_string());
        let (status, body) = f
            .post_with_token(
                AGENT,
                r#"{"type":"restart_service","unit":"a;reboot.service"}"#,
            )
            .await;
        assert_eq!(status, StatusCode::BAD_REQUEST, "{body}");
        let (status, _) = f
            .post_with_token("no-such-host", r#"{"type":"ping"}"#)
            .await;
        assert_eq!(status, StatusCode::NOT_FOUND);
        let (status, _) = f
            .get_with_token("/api/v1/hosts/no-such-host/commands")
            .await;
        assert_eq!(status, StatusCode::NOT_FOUND);
        let (status, _) = f.get_with_token("/api/v1/commands/nope").await;
        assert_eq!(status, StatusCode::NOT_FOUND);
        assert!(
            f.state
                .store
                .host_commands(AGENT, 10)
                .await
                .expect("list")
                .is_empty()
        );
        assert!(
            f.state
                .store
                .audit_events(10)
                .await
                .expect("audit")
                .is_empty()
        );
    }

    #[tokio::test]
    async fn commands_are_signed_for_the_host_stored_audited_and_delivered() {
        let f = Fixture::new().await;
        // Offline: stored as pending.
        let (status, pending) = f
            .post_with_token(
                AGENT,
                r#"{"type":"restart_service","unit":"nginx.service"}"#,
            )
            .await;
        assert_eq!(status, StatusCode::ACCEPTED, "{pending}");
        assert_eq!(pending["status"], "pending");
        assert_eq!(pending["type"], "restart_service");
        assert_eq!(pending["payload"]["unit"], "nginx.service");
        assert_eq!(pending["requested_by"], format!("api-token:{}", f.token_id));
        assert_eq!(pending["source_ip"], "192.0.2.7");
        let id = pending["id"].as_str().expect("id").to_owned();

        let audit = f.state.store.audit_events(10).await.expect("audit");
        assert_eq!(audit.len(), 1);
        assert_eq!(audit[0].action, "command.create");
        assert_eq!(audit[0].outcome, "success");
        assert_eq!(audit[0].actor, format!("api-token:{}", f.token_id));
        assert_eq!(audit[0].target.as_deref(), Some(AGENT));
        assert_eq!(audit[0].user_agent.as_deref(), Some("ci-bot/2"));
        assert_eq!(audit[0].details["command_id"], id.as_str());

        // The agent connects: the pending command goes out, byte for byte
        // as stored, signed by the backend's key for this agent.
        let addr: SocketAddr = "127.0.0.1:1".parse().expect("addr");
        let (_conn, mut queue) = f.state.registry.connected_with_commands(
            AGENT,
            Transport::Quic,
            addr,
            crate::now_millis(),
        );
        crate::commands::deliver_pending(&f.state, AGENT, crate::now_millis()).await;
        let signed = queue.try_recv().expect("the pending command was delivered");
        let key = UnparsedPublicKey::new(&ED25519, f.state.pki.signing_public_key());
        key.verify(&command_signing_message(&signed.command), &signed.signature)
            .expect("signed by the backend's key");
        let command = decode_command(&signed.command).expect("a valid command");
        assert_eq!(command.agent_id, AGENT);
        assert_eq!(command.command_id, id);
        assert_eq!(
            command.action,
            CommandAction::RestartService {
                unit: "nginx.service".into()
            }
        );
        assert_eq!(
            command.expires_at_unix_ms - command.issued_at_unix_ms,
            crate::commands::DEFAULT_EXPIRES_IN_SECS as i64 * 1000
        );
        let stored = f
            .state
            .store
            .command(&id)
            .await
            .expect("load")
            .expect("row");
        assert_eq!(stored.command_bytes, signed.command);
        assert_eq!(stored.signature, signed.signature);

        // Online: a new command is delivered at once.
        let (status, delivered) = f
            .post_with_token(AGENT, r#"{"type":"ping","expires_in_secs":60}"#)
            .await;
        assert_eq!(status, StatusCode::ACCEPTED);
        assert_eq!(delivered["status"], "delivered");
        assert!(delivered["delivered_at"].is_string());
        assert!(queue.try_recv().is_ok());

        // Listed newest first; each readable on its own.
        let (status, list) = f
            .get_with_token(&format!("/api/v1/hosts/{AGENT}/commands"))
            .await;
        assert_eq!(status, StatusCode::OK);
        let listed = list["commands"].as_array().expect("list");
        let mut ids: Vec<_> = listed
            .iter()
            .map(|c| c["id"].as_str().unwrap_or_default())
            .collect();
        let stored = f.state.store.host_commands(AGENT, 10).await.expect("list");
        assert_eq!(
            ids,
            stored.iter().map(|c| c.id.as_str()).collect::<Vec<_>>(),
            "the store's order"
        );
        assert!(stored[0].issued_at >= stored[1].issued_at, "newest first");
        ids.sort_unstable();
        let mut expected = vec![delivered["id"].as_str().unwrap_or_default(), id.as_str()];
        expected.sort_unstable();
        assert_eq!(ids, expected);
        let (status, one) = f.get_with_token(&format!("/api/v1/commands/{id}")).await;
        assert_eq!(status, StatusCode::OK);
        assert_eq!(one["status"], "delivered");
        assert_eq!(one["exit_code"], Value::Null);

        // The host page lists them, escaped like everything else.
        let cookie = f.session("vera", Role::Viewer).await;
        let response = f
            .app
            .clone()
            .oneshot(
                Request::get(format!("/hosts/{AGENT}"))
                    .header(header::HOST, HOST)
                    .header(header::COOKIE, format!("{SESSION_COOKIE}={cookie}"))
                    .body(Body::empty())
                    .expect("request"),
            )
            .await
            .expect("router is infallible");
        assert_eq!(response.status(), StatusCode::OK);
        let page = axum::body::to_bytes(response.into_body(), 1 << 20)
            .await
            .expect("body");
        let page = String::from_utf8_lossy(&page);
        assert!(page.contains("restart_service nginx.service"), "{page}");
        assert!(page.contains(">delivered<"), "{page}");
        assert!(page.contains(&format!("api-token:{}", f.token_id)));
    }
}
