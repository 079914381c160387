//! End to end: a real backend and a real agent (four processes), enrolled
//! with a real token, over real QUIC and HTTPS on loopback.

mod support;

use std::time::Duration;

on_both_databases!(
    enrolled_agent_reports_and_the_ui_shows_it,
    enrollment_refusals_create_no_host,
    agent_restart_keeps_identity_and_backend_restart_resumes,
);

use support::*;

/// Waits until the API shows exactly one host, online over QUIC with
/// metrics collected after `after_ms`; returns it.
async fn online_with_metrics(client: &Https, api: &str, after_ms: i64) -> serde_json::Value {
    eventually("the host online with fresh metrics", || async {
        let hosts = hosts(client, api).await;
        let host = hosts.first()?.clone();
        let fresh = host["metrics"]["collected_at"]
            .as_str()
            .and_then(|t| {
                time::OffsetDateTime::parse(t, &time::format_description::well_known::Rfc3339).ok()
            })
            .is_some_and(|t| (t.unix_timestamp_nanos() / 1_000_000) as i64 > after_ms);
        (host["online"] == true && fresh).then_some(host)
    })
    .await
}

fn now_ms() -> i64 {
    palisade_backend::now_millis()
}

/// `name:arch version` of every package dpkg counts as installed.
fn dpkg_installed() -> std::collections::BTreeSet<String> {
    let out = std::process::Command::new("dpkg-query")
        .args([
            "-W",
            "-f",
            "${Package}:${Architecture} ${Version} ${db:Status-Status}\n",
        ])
        .output()
        .expect("run dpkg-query");
    assert!(
        out.status.success(),
        "dpkg-query: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8(out.stdout)
        .expect("utf-8")
        .lines()
        .filter_map(|l| {
            let (package, state) = l.rsplit_once(' ')?;
            ["installed", "triggers-awaited", "triggers-pending"]
                .contains(&state)
                .then(|| package.to_owned())
        })
        .collect()
}

/// `name version` of every package `apt-get -s dist-upgrade` would
/// upgrade (Inst lines of packages installed already).
fn apt_would_upgrade() -> std::collections::BTreeSet<String> {
    let out = std::process::Command::new("apt-get")
        .args(["-s", "-o", "Debug::NoLocking=1", "dist-upgrade"])
        .env("LC_ALL", "C")
        .output()
        .expect("run apt-get");
    assert!(
        out.status.success(),
        "apt-get: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8(out.stdout)
        .expect("utf-8")
        .lines()
        .filter_map(|l| {
            // "Inst name [installed] (candidate origin [arch])"
            let rest = l.strip_prefix("Inst ")?;
            let (name, rest) = rest.split_once(' ')?;
            rest.starts_with('[').then_some(())?;
            let candidate = rest.split_once('(')?.1.split_whitespace().next()?;
            Some(format!("{name} {candidate}"))
        })
        .collect()
}

async fn enrolled_agent_reports_and_the_ui_shows_it(db: TestDb) {
    let dir = tempfile::tempdir().expect("tempdir");
    let backend = Backend::start_in(&dir.path().join("backend"), &db);
    let api = backend.api_token();
    let password = backend.cli_ok(&[
        "user",
        "create",
        "admin",
        "--role",
        "admin",
        "--password-is-final",
    ]);
    let token = backend.token(&["--max-per-day", "5", "--expires", "1h"]);

    let state = dir.path().join("agent");
    let out = enroll(&backend.server(), &token, &state);
    assert!(
        out.status.success(),
        "enroll failed: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    let agent_id = String::from_utf8(out.stdout)
        .expect("utf-8")
        .trim()
        .to_owned();
    assert_eq!(agent_id.len(), 36, "agent id is a UUID: {agent_id:?}");

    let start = now_ms();
    let agent = Agent::start(&state);
    let client = Https::new(&backend);
    let host = online_with_metrics(&client, &api, start).await;

    // The JSON API, field by field.
    assert_eq!(host["id"], agent_id.as_str());
    let hostname = std::fs::read_to_string("/proc/sys/kernel/hostname")
        .expect("hostname")
        .trim()
        .to_owned();
    assert_eq!(host["hostname"], hostname.as_str());
    assert_eq!(host["transport"], "quic");
    assert!(
        host["os"].as_str().is_some_and(|s| !s.is_empty()),
        "os: {host}"
    );
    assert!(host["last_seen"].as_str().is_some(), "last_seen: {host}");
    let m = &host["metrics"];
    assert!(
        m["memory_total_bytes"].as_u64().is_some_and(|v| v > 0),
        "metrics: {m}"
    );
    assert!(
        m["cpu_percent"]
            .as_f64()
            .is_some_and(|v| (0.0..=100.0).contains(&v)),
        "metrics: {m}"
    );
    assert!(
        m["uptime_seconds"].as_u64().is_some_and(|v| v > 0),
        "metrics: {m}"
    );
    assert!(
        m["filesystems"].as_array().is_some_and(|f| !f.is_empty()),
        "metrics: {m}"
    );

    let one = client
        .get(&format!("/api/v1/hosts/{agent_id}"), Some(&api))
        .await;
    assert_eq!(one.status, 200);
    assert_eq!(one.json()["id"], agent_id.as_str());
    assert_eq!(
        client.get("/api/v1/hosts", None).await.status,
        401,
        "the API needs authentication"
    );

    // All four processes report healthy through the platform.
    let health = eventually("agent health with three healthy children", || async {
        let h = client
            .get(&format!("/api/v1/hosts/{agent_id}"), Some(&api))
            .await
            .json();
        let children = h["agent_health"]["children"].as_array()?.clone();
        (children.len() == 3 && children.iter().all(|c| c["healthy"] == true)).then_some(children)
    })
    .await;
    let roles: Vec<&str> = health.iter().filter_map(|c| c["role"].as_str()).collect();
    assert_eq!(roles, ["collector", "monitor", "control"]);

    // The package inventory, read by the sandboxed collector from this
    // machine's own dpkg database and apt lists (read-only), as dpkg and
    // apt themselves see them.
    let packages = eventually("the host's package inventory", || async {
        let r = client
            .get(&format!("/api/v1/hosts/{agent_id}/packages"), Some(&api))
            .await;
        (r.status == 200).then(|| r.json())
    })
    .await;
    assert_eq!(packages["manager"], "dpkg", "{}", packages["manager"]);
    let reported: std::collections::BTreeSet<String> = packages["installed"]
        .as_array()
        .expect("installed")
        .iter()
        .map(|p| {
            format!(
                "{}:{} {}",
                p["name"].as_str().expect("a string"),
                p["arch"].as_str().expect("a string"),
                p["version"].as_str().expect("a string")
            )
        })
        .collect();
    assert_eq!(
        reported,
        dpkg_installed(),
        "installed packages as dpkg-query lists them"
    );
    let pending: std::collections::BTreeSet<String> = packages["updates"]
        .as_array()
        .expect("updates")
        .iter()
        .filter(|u| u["status"] == "pending")
        .map(|u| {
            format!(
                "{} {}",
                u["name"].as_str().expect("a string"),
                u["candidate"].as_str().expect("a string")
            )
        })
        .collect();
    assert_eq!(
        pending,
        apt_would_upgrade(),
        "pending updates as apt-get -s dist-upgrade plans them"
    );

    // The web UI, as a browser without JavaScript sees it.
    let ui = Https::new(&backend);
    let redirect = ui.get("/hosts", None).await;
    assert_eq!(redirect.status, 303, "no session: redirect to login");
    let login = ui.login("admin", &password).await;
    assert_eq!(login.status, 303, "login: {}", login.text());
    let list = ui.get("/hosts", None).await;
    assert_eq!(list.status, 200);
    let html = list.text();
    assert!(html.contains(&hostname), "host list shows the hostname");
    assert!(html.contains("Online"), "host list shows the host online");
    assert!(html.contains("QUIC"), "host list shows the transport");
    let detail = ui.get(&format!("/hosts/{agent_id}"), None).await;
    assert_eq!(detail.status, 200);
    let html = detail.text();
    assert!(html.contains(&hostname));
    assert!(html.contains("collector") && html.contains("monitor") && html.contains("control"));
    assert!(html.contains("Load"), "detail shows metrics");
    drop(agent);
}

async fn enrollment_refusals_create_no_host(db: TestDb) {
    let dir = tempfile::tempdir().expect("tempdir");
    let backend = Backend::start_in(&dir.path().join("backend"), &db);
    let api = backend.api_token();
    let client = Https::new(&backend);
    let server = backend.server();
    let mut n = 0;
    let mut refused = |token: &str, expect: &str| {
        n += 1;
        let out = enroll(&server, token, &dir.path().join(format!("agent-{n}")));
        let stderr = String::from_utf8_lossy(&out.stderr).into_owned();
        assert!(!out.status.success(), "enrollment with {expect} must fail");
        assert!(stderr.contains(expect), "expected {expect:?} in: {stderr}");
    };

    // Unknown: right shape, wrong id/secret, right pin.
    let good = backend.token(&[]);
    let pin = good.rsplit('.').next().expect("pin").to_owned();
    refused(
        &format!("0000000000000000.AAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAA.{pin}"),
        "unknown token",
    );
    // A right id with a wrong secret is just as unknown.
    let id = good.split('.').next().expect("id");
    refused(
        &format!("{id}.AAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAA.{pin}"),
        "unknown token",
    );

    let revoked = backend.token(&[]);
    backend.cli_ok(&["token", "revoke", revoked.split('.').next().expect("id")]);
    refused(&revoked, "revoked");

    let expired = backend.token(&["--expires", "1s"]);
    // Time has to pass for a token to expire; nothing to wait on but the clock.
    std::thread::sleep(Duration::from_millis(1100));
    refused(&expired, "expired");

    let elsewhere = backend.token(&["--cidr", "10.0.0.0/8", "--cidr", "fd00::/8"]);
    refused(&elsewhere, "address not allowed");

    let once = backend.token(&["--max-per-day", "1"]);
    let ok = enroll(&server, &once, &dir.path().join("first"));
    assert!(
        ok.status.success(),
        "first use: {}",
        String::from_utf8_lossy(&ok.stderr)
    );
    refused(&once, "rate limited");

    // A token whose pin names another CA: refused by the agent before it sends anything.
    let other_pin = "00".repeat(32);
    let mismatched = format!("{}.{}", good.rsplit_once('.').expect("pin").0, other_pin);
    refused(&mismatched, "does not match the CA pin");

    // Malformed requests straight to the endpoint.
    for body in [
        b"garbage".to_vec(),
        Vec::new(),
        vec![0x0a, 0xff, 0xff, 0xff, 0xff, 0x0f],
    ] {
        let resp = client
            .request(
                "POST",
                "/api/v1/enroll",
                &[("content-type", "application/x-protobuf")],
                body,
            )
            .await;
        assert_eq!(resp.status, 400);
        let err =
            palisade_proto::msg::decode_enroll_error(&resp.body).expect("an EnrollError body");
        assert_eq!(
            err.code,
            palisade_proto::pb::EnrollErrorCode::MalformedRequest as i32
        );
    }
    // A well-formed request with a garbage CSR and a valid token.
    let req = palisade_proto::pb::EnrollRequest {
        token: good.rsplit_once('.').expect("pin").0.to_owned(),
        csr_der: b"not a csr".to_vec(),
        hostname: "x".into(),
    };
    let resp = client
        .request(
            "POST",
            "/api/v1/enroll",
            &[],
            palisade_proto::frame::encode_body(&req).to_vec(),
        )
        .await;
    assert_eq!(resp.status, 400, "{}", resp.text());

    let listed = hosts(&client, &api).await;
    assert_eq!(
        listed.len(),
        1,
        "only the one successful enrollment created a host: {listed:?}"
    );
}

async fn agent_restart_keeps_identity_and_backend_restart_resumes(db: TestDb) {
    let dir = tempfile::tempdir().expect("tempdir");
    let mut backend = Backend::start_in(&dir.path().join("backend"), &db);
    let addr = backend.addr;
    let api = backend.api_token();
    let token = backend.token(&["--max-per-day", "1"]);
    let state = dir.path().join("agent");
    let out = enroll(&backend.server(), &token, &state);
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let agent_id = String::from_utf8(out.stdout)
        .expect("utf-8")
        .trim()
        .to_owned();

    let mut agent = Agent::start(&state);
    let client = Https::new(&backend);
    online_with_metrics(&client, &api, now_ms()).await;

    // Agent restart: same identity, no new enrollment (the token allows one a day).
    agent.stop(false);
    eventually("the host offline", || async {
        let hosts = hosts(&client, &api).await;
        (hosts.first()?["online"] == false).then_some(())
    })
    .await;
    let restarted = now_ms();
    let _agent = Agent::start(&state);
    let host = online_with_metrics(&client, &api, restarted).await;
    assert_eq!(host["id"], agent_id.as_str());
    assert_eq!(hosts(&client, &api).await.len(), 1);

    // Backend restart (killed hard) on the same address: the agent comes back by itself.
    backend.stop(true);
    let restarted = now_ms();
    let backend = Backend::start_db(&dir.path().join("backend"), &addr.to_string(), &[], &db);
    let client = Https::new(&backend);
    let host = online_with_metrics(&client, &api, restarted).await;
    assert_eq!(host["id"], agent_id.as_str());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn killed_child_is_restarted() {
    let dir = tempfile::tempdir().expect("tempdir");
    let backend = Backend::start(&dir.path().join("backend"));
    let api = backend.api_token();
    let token = backend.token(&[]);
    let state = dir.path().join("agent");
    assert!(enroll(&backend.server(), &token, &state).status.success());
    let agent = Agent::start(&state);
    let client = Https::new(&backend);
    online_with_metrics(&client, &api, now_ms()).await;

    let find = |name: &str| {
        agent_children(agent.pid())
            .into_iter()
            .find(|(_, program)| program == name)
            .map(|(pid, _)| pid)
    };
    let names: Vec<String> = agent_children(agent.pid())
        .into_iter()
        .map(|(_, n)| n)
        .collect();
    assert_eq!(names.len(), 3, "three children: {names:?}");
    for role in ["collector", "monitor", "control"] {
        let name = format!("palisade-agent-{role}");
        let old = eventually(&format!("{name} running"), || async { find(&name) }).await;
        signal(old, nix::sys::signal::Signal::SIGKILL);
        let new = eventually(&format!("{name} restarted"), || async {
            find(&name).filter(|p| *p != old)
        })
        .await;
        assert_ne!(new, old);
    }
    // Metrics keep flowing from the new collector, and the restarts are reported.
    online_with_metrics(&client, &api, now_ms()).await;
    let agent_id = hosts(&client, &api).await[0]["id"]
        .as_str()
        .expect("id")
        .to_owned();
    eventually("restart counts reported", || async {
        let h = client
            .get(&format!("/api/v1/hosts/{agent_id}"), Some(&api))
            .await
            .json();
        let children = h["agent_health"]["children"].as_array()?.clone();
        children
            .iter()
            .all(|c| c["restarts"].as_u64() >= Some(1) && c["healthy"] == true)
            .then_some(())
    })
    .await;
}

/// Revoking a host through the API closes its live connection at once; its
/// agent's certificate is refused from then on; both are audited.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_revoked_host_is_cut_off_and_refused() {
    let dir = tempfile::tempdir().expect("tempdir");
    let data = dir.path().join("backend");
    let backend = Backend::start(&data);
    let api = backend.api_token();
    let token = backend.token(&[]);
    let state = dir.path().join("agent");
    let out = enroll(&backend.server(), &token, &state);
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let agent_id = String::from_utf8(out.stdout)
        .expect("utf-8")
        .trim()
        .to_owned();
    let _agent = Agent::start(&state);
    let client = Https::new(&backend);
    online_with_metrics(&client, &api, now_ms()).await;

    let revoked = client
        .request(
            "POST",
            &format!("/api/v1/hosts/{agent_id}/revoke"),
            &[("authorization", &format!("Bearer {api}"))],
            Vec::new(),
        )
        .await;
    assert_eq!(revoked.status, 200, "{}", revoked.text());
    let host = client
        .get(&format!("/api/v1/hosts/{agent_id}"), Some(&api))
        .await
        .json();
    assert!(host["revoked_at"].is_string(), "{host}");
    // The live connection is gone within seconds (the registry closes it;
    // no new record is needed).
    let started = std::time::Instant::now();
    eventually("the revoked host offline", || async {
        let h = client
            .get(&format!("/api/v1/hosts/{agent_id}"), Some(&api))
            .await
            .json();
        (h["online"] == false).then_some(())
    })
    .await;
    assert!(
        started.elapsed() < Duration::from_secs(10),
        "took {:?}",
        started.elapsed()
    );
    // The agent keeps trying; the backend refuses its certificate.
    let log = data.with_extension("backend.log");
    eventually("a refused reconnection in the backend's log", || async {
        read_log(&log)
            .contains(&format!("agent {agent_id} has been revoked"))
            .then_some(())
    })
    .await;
    let last_seen = client
        .get(&format!("/api/v1/hosts/{agent_id}"), Some(&api))
        .await
        .json()["last_seen"]
        .clone();
    eventually("a second refused reconnection", || async {
        (read_log(&log)
            .matches(&format!("agent {agent_id} has been revoked"))
            .count()
            >= 2)
            .then_some(())
    })
    .await;
    let h = client
        .get(&format!("/api/v1/hosts/{agent_id}"), Some(&api))
        .await
        .json();
    assert_eq!(h["online"], false);
    assert_eq!(h["last_seen"], last_seen, "a refused agent is not seen");

    let audit = client
        .get(
            &format!("/api/v1/audit?target={agent_id}&limit=50"),
            Some(&api),
        )
        .await
        .json();
    let actions: Vec<&str> = audit["events"]
        .as_array()
        .expect("events")
        .iter()
        .filter_map(|e| e["action"].as_str())
        .collect();
    for wanted in ["host.revoke", "agent.disconnect", "agent.connect"] {
        assert!(actions.contains(&wanted), "{wanted} in {actions:?}");
    }
}

/// A copied agent identity (the state directory of an enrolled agent,
/// copied to a second place and started there): the backend keeps one
/// live connection per host, closes the older one each time, and reports
/// the identity in use from two places as a security event.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_copied_identity_is_one_connection_and_a_security_event() {
    let dir = tempfile::tempdir().expect("tempdir");
    let data = dir.path().join("backend");
    let backend = Backend::start(&data);
    let api = backend.api_token();
    let token = backend.token(&[]);
    let state = dir.path().join("agent");
    let out = enroll(&backend.server(), &token, &state);
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let agent_id = String::from_utf8(out.stdout)
        .expect("utf-8")
        .trim()
        .to_owned();
    let copy = dir.path().join("copy");
    let cp = std::process::Command::new("cp")
        .arg("-a")
        .arg(&state)
        .arg(&copy)
        .status()
        .expect("cp");
    assert!(cp.success());
    let _agent = Agent::start(&state);
    let client = Https::new(&backend);
    online_with_metrics(&client, &api, now_ms()).await;
    let _copy = Agent::start(&copy);

    let log = data.with_extension("backend.log");
    eventually("the older connection closed for the newer one", || async {
        read_log(&log)
            .contains(&format!(
                "a newer connection of agent {agent_id} took this one's place"
            ))
            .then_some(())
    })
    .await;
    let event = eventually("the duplicate identity audited", || async {
        let audit = client
            .get(
                &format!("/api/v1/audit?target={agent_id}&limit=200"),
                Some(&api),
            )
            .await
            .json();
        audit["events"].as_array().and_then(|events| {
            events
                .iter()
                .find(|e| e["action"] == "agent.identity_in_use_twice")
                .cloned()
        })
    })
    .await;
    assert_eq!(event["outcome"], "denied", "{event}");
    assert!(
        event["details"]["old_remote"].is_string() && event["details"]["new_remote"].is_string(),
        "{event}"
    );
    // Reported once however long the two keep taking turns.
    tokio::time::sleep(Duration::from_secs(3)).await;
    let audit = client
        .get(
            &format!("/api/v1/audit?target={agent_id}&limit=500"),
            Some(&api),
        )
        .await
        .json();
    let reports = audit["events"]
        .as_array()
        .expect("events")
        .iter()
        .filter(|e| e["action"] == "agent.identity_in_use_twice")
        .count();
    assert_eq!(reports, 1);
    let hosts = client.get("/api/v1/hosts", Some(&api)).await.json();
    assert_eq!(
        hosts["hosts"].as_array().map(Vec::len),
        Some(1),
        "still one host: {hosts}"
    );
}
