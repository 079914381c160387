//! Patch runs through the API, with a fake agent: its connection's command
//! queue stands for the agent, and its records are stored the way the
//! uplink stores them.

use std::net::SocketAddr;

use axum::Router;
use axum::body::Body;
use axum::http::{Request, StatusCode, header};
use palisade_packages::inventory::{Installed, Inventory, Manager, Status, Update};
use palisade_proto::msg::{
    CommandAction, Record, RecordBody, TypedCommand, command_signing_message, decode_command,
};
use palisade_proto::pb;
use ring::signature::{ED25519, UnparsedPublicKey};
use serde_json::Value;
use tokio::sync::mpsc;

use crate::audit::{Action, Actor, Outcome};
use crate::hosts::ingest::AgentRecord;
use crate::identity::auth::SESSION_COOKIE;
use crate::state::AppState;
use crate::uplink::Transport;
use crate::web::testing::{self, HOST, ORIGIN, T0};

const AGENT: &str = "6f1c2a52-4f7e-4d3a-9a55-0c1d2e3f4a5b";
/// A host that never reported packages.
const BARE: &str = "0b3c2a52-4f7e-4d3a-9a55-0c1d2e3f4a5b";

struct Fixture {
    state: AppState,
    app: Router,
    /// The fake agent's command queue.
    queue: mpsc::Receiver<pb::SignedCommand>,
    seq: u64,
}

fn update(name: &str, installed: &str, candidate: &str, security: bool, status: Status) -> Update {
    Update {
        name: name.into(),
        arch: "amd64".into(),
        installed: installed.into(),
        candidate: candidate.into(),
        security,
        status,
        detail: String::new(),
        origins: Vec::new(),
        advisories: Vec::new(),
        severity: String::new(),
        cves: Vec::new(),
    }
}

impl Fixture {
    async fn new() -> Fixture {
        let state = testing::state();
        testing::enroll(&state, AGENT, "web-1", T0).await;
        testing::enroll(&state, BARE, "bare-1", T0).await;
        let mut inventory = Inventory::empty(Manager::Dpkg);
        for (name, version) in [
            ("openssl", "3.0.14-1"),
            ("curl", "7.88.1-10"),
            ("vim", "9.0.1"),
        ] {
            inventory.insert_installed(Installed {
                name: name.into(),
                arch: "amd64".into(),
                version: version.into(),
                source: name.into(),
                held: false,
            });
        }
        inventory.insert_update(update(
            "openssl",
            "3.0.14-1",
            "3.0.15-1",
            true,
            Status::Pending,
        ));
        inventory.insert_update(update("curl", "7.88.1-10", "7.88.1-11", true, Status::Held));
        inventory.insert_update(update("vim", "9.0.1", "9.0.2", false, Status::Pending));
        let report = crate::packages::Report {
            collected_at: T0,
            lists_updated_at: None,
            reboot: crate::packages::Reboot::default(),
        };
        state
            .db
            .write("test inventory", move |tx| {
                crate::packages::store::store(
                    tx,
                    AGENT,
                    1,
                    &crate::packages::Change::Whole(inventory),
                    &report,
                )
            })
            .await
            .expect("inventory");
        let addr: SocketAddr = "127.0.0.1:1".parse().expect("addr");
        let (_conn, queue, _close) = state.registry.connected_with_commands(
            AGENT,
            Transport::Quic,
            addr,
            crate::now_millis(),
        );
        let app = testing::app(&state);
        Fixture {
            state,
            app,
            queue,
            seq: 100,
        }
    }

    async fn session(&self, name: &str, role: &str) -> String {
        let user = testing::create_user(&self.state, name, "pw", role).await;
        testing::session(&self.state, &user).await
    }

    async fn call(&self, method: &str, uri: &str, cookie: &str, body: &str) -> (StatusCode, Value) {
        let reply = testing::send(
            &self.app,
            Request::builder()
                .method(method)
                .uri(uri)
                .header(header::HOST, HOST)
                .header(header::ORIGIN, ORIGIN)
                .header(header::COOKIE, format!("{SESSION_COOKIE}={cookie}"))
                .header(header::CONTENT_TYPE, "application/json")
                .body(Body::from(body.to_owned()))
                .expect("request"),
        )
        .await;
        let json = serde_json::from_str(&reply.body).unwrap_or(Value::Null);
        (reply.status, json)
    }

    async fn page(&self, uri: &str, cookie: &str) -> String {
        let reply = testing::send(
            &self.app,
            Request::get(uri)
                .header(header::HOST, HOST)
                .header(header::COOKIE, format!("{SESSION_COOKIE}={cookie}"))
                .body(Body::empty())
                .expect("request"),
        )
        .await;
        assert_eq!(reply.status, StatusCode::OK, "{uri}: {}", reply.body);
        reply.body
    }

    /// The next command the agent received, verified and decoded.
    fn received(&mut self) -> TypedCommand {
        let signed = self.queue.try_recv().expect("a command was delivered");
        let key = UnparsedPublicKey::new(&ED25519, self.state.pki.signing_public_key());
        key.verify(&command_signing_message(&signed.command), &signed.signature)
            .expect("signed by the backend");
        decode_command(&signed.command).expect("a valid command")
    }

    /// Stores records from the agent as the uplink does (then starts what
    /// was approved without a person, as the uplink does after a batch).
    async fn agent_sends(&mut self, bodies: Vec<RecordBody>) {
        let records: Vec<AgentRecord> = bodies
            .into_iter()
            .map(|body| {
                self.seq += 1;
                AgentRecord::from(&Record {
                    seq: self.seq,
                    created_at_unix_ms: T0,
                    body,
                })
            })
            .collect();
        let now = crate::now_millis();
        self.state
            .db
            .write("test records", move |tx| {
                crate::hosts::ingest::store_records(tx, AGENT, now, &records)
            })
            .await
            .expect("stored");
        super::start_approved(&self.state, AGENT, now).await;
    }
}

fn change(name: &str, before: &str, after: &str) -> pb::PackageChange {
    pb::PackageChange {
        name: name.into(),
        arch: "amd64".into(),
        before: before.into(),
        after: after.into(),
    }
}

fn result(id: &str, status: pb::CommandStatus, changes: Vec<pb::PackageChange>) -> RecordBody {
    RecordBody::CommandResult(pb::CommandResult {
        command_id: id.into(),
        status: status as i32,
        exit_code: 0,
        started_at_unix_ms: T0 + 10,
        finished_at_unix_ms: T0 + 20,
        changes,
        ..Default::default()
    })
}

fn output(id: &str, offset: u64, text: &str) -> RecordBody {
    RecordBody::CommandOutput(pb::CommandOutput {
        command_id: id.into(),
        offset,
        text: text.into(),
    })
}

fn upgrade(command: &TypedCommand) -> palisade_proto::upgrade::Upgrade {
    match &command.action {
        CommandAction::UpgradePackages(u) => u.clone(),
        other => panic!("not an upgrade: {other:?}"),
    }
}

const SECURITY: &str =
    r#"{"host_id":"6f1c2a52-4f7e-4d3a-9a55-0c1d2e3f4a5b","selection":{"kind":"security"}}"#;

#[tokio::test]
async fn a_run_is_planned_approved_by_another_user_streamed_and_recorded() {
    let mut f = Fixture::new().await;
    let bob = f.session("bob", "admin").await;
    let carol = f.session("carol", "admin").await;

    let (status, run) = f.call("POST", "/api/v1/patch-runs", &bob, SECURITY).await;
    assert_eq!(status, StatusCode::CREATED, "{run}");
    assert_eq!(run["state"], "planning");
    assert_eq!(run["approval"], "other_user");
    assert_eq!(run["requested_by"], "user:bob");
    let id = run["id"].as_str().expect("id").to_owned();

    // The dry run reached the agent: the pending security update only
    // (not the held one, not the non-security one), simulated.
    let dry = f.received();
    assert_eq!(
        Some(dry.command_id.as_str()),
        run["dry_run_command_id"].as_str()
    );
    let u = upgrade(&dry);
    assert!(u.dry_run && u.refresh_index && !u.all);
    assert_eq!(u.manager, Manager::Dpkg);
    assert_eq!(u.packages.len(), 1);
    assert_eq!(
        (u.packages[0].name.as_str(), u.packages[0].version.as_str()),
        ("openssl", "3.0.15-1")
    );

    f.agent_sends(vec![result(
        &dry.command_id,
        pb::CommandStatus::Succeeded,
        vec![
            change("openssl", "3.0.14-1", "3.0.15-1"),
            change("libssl3", "3.0.14-1", "3.0.15-1"),
            change("oldlib", "1.0", ""),
        ],
    )])
    .await;
    let (_, run) = f
        .call("GET", &format!("/api/v1/patch-runs/{id}"), &bob, "")
        .await;
    assert_eq!(run["state"], "awaiting_approval", "{run}");
    assert_eq!(run["plan"].as_array().map(Vec::len), Some(3));

    // Four eyes: the requester may not approve, and the attempt is audited.
    let (status, body) = f
        .call(
            "POST",
            &format!("/api/v1/patch-runs/{id}/approve"),
            &bob,
            "",
        )
        .await;
    assert_eq!(status, StatusCode::FORBIDDEN, "{body}");
    assert!(
        body["error"]
            .as_str()
            .is_some_and(|e| e.contains("another user")),
        "{body}"
    );
    let audit = testing::audit(&f.state, 1).await;
    assert_eq!(
        (audit[0].action, audit[0].outcome),
        (Action::PatchRunApprove, Outcome::Denied)
    );
    assert!(f.queue.try_recv().is_err(), "nothing was issued");

    let (status, run) = f
        .call(
            "POST",
            &format!("/api/v1/patch-runs/{id}/approve"),
            &carol,
            "",
        )
        .await;
    assert_eq!(status, StatusCode::OK, "{run}");
    assert_eq!(run["state"], "running");
    assert_eq!(run["approved_by"], "user:carol");
    // What runs is what was approved: the plan's packages at its versions.
    let real = f.received();
    assert_eq!(Some(real.command_id.as_str()), run["command_id"].as_str());
    let u = upgrade(&real);
    assert!(!u.dry_run && !u.refresh_index && !u.all);
    let pinned: Vec<(&str, &str, &str)> = u
        .packages
        .iter()
        .map(|t| (t.name.as_str(), t.arch.as_str(), t.version.as_str()))
        .collect();
    assert_eq!(
        pinned,
        [
            ("libssl3", "amd64", "3.0.15-1"),
            ("openssl", "amd64", "3.0.15-1")
        ]
    );
    let (status, _) = f
        .call(
            "POST",
            &format!("/api/v1/patch-runs/{id}/approve"),
            &carol,
            "",
        )
        .await;
    assert_eq!(status, StatusCode::CONFLICT, "approved once");

    // Output streams while it runs; a resent piece is stored once; a piece
    // after a gap waits for the one in flight.
    f.agent_sends(vec![
        output(&real.command_id, 0, "Unpacking openssl\n"),
        output(&real.command_id, 18, "Setting up openssl\n"),
        output(&real.command_id, 18, "Setting up openssl\n"),
        output(&real.command_id, 60, "later\n"),
    ])
    .await;
    let (status, out) = f
        .call(
            "GET",
            &format!("/api/v1/patch-runs/{id}/output?from=0"),
            &carol,
            "",
        )
        .await;
    assert_eq!(status, StatusCode::OK, "{out}");
    assert_eq!(out["text"], "Unpacking openssl\nSetting up openssl\n");
    assert_eq!(out["next"], 37);
    assert_eq!(out["complete"], false);
    let (_, out) = f
        .call(
            "GET",
            &format!("/api/v1/patch-runs/{id}/output?from=37"),
            &carol,
            "",
        )
        .await;
    assert_eq!(out["text"], "");
    let page = f.page(&format!("/patch-runs/{id}"), &carol).await;
    assert!(page.contains(r#"<meta http-equiv="refresh" content="2">"#));
    assert!(
        page.contains("<pre id=\"output\">Unpacking openssl\nSetting up openssl\n</pre>"),
        "{page}"
    );

    f.agent_sends(vec![result(
        &real.command_id,
        pb::CommandStatus::Succeeded,
        vec![
            change("openssl", "3.0.14-1", "3.0.15-1"),
            change("libssl3", "3.0.14-1", "3.0.15-1"),
            change("oldlib", "1.0", ""),
        ],
    )])
    .await;
    let (_, run) = f
        .call("GET", &format!("/api/v1/patch-runs/{id}"), &carol, "")
        .await;
    assert_eq!(run["state"], "succeeded", "{run}");
    assert_eq!(run["changes"][2]["before"], "1.0");
    assert_eq!(run["changes"][2]["after"], "");
    assert_eq!(run["exit_code"], 0);
    assert!(run["finished_at"].is_string());
    assert!(
        run["output"]["text"]
            .as_str()
            .is_some_and(|t| t.starts_with("Unpacking"))
    );
    let audit = testing::audit(&f.state, 1).await;
    assert_eq!(audit[0].action, Action::PatchRunFinish);
    assert_eq!(audit[0].actor, Actor::Agent(AGENT.into()));
    let page = f.page(&format!("/patch-runs/{id}"), &carol).await;
    assert!(
        !page.contains("http-equiv=\"refresh\""),
        "a finished run stops refreshing"
    );
    assert!(page.contains("(removed)"));
    let list = f.page("/patch-runs", &carol).await;
    assert!(list.contains(&id));
    let (_, listed) = f
        .call("GET", "/api/v1/patch-runs?state=succeeded", &carol, "")
        .await;
    assert_eq!(listed["patch_runs"].as_array().map(Vec::len), Some(1));
}

#[tokio::test]
async fn runs_are_cancelled_before_and_while_running() {
    let mut f = Fixture::new().await;
    let alice = f.session("alice", "operator").await;
    let bob = f.session("bob", "admin").await;

    // Before it runs: cancelled at once, and a late dry run is ignored.
    let (_, run) = f.call("POST", "/api/v1/patch-runs", &alice, SECURITY).await;
    let id = run["id"].as_str().expect("id").to_owned();
    let dry = f.received();
    let (status, run) = f
        .call(
            "POST",
            &format!("/api/v1/patch-runs/{id}/cancel"),
            &alice,
            "",
        )
        .await;
    assert_eq!(status, StatusCode::OK, "{run}");
    assert_eq!(run["state"], "cancelled");
    assert_eq!(run["cancelled_by"], "user:alice");
    f.agent_sends(vec![result(
        &dry.command_id,
        pb::CommandStatus::Succeeded,
        vec![change("openssl", "1", "2")],
    )])
    .await;
    let (_, run) = f
        .call("GET", &format!("/api/v1/patch-runs/{id}"), &alice, "")
        .await;
    assert_eq!(run["state"], "cancelled");
    let (status, _) = f
        .call(
            "POST",
            &format!("/api/v1/patch-runs/{id}/cancel"),
            &alice,
            "",
        )
        .await;
    assert_eq!(status, StatusCode::CONFLICT);

    // Approval "any": the requester (an admin) approves it; cancelling the
    // running upgrade sends a cancel command naming it.
    let body = SECURITY.replace("}}", r#"},"approval":"any"}"#);
    let (status, run) = f.call("POST", "/api/v1/patch-runs", &bob, &body).await;
    assert_eq!(status, StatusCode::CREATED, "{run}");
    let id = run["id"].as_str().expect("id").to_owned();
    let dry = f.received();
    f.agent_sends(vec![result(
        &dry.command_id,
        pb::CommandStatus::Succeeded,
        vec![change("openssl", "3.0.14-1", "3.0.15-1")],
    )])
    .await;
    let (status, _) = f
        .call(
            "POST",
            &format!("/api/v1/patch-runs/{id}/approve"),
            &bob,
            "",
        )
        .await;
    assert_eq!(status, StatusCode::OK);
    let real = f.received();
    let (status, run) = f
        .call(
            "POST",
            &format!("/api/v1/patch-runs/{id}/cancel"),
            &alice,
            "",
        )
        .await;
    assert_eq!(status, StatusCode::OK, "{run}");
    assert_eq!(run["state"], "running", "it ends when the agent says so");
    let cancel = f.received();
    assert_eq!(
        cancel.action,
        CommandAction::Cancel {
            command_id: real.command_id.clone()
        }
    );
    f.agent_sends(vec![result(
        &real.command_id,
        pb::CommandStatus::Cancelled,
        Vec::new(),
    )])
    .await;
    let (_, run) = f
        .call("GET", &format!("/api/v1/patch-runs/{id}"), &alice, "")
        .await;
    assert_eq!(run["state"], "cancelled", "{run}");
    assert_eq!(run["changes"], serde_json::json!([]));

    // Approval "none": the plan runs as soon as it is in.
    let body = SECURITY.replace("}}", r#"},"approval":"none"}"#);
    let (status, run) = f.call("POST", "/api/v1/patch-runs", &alice, &body).await;
    assert_eq!(status, StatusCode::CREATED, "{run}");
    let id = run["id"].as_str().expect("id").to_owned();
    let dry = f.received();
    f.agent_sends(vec![result(
        &dry.command_id,
        pb::CommandStatus::Succeeded,
        vec![change("openssl", "3.0.14-1", "3.0.15-1")],
    )])
    .await;
    let (_, run) = f
        .call("GET", &format!("/api/v1/patch-runs/{id}"), &alice, "")
        .await;
    assert_eq!(run["state"], "running", "{run}");
    assert_eq!(upgrade(&f.received()).packages[0].version, "3.0.15-1");
}

#[tokio::test]
async fn refusals_say_why_and_nothing_is_issued() {
    let mut f = Fixture::new().await;
    let vera = f.session("vera", "viewer").await;
    let alice = f.session("alice", "operator").await;

    let (status, _) = f.call("POST", "/api/v1/patch-runs", &vera, SECURITY).await;
    assert_eq!(status, StatusCode::FORBIDDEN);
    let bare = SECURITY.replace(AGENT, BARE);
    let (status, body) = f.call("POST", "/api/v1/patch-runs", &alice, &bare).await;
    assert_eq!(status, StatusCode::CONFLICT, "{body}");
    assert!(
        body["error"]
            .as_str()
            .is_some_and(|e| e.contains("package inventory"))
    );
    let (status, body) = f
        .call(
            "POST",
            "/api/v1/patch-runs",
            &alice,
            &SECURITY.replace(
                r#"{"kind":"security"}"#,
                r#"{"kind":"packages","packages":["nginx"]}"#,
            ),
        )
        .await;
    assert_eq!(status, StatusCode::BAD_REQUEST, "{body}");
    assert!(
        body["error"]
            .as_str()
            .is_some_and(|e| e.contains("not installed")),
        "{body}"
    );
    let (status, body) = f
        .call(
            "POST",
            "/api/v1/patch-runs",
            &alice,
            &SECURITY.replace("}}", r#"},"timeout_secs":0}"#),
        )
        .await;
    assert_eq!(status, StatusCode::BAD_REQUEST, "{body}");
    // The generic command endpoint points at patch runs.
    let (status, body) = f
        .call(
            "POST",
            &format!("/api/v1/hosts/{AGENT}/commands"),
            &alice,
            r#"{"type":"upgrade_packages"}"#,
        )
        .await;
    assert_eq!(status, StatusCode::BAD_REQUEST);
    assert!(
        body["error"]
            .as_str()
            .is_some_and(|e| e.contains("/api/v1/patch-runs")),
        "{body}"
    );
    // An operator may not approve (nor skip approval).
    let (status, run) = f.call("POST", "/api/v1/patch-runs", &alice, SECURITY).await;
    assert_eq!(status, StatusCode::CREATED);
    let id = run["id"].as_str().expect("id").to_owned();
    let (status, _) = f
        .call(
            "POST",
            &format!("/api/v1/patch-runs/{id}/approve"),
            &alice,
            "",
        )
        .await;
    assert_eq!(status, StatusCode::FORBIDDEN);
    let dry = f.received();
    // Approval of a run still planning: 409.
    let bob = f.session("bob", "admin").await;
    let (status, _) = f
        .call(
            "POST",
            &format!("/api/v1/patch-runs/{id}/approve"),
            &bob,
            "",
        )
        .await;
    assert_eq!(status, StatusCode::CONFLICT);
    assert!(f.queue.try_recv().is_err());
    // No security update pending any more: 409.
    f.agent_sends(vec![result(
        &dry.command_id,
        pb::CommandStatus::Failed,
        Vec::new(),
    )])
    .await;
    let (_, run) = f
        .call("GET", &format!("/api/v1/patch-runs/{id}"), &alice, "")
        .await;
    assert_eq!(run["state"], "failed");
    // The host page offers the form to those who may patch, not to viewers.
    assert!(
        f.page(&format!("/hosts/{AGENT}"), &alice)
            .await
            .contains("/patch\"")
    );
    assert!(
        !f.page(&format!("/hosts/{AGENT}"), &vera)
            .await
            .contains("/patch\"")
    );
}

#[tokio::test]
async fn connected_hosts_with_stale_indexes_are_asked_to_refresh_them_once() {
    let mut f = Fixture::new().await;
    // The fixture's host reported an inventory whose indexes were never
    // refreshed; its agent is connected.
    let now = T0 + 60_000;
    let asked = super::refresh::sweep(&f.state, now).await.expect("sweep");
    assert_eq!(asked, [AGENT]);
    let command = f.received();
    assert_eq!(command.action, CommandAction::RefreshInventory);
    // Asked once per interval, whatever the answer.
    let again = super::refresh::sweep(&f.state, now + 60_000)
        .await
        .expect("sweep");
    assert!(again.is_empty(), "{again:?}");
    assert!(f.queue.try_recv().is_err(), "nothing more was sent");
}
