//! The command API:
//!
//! - `POST /api/v1/hosts/{id}/commands`: issue a command (body: see
//!   [`super::parse_request`]). Each type needs its permission for the
//!   host's group ([`permission_for`]): `ping` `commands:create`,
//!   `restart_service` `services:restart`, `refresh_inventory`
//!   `packages:refresh`, `reboot` `hosts:reboot`. The route is declared
//!   with all of them, and `services:restart` and `hosts:reboot` are
//!   dangerous, so a browser session must have re-authenticated recently.
//!   Answers 202 with the command, `status` `pending` (the agent is
//!   offline; it goes out when the agent connects) or `delivered` (handed
//!   to the agent's connection).
//! - `GET /api/v1/hosts/{id}/commands?limit=N`: a host's commands, newest first.
//! - `GET /api/v1/commands/{id}`: one command and its result.
//!
//! Every command issued is in the audit log (`command.create`), and so is a
//! refused attempt by a role that may not issue commands.

use axum::body::Bytes;
use axum::extract::{Path, Query, State};
use axum::http::StatusCode;
use axum::{Extension, Json};
use serde::{Deserialize, Serialize};
use utoipa::ToSchema;

use super::{CommandKind, CommandRow, Requester, store};
use crate::access::{Caller, Permission};
use crate::audit::{Action, Outcome};
use crate::state::AppState;
use crate::web::{Access, RequestId, Routes, WebError, format};

/// Longest command id we look up.
const MAX_ID: usize = 128;
/// Commands listed when the request names no limit, and the most it may name.
const DEFAULT_LIST_LIMIT: u32 = 100;
const MAX_LIST_LIMIT: u32 = 500;

/// What may issue a command of some kind (the route needs one of them; the
/// handler checks the one the command's type needs, for the host's group).
const ISSUERS: &[Permission] = &[
    Permission::CommandsCreate,
    Permission::ServicesRestart,
    Permission::PackagesRefresh,
    Permission::HostsReboot,
];

/// The permission a command of `kind` needs.
pub fn permission_for(kind: CommandKind) -> Permission {
    match kind {
        CommandKind::Ping => Permission::CommandsCreate,
        CommandKind::RestartService => Permission::ServicesRestart,
        CommandKind::RefreshInventory => Permission::PackagesRefresh,
        CommandKind::UpgradePackages => Permission::PatchRunsExecute,
        CommandKind::Cancel => Permission::PatchRunsCancel,
        CommandKind::Reboot => Permission::HostsReboot,
    }
}

pub fn routes() -> Routes {
    Routes::new()
        .get(
            "/api/v1/hosts/{id}/commands",
            Access::Permission(Permission::CommandsRead),
            list_host_commands,
        )
        .post(
            "/api/v1/hosts/{id}/commands",
            Access::AnyOf(ISSUERS),
            create_command,
        )
        .get(
            "/api/v1/commands/{id}",
            Access::Permission(Permission::CommandsRead),
            get_command,
        )
}

/// A command as the API shows it. Times are RFC 3339; `started_at` and
/// `finished_at` come from the agent's clock, the others from the backend's.
#[derive(Debug, Serialize, ToSchema)]
pub struct CommandJson {
    id: String,
    host_id: String,
    /// `ping`, `restart_service`, `refresh_inventory`, `reboot`, or one of
    /// a patch run's `upgrade_packages` and `cancel`.
    #[serde(rename = "type")]
    kind: &'static str,
    /// The request: `{"type": ...}` and, for `restart_service`, `"unit"`;
    /// for `reboot`, `"delay_minutes"` and `"message"`.
    #[schema(value_type = Object)]
    payload: serde_json::Value,
    /// `user:<name>` or `api-token:<id>`.
    requested_by: String,
    source_ip: Option<String>,
    /// pending, delivered, succeeded, failed, rejected, expired, timed_out
    /// or cancelled.
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
            kind: c.kind.as_str(),
            payload: c.payload,
            requested_by: c.requested_by.to_string(),
            source_ip: c.source_ip,
            exit_code: c.exit_code,
            output: c.output,
            error: c.error,
        }
    }
}

#[derive(Debug, Serialize, ToSchema)]
pub struct CommandList {
    commands: Vec<CommandJson>,
}

#[derive(Debug, Deserialize, utoipa::IntoParams)]
pub struct ListQuery {
    /// At most this many (1 to 500, default 100).
    limit: Option<u32>,
}

/// The body of `POST /api/v1/hosts/{id}/commands`.
#[derive(Debug, Deserialize, ToSchema)]
#[allow(dead_code)]
pub struct CommandRequestJson {
    /// `ping` (needs `commands:create`), `restart_service`
    /// (`services:restart`), `refresh_inventory` (`packages:refresh`) or
    /// `reboot` (`hosts:reboot`).
    #[serde(rename = "type")]
    kind: String,
    /// The unit to restart (`restart_service` only), e.g. `nginx.service`:
    /// a `.service` or `.socket`, never a target nor a unit that changes the
    /// system's state (`systemd-reboot.service`, `rescue.service`...).
    unit: Option<String>,
    /// Minutes until the host reboots (`reboot` only): 0 to 1440, and 1
    /// when absent. Logged-in users are warned meanwhile; `shutdown -c` on
    /// the host cancels it.
    delay_minutes: Option<u32>,
    /// The warning logged-in users see (`reboot` only): at most 200 bytes,
    /// no control characters; default "Reboot requested through
    /// Palisade", empty for systemd's own words.
    message: Option<String>,
    /// 1 to 86400; default 300.
    expires_in_secs: Option<u64>,
}

/// Issue a signed command to a host.
#[utoipa::path(post, path = "/api/v1/hosts/{id}/commands", tag = "commands",
    params(("id" = String, Path, description = "the host's agent id")),
    request_body = CommandRequestJson,
    responses((status = 202, description = "stored, and delivered if the agent is online", body = CommandJson),
              (status = 400, description = "the body is not a valid command"),
              (status = 401, description = "no valid session or API token"),
              (status = 403, description = "the caller may not issue this command to this host, or a session must re-authenticate first"),
              (status = 404, description = "no such host"),
              (status = 409, description = "the host is revoked")),
    security(("bearer" = []), ("session" = [])))]
async fn create_command(
    caller: Caller,
    Extension(request_id): Extension<RequestId>,
    State(state): State<AppState>,
    Path(host_id): Path<String>,
    body: Bytes,
) -> Result<(StatusCode, Json<CommandJson>), WebError> {
    let request = super::parse_request(&body).map_err(|e| WebError::BadRequest(e.0))?;
    let row = issue_for_caller(&state, &caller, request_id, host_id, &request).await?;
    Ok((StatusCode::ACCEPTED, Json(row.into())))
}

/// Issues `request` to the host `host_id` for `caller`: the host must be one
/// they see, and they must hold the permission the command's type needs
/// for its group (a refusal is audited); a revoked host gets nothing. The
/// API and the host page's forms both come through here.
pub(crate) async fn issue_for_caller(
    state: &AppState,
    caller: &Caller,
    request_id: RequestId,
    host_id: String,
    request: &super::CommandRequest,
) -> Result<CommandRow, WebError> {
    let now = crate::now_millis();
    let needed = permission_for(CommandKind::of(&request.action));
    // The host must be one the caller sees at all; then the command's own
    // permission for its group. A refusal is audited.
    let host =
        crate::hosts::api::visible_host(state, caller, host_id, Permission::HostsRead).await?;
    if !caller.may(needed, host.group_id()) {
        tracing::info!(
            permission = needed.name(),
            "refused a command: permission missing for the host"
        );
        let event = caller
            .event(now, Action::CommandCreate, Outcome::Denied)
            .target(host.id.clone())
            .details(serde_json::json!({
                "reason": "permission",
                "permission": needed.name(),
                "request_id": request_id.to_string(),
            }));
        state
            .db
            .write("audit refused command", move |tx| {
                crate::audit::store::append(tx, &event).map(|_| ())
            })
            .await?;
        return Err(WebError::Forbidden(
            "you may not send this command to this host",
        ));
    }
    if host.revoked_at.is_some() {
        return Err(WebError::Conflict(
            "the host is revoked: its agent can no longer connect",
        ));
    }
    let requester = Requester {
        actor: caller.actor.clone(),
        source_ip: caller.client.ip.clone(),
        user_agent: caller.client.user_agent.clone(),
        request_id: request_id.to_string(),
    };
    Ok(super::issue(state, &host.id, request, requester, now).await?)
}

/// A host's commands, newest first.
#[utoipa::path(get, path = "/api/v1/hosts/{id}/commands", tag = "commands",
    params(("id" = String, Path, description = "the host's agent id"), ListQuery),
    responses((status = 200, description = "the host's commands", body = CommandList),
              (status = 401, description = "no valid session or API token"),
              (status = 404, description = "no such host")),
    security(("bearer" = []), ("session" = [])))]
async fn list_host_commands(
    caller: Caller,
    State(state): State<AppState>,
    Path(host_id): Path<String>,
    Query(query): Query<ListQuery>,
) -> Result<Json<CommandList>, WebError> {
    let host =
        crate::hosts::api::visible_host(&state, &caller, host_id, Permission::CommandsRead).await?;
    let limit = query
        .limit
        .unwrap_or(DEFAULT_LIST_LIMIT)
        .clamp(1, MAX_LIST_LIMIT);
    let commands = state
        .db
        .read("list host commands", move |tx| {
            store::for_host(tx, &host.id, limit)
        })
        .await?;
    Ok(Json(CommandList {
        commands: commands.into_iter().map(CommandJson::from).collect(),
    }))
}

/// One command and its result.
#[utoipa::path(get, path = "/api/v1/commands/{id}", tag = "commands",
    params(("id" = String, Path, description = "the command id")),
    responses((status = 200, description = "the command", body = CommandJson),
              (status = 401, description = "no valid session or API token"),
              (status = 404, description = "no such command")),
    security(("bearer" = []), ("session" = [])))]
async fn get_command(
    caller: Caller,
    State(state): State<AppState>,
    Path(id): Path<String>,
) -> Result<Json<CommandJson>, WebError> {
    const UNKNOWN: WebError = WebError::NotFound("no such command");
    if id.len() > MAX_ID {
        return Err(UNKNOWN);
    }
    let found = state
        .db
        .read("load command", move |tx| {
            let Some(command) = store::get(tx, &id)? else {
                return Ok(None);
            };
            let host = crate::hosts::store::get(tx, &command.host_id)?;
            Ok(Some((command, host)))
        })
        .await?;
    let Some((command, host)) = found else {
        return Err(UNKNOWN);
    };
    // A command of a host outside the caller's groups does not exist for them.
    caller.require_for_host(
        Permission::CommandsRead,
        host.as_ref().and_then(|h| h.group_id()),
        "no such command",
    )?;
    Ok(Json(command.into()))
}

/// The handlers' OpenAPI paths, for [`crate::web::openapi`].
pub(crate) fn openapi_paths() -> utoipa::openapi::OpenApi {
    #[derive(utoipa::OpenApi)]
    #[openapi(paths(create_command, list_host_commands, get_command))]
    struct Paths;
    <Paths as utoipa::OpenApi>::openapi()
}

#[cfg(test)]
mod tests {
    use std::net::SocketAddr;

    use axum::Router;
    use axum::body::Body;
    use axum::http::{Request, header};
    use palisade_proto::msg::{CommandAction, command_signing_message, decode_command};
    use ring::signature::{ED25519, UnparsedPublicKey};
    use serde_json::Value;

    use super::*;
    use crate::audit::Actor;
    use crate::identity::auth::SESSION_COOKIE;
    use crate::uplink::Transport;
    use crate::web::testing::{self, HOST, ORIGIN, T0};

    const AGENT: &str = "6f1c2a52-4f7e-4d3a-9a55-0c1d2e3f4a5b";

    /// A backend with one enrolled host and an API token.
    struct Fixture {
        state: AppState,
        app: Router,
        token: String,
        token_id: String,
    }

    impl Fixture {
        async fn new() -> Fixture {
            let state = testing::state();
            testing::enroll(&state, AGENT, "web-1", T0).await;
            let (token, token_id) = testing::api_token(&state, "ci", None).await;
            let app = testing::app(&state);
            Fixture {
                state,
                app,
                token,
                token_id,
            }
        }

        /// A signed-in user with `role`; returns the cookie value.
        async fn session(&self, name: &str, role: &str) -> String {
            let user = testing::create_user(&self.state, name, "pw", role).await;
            testing::session(&self.state, &user).await
        }

        async fn send(&self, request: Request<Body>) -> (StatusCode, Value) {
            let reply = testing::send(&self.app, request).await;
            let json = serde_json::from_str(&reply.body).unwrap_or(Value::Null);
            (reply.status, json)
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

        /// A token holding exactly `permissions` for every host.
        async fn token_holding(&self, permissions: &[&str]) -> String {
            let (token, _) = testing::token_with(
                &self.state,
                testing::TokenSpec {
                    name: "narrow",
                    permissions: permissions.iter().map(|p| (*p).to_owned()).collect(),
                    ..testing::TokenSpec::default()
                },
            )
            .await;
            token
        }

        async fn post_bearer(&self, token: &str, body: &str) -> (StatusCode, Value) {
            self.send(
                Request::post(format!("/api/v1/hosts/{AGENT}/commands"))
                    .header(header::HOST, HOST)
                    .header(header::AUTHORIZATION, format!("Bearer {token}"))
                    .header(header::CONTENT_TYPE, "application/json")
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

        async fn host_commands(&self) -> Vec<CommandRow> {
            self.state
                .db
                .read("test", |tx| store::for_host(tx, AGENT, 10))
                .await
                .expect("list")
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

        for (name, role) in [("vera", "viewer"), ("audrey", "auditor")] {
            let cookie = f.session(name, role).await;
            let (status, body) = f.post_with_session(&cookie, r#"{"type":"ping"}"#).await;
            assert_eq!(status, StatusCode::FORBIDDEN, "{name}: {body}");
        }
        let denied = testing::audit(&f.state, 10).await;
        assert_eq!(denied.len(), 2);
        assert!(
            denied
                .iter()
                .all(|e| e.action == Action::AccessDenied && e.outcome == Outcome::Denied)
        );
        assert_eq!(denied[0].actor, Actor::User("audrey".into()));

        let cookie = f.session("otto", "operator").await;
        let (status, body) = f.post_with_session(&cookie, r#"{"type":"ping"}"#).await;
        assert_eq!(status, StatusCode::ACCEPTED, "{body}");
        assert_eq!(body["requested_by"], "user:otto");
        assert_eq!(f.host_commands().await.len(), 1);
    }

    #[tokio::test]
    async fn bad_bodies_and_unknown_hosts_are_refused_before_anything_is_stored() {
        let f = Fixture::new().await;
        let (status, body) = f.post_with_token(AGENT, r#"{"type":"poweroff"}"#).await;
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
        assert!(f.host_commands().await.is_empty());
        assert!(testing::audit(&f.state, 10).await.is_empty());
    }

    #[tokio::test]
    async fn a_reboot_needs_hosts_reboot_for_the_host_and_is_signed_and_audited() {
        let f = Fixture::new().await;
        const REBOOT: &str = r#"{"type":"reboot","delay_minutes":5,"message":"kernel 6.12"}"#;

        // May restart services, may not reboot: refused by the handler for
        // this host, and audited.
        let restarter = f.token_holding(&["hosts:read", "services:restart"]).await;
        let (status, body) = f.post_bearer(&restarter, REBOOT).await;
        assert_eq!(status, StatusCode::FORBIDDEN, "{body}");
        let denied = testing::audit(&f.state, 10).await;
        assert_eq!(denied.len(), 1, "{denied:?}");
        assert_eq!(denied[0].action, Action::CommandCreate);
        assert_eq!(denied[0].outcome, Outcome::Denied);
        assert_eq!(denied[0].target.as_deref(), Some(AGENT));
        assert_eq!(denied[0].details["permission"], "hosts:reboot");
        assert!(f.host_commands().await.is_empty());

        // hosts:reboot alone reaches the route; it does not make a ping.
        let rebooter = f.token_holding(&["hosts:read", "hosts:reboot"]).await;
        let (status, body) = f.post_bearer(&rebooter, r#"{"type":"ping"}"#).await;
        assert_eq!(status, StatusCode::FORBIDDEN, "{body}");
        let (status, body) = f.post_bearer(&rebooter, REBOOT).await;
        assert_eq!(status, StatusCode::ACCEPTED, "{body}");
        assert_eq!(body["type"], "reboot");
        assert_eq!(
            body["payload"],
            serde_json::json!({ "type": "reboot", "delay_minutes": 5, "message": "kernel 6.12" })
        );
        let stored = f.host_commands().await;
        assert_eq!(stored.len(), 1);
        assert_eq!(stored[0].kind, CommandKind::Reboot);
        let command = decode_command(&stored[0].command_bytes).expect("a valid command");
        assert_eq!(
            command.action,
            CommandAction::Reboot {
                delay_minutes: 5,
                message: "kernel 6.12".into()
            }
        );
        let key = UnparsedPublicKey::new(&ED25519, f.state.pki.signing_public_key());
        key.verify(
            &command_signing_message(&stored[0].command_bytes),
            &stored[0].signature,
        )
        .expect("signed by the backend's key");
        let audit = testing::audit(&f.state, 10).await;
        let created = audit
            .iter()
            .find(|e| e.action == Action::CommandCreate && e.outcome == Outcome::Success)
            .expect("the reboot is audited");
        assert_eq!(created.target.as_deref(), Some(AGENT));
        assert_eq!(created.details["command"]["type"], "reboot");
        assert_eq!(created.details["command"]["delay_minutes"], 5);
        assert_eq!(created.details["command_id"], stored[0].id.as_str());

        // A bad reboot is a 400 before anything is stored.
        for bad in [
            r#"{"type":"reboot","delay_minutes":1441}"#,
            r#"{"type":"reboot","message":"ab"}"#,
        ] {
            let (status, body) = f.post_bearer(&rebooter, bad).await;
            assert_eq!(status, StatusCode::BAD_REQUEST, "{bad}: {body}");
        }
        assert_eq!(f.host_commands().await.len(), 1);

        // A browser session must have proved itself again recently: the
        // operator's stale session is told to re-authenticate.
        let otto = testing::create_user(&f.state, "otto", "pw", "operator").await;
        let cookie = crate::secrets::random_urlsafe(32).expect("random");
        let now = crate::now_millis();
        let stale = crate::identity::NewSession {
            id_hash: crate::secrets::hash_secret(&cookie),
            user_id: otto.id,
            created_at: now - 30 * 60_000,
            expires_at: now + 3_600_000,
            source_ip: "192.0.2.7".into(),
            user_agent: "test".into(),
        };
        f.state
            .db
            .write("stale session", move |tx| {
                crate::identity::store::create_session(tx, &stale)
            })
            .await
            .expect("session");
        let (status, body) = f.post_with_session(&cookie, REBOOT).await;
        assert_eq!(status, StatusCode::FORBIDDEN, "{body}");
        assert_eq!(
            body["error"],
            crate::access::caller::REAUTH_NEEDED,
            "{body}"
        );
        assert_eq!(f.host_commands().await.len(), 1);
    }

    #[tokio::test]
    async fn the_host_page_offers_a_reboot_form_to_those_who_may() {
        let f = Fixture::new().await;
        let page = |cookie: String| {
            let app = f.app.clone();
            async move {
                testing::send(
                    &app,
                    Request::get(format!("/hosts/{AGENT}"))
                        .header(header::HOST, HOST)
                        .header(header::COOKIE, format!("{SESSION_COOKIE}={cookie}"))
                        .body(Body::empty())
                        .expect("request"),
                )
                .await
            }
        };
        let form_action = format!("action=\"/hosts/{AGENT}/reboot\"");
        let viewer = f.session("vera", "viewer").await;
        let seen = page(viewer.clone()).await;
        assert_eq!(seen.status, StatusCode::OK);
        assert!(!seen.body.contains(&form_action), "{}", seen.body);
        let operator = f.session("otto", "operator").await;
        let seen = page(operator.clone()).await;
        assert!(seen.body.contains(&form_action), "{}", seen.body);

        // The viewer's post is refused by the route, and audited there.
        let reply = testing::send(
            &f.app,
            testing::post_form(
                &format!("/hosts/{AGENT}/reboot"),
                Some(ORIGIN),
                Some(&viewer),
                "delay_minutes=5&message=x",
            ),
        )
        .await;
        assert_eq!(reply.status, StatusCode::FORBIDDEN);
        assert!(f.host_commands().await.is_empty());

        for bad in ["delay_minutes=&message=x", "delay_minutes=1441&message=x"] {
            let reply = testing::send(
                &f.app,
                testing::post_form(
                    &format!("/hosts/{AGENT}/reboot"),
                    Some(ORIGIN),
                    Some(&operator),
                    bad,
                ),
            )
            .await;
            assert_eq!(reply.status, StatusCode::BAD_REQUEST, "{bad}");
        }
        let reply = testing::send(
            &f.app,
            testing::post_form(
                &format!("/hosts/{AGENT}/reboot"),
                Some(ORIGIN),
                Some(&operator),
                "delay_minutes=5&message=kernel+6.12%3B+back+soon",
            ),
        )
        .await;
        assert_eq!(reply.status, StatusCode::SEE_OTHER, "{}", reply.body);
        assert_eq!(
            reply.header(header::LOCATION),
            format!("/hosts/{AGENT}#commands")
        );
        let stored = f.host_commands().await;
        assert_eq!(stored.len(), 1);
        assert_eq!(stored[0].requested_by, Actor::User("otto".into()));
        assert_eq!(
            decode_command(&stored[0].command_bytes)
                .expect("valid")
                .action,
            CommandAction::Reboot {
                delay_minutes: 5,
                message: "kernel 6.12; back soon".into()
            }
        );
        assert!(page(operator).await.body.contains("reboot in 5 min"));
    }

    #[tokio::test]
    async fn restarting_a_unit_that_changes_the_system_state_is_a_bad_request() {
        let f = Fixture::new().await;
        for unit in [
            "reboot.target",
            "poweroff.target",
            "ctrl-alt-del.target",
            "rescue.target",
            "systemd-reboot.service",
            "systemd-poweroff.service",
            "emergency.service",
        ] {
            let body = format!(r#"{{"type":"restart_service","unit":"{unit}"}}"#);
            let (status, reply) = f.post_with_token(AGENT, &body).await;
            assert_eq!(status, StatusCode::BAD_REQUEST, "{unit}: {reply}");
            assert!(
                reply["error"]
                    .as_str()
                    .is_some_and(|e| e.contains("invalid unit")),
                "{unit}: {reply}"
            );
        }
        assert!(f.host_commands().await.is_empty());
        assert!(testing::audit(&f.state, 10).await.is_empty());
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

        let audit = testing::audit(&f.state, 10).await;
        assert_eq!(audit.len(), 1);
        assert_eq!(audit[0].action, Action::CommandCreate);
        assert_eq!(audit[0].outcome, Outcome::Success);
        assert_eq!(audit[0].actor, Actor::ApiToken(f.token_id.clone()));
        assert_eq!(audit[0].target.as_deref(), Some(AGENT));
        assert_eq!(audit[0].user_agent.as_deref(), Some("ci-bot/2"));
        assert_eq!(audit[0].details["command_id"], id.as_str());

        // The agent connects: the pending command goes out, byte for byte
        // as stored, signed by the backend's key for this agent.
        let addr: SocketAddr = "127.0.0.1:1".parse().expect("addr");
        let (_conn, mut queue, _close) = f.state.registry.connected_with_commands(
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
        let lookup = id.clone();
        let stored = f
            .state
            .db
            .read("test", move |tx| store::get(tx, &lookup))
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
        let stored = f.host_commands().await;
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
        let cookie = f.session("vera", "viewer").await;
        let page = testing::send(
            &f.app,
            Request::get(format!("/hosts/{AGENT}"))
                .header(header::HOST, HOST)
                .header(header::COOKIE, format!("{SESSION_COOKIE}={cookie}"))
                .body(Body::empty())
                .expect("request"),
        )
        .await;
        assert_eq!(page.status, StatusCode::OK);
        assert!(
            page.body.contains("restart_service nginx.service"),
            "{}",
            page.body
        );
        assert!(page.body.contains(">delivered<"), "{}", page.body);
        assert!(page.body.contains(&format!("api-token:{}", f.token_id)));
    }
}
