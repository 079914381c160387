//! Signed commands end to end: a real backend and a real agent (four
//! processes); commands issued through the API (`POST
//! /api/v1/hosts/{id}/commands`), signed by the backend, carried over the
//! uplink, verified and run by control, and their results stored.

mod support;

use palisade_backend::audit::{Action, Actor, Outcome};
use support::*;

on_both_databases!(commands_issued_through_the_api_run_on_the_agent_and_their_results_are_stored);

const UNIT: &str = "palisade-test-nonexistent.service";

/// POSTs a JSON body, authenticated by `bearer` or by the client's session
/// cookie (then with our origin, as a browser's form would be).
async fn post_command(
    client: &Https,
    backend: &Backend,
    host_id: &str,
    bearer: Option<&str>,
    body: &str,
) -> Response {
    let auth = bearer.map(|t| format!("Bearer {t}"));
    let origin = format!("https://{}", backend.addr);
    let mut headers = vec![
        ("content-type", "application/json"),
        ("user-agent", "commands-e2e/1"),
    ];
    match &auth {
        Some(a) => headers.push(("authorization", a.as_str())),
        None => headers.push(("origin", origin.as_str())),
    }
    client
        .request(
            "POST",
            &format!("/api/v1/hosts/{host_id}/commands"),
            &headers,
            body.as_bytes().to_vec(),
        )
        .await
}

/// Waits until command `id` has a result; returns it as the API shows it.
async fn finished(client: &Https, api: &str, id: &str) -> serde_json::Value {
    eventually(&format!("a result for command {id}"), || async {
        let resp = client
            .get(&format!("/api/v1/commands/{id}"), Some(api))
            .await;
        assert_eq!(resp.status, 200, "GET command: {}", resp.text());
        let command = resp.json();
        matches!(
            command["status"].as_str(),
            Some("succeeded" | "failed" | "rejected")
        )
        .then_some(command)
    })
    .await
}

async fn commands_issued_through_the_api_run_on_the_agent_and_their_results_are_stored(db: TestDb) {
    let dir = tempfile::tempdir().expect("tempdir");
    let backend = Backend::start_in(&dir.path().join("backend"), &db);
    let api = backend.api_token();
    let api_id = api.split('.').next().expect("token id").to_owned();
    let operator_password = backend.cli_ok(&[
        "user",
        "create",
        "otto",
        "--role",
        "operator",
        "--password-is-final",
    ]);
    let viewer_password = backend.cli_ok(&[
        "user",
        "create",
        "vera",
        "--role",
        "viewer",
        "--password-is-final",
    ]);
    let token = backend.token(&["--expires", "1h"]);

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
    assert!(
        state.join("control/pin").is_file(),
        "enrollment pins the key for control"
    );

    let client = Https::new(&backend);

    // Refusals first: no caller, a caller whose role may not, a bad body,
    // an unknown host.
    let anonymous = post_command(&client, &backend, &agent_id, None, r#"{"type":"ping"}"#).await;
    assert_eq!(anonymous.status, 401, "{}", anonymous.text());
    let viewer = Https::new(&backend);
    assert_eq!(viewer.login("vera", &viewer_password).await.status, 303);
    let denied = post_command(&viewer, &backend, &agent_id, None, r#"{"type":"ping"}"#).await;
    assert_eq!(denied.status, 403, "{}", denied.text());
    let bad = post_command(
        &client,
        &backend,
        &agent_id,
        Some(&api),
        r#"{"type":"restart_service","unit":"nginx"}"#,
    )
    .await;
    assert_eq!(bad.status, 400, "{}", bad.text());
    assert!(
        bad.json()["error"]
            .as_str()
            .is_some_and(|e| e.contains("invalid unit"))
    );
    let unknown = post_command(
        &client,
        &backend,
        "00000000-0000-4000-8000-000000000000",
        Some(&api),
        r#"{"type":"ping"}"#,
    )
    .await;
    assert_eq!(unknown.status, 404, "{}", unknown.text());

    // Issued while the agent is offline: pending, delivered when it connects.
    let issued = post_command(
        &client,
        &backend,
        &agent_id,
        Some(&api),
        r#"{"type":"ping"}"#,
    )
    .await;
    assert_eq!(issued.status, 202, "{}", issued.text());
    let ping = issued.json();
    assert_eq!(ping["status"], "pending");
    let ping_id = ping["id"].as_str().expect("id").to_owned();

    let _agent = Agent::start(&state);
    let ping = finished(&client, &api, &ping_id).await;
    assert_eq!(ping["status"], "succeeded", "{ping}");
    assert_eq!(ping["output"], "pong");
    assert_eq!(ping["exit_code"], 0);
    assert_eq!(ping["requested_by"], format!("api-token:{api_id}"));
    for time in [
        "issued_at",
        "delivered_at",
        "started_at",
        "finished_at",
        "result_received_at",
    ] {
        assert!(ping[time].is_string(), "{time}: {ping}");
    }

    // A service restart asked by an operator's browser session. systemd is
    // not PID 1 here, so systemctl fails: a FAILED result with systemctl's
    // exit code and message (SUCCEEDED or another failure where it runs).
    let operator = Https::new(&backend);
    assert_eq!(operator.login("otto", &operator_password).await.status, 303);
    let body = format!(r#"{{"type":"restart_service","unit":"{UNIT}","expires_in_secs":120}}"#);
    let issued = post_command(&operator, &backend, &agent_id, None, &body).await;
    assert_eq!(issued.status, 202, "{}", issued.text());
    let restart_id = issued.json()["id"].as_str().expect("id").to_owned();
    let restart = finished(&client, &api, &restart_id).await;
    assert_eq!(restart["requested_by"], "user:otto");
    assert_eq!(restart["payload"]["unit"], UNIT);
    match restart["status"].as_str() {
        Some("succeeded") => assert_eq!(restart["exit_code"], 0),
        Some("failed") => {
            assert!(
                restart["exit_code"].as_i64().is_some_and(|c| c != 0),
                "{restart}"
            );
            let said = format!("{}{}", restart["output"], restart["error"]);
            assert!(said.len() > 10, "systemctl said something: {restart}");
        }
        _ => panic!("the restart must have run, not been refused: {restart}"),
    }
    assert!(restart["started_at"].is_string() && restart["finished_at"].is_string());

    // Newest first on the host.
    let list = client
        .get(&format!("/api/v1/hosts/{agent_id}/commands"), Some(&api))
        .await;
    assert_eq!(list.status, 200);
    let ids: Vec<String> = list.json()["commands"]
        .as_array()
        .expect("commands")
        .iter()
        .filter_map(|c| c["id"].as_str().map(str::to_owned))
        .collect();
    assert_eq!(ids, [restart_id.clone(), ping_id.clone()]);

    // And the host page shows them.
    let page = operator.get(&format!("/hosts/{agent_id}"), None).await;
    assert_eq!(page.status, 200);
    let html = page.text();
    assert!(html.contains(UNIT) && html.contains("pong"), "{html}");

    // The audit log names who asked, from where, and what: and it is intact.
    let db = backend.db().await;
    let events = db
        .read("audit", |tx| {
            palisade_backend::audit::store::latest(tx, 100)
        })
        .await
        .expect("audit");
    let created: Vec<_> = events
        .iter()
        .filter(|e| e.action == Action::CommandCreate && e.outcome == Outcome::Success)
        .collect();
    assert_eq!(created.len(), 2, "{events:?}");
    let by_otto = created
        .iter()
        .find(|e| e.actor == Actor::User("otto".into()))
        .expect("the operator's command is audited");
    assert_eq!(by_otto.target.as_deref(), Some(agent_id.as_str()));
    assert_eq!(by_otto.details["command_id"], restart_id.as_str());
    assert_eq!(by_otto.source_ip.as_deref(), Some("127.0.0.1"));
    assert_eq!(by_otto.user_agent.as_deref(), Some("commands-e2e/1"));
    assert!(
        created
            .iter()
            .any(|e| e.actor == Actor::ApiToken(api_id.clone()))
    );
    assert!(
        events.iter().any(|e| e.action == Action::AccessDenied
            && e.outcome == Outcome::Denied
            && e.actor == Actor::User("vera".into())),
        "the viewer's attempt is audited too"
    );
    assert!(
        !events.iter().any(|e| matches!(
            e.action,
            Action::CommandRefusedUnverified | Action::CommandUnmatchedResult
        )),
        "nothing was refused by control: {events:?}"
    );
    assert_eq!(
        db.read("verify", palisade_backend::audit::store::verify)
            .await
            .expect("verify"),
        None
    );
}
