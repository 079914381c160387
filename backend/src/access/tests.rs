//! Access control tried from outside, route by route: the router's own
//! list of routes drives every test, so a route added later is covered (or
//! the test names it and fails).
//!
//! - every route declares who may use it, and without credentials every
//!   route that is not public answers 401 (API) or sends to the sign-in
//!   page (UI);
//! - a signed-in user without a role is refused every permissioned route;
//! - a viewer, an auditor and an operator scoped to group A are refused
//!   every write route aimed at what is not theirs (group B's host, users,
//!   roles, tokens, groups), through the API and the UI forms, and the
//!   database is left exactly as it was;
//! - a scoped operator sees nothing of group B: not in lists, not by id,
//!   not through commands;
//! - unsafe requests with a session but from another origin are refused on
//!   every route (CSRF);
//! - API tokens: their permissions, group and expiry bound them, never more
//!   than their owner holds, and revocation ends them.

use axum::Router;
use axum::body::Body;
use axum::http::{Method, Request, StatusCode, header};

use crate::identity::auth::SESSION_COOKIE;
use crate::state::AppState;
use crate::web::testing::{self, HOST, ORIGIN, Reply, T0, TokenSpec, send};
use crate::web::{Access, RouteInfo};

const PASSWORD: &str = "correct horse battery staple";
const HOST_A: &str = "aaaaaaaa-0000-4000-8000-00000000000a";
const HOST_B: &str = "bbbbbbbb-0000-4000-8000-00000000000b";
const HOST_C: &str = "cccccccc-0000-4000-8000-00000000000c";

/// Routes anyone may use.
const PUBLIC: &[(&str, &str)] = &[
    // Sends to the hosts or the sign-in page.
    ("GET", "/"),
    ("GET", "/healthz"),
    ("GET", "/static/app.css"),
    ("GET", "/static/app.js"),
    ("GET", "/api/v1/openapi.json"),
    ("GET", "/login"),
    ("POST", "/login"),
    // The second step of a sign-in: only with the challenge cookie the
    // password step set, which is not a session.
    ("GET", "/login/second-factor"),
    ("POST", "/login/second-factor"),
    // The same step answered with a passkey (same cookie), and a sign-in
    // with a passkey alone (a signature over a challenge of ours).
    ("POST", "/login/second-factor/passkey"),
    ("POST", "/login/passkey"),
    // Ends whatever session the cookie names; without one, nothing to end.
    ("POST", "/logout"),
    ("POST", "/api/v1/enroll"),
];

/// A fleet with two groups, users of every kind and one of everything a
/// write route can aim at.
struct World {
    state: AppState,
    app: Router,
    group_a: String,
    group_b: String,
    /// A viewer scoped to group B: the target of the user routes.
    victim: i64,
    victim_assignment: String,
    custom_role: String,
    admin_token_id: String,
    admin_token: String,
    enrollment_token: String,
    command_on_b: String,
    admin: String,
    viewer: String,
    auditor: String,
    operator_a: String,
    no_role: String,
}

async fn world() -> World {
    let state = testing::state();
    let app = testing::app(&state);
    let group_a = testing::create_group(&state, "group-a").await;
    let group_b = testing::create_group(&state, "group-b").await;
    for (id, name) in [(HOST_A, "web-a"), (HOST_B, "db-b"), (HOST_C, "loose-c")] {
        testing::enroll(&state, id, name, T0).await;
    }
    testing::put_in_group(&state, HOST_A, &group_a).await;
    testing::put_in_group(&state, HOST_B, &group_b).await;

    let admin = testing::create_user(&state, "root", PASSWORD, "admin").await;
    let viewer = testing::create_user(&state, "vera", PASSWORD, "viewer").await;
    let auditor = testing::create_user(&state, "audrey", PASSWORD, "auditor").await;
    let operator_a =
        testing::create_scoped_user(&state, "otto", PASSWORD, "operator", Some(&group_a)).await;
    let victim =
        testing::create_scoped_user(&state, "victor", PASSWORD, "viewer", Some(&group_b)).await;
    let no_role = {
        let user = crate::identity::NewUser {
            username: "nora".into(),
            password_hash: testing::test_password_hash(PASSWORD),
            created_at: T0,
        };
        state
            .db
            .write("t", move |tx| {
                crate::identity::store::create_user(tx, &user)
            })
            .await
            .expect("user")
    };
    let victim_id = victim.id;
    let victim_assignment = state
        .db
        .read("t", move |tx| {
            super::roles::assignments(tx, Some(victim_id))
        })
        .await
        .expect("assignments")[0]
        .id
        .clone();
    let custom_role = state
        .db
        .write("t", |tx| {
            let role = super::roles::Role {
                id: "0123456789abcdef0123456789abcdef".into(),
                name: "patcher".into(),
                description: String::new(),
                builtin: false,
                permissions: [super::Permission::HostsRead].into_iter().collect(),
                created_at: T0,
            };
            super::roles::create(tx, &role)?;
            Ok(role.id)
        })
        .await
        .expect("role");
    let (admin_token, admin_token_id) = testing::token_with(
        &state,
        TokenSpec {
            name: "admin-ci",
            user_id: Some(admin.id),
            role: Some("admin"),
            ..TokenSpec::default()
        },
    )
    .await;
    let enrollment_token = state
        .db
        .read("t", crate::enrollment::store::list_tokens)
        .await
        .expect("tokens")[0]
        .id
        .clone();
    let world = World {
        admin: testing::session(&state, &admin).await,
        viewer: testing::session(&state, &viewer).await,
        auditor: testing::session(&state, &auditor).await,
        operator_a: testing::session(&state, &operator_a).await,
        no_role: testing::session(&state, &no_role).await,
        state,
        app,
        group_a,
        group_b,
        victim: victim.id,
        victim_assignment,
        custom_role,
        admin_token_id,
        admin_token,
        enrollment_token,
        command_on_b: String::new(),
    };
    let reply = send(
        &world.app,
        bearer_request(
            Method::POST,
            &format!("/api/v1/hosts/{HOST_B}/commands"),
            &world.admin_token,
            Some(r#"{"type":"ping"}"#),
        ),
    )
    .await;
    assert_eq!(reply.status, StatusCode::ACCEPTED, "{}", reply.body);
    let command_on_b = reply.json()["id"].as_str().expect("id").to_owned();
    World {
        command_on_b,
        ..world
    }
}

fn routes() -> Vec<RouteInfo> {
    crate::web::all_routes().declared().to_vec()
}

fn is_public(r: &RouteInfo) -> bool {
    PUBLIC.contains(&(r.method.as_str(), r.path))
}

/// Routes that act only on the caller's own account (password, second
/// factor, re-authentication): every signed-in user may use them, on
/// themselves; `identity::sign_in_tests` and `identity::factor_tests` test
/// them.
fn self_service(r: &RouteInfo) -> bool {
    r.access == Access::SignedIn
        && ((r.path.starts_with("/account/")
            && (!r.path.contains('{') || r.path.starts_with("/account/passkeys/")))
            || r.path.starts_with("/reauth"))
}

fn is_api(path: &str) -> bool {
    path.starts_with("/api/")
}

fn is_unsafe(method: &Method) -> bool {
    !matches!(*method, Method::GET | Method::HEAD | Method::OPTIONS)
}

/// The path with its parameters filled with `w`'s objects: group B's host,
/// the victim user, the custom role, the admin's token...
fn fill(w: &World, path: &str) -> String {
    let id = if path.contains("/hosts/{id}") {
        HOST_B.to_owned()
    } else if path.contains("/users/{id}") {
        w.victim.to_string()
    } else if path.contains("/roles/{id}") {
        w.custom_role.clone()
    } else if path.contains("/api-tokens/{id}") {
        w.admin_token_id.clone()
    } else if path.contains("/enrollment-tokens/{id}") {
        w.enrollment_token.clone()
    } else if path.contains("/host-groups/{id}") {
        w.group_b.clone()
    } else if path.contains("/commands/{id}") {
        w.command_on_b.clone()
    } else if path.contains("/patch-runs/{id}") {
        // No run exists: a caller who may act finds none (404), one who may
        // not is refused before that.
        "00000000-0000-4000-8000-00000000beef".to_owned()
    } else if path.contains("/patch-policies/{id}") || path.contains("/patch-rollouts/{id}") {
        // None exists: as for patch runs.
        "00000000-0000-4000-8000-00000000cafe".to_owned()
    } else if path.contains("/passkeys/{id}") {
        // Passkeys are only one's own: see `identity::passkey_tests`.
        "00000000-0000-4000-8000-000000000000".to_owned()
    } else if path.contains("/sessions/{id}") {
        // The admin's session: nobody else may end it.
        hex::encode(crate::secrets::hash_secret(&w.admin))
    } else {
        assert!(
            !path.contains('{'),
            "no example for the parameters of {path}: add one to access::tests::fill"
        );
        String::new()
    };
    path.replace("{id}", &id)
        .replace("{assignment}", &w.victim_assignment)
}

/// A valid body for each write route, so that a refusal is the access
/// check's and not the body's (a route missing here fails the test).
fn body(w: &World, method: &Method, path: &str) -> Option<String> {
    let json = match (method.as_str(), path) {
        ("POST", "/api/v1/users") => r#"{"username":"eve","role":"admin"}"#.to_owned(),
        ("PATCH", "/api/v1/users/{id}") => r#"{"disabled":true}"#.to_owned(),
        ("POST", "/api/v1/users/{id}/roles") => r#"{"role":"admin"}"#.to_owned(),
        ("POST", "/api/v1/api-tokens") => {
            r#"{"name":"mine","permissions":["hosts:read"]}"#.to_owned()
        }
        ("POST", "/api/v1/roles") => r#"{"name":"evil","permissions":["users:create"]}"#.to_owned(),
        ("PATCH", "/api/v1/roles/{id}") => {
            r#"{"name":"patcher","permissions":["users:create"]}"#.to_owned()
        }
        ("POST", "/api/v1/host-groups") => r#"{"name":"evil"}"#.to_owned(),
        ("PATCH", "/api/v1/host-groups/{id}") => r#"{"name":"renamed"}"#.to_owned(),
        ("POST", "/api/v1/enrollment-tokens") => r#"{"cidrs":[]}"#.to_owned(),
        ("PATCH", "/api/v1/hosts/{id}") => format!(r#"{{"host_group_id":"{}"}}"#, w.group_a),
        ("POST", "/api/v1/hosts/{id}/commands") => r#"{"type":"ping"}"#.to_owned(),
        ("POST", "/api/v1/patch-runs") => {
            format!(r#"{{"host_id":"{HOST_B}","selection":{{"kind":"all"}}}}"#)
        }
        ("POST", "/hosts/{id}/patch") => "selection=all&approval=any".to_owned(),
        ("POST", "/hosts/{id}/reboot") => "delay_minutes=1&message=".to_owned(),
        ("POST", "/api/v1/patch-policies") | ("PUT", "/api/v1/patch-policies/{id}") => format!(
            r#"{{"name":"weekly","host_ids":["{HOST_B}"],"selection":{{"kind":"security"}}}}"#
        ),
        ("POST", "/patch-policies") => {
            format!("name=weekly&host_ids={HOST_B}&selection=security&approval=other_user")
        }
        ("POST", "/users") => "username=eve&role=admin".to_owned(),
        ("POST", "/login") => format!("username=root&password={}", PASSWORD.replace(' ', "+")),
        ("POST", "/users/{id}/roles") => "role=admin&host_group_id=".to_owned(),
        ("POST", "/api-tokens") => "name=mine&permissions=hosts%3Aread".to_owned(),
        ("POST", "/roles") => "name=evil&permissions=users%3Acreate".to_owned(),
        ("POST", "/roles/{id}") => "name=patcher&permissions=users%3Acreate".to_owned(),
        ("POST", "/host-groups") => "name=evil".to_owned(),
        ("POST", "/host-groups/{id}") => "name=renamed&description=".to_owned(),
        ("POST", "/enrollment-tokens") => "host_group_id=".to_owned(),
        ("POST", "/hosts/{id}/group") => format!("host_group_id={}", w.group_a),
        // One's own account (see `self_service`).
        ("POST", "/account/password") => {
            "current_password=wrong&new_password=a+long+new+passphrase&confirm_password=a+long+new+passphrase"
                .to_owned()
        }
        ("POST", "/account/second-factor/totp/confirm") | ("POST", "/login/second-factor") => {
            "code=000000".to_owned()
        }
        ("POST", "/reauth") => "password=wrong&next=%2F".to_owned(),
        ("POST", "/login/passkey")
        | ("POST", "/login/second-factor/passkey")
        | ("POST", "/reauth/passkey") => {
            "credential_id=AA&client_data=AA&authenticator_data=AA&signature=AA".to_owned()
        }
        ("POST", "/account/passkeys") => "name=mine&client_data=AA&attestation_object=AA".to_owned(),
        ("POST", "/account/passkeys/{id}/remove") => return None,
        ("DELETE", _)
        | ("POST", "/users/{id}/disable")
        | ("POST", "/users/{id}/enable")
        | ("POST", "/users/{id}/delete")
        | ("POST", "/users/{id}/roles/{assignment}/delete")
        | ("POST", "/api-tokens/{id}/revoke")
        | ("POST", "/roles/{id}/delete")
        | ("POST", "/host-groups/{id}/delete")
        | ("POST", "/enrollment-tokens/{id}/revoke")
        | ("POST", "/api/v1/enrollment-tokens/{id}/revoke")
        | ("POST", "/api/v1/hosts/{id}/revoke")
        | ("POST", "/hosts/{id}/revoke")
        | ("POST", "/hosts/{id}/delete")
        | ("POST", "/users/{id}/password-reset")
        | ("POST", "/api/v1/users/{id}/password-reset")
        | ("POST", "/users/{id}/factors/reset")
        | ("POST", "/api/v1/users/{id}/factors/reset")
        | ("POST", "/account/sessions/{id}/end")
        | ("POST", "/account/second-factor/totp")
        | ("POST", "/account/second-factor/backup-codes")
        | ("POST", "/account/second-factor/remove")
        | ("POST", "/api/v1/patch-runs/{id}/approve")
        | ("POST", "/api/v1/patch-runs/{id}/cancel")
        | ("POST", "/patch-runs/{id}/approve")
        | ("POST", "/patch-runs/{id}/cancel")
        | ("POST", "/api/v1/patch-policies/{id}/run")
        | ("POST", "/patch-policies/{id}/run")
        | ("POST", "/patch-policies/{id}/delete")
        | ("POST", "/api/v1/patch-rollouts/{id}/cancel")
        | ("POST", "/patch-rollouts/{id}/cancel")
        | ("POST", "/logout") => return None,
        (m, p) => panic!("no example body for {m} {p}: add one to access::tests::body"),
    };
    Some(json)
}

fn session_request(
    w: &World,
    route: &RouteInfo,
    cookie: &str,
    origin: Option<&str>,
) -> Request<Body> {
    let path = fill(w, route.path);
    let mut request = Request::builder()
        .method(route.method.clone())
        .uri(&path)
        .header(header::HOST, HOST)
        .header(header::COOKIE, format!("{SESSION_COOKIE}={cookie}"));
    if let Some(origin) = origin {
        request = request.header(header::ORIGIN, origin).header(
            "sec-fetch-site",
            if origin == ORIGIN {
                "same-origin"
            } else {
                "cross-site"
            },
        );
    }
    let body = if is_unsafe(&route.method) {
        body(w, &route.method, route.path)
    } else {
        None
    };
    if body.is_some() {
        let content_type = if is_api(route.path) {
            "application/json"
        } else {
            "application/x-www-form-urlencoded"
        };
        request = request.header(header::CONTENT_TYPE, content_type);
    }
    request
        .body(body.map(Body::from).unwrap_or_else(Body::empty))
        .expect("request")
}

fn bearer_request(method: Method, path: &str, token: &str, body: Option<&str>) -> Request<Body> {
    let mut request = Request::builder()
        .method(method)
        .uri(path)
        .header(header::HOST, HOST)
        .header(header::AUTHORIZATION, format!("Bearer {token}"));
    if body.is_some() {
        request = request.header(header::CONTENT_TYPE, "application/json");
    }
    request
        .body(
            body.map(|b| Body::from(b.to_owned()))
                .unwrap_or_else(Body::empty),
        )
        .expect("request")
}

/// What a write could have changed, as text: compared before and after.
async fn snapshot(state: &AppState) -> Vec<String> {
    const TABLES: &[&str] = &[
        "SELECT id, username, disabled FROM users ORDER BY id",
        "SELECT id, user_id, role_id, host_group_id FROM role_assignments ORDER BY id",
        "SELECT id, name, permissions FROM roles ORDER BY id",
        "SELECT id, revoked_at, role_id, permissions FROM api_tokens ORDER BY id",
        "SELECT id, revoked_at FROM enrollment_tokens ORDER BY id",
        "SELECT id, name, description FROM host_groups ORDER BY id",
        "SELECT id, host_group_id, revoked_at FROM hosts ORDER BY id",
        "SELECT id, host_id, type FROM commands ORDER BY id",
    ];
    state
        .db
        .read("snapshot", |tx| {
            let mut rows = Vec::new();
            for sql in TABLES {
                let width = sql.split(" FROM ").next().unwrap_or("").split(',').count();
                rows.extend(tx.query(sql, &[], |row| {
                    let mut line = String::new();
                    for i in 0..width {
                        line.push_str(&format!("{:?}|", row.column(i)?));
                    }
                    Ok(line)
                })?);
            }
            Ok(rows)
        })
        .await
        .expect("snapshot")
}

#[test]
fn every_route_declares_who_may_use_it_and_public_ones_are_few() {
    let routes = routes();
    assert!(routes.len() > 50, "{} routes", routes.len());
    for r in &routes {
        match r.access {
            Access::Public => assert!(
                is_public(r),
                "{} {} is public: is it meant to be?",
                r.method,
                r.path
            ),
            Access::Agent => assert_eq!(
                r.path,
                crate::uplink::wss::PATH,
                "only the uplink is for agents"
            ),
            Access::SignedIn | Access::Permission(_) | Access::AnyOf(_) => {}
        }
    }
    for (method, path) in PUBLIC {
        assert!(
            routes
                .iter()
                .any(|r| r.method.as_str() == *method && r.path == *path),
            "{method} {path} is no longer a route"
        );
    }
    // One declaration per method and path.
    let mut seen = std::collections::HashSet::new();
    for r in &routes {
        assert!(
            seen.insert((r.method.clone(), r.path)),
            "{} {} twice",
            r.method,
            r.path
        );
    }
}

#[tokio::test]
async fn without_credentials_nothing_but_the_public_routes_answers() {
    let w = world().await;
    let before = snapshot(&w.state).await;
    for r in routes()
        .iter()
        .filter(|r| !is_public(r) && r.access != Access::Agent)
    {
        let path = fill(&w, r.path);
        let request = Request::builder()
            .method(r.method.clone())
            .uri(&path)
            .header(header::HOST, HOST)
            .header(header::ORIGIN, ORIGIN)
            .body(Body::empty())
            .expect("request");
        let reply = send(&w.app, request).await;
        if is_api(r.path) {
            assert_eq!(
                reply.status,
                StatusCode::UNAUTHORIZED,
                "{} {path}: {}",
                r.method,
                reply.body
            );
        } else {
            assert_eq!(reply.status, StatusCode::SEE_OTHER, "{} {path}", r.method);
            assert!(
                reply.header(header::LOCATION).starts_with("/login"),
                "{} {path}",
                r.method
            );
        }
        // A token that does not exist is no better.
        let reply = send(
            &w.app,
            bearer_request(r.method.clone(), &path, "0123456789abcdef.nonsense", None),
        )
        .await;
        let expected = if is_api(r.path) {
            StatusCode::UNAUTHORIZED
        } else {
            StatusCode::SEE_OTHER
        };
        assert_eq!(
            reply.status, expected,
            "{} {path} with a bad token",
            r.method
        );
    }
    assert_eq!(snapshot(&w.state).await, before);
}

#[tokio::test]
async fn a_user_without_a_role_is_refused_every_permissioned_route() {
    let w = world().await;
    let before = snapshot(&w.state).await;
    let mut checked = 0;
    for r in routes()
        .iter()
        .filter(|r| matches!(r.access, Access::Permission(_) | Access::AnyOf(_)))
    {
        let reply = send(&w.app, session_request(&w, r, &w.no_role, Some(ORIGIN))).await;
        assert_eq!(
            reply.status,
            StatusCode::FORBIDDEN,
            "{} {}: {}",
            r.method,
            r.path,
            reply.body
        );
        checked += 1;
    }
    assert!(checked > 40, "{checked}");
    assert_eq!(snapshot(&w.state).await, before);
    // Each refusal is audited.
    let denied = testing::audit(&w.state, 1000)
        .await
        .into_iter()
        .filter(|e| e.action == crate::audit::Action::AccessDenied)
        .count();
    assert_eq!(denied, checked);
}

#[tokio::test]
async fn readers_and_a_scoped_operator_change_nothing_that_is_not_theirs() {
    let w = world().await;
    let before = snapshot(&w.state).await;
    let writes: Vec<RouteInfo> = routes()
        .into_iter()
        .filter(|r| is_unsafe(&r.method) && !is_public(r) && r.access != Access::Agent)
        .filter(|r| r.path != "/logout" && !self_service(r))
        .collect();
    assert!(writes.len() > 30, "{}", writes.len());
    for (who, cookie) in [
        ("viewer", &w.viewer),
        ("auditor", &w.auditor),
        ("operator of A", &w.operator_a),
    ] {
        for r in &writes {
            let reply = send(&w.app, session_request(&w, r, cookie, Some(ORIGIN))).await;
            assert!(
                matches!(reply.status, StatusCode::FORBIDDEN | StatusCode::NOT_FOUND),
                "{who}: {} {} answered {}: {}",
                r.method,
                r.path,
                reply.status,
                reply.body
            );
        }
    }
    assert_eq!(
        snapshot(&w.state).await,
        before,
        "a refused write changed something"
    );
    // The same routes from the admin do change things: the bodies and ids
    // above are real, the refusals were the access checks'.
    let r = writes
        .iter()
        .find(|r| r.method == Method::PATCH && r.path == "/api/v1/hosts/{id}")
        .expect("route");
    let reply = send(&w.app, session_request(&w, r, &w.admin, Some(ORIGIN))).await;
    assert_eq!(reply.status, StatusCode::OK, "{}", reply.body);
    assert_ne!(snapshot(&w.state).await, before);
}

#[tokio::test]
async fn a_scoped_operator_sees_nothing_of_another_group() {
    let w = world().await;
    let get = |path: String| {
        let request = Request::builder()
            .uri(&path)
            .header(header::HOST, HOST)
            .header(header::COOKIE, format!("{SESSION_COOKIE}={}", w.operator_a))
            .body(Body::empty())
            .expect("request");
        let app = w.app.clone();
        async move { send(&app, request).await }
    };
    // Lists: only group A's host, in the API and the page.
    let list = get("/api/v1/hosts".into()).await;
    assert_eq!(list.status, StatusCode::OK);
    let ids: Vec<String> = list.json()["hosts"]
        .as_array()
        .expect("hosts")
        .iter()
        .map(|h| h["id"].as_str().unwrap_or_default().to_owned())
        .collect();
    assert_eq!(ids, [HOST_A]);
    assert_eq!(list.json()["total"], 1);
    let page = get("/hosts".into()).await;
    assert!(
        page.body.contains("web-a")
            && !page.body.contains("db-b")
            && !page.body.contains("loose-c")
    );
    // Asking for group B's hosts by filter gives nothing either.
    let filtered = get(format!("/api/v1/hosts?group={}", w.group_b)).await;
    assert_eq!(filtered.json()["total"], 0);
    // By id: as if it did not exist.
    for path in [
        format!("/api/v1/hosts/{HOST_B}"),
        format!("/hosts/{HOST_B}"),
        format!("/api/v1/hosts/{HOST_C}"),
        format!("/api/v1/commands/{}", w.command_on_b),
    ] {
        let reply = get(path.clone()).await;
        assert_eq!(
            reply.status,
            StatusCode::NOT_FOUND,
            "{path}: {}",
            reply.body
        );
    }
    // Their own group's host is theirs to see and operate.
    assert_eq!(
        get(format!("/api/v1/hosts/{HOST_A}")).await.status,
        StatusCode::OK
    );
    let command = send(
        &w.app,
        Request::builder()
            .method(Method::POST)
            .uri(format!("/api/v1/hosts/{HOST_A}/commands"))
            .header(header::HOST, HOST)
            .header(header::ORIGIN, ORIGIN)
            .header(header::COOKIE, format!("{SESSION_COOKIE}={}", w.operator_a))
            .header(header::CONTENT_TYPE, "application/json")
            .body(Body::from(r#"{"type":"ping"}"#))
            .expect("request"),
    )
    .await;
    assert_eq!(command.status, StatusCode::ACCEPTED, "{}", command.body);
    // The audit trail, users and roles are not theirs.
    for path in [
        "/api/v1/audit",
        "/api/v1/users",
        "/api/v1/roles",
        "/audit",
        "/users",
    ] {
        assert_eq!(
            get(path.into()).await.status,
            StatusCode::FORBIDDEN,
            "{path}"
        );
    }
}

#[tokio::test]
async fn unsafe_requests_from_another_origin_are_refused_on_every_route() {
    let w = world().await;
    let before = snapshot(&w.state).await;
    let writes: Vec<RouteInfo> = routes()
        .into_iter()
        .filter(|r| is_unsafe(&r.method) && r.access != Access::Agent && r.path != "/api/v1/enroll")
        .collect();
    for r in &writes {
        for origin in [Some("https://evil.example"), Some("null"), None] {
            let reply = send(&w.app, session_request(&w, r, &w.admin, origin)).await;
            assert_eq!(
                reply.status,
                StatusCode::FORBIDDEN,
                "{} {} from {origin:?}: {}",
                r.method,
                r.path,
                reply.body
            );
            assert!(reply.body.contains("cross-origin"), "{}", reply.body);
        }
    }
    assert_eq!(snapshot(&w.state).await, before);
}

#[tokio::test]
async fn api_tokens_are_bound_by_their_permissions_group_expiry_and_owner() {
    let w = world().await;
    let call = |token: String, method: Method, path: String, body: Option<&'static str>| {
        let app = w.app.clone();
        async move { send(&app, bearer_request(method, &path, &token, body)).await }
    };
    let owner = crate::identity::store::user_by_name;
    let otto = w
        .state
        .db
        .read("t", move |tx| owner(tx, "otto"))
        .await
        .expect("db")
        .expect("otto");
    // Read-only: reads hosts, cannot issue commands.
    let (read_only, _) = testing::token_with(
        &w.state,
        TokenSpec {
            name: "read",
            permissions: vec!["hosts:read".into()],
            ..TokenSpec::default()
        },
    )
    .await;
    let hosts = call(read_only.clone(), Method::GET, "/api/v1/hosts".into(), None).await;
    assert_eq!(hosts.status, StatusCode::OK);
    assert_eq!(hosts.json()["total"], 3);
    let refused = call(
        read_only.clone(),
        Method::POST,
        format!("/api/v1/hosts/{HOST_A}/commands"),
        Some(r#"{"type":"ping"}"#),
    )
    .await;
    assert_eq!(refused.status, StatusCode::FORBIDDEN);
    // A group-scoped token sees its group only.
    let (scoped, _) = testing::token_with(
        &w.state,
        TokenSpec {
            name: "scoped",
            role: Some("operator"),
            group: Some(&w.group_a),
            ..TokenSpec::default()
        },
    )
    .await;
    let hosts = call(scoped.clone(), Method::GET, "/api/v1/hosts".into(), None).await;
    assert_eq!(hosts.json()["total"], 1);
    let b = call(
        scoped.clone(),
        Method::GET,
        format!("/api/v1/hosts/{HOST_B}"),
        None,
    )
    .await;
    assert_eq!(b.status, StatusCode::NOT_FOUND);
    // Expired: refused like an unknown token.
    let (expired, _) = testing::token_with(
        &w.state,
        TokenSpec {
            name: "old",
            role: Some("admin"),
            expires_at: Some(T0),
            ..TokenSpec::default()
        },
    )
    .await;
    let reply = call(expired, Method::GET, "/api/v1/hosts".into(), None).await;
    assert_eq!(reply.status, StatusCode::UNAUTHORIZED);
    // A token claiming admin but owned by a group-A operator holds only
    // what its owner holds, where the owner holds it.
    let (owned, _) = testing::token_with(
        &w.state,
        TokenSpec {
            name: "otto-admin",
            user_id: Some(otto.id),
            role: Some("admin"),
            ..TokenSpec::default()
        },
    )
    .await;
    let users = call(owned.clone(), Method::GET, "/api/v1/users".into(), None).await;
    assert_eq!(users.status, StatusCode::FORBIDDEN);
    let hosts = call(owned.clone(), Method::GET, "/api/v1/hosts".into(), None).await;
    assert_eq!(hosts.json()["total"], 1);
    // Creating a token beyond what the creator holds is refused.
    let reply = send(
        &w.app,
        Request::builder()
            .method(Method::POST)
            .uri("/api/v1/api-tokens")
            .header(header::HOST, HOST)
            .header(header::ORIGIN, ORIGIN)
            .header(header::COOKIE, format!("{SESSION_COOKIE}={}", w.operator_a))
            .header(header::CONTENT_TYPE, "application/json")
            .body(Body::from(
                r#"{"name":"escalate","permissions":["users:create"]}"#,
            ))
            .expect("request"),
    )
    .await;
    assert!(
        matches!(reply.status, StatusCode::FORBIDDEN),
        "{}: {}",
        reply.status,
        reply.body
    );
    // Disabling the owner stops their tokens at once.
    let otto_id = otto.id;
    w.state
        .db
        .write("t", move |tx| {
            crate::identity::store::set_disabled(tx, otto_id, true)
        })
        .await
        .expect("disable");
    let reply = call(owned, Method::GET, "/api/v1/hosts".into(), None).await;
    assert_eq!(reply.status, StatusCode::UNAUTHORIZED);
    // Revocation through the API ends a token at once, and is audited.
    let revoke = call(
        w.admin_token.clone(),
        Method::DELETE,
        format!("/api/v1/api-tokens/{}", w.admin_token_id),
        None,
    )
    .await;
    assert!(
        revoke.status.is_success(),
        "{}: {}",
        revoke.status,
        revoke.body
    );
    let reply = call(
        w.admin_token.clone(),
        Method::GET,
        "/api/v1/hosts".into(),
        None,
    )
    .await;
    assert_eq!(reply.status, StatusCode::UNAUTHORIZED);
    let events = testing::audit(&w.state, 50).await;
    assert!(
        events
            .iter()
            .any(|e| e.action == crate::audit::Action::ApiTokenRevoke
                && e.target.as_deref() == Some(w.admin_token_id.as_str()))
    );
    assert!(
        events
            .iter()
            .any(|e| e.action == crate::audit::Action::ApiTokenRejected)
    );
}

#[tokio::test]
async fn disabling_a_user_ends_their_sessions_at_once() {
    let w = world().await;
    let page = |cookie: String| {
        let app = w.app.clone();
        async move {
            send(
                &app,
                Request::builder()
                    .uri("/hosts")
                    .header(header::HOST, HOST)
                    .header(header::COOKIE, format!("{SESSION_COOKIE}={cookie}"))
                    .body(Body::empty())
                    .expect("request"),
            )
            .await
        }
    };
    assert_eq!(page(w.viewer.clone()).await.status, StatusCode::OK);
    let vera = w
        .state
        .db
        .read("t", |tx| crate::identity::store::user_by_name(tx, "vera"))
        .await
        .expect("db")
        .expect("vera");
    let request = Request::builder()
        .method(Method::POST)
        .uri(format!("/users/{}/disable", vera.id))
        .header(header::HOST, HOST)
        .header(header::ORIGIN, ORIGIN)
        .header("sec-fetch-site", "same-origin")
        .header(header::COOKIE, format!("{SESSION_COOKIE}={}", w.admin))
        .body(Body::empty())
        .expect("request");
    let reply: Reply = send(&w.app, request).await;
    assert_eq!(reply.status, StatusCode::SEE_OTHER, "{}", reply.body);
    let after = page(w.viewer.clone()).await;
    assert_eq!(after.status, StatusCode::SEE_OTHER);
    assert!(after.header(header::LOCATION).starts_with("/login"));
    let events = testing::audit(&w.state, 5).await;
    assert!(
        events
            .iter()
            .any(|e| e.action == crate::audit::Action::UserDisable)
    );
}
