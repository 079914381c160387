//! Tests of the web application through its router, with a real SQLite
//! database (in memory), as a browser or an API client would talk to it.

use std::net::SocketAddr;

use axum::Router;
use axum::body::Body;
use axum::http::{Request, StatusCode, header};
use palisade_proto::msg::{Record, RecordBody};
use palisade_proto::pb;
use serde_json::{Value, json};

use super::testing::{Reply, T0, login_form, post_form, send, state, state_with_config};
use crate::audit::{Action, Actor, Outcome};
use crate::config::Config;
use crate::db::Millis;
use crate::enrollment::EnrollmentToken;
use crate::hosts::NewHost;
use crate::identity::NewSession;
use crate::identity::auth::SESSION_COOKIE;
use crate::secrets;
use crate::state::AppState;
use crate::uplink::Transport;

const HOST: &str = "palisade.test";
const ORIGIN: &str = "https://palisade.test";
const PASSWORD: &str = "correct horse battery staple";
const HOST_A: &str = "6f1c2a52-4f7e-4d3a-9a55-0c1d2e3f4a5b";
const HOST_B: &str = "0b7e9a10-1111-4222-8333-944455566677";
fn app(state: &AppState) -> Router {
    super::testing::app(state)
}

fn get(uri: &str, cookie: Option<&str>) -> Request<Body> {
    let mut request = Request::get(uri).header(header::HOST, HOST);
    if let Some(cookie) = cookie {
        request = request.header(header::COOKIE, format!("{SESSION_COOKIE}={cookie}"));
    }
    request.body(Body::empty()).expect("request")
}

fn bearer(uri: &str, token: &str) -> Request<Body> {
    Request::get(uri)
        .header(header::HOST, HOST)
        .header(header::AUTHORIZATION, format!("Bearer {token}"))
        .body(Body::empty())
        .expect("request")
}

async fn create_user(state: &AppState, username: &str) {
    super::testing::create_user(state, username, PASSWORD, "admin").await;
}

/// Logs `alice` in through the form and returns the cookie value.
async fn login(state: &AppState) -> String {
    create_user(state, "alice").await;
    let reply = send(
        &app(state),
        post_form("/login", Some(ORIGIN), None, &login_form("alice", PASSWORD)),
    )
    .await;
    assert_eq!(reply.status, StatusCode::SEE_OTHER, "{}", reply.body);
    cookie_value(&reply).expect("session cookie")
}

fn cookie_value(reply: &Reply) -> Option<String> {
    let set_cookie = reply.header(header::SET_COOKIE);
    let rest = set_cookie.strip_prefix(&format!("{SESSION_COOKIE}="))?;
    let value = rest.split(';').next()?;
    (!value.is_empty()).then(|| value.to_owned())
}

/// Creates an API token and returns it as a client presents it.
async fn api_token(state: &AppState, name: &str, revoked_at: Option<Millis>) -> String {
    super::testing::api_token(state, name, revoked_at).await.0
}

/// Enrolls two hosts; A has facts, metrics (collected at `t`) and an agent
/// health report, and was last seen over QUIC; B has nothing but its name.
/// Seeds hosts web-1 and db-1, both in group "web"; returns the group's id.
async fn seed_hosts(state: &AppState, t: Millis) -> String {
    let token = EnrollmentToken {
        id: "enroll1".into(),
        secret_hash: secrets::hash_secret("enroll-secret"),
        host_group_id: None,
        cidrs: Vec::new(),
        max_per_day: None,
        expires_at: None,
        created_at: T0 - 1000,
        revoked_at: None,
    };
    let hosts: Vec<NewHost> = [(HOST_A, "web-1"), (HOST_B, "db-1")]
        .into_iter()
        .map(|(id, hostname)| NewHost {
            id: id.into(),
            hostname: hostname.into(),
            host_group_id: None,
            enrolled_at: T0,
            enrolled_from: "192.0.2.10".into(),
            token_id: "enroll1".into(),
            cert_sha256: "ab".repeat(32),
        })
        .collect();
    let group = state
        .db
        .write("seed", move |tx| {
            crate::enrollment::store::create_token(tx, &token)?;
            let group = crate::hosts::groups::create(tx, "web", "", T0)?;
            for host in &hosts {
                crate::enrollment::store::enroll_host(tx, T0, host)?.expect("enrolled");
                crate::hosts::groups::set_host_group(tx, &host.id, Some(&group))?;
            }
            Ok(group)
        })
        .await
        .expect("seed hosts");
    let facts = pb::HostFacts {
        hostname: "web-1".into(),
        os_pretty_name: "Debian GNU/Linux 12 (bookworm)".into(),
        os_id: "debian".into(),
        os_version_id: "12".into(),
        kernel_release: "6.1.0-18-amd64".into(),
        architecture: "x86_64".into(),
        cpu_count: 4,
        memory_total_bytes: 8 << 30,
        boot_time_unix: 1_699_000_000,
    };
    let metrics = pb::Metrics {
        collected_at_unix_ms: t,
        cpu_percent: 12.5,
        memory_total_bytes: 8 << 30,
        memory_available_bytes: 6 << 30,
        swap_total_bytes: 1 << 30,
        swap_free_bytes: 768 << 20,
        load_1: 0.25,
        load_5: 0.5,
        load_15: 0.75,
        filesystems: vec![pb::FilesystemUsage {
            mount_point: "/".into(),
            device: "/dev/vda1".into(),
            fs_type: "ext4".into(),
            total_bytes: 40 << 30,
            used_bytes: 10 << 30,
            available_bytes: 30 << 30,
        }],
        network: vec![pb::NetworkCounters {
            interface: "eth0".into(),
            rx_bytes: 1536,
            tx_bytes: 3 << 20,
        }],
        uptime_seconds: 3 * 86_400 + 4 * 3600 + 12 * 60,
        process_count: 123,
    };
    let health = pb::AgentHealth {
        children: vec![pb::ChildHealth {
            role: "collector".into(),
            pid: 4242,
            healthy: true,
            restarts: 1,
            sandbox: "seccomp+landlock".into(),
        }],
    };
    let records = [
        Record {
            seq: 1,
            created_at_unix_ms: t,
            body: RecordBody::Facts(facts),
        },
        Record {
            seq: 2,
            created_at_unix_ms: t,
            body: RecordBody::Metrics(metrics),
        },
        Record {
            seq: 3,
            created_at_unix_ms: t,
            body: RecordBody::AgentHealth(health),
        },
    ];
    let records: Vec<crate::hosts::ingest::AgentRecord> = records.iter().map(Into::into).collect();
    state
        .db
        .write("seed", move |tx| {
            crate::hosts::ingest::store_records(tx, HOST_A, t, &records)?;
            crate::hosts::store::seen(tx, HOST_A, t, Transport::Quic)?;
            crate::hosts::store::set_spool_dropped(tx, HOST_A, 17)
        })
        .await
        .expect("records");
    group
}

fn assert_security_headers(reply: &Reply) {
    assert_eq!(
        reply.header(header::CONTENT_SECURITY_POLICY),
        "default-src 'none'; script-src 'self'; style-src 'self'; img-src 'self' data:; form-action 'self'; \
         frame-ancestors 'none'; base-uri 'none'"
    );
    assert_eq!(reply.header(header::X_CONTENT_TYPE_OPTIONS), "nosniff");
    assert_eq!(reply.header(header::REFERRER_POLICY), "same-origin");
    assert_eq!(reply.header(header::X_FRAME_OPTIONS), "DENY");
    assert_eq!(
        reply.header(header::STRICT_TRANSPORT_SECURITY),
        "max-age=31536000"
    );
    assert!(
        uuid::Uuid::parse_str(reply.request_id()).is_ok(),
        "request id {:?}",
        reply.request_id()
    );
}

// ---------------------------------------------------------------------------

#[tokio::test]
async fn healthz_answers_without_auth() {
    let state = state();
    let reply = send(&app(&state), get("/healthz", None)).await;
    assert_eq!(reply.status, StatusCode::OK);
    assert_eq!(reply.json(), json!({ "status": "ok" }));
    assert_security_headers(&reply);
    assert_eq!(reply.header(header::CACHE_CONTROL), "no-store");
}

#[tokio::test]
async fn every_response_has_security_headers_and_a_fresh_request_id() {
    let state = state();
    let cookie = login(&state).await;
    let app = app(&state);
    let mut ids = Vec::new();
    for request in [
        get("/login", None),
        get("/hosts", Some(&cookie)),
        get("/api/v1/hosts", None),
        get("/nope", None),
    ] {
        let reply = send(&app, request).await;
        assert_security_headers(&reply);
        assert_eq!(reply.header(header::CACHE_CONTROL), "no-store");
        ids.push(reply.request_id().to_owned());
    }
    ids.sort();
    ids.dedup();
    assert_eq!(ids.len(), 4, "request ids are unique");

    let css = send(&app, get("/static/app.css", None)).await;
    assert_eq!(css.status, StatusCode::OK);
    assert_eq!(css.header(header::CONTENT_TYPE), "text/css; charset=utf-8");
    assert_eq!(
        css.header(header::CACHE_CONTROL),
        "public, max-age=31536000, immutable"
    );
    assert!(css.body.contains(".badge"));
    assert_security_headers(&css);
}

#[tokio::test]
async fn error_pages_carry_the_request_id_and_no_detail() {
    let state = state();
    let app = app(&state);
    let page = send(&app, get("/no/such/page", None)).await;
    assert_eq!(page.status, StatusCode::NOT_FOUND);
    assert!(page.header(header::CONTENT_TYPE).starts_with("text/html"));
    assert!(page.body.contains(page.request_id()), "{}", page.body);

    let api = send(&app, get("/api/v1/nothing", None)).await;
    assert_eq!(api.status, StatusCode::NOT_FOUND);
    assert_eq!(
        api.json(),
        json!({ "error": "no such page", "request_id": api.request_id() })
    );

    // A rejection from an extractor (here: no form body) gets the generic
    // treatment rather than the extractor's own text.
    let request = Request::post("/login")
        .header(header::HOST, HOST)
        .header(header::ORIGIN, ORIGIN)
        .body(Body::empty())
        .expect("request");
    let bad = send(&app, request).await;
    assert!(bad.status.is_client_error());
    assert!(bad.body.contains(bad.request_id()));
    assert!(
        !bad.body.to_lowercase().contains("content-type"),
        "{}",
        bad.body
    );
}

#[tokio::test]
async fn login_sets_a_strict_host_cookie_and_creates_a_session() {
    let state = state();
    create_user(&state, "alice").await;
    let reply = send(
        &app(&state),
        post_form("/login", Some(ORIGIN), None, &login_form("alice", PASSWORD)),
    )
    .await;
    assert_eq!(reply.status, StatusCode::SEE_OTHER);
    assert_eq!(reply.header(header::LOCATION), "/hosts");
    let set_cookie = reply.header(header::SET_COOKIE);
    let attributes: Vec<&str> = set_cookie.split("; ").skip(1).collect();
    assert_eq!(
        attributes,
        ["Path=/", "Secure", "HttpOnly", "SameSite=Strict"]
    );
    let value = cookie_value(&reply).expect("cookie value");
    assert!(
        value.len() >= 43,
        "256 bits of randomness, url-safe: {value}"
    );

    let now = crate::now_millis();
    let hash = secrets::hash_secret(&value);
    let (session, user) = state
        .db
        .read("test", move |tx| {
            crate::identity::store::session(tx, &hash, now)
        })
        .await
        .expect("store")
        .expect("session exists");
    assert_eq!(user.username, "alice");
    assert_eq!(session.source_ip, "192.0.2.7");
    assert_eq!(session.user_agent, "test-browser/1.0");
    let idle = 30 * 60 * 1000;
    assert!(session.expires_at > now && session.expires_at <= session.created_at + idle);

    let audit = super::testing::audit(&state, 10).await;
    assert_eq!(audit.len(), 1);
    let event = &audit[0];
    assert_eq!(
        (event.action, event.outcome, &event.actor),
        (
            Action::AuthLogin,
            Outcome::Success,
            &Actor::User("alice".into())
        )
    );
    assert_eq!(event.source_ip.as_deref(), Some("192.0.2.7"));
    assert_eq!(event.user_agent.as_deref(), Some("test-browser/1.0"));
    assert!(!event.details.to_string().contains(PASSWORD));

    // The cookie opens the pages.
    let page = send(&app(&state), get("/hosts", Some(&value))).await;
    assert_eq!(page.status, StatusCode::OK);
    assert!(page.body.contains("alice"));
}

#[tokio::test]
async fn wrong_password_and_unknown_user_fail_the_same_way() {
    let state = state();
    create_user(&state, "alice").await;
    let app = app(&state);
    let wrong = send(
        &app,
        post_form("/login", Some(ORIGIN), None, &login_form("alice", "guess")),
    )
    .await;
    let unknown = send(
        &app,
        post_form(
            "/login",
            Some(ORIGIN),
            None,
            &login_form("mallory", PASSWORD),
        ),
    )
    .await;
    for reply in [&wrong, &unknown] {
        assert_eq!(reply.status, StatusCode::UNAUTHORIZED);
        assert!(
            reply.body.contains("invalid username or password"),
            "{}",
            reply.body
        );
        assert!(reply.body.contains("<form"), "the form is shown again");
        assert!(reply.headers.get(header::SET_COOKIE).is_none());
        assert_security_headers(reply);
    }
    // The pages differ only in the echoed name, the request id and the
    // passkey challenge.
    assert_eq!(wrong.normalized("alice"), unknown.normalized("mallory"));

    let audit = super::testing::audit(&state, 10).await;
    let mut rows: Vec<(String, String, String)> = audit
        .iter()
        .map(|e| {
            (
                e.action.to_string(),
                e.outcome.as_str().to_owned(),
                e.actor.to_string(),
            )
        })
        .collect();
    rows.sort();
    assert_eq!(
        rows,
        [
            (
                "auth.login".to_owned(),
                "failure".to_owned(),
                "anonymous".to_owned()
            ),
            (
                "auth.login".to_owned(),
                "failure".to_owned(),
                "user:alice".to_owned()
            ),
        ]
    );
    for event in &audit {
        assert_eq!(event.source_ip.as_deref(), Some("192.0.2.7"));
        assert!(!event.details.to_string().contains("guess"));
        assert!(!event.details.to_string().contains(PASSWORD));
    }
    // A name that matches no account is kept only as a keyed digest (it may
    // be a password typed in the wrong field): the same name, the same digest.
    let unknown_event = audit
        .iter()
        .find(|e| e.actor == crate::audit::Actor::Anonymous)
        .expect("the unknown name's attempt");
    assert_eq!(unknown_event.details["reason"], "unknown_user");
    assert_eq!(
        unknown_event.details["username_digest"],
        state.audit_key.name_digest("mallory")
    );
    for e in &audit {
        let row = format!("{e:?}");
        assert!(!row.contains("mallory"), "{row}");
    }
}

#[tokio::test]
async fn failed_sign_ins_cannot_grow_the_audit_log_without_bound() {
    // Throttling would hold the address back first (tested below); here
    // every attempt is looked at.
    let mut config = Config::default();
    config.sign_in.address_free_failures = 1000;
    config.sign_in.address_lockout_failures = 1001;
    let state = state_with_config(config);
    let app = app(&state);
    let attempts = crate::audit::limits::PER_ADDRESS + 15;
    for n in 0..attempts {
        let reply = send(
            &app,
            post_form(
                "/login",
                Some(ORIGIN),
                None,
                &login_form(&format!("nobody{n}"), "x"),
            ),
        )
        .await;
        assert_eq!(
            reply.status,
            StatusCode::UNAUTHORIZED,
            "every attempt still fails"
        );
    }
    let stored = super::testing::audit(&state, 1000).await;
    assert_eq!(stored.len() as u32, crate::audit::limits::PER_ADDRESS);
    assert!(
        stored
            .iter()
            .all(|e| e.actor == crate::audit::Actor::Anonymous)
    );
}

#[tokio::test]
async fn pages_redirect_to_login_without_a_valid_session() {
    let state = state();
    let app = app(&state);
    for uri in ["/hosts", "/hosts/6f1c2a52-4f7e-4d3a-9a55-0c1d2e3f4a5b"] {
        for cookie in [None, Some("not-a-session")] {
            let reply = send(&app, get(uri, cookie)).await;
            assert_eq!(reply.status, StatusCode::SEE_OTHER, "{uri} {cookie:?}");
            assert_eq!(reply.header(header::LOCATION), "/login");
        }
    }
    let root = send(&app, get("/", None)).await;
    assert_eq!(
        (root.status, root.header(header::LOCATION)),
        (StatusCode::SEE_OTHER, "/hosts")
    );
}

#[tokio::test]
async fn expired_sessions_are_refused_and_use_moves_expiry_within_the_lifetime() {
    let mut config = Config::default();
    config.web.session_idle_timeout_secs = 60;
    config.web.session_max_lifetime_secs = 100;
    let state = state_with_config(config);
    create_user(&state, "alice").await;
    let user = state
        .db
        .read("test", |tx| {
            crate::identity::store::user_by_name(tx, "alice")
        })
        .await
        .expect("store")
        .expect("user");
    let now = crate::now_millis();
    let new_session = |cookie: &str, created_at: Millis, expires_at: Millis| NewSession {
        id_hash: secrets::hash_secret(cookie),
        user_id: user.id,
        created_at,
        expires_at,
        source_ip: "192.0.2.7".into(),
        user_agent: "test".into(),
    };
    let sessions = [
        new_session("expired", now - 120_000, now - 1),
        new_session("old", now - 90_000, now + 5_000),
    ];
    state
        .db
        .write("test", move |tx| {
            for s in &sessions {
                crate::identity::store::create_session(tx, s)?;
            }
            Ok(())
        })
        .await
        .expect("sessions");
    let app = app(&state);

    let reply = send(&app, get("/hosts", Some("expired"))).await;
    assert_eq!(reply.status, StatusCode::SEE_OTHER);

    // Used now, the idle timeout would move expiry to now + 60 s; the
    // lifetime caps it at created + 100 s.
    let reply = send(&app, get("/hosts", Some("old"))).await;
    assert_eq!(reply.status, StatusCode::OK);
    let hash = secrets::hash_secret("old");
    let (session, _) = state
        .db
        .read("test", move |tx| {
            crate::identity::store::session(tx, &hash, now)
        })
        .await
        .expect("store")
        .expect("session still valid");
    assert_eq!(session.expires_at, now - 90_000 + 100_000);
    assert!(session.last_seen_at >= now);
}

#[tokio::test]
async fn host_pages_show_facts_status_and_metrics() {
    let state = state();
    let cookie = login(&state).await;
    let now = crate::now_millis();
    seed_hosts(&state, now - 60_000).await;
    state.registry.connected(
        HOST_A,
        Transport::Quic,
        SocketAddr::from(([198, 51, 100, 4], 5000)),
        now,
    );
    let app = app(&state);

    let list = send(&app, get("/hosts", Some(&cookie))).await;
    assert_eq!(list.status, StatusCode::OK);
    for expected in [
        "web-1",
        "db-1",
        "Debian GNU/Linux 12 (bookworm)",
        "Online",
        "Offline",
        "QUIC",
        "12.5 %",
        "25.0 %",
        &format!("/hosts/{HOST_A}"),
        "1 of 2 online",
    ] {
        assert!(
            list.body.contains(expected),
            "host list lacks {expected:?}:\n{}",
            list.body
        );
    }

    let detail = send(&app, get(&format!("/hosts/{HOST_A}"), Some(&cookie))).await;
    assert_eq!(detail.status, StatusCode::OK);
    for expected in [
        "web-1",
        "Debian GNU/Linux 12 (bookworm)",
        "6.1.0-18-amd64",
        "x86_64",
        "8.0 GiB",
        "Online",
        "QUIC",
        "12.5 %",
        "2.0 GiB of 8.0 GiB",
        "256.0 MiB of 1.0 GiB",
        "0.25 / 0.50 / 0.75",
        "3 d 4 h 12 min",
        "123",
        "/dev/vda1",
        "ext4",
        "10.0 GiB",
        "40.0 GiB",
        "eth0",
        "1.5 KiB",
        "3.0 MiB",
        "collector",
        "4242",
        "Healthy",
        "seccomp+landlock",
        "17 records lost",
        &"ab".repeat(32),
        "192.0.2.10",
        "<polyline points=",
    ] {
        assert!(
            detail.body.contains(expected),
            "host page lacks {expected:?}:\n{}",
            detail.body
        );
    }

    let offline = send(&app, get(&format!("/hosts/{HOST_B}"), Some(&cookie))).await;
    assert_eq!(offline.status, StatusCode::OK);
    assert!(offline.body.contains("Offline"));
    assert!(offline.body.contains("No metrics received yet"));
    assert!(
        !offline.body.contains("records lost"),
        "no drops, no warning"
    );

    let missing = send(&app, get("/hosts/does-not-exist", Some(&cookie))).await;
    assert_eq!(missing.status, StatusCode::NOT_FOUND);
    assert!(missing.body.contains("no such host"));
    assert!(missing.body.contains(missing.request_id()));
}

#[tokio::test]
async fn offline_hosts_show_the_last_known_transport() {
    let state = state();
    let cookie = login(&state).await;
    seed_hosts(&state, crate::now_millis() - 60_000).await;
    let list = send(&app(&state), get("/hosts", Some(&cookie))).await;
    assert!(list.body.contains("QUIC (last known)"), "{}", list.body);
    assert!(!list.body.contains(">Online<"));
}

fn expected_host_a(group: &str) -> Value {
    json!({
        "id": HOST_A,
        "hostname": "web-1",
        "os": "Debian GNU/Linux 12 (bookworm)",
        "os_id": "debian",
        "os_version": "12",
        "kernel": "6.1.0-18-amd64",
        "architecture": "x86_64",
        "cpu_count": 4,
        "memory_total_bytes": 8u64 << 30,
        "host_group": "web",
        "host_group_id": group,
        "revoked_at": null,
        "online": true,
        "last_seen": "2023-11-14T22:13:21.5Z",
        "transport": "wss",
        "connected_since": "2023-11-14T22:13:22Z",
        "zero_rtt": false,
        "enrolled_at": "2023-11-14T22:13:20Z",
        "agent_health": {
            "children": [
                { "role": "collector", "pid": 4242, "healthy": true, "restarts": 1, "sandbox": "seccomp+landlock" }
            ]
        },
        "spool_dropped_total": 17,
        "metrics": {
            "seq": 2,
            "collected_at": "2023-11-14T22:13:21.5Z",
            "cpu_percent": 12.5,
            "memory_total_bytes": 8u64 << 30,
            "memory_available_bytes": 6u64 << 30,
            "memory_used_bytes": 2u64 << 30,
            "swap_total_bytes": 1u64 << 30,
            "swap_free_bytes": 768u64 << 20,
            "swap_used_bytes": 256u64 << 20,
            "load_1": 0.25,
            "load_5": 0.5,
            "load_15": 0.75,
            "uptime_seconds": 3 * 86_400 + 4 * 3600 + 12 * 60,
            "process_count": 123,
            "filesystems": [{
                "mount_point": "/",
                "device": "/dev/vda1",
                "fs_type": "ext4",
                "total_bytes": 40u64 << 30,
                "used_bytes": 10u64 << 30,
                "available_bytes": 30u64 << 30
            }],
            "network": [{ "interface": "eth0", "rx_bytes": 1536, "tx_bytes": 3u64 << 20 }]
        }
    })
}

fn expected_host_b(group: &str) -> Value {
    json!({
        "id": HOST_B,
        "hostname": "db-1",
        "os": null,
        "os_id": null,
        "os_version": null,
        "kernel": null,
        "architecture": null,
        "cpu_count": null,
        "memory_total_bytes": null,
        "host_group": "web",
        "host_group_id": group,
        "revoked_at": null,
        "online": false,
        "last_seen": null,
        "transport": null,
        "connected_since": null,
        "zero_rtt": false,
        "enrolled_at": "2023-11-14T22:13:20Z",
        "agent_health": null,
        "spool_dropped_total": 0,
        "metrics": null
    })
}

/// The hosts of a `/api/v1/hosts` answer, in a stable order.
fn hosts_by_id(mut list: Value) -> Vec<Value> {
    let mut hosts = list["hosts"]
        .as_array_mut()
        .map(std::mem::take)
        .unwrap_or_default();
    hosts.sort_by(|a, b| a["id"].as_str().cmp(&b["id"].as_str()));
    hosts
}

#[tokio::test]
async fn api_returns_hosts_to_sessions_and_tokens() {
    let state = state();
    let cookie = login(&state).await;
    let group = seed_hosts(&state, T0 + 1500).await;
    // Online over WSS now, last seen over QUIC before.
    state.registry.connected(
        HOST_A,
        Transport::Wss,
        SocketAddr::from(([198, 51, 100, 4], 5000)),
        T0 + 2000,
    );
    let token = api_token(&state, "ci", None).await;
    let app = app(&state);

    for request in [
        get("/api/v1/hosts", Some(&cookie)),
        bearer("/api/v1/hosts", &token),
    ] {
        let reply = send(&app, request).await;
        assert_eq!(reply.status, StatusCode::OK, "{}", reply.body);
        assert_eq!(reply.header(header::CONTENT_TYPE), "application/json");
        assert_eq!(reply.header(header::CACHE_CONTROL), "no-store");
        assert_eq!(
            hosts_by_id(reply.json()),
            vec![expected_host_b(&group), expected_host_a(&group)]
        );
    }

    let one = send(&app, bearer(&format!("/api/v1/hosts/{HOST_A}"), &token)).await;
    assert_eq!(one.status, StatusCode::OK);
    assert_eq!(one.json(), expected_host_a(&group));

    let missing = send(&app, bearer("/api/v1/hosts/nope", &token)).await;
    assert_eq!(missing.status, StatusCode::NOT_FOUND);
    assert_eq!(
        missing.json(),
        json!({ "error": "no such host", "request_id": missing.request_id() })
    );
}

#[tokio::test]
async fn api_refuses_missing_wrong_and_revoked_credentials() {
    let state = state();
    let live = api_token(&state, "live", None).await;
    let revoked = api_token(&state, "revoked", Some(T0 + 1)).await;
    let (live_id, live_secret) = secrets::split_token(&live).expect("token shape");
    let other = secrets::TokenParts::generate().expect("token");
    let app = app(&state);
    let requests = [
        get("/api/v1/hosts", None),
        get("/api/v1/hosts", Some("forged-session")),
        bearer("/api/v1/hosts", &revoked),
        bearer("/api/v1/hosts", &format!("{live_id}.{}", other.secret)),
        bearer("/api/v1/hosts", &format!("{}.{live_secret}", other.id)),
        bearer("/api/v1/hosts", &format!("{live_id}{live_secret}")),
        bearer("/api/v1/hosts", ""),
        bearer(&format!("/api/v1/hosts/{HOST_A}"), &revoked),
    ];
    for request in requests {
        let reply = send(&app, request).await;
        assert_eq!(reply.status, StatusCode::UNAUTHORIZED, "{}", reply.body);
        assert_eq!(
            reply.json(),
            json!({ "error": "authentication required", "request_id": reply.request_id() })
        );
    }
    let ok = send(&app, bearer("/api/v1/hosts", &live)).await;
    assert_eq!(ok.status, StatusCode::OK);
}

#[tokio::test]
async fn cross_origin_posts_with_a_cookie_are_refused() {
    let state = state();
    let cookie = login(&state).await;
    let app = app(&state);
    let session_alive = || async {
        let now = crate::now_millis();
        let hash = secrets::hash_secret(&cookie);
        state
            .db
            .read("test", move |tx| {
                crate::identity::store::session(tx, &hash, now)
            })
            .await
            .expect("store")
            .is_some()
    };

    for origin in [
        Some("https://evil.example"),
        Some("http://palisade.test"),
        Some("null"),
        None,
    ] {
        let reply = send(&app, post_form("/logout", origin, Some(&cookie), "")).await;
        assert_eq!(reply.status, StatusCode::FORBIDDEN, "origin {origin:?}");
        assert!(reply.body.contains(reply.request_id()));
        assert!(session_alive().await, "a refused logout leaves the session");
    }
    // Login CSRF: the login form checks the origin too.
    let reply = send(
        &app,
        post_form(
            "/login",
            Some("https://evil.example"),
            None,
            &login_form("alice", PASSWORD),
        ),
    )
    .await;
    assert_eq!(reply.status, StatusCode::FORBIDDEN);

    // A browser's own form post with `Origin: null` (as under
    // `Referrer-Policy: no-referrer`, which a proxy may impose).
    let mut request = post_form("/logout", Some("null"), Some(&cookie), "");
    request
        .headers_mut()
        .insert("sec-fetch-site", "same-origin".parse().expect("value"));
    let reply = send(&app, request).await;
    assert_eq!(reply.status, StatusCode::SEE_OTHER);
    assert_eq!(reply.header(header::LOCATION), "/login");
    assert!(reply.header(header::SET_COOKIE).contains("Max-Age=0"));
    assert!(!session_alive().await, "logout ends the session");

    let audit = super::testing::audit(&state, 10).await;
    assert_eq!(
        (audit[0].action, &audit[0].actor),
        (Action::AuthLogout, &Actor::User("alice".into()))
    );
}

#[tokio::test]
async fn same_origin_logout_ends_the_session() {
    let state = state();
    let cookie = login(&state).await;
    let app = app(&state);
    let reply = send(&app, post_form("/logout", Some(ORIGIN), Some(&cookie), "")).await;
    assert_eq!(reply.status, StatusCode::SEE_OTHER);
    let page = send(&app, get("/hosts", Some(&cookie))).await;
    assert_eq!(
        (page.status, page.header(header::LOCATION)),
        (StatusCode::SEE_OTHER, "/login")
    );
}

#[tokio::test]
async fn bearer_requests_are_exempt_from_the_origin_check() {
    let state = state();
    let app = app(&state);
    // No POST API exists yet; an unknown path shows the check did not fire.
    let request = Request::post("/api/v1/hosts")
        .header(header::HOST, HOST)
        .header(header::ORIGIN, "https://evil.example")
        .header(header::AUTHORIZATION, "Bearer x.y")
        .header(header::COOKIE, format!("{SESSION_COOKIE}=whatever"))
        .body(Body::empty())
        .expect("request");
    let reply = send(&app, request).await;
    assert_eq!(reply.status, StatusCode::METHOD_NOT_ALLOWED);
    assert_eq!(reply.json()["request_id"], reply.request_id());
}

#[tokio::test]
async fn host_lists_are_paged_in_the_api_and_the_ui() {
    let state = state();
    let cookie = login(&state).await;
    let (token, _) = super::testing::api_token(&state, "pages", None).await;
    for n in 0..7 {
        super::testing::enroll(
            &state,
            &format!("{n:08}-aaaa-4bbb-8ccc-dddddddddddd"),
            &format!("web-{n}"),
            T0,
        )
        .await;
    }
    let app = app(&state);
    let mut seen = Vec::new();
    let mut uri = "/api/v1/hosts?limit=3".to_owned();
    loop {
        let reply = send(&app, bearer(&uri, &token)).await;
        assert_eq!(reply.status, StatusCode::OK, "{}", reply.body);
        let body = reply.json();
        assert_eq!(body["total"], 7);
        for host in body["hosts"].as_array().expect("hosts") {
            seen.push(host["hostname"].as_str().unwrap_or_default().to_owned());
        }
        match body["next"].as_str() {
            Some(next) => uri = format!("/api/v1/hosts?limit=3&after={next}"),
            None => break,
        }
    }
    assert_eq!(seen, (0..7).map(|n| format!("web-{n}")).collect::<Vec<_>>());
    let filtered = send(&app, bearer("/api/v1/hosts?name=EB-3", &token))
        .await
        .json();
    assert_eq!(filtered["total"], 1);
    assert_eq!(filtered["hosts"][0]["hostname"], "web-3");
    for bad in [
        "/api/v1/hosts?limit=0",
        "/api/v1/hosts?limit=1001",
        "/api/v1/hosts?after=bm90LWEtY3Vyc29y",
    ] {
        let reply = send(&app, bearer(bad, &token)).await;
        assert_eq!(reply.status, StatusCode::BAD_REQUEST, "{bad}");
    }

    // The page: 100 a page, a search box, links to the next page.
    for n in 7..150 {
        super::testing::enroll(
            &state,
            &format!("{n:08}-aaaa-4bbb-8ccc-dddddddddddd"),
            &format!("web-{n:03}"),
            T0,
        )
        .await;
    }
    let page = send(&app, get("/hosts", Some(&cookie))).await;
    assert_eq!(page.status, StatusCode::OK);
    assert!(page.body.contains("0 of 150 online"), "{}", page.body);
    assert_eq!(
        page.body.matches("<tr>").count(),
        101,
        "a header row and 100 hosts"
    );
    let next = page
        .body
        .split("href=\"")
        .find(|l| l.contains("rel=\"next\""))
        .and_then(|l| l.split('"').next())
        .expect("a next link")
        .replace("&amp;", "&");
    let second = send(&app, get(&next, Some(&cookie))).await;
    assert_eq!(second.status, StatusCode::OK);
    assert_eq!(second.body.matches("<tr>").count(), 51);
    assert!(second.body.contains("First page"));
    let search = send(&app, get("/hosts?name=web-14", Some(&cookie))).await;
    assert!(
        search.body.contains("10 matching"),
        "web-140 to web-149: {}",
        search.body
    );
}
