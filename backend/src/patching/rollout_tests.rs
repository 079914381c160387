//! Policies and rollouts through the API and the scheduler, with fake
//! agents: each host's connection queue stands for its agent, and their
//! results are stored the way the uplink stores them. (Real processes run
//! a rollout in `tests/patch_rollout.rs` and single runs in
//! `tests/patching.rs`; here it is the rollout's rules over several hosts.)

use std::collections::HashMap;
use std::net::SocketAddr;

use axum::Router;
use axum::body::Body;
use axum::http::{Request, StatusCode, header};
use palisade_packages::inventory::{Installed, Inventory, Manager, Status, Update};
use palisade_proto::msg::{CommandAction, Record, RecordBody, TypedCommand, decode_command};
use palisade_proto::pb;
use serde_json::Value;
use tokio::sync::mpsc;

use crate::audit::Action;
use crate::hosts::ingest::AgentRecord;
use crate::identity::auth::SESSION_COOKIE;
use crate::state::AppState;
use crate::uplink::Transport;
use crate::web::testing::{self, HOST, ORIGIN, T0};

const HOSTS: [(&str, &str); 3] = [
    ("11111111-4f7e-4d3a-9a55-0c1d2e3f4a5b", "web-1"),
    ("22222222-4f7e-4d3a-9a55-0c1d2e3f4a5b", "web-2"),
    ("33333333-4f7e-4d3a-9a55-0c1d2e3f4a5b", "web-3"),
];

struct Fleet {
    state: AppState,
    app: Router,
    queues: HashMap<&'static str, mpsc::Receiver<pb::SignedCommand>>,
    seq: u64,
    admin: String,
}

fn inventory() -> Inventory {
    let mut inventory = Inventory::empty(Manager::Dpkg);
    for (name, version) in [("openssl", "3.0.14-1"), ("vim", "9.0.1")] {
        inventory.insert_installed(Installed {
            name: name.into(),
            arch: "amd64".into(),
            version: version.into(),
            source: name.into(),
            held: false,
        });
    }
    for (name, installed, candidate, security) in [
        ("openssl", "3.0.14-1", "3.0.15-1", true),
        ("vim", "9.0.1", "9.0.2", false),
    ] {
        inventory.insert_update(Update {
            name: name.into(),
            arch: "amd64".into(),
            installed: installed.into(),
            candidate: candidate.into(),
            security,
            status: Status::Pending,
            detail: String::new(),
            origins: Vec::new(),
            advisories: Vec::new(),
            severity: String::new(),
            cves: Vec::new(),
        });
    }
    inventory
}

async fn store_inventory(state: &AppState, host: &'static str, seq: u64, inv: Inventory, at: i64) {
    let report = crate::packages::Report {
        collected_at: at,
        lists_updated_at: None,
        reboot: crate::packages::Reboot::default(),
    };
    state
        .db
        .write("test inventory", move |tx| {
            crate::packages::store::store(
                tx,
                host,
                seq,
                &crate::packages::Change::Whole(inv),
                &report,
            )
        })
        .await
        .expect("inventory");
}

impl Fleet {
    async fn new() -> Fleet {
        let state = testing::state();
        let mut queues = HashMap::new();
        for (id, name) in HOSTS {
            testing::enroll(&state, id, name, T0).await;
            store_inventory(&state, id, 1, inventory(), T0).await;
            let addr: SocketAddr = "127.0.0.1:1".parse().expect("addr");
            let (_conn, queue, _close) = state.registry.connected_with_commands(
                id,
                Transport::Quic,
                addr,
                crate::now_millis(),
            );
            queues.insert(id, queue);
        }
        let user = testing::create_user(&state, "ops", "pw", "admin").await;
        let admin = testing::session(&state, &user).await;
        let app = testing::app(&state);
        Fleet {
            state,
            app,
            queues,
            seq: 100,
            admin,
        }
    }

    async fn call(&self, method: &str, uri: &str, body: &str) -> (StatusCode, Value) {
        let reply = testing::send(
            &self.app,
            Request::builder()
                .method(method)
                .uri(uri)
                .header(header::HOST, HOST)
                .header(header::ORIGIN, ORIGIN)
                .header(header::COOKIE, format!("{SESSION_COOKIE}={}", self.admin))
                .header(header::CONTENT_TYPE, "application/json")
                .body(Body::from(body.to_owned()))
                .expect("request"),
        )
        .await;
        let json = serde_json::from_str(&reply.body).unwrap_or(Value::Null);
        (reply.status, json)
    }

    /// The commands host `i` received since the last look.
    fn received(&mut self, i: usize) -> Vec<TypedCommand> {
        let queue = self.queues.get_mut(HOSTS[i].0).expect("queue");
        let mut out = Vec::new();
        while let Ok(signed) = queue.try_recv() {
            out.push(decode_command(&signed.command).expect("a valid command"));
        }
        out
    }

    /// Host `i` reports a result, stored as the uplink stores it.
    async fn reports(&mut self, i: usize, result: pb::CommandResult) {
        let host = HOSTS[i].0;
        self.seq += 1;
        let records = vec![AgentRecord::from(&Record {
            seq: self.seq,
            created_at_unix_ms: T0,
            body: RecordBody::CommandResult(result),
        })];
        let now = crate::now_millis();
        self.state
            .db
            .write("test records", move |tx| {
                crate::hosts::ingest::store_records(tx, host, now, &records)
            })
            .await
            .expect("stored");
        super::start_approved(&self.state, host, now).await;
    }

    async fn tick(&self) {
        super::rollout::tick(&self.state, crate::now_millis()).await;
    }

    async fn rollout(&self, id: &str) -> Value {
        let (status, r) = self
            .call("GET", &format!("/api/v1/patch-rollouts/{id}"), "")
            .await;
        assert_eq!(status, StatusCode::OK, "{r}");
        r
    }
}

fn done(id: &str, status: pb::CommandStatus, changes: Vec<pb::PackageChange>) -> pb::CommandResult {
    pb::CommandResult {
        command_id: id.into(),
        status: status as i32,
        exit_code: if status == pb::CommandStatus::Succeeded {
            0
        } else {
            100
        },
        started_at_unix_ms: T0 + 10,
        finished_at_unix_ms: T0 + 20,
        changes,
        ..Default::default()
    }
}

fn openssl_change() -> Vec<pb::PackageChange> {
    vec![pb::PackageChange {
        name: "openssl".into(),
        arch: "amd64".into(),
        before: "3.0.14-1".into(),
        after: "3.0.15-1".into(),
    }]
}

fn upgrade(c: &TypedCommand) -> &palisade_proto::upgrade::Upgrade {
    match &c.action {
        CommandAction::UpgradePackages(u) => u,
        other => panic!("not an upgrade: {other:?}"),
    }
}

fn states(rollout: &Value) -> Vec<String> {
    rollout["runs"]
        .as_array()
        .expect("runs")
        .iter()
        .map(|r| r["state"].as_str().unwrap_or_default().to_owned())
        .collect()
}

fn policy_body(extra: &str) -> String {
    let hosts: Vec<String> = HOSTS.iter().map(|(id, _)| format!("{id:?}")).collect();
    format!(
        r#"{{"name":"weekly","host_ids":[{}],"selection":{{"kind":"security"}},"approval":"none"{extra}}}"#,
        hosts.join(",")
    )
}

/// Runs host `i` through a dry run and an upgrade that end with `status`.
async fn patch(f: &mut Fleet, i: usize, status: pb::CommandStatus) {
    let dry = f.received(i);
    assert_eq!(dry.len(), 1, "host {i}: one dry run, got {dry:?}");
    assert!(upgrade(&dry[0]).dry_run);
    f.reports(
        i,
        done(
            &dry[0].command_id,
            pb::CommandStatus::Succeeded,
            openssl_change(),
        ),
    )
    .await;
    let real = f.received(i);
    assert_eq!(real.len(), 1, "host {i}: the upgrade, got {real:?}");
    assert!(!upgrade(&real[0]).dry_run);
    f.reports(i, done(&real[0].command_id, status, openssl_change()))
        .await;
}

#[tokio::test]
async fn a_failed_canary_stops_the_rollout_before_any_other_host_changes() {
    let mut f = Fleet::new().await;
    let (status, policy) = f
        .call(
            "POST",
            "/api/v1/patch-policies",
            &policy_body(r#","canary":1,"concurrency":3"#),
        )
        .await;
    assert_eq!(status, StatusCode::CREATED, "{policy}");
    let id = policy["id"].as_str().expect("id");
    let (status, rollout) = f
        .call("POST", &format!("/api/v1/patch-policies/{id}/run"), "")
        .await;
    assert_eq!(status, StatusCode::CREATED, "{rollout}");
    let rid = rollout["id"].as_str().expect("rollout id").to_owned();
    // Hostname order: web-1 is the canary; it alone started.
    assert_eq!(
        states(&f.rollout(&rid).await),
        ["planning", "queued", "queued"]
    );
    assert!(f.received(1).is_empty() && f.received(2).is_empty());

    patch(&mut f, 0, pb::CommandStatus::Failed).await;
    f.tick().await;
    let r = f.rollout(&rid).await;
    assert_eq!(r["state"], "stopped", "{r}");
    assert!(
        r["stop_reason"]
            .as_str()
            .is_some_and(|m| m.contains("canary host") && m.contains(HOSTS[0].0)),
        "{r}"
    );
    assert_eq!(states(&r), ["failed", "skipped", "skipped"]);
    f.tick().await;
    assert!(
        f.received(1).is_empty() && f.received(2).is_empty(),
        "no other host got a command"
    );
    let audit = testing::audit(&f.state, 50).await;
    assert!(audit.iter().any(|e| e.action == Action::PatchRolloutStart));
    assert!(audit.iter().any(|e| e.action == Action::PatchPolicyCreate));
}

#[tokio::test]
async fn after_the_canary_hosts_go_in_parallel_up_to_the_limit_and_reboot_as_asked() {
    let mut f = Fleet::new().await;
    let (_, policy) = f
        .call(
            "POST",
            "/api/v1/patch-policies",
            &policy_body(
                r#","canary":1,"concurrency":2,"reboot":"always","max_failure_percent":50"#,
            ),
        )
        .await;
    let id = policy["id"].as_str().expect("id");
    let (_, rollout) = f
        .call("POST", &format!("/api/v1/patch-policies/{id}/run"), "")
        .await;
    let rid = rollout["id"].as_str().expect("rollout id").to_owned();

    patch(&mut f, 0, pb::CommandStatus::Succeeded).await;
    f.tick().await;
    // The canary's reboot: a typed, signed command of its own; the others
    // wait until it answered.
    let reboot = f.received(0);
    assert_eq!(reboot.len(), 1, "{reboot:?}");
    assert!(matches!(reboot[0].action, CommandAction::Reboot { .. }));
    let r = f.rollout(&rid).await;
    assert_eq!(states(&r), ["succeeded", "queued", "queued"]);
    assert_eq!(r["runs"][0]["reboot_state"], "issued");
    f.tick().await;
    assert!(
        f.received(1).is_empty(),
        "the canary's reboot has not answered"
    );

    f.reports(
        0,
        done(
            &reboot[0].command_id,
            pb::CommandStatus::Succeeded,
            Vec::new(),
        ),
    )
    .await;
    f.tick().await;
    // Both others start at once (concurrency 2).
    assert_eq!(
        states(&f.rollout(&rid).await),
        ["succeeded", "planning", "planning"]
    );
    patch(&mut f, 1, pb::CommandStatus::Succeeded).await;
    // One failure of three is under 50%: the rollout goes on.
    patch(&mut f, 2, pb::CommandStatus::Failed).await;
    f.tick().await;
    let reboots = f.received(1);
    assert!(matches!(
        reboots[..],
        [TypedCommand {
            action: CommandAction::Reboot { .. },
            ..
        }]
    ));
    assert!(f.received(2).is_empty(), "a failed run does not reboot");
    f.reports(
        1,
        done(
            &reboots[0].command_id,
            pb::CommandStatus::Succeeded,
            Vec::new(),
        ),
    )
    .await;
    f.tick().await;
    let r = f.rollout(&rid).await;
    assert_eq!(r["state"], "completed", "{r}");
    assert_eq!(states(&r), ["succeeded", "succeeded", "failed"]);
}

#[tokio::test]
async fn a_window_opening_makes_one_rollout_whichever_replica_looks() {
    let f = Fleet::new().await;
    let now = crate::now_millis();
    let utc = jiff::Timestamp::from_millisecond(now)
        .expect("now")
        .to_zoned(jiff::tz::TimeZone::UTC);
    let day = ["mon", "tue", "wed", "thu", "fri", "sat", "sun"]
        [usize::from(utc.weekday().to_monday_zero_offset().unsigned_abs())];
    // A window that opened at the start of this minute, for 10 minutes.
    let start = format!("{:02}:{:02}", utc.hour(), utc.minute());
    let window = format!(
        r#","window":{{"days":["{day}"],"start":"{start}","duration_minutes":10,"time_zone":"UTC"}}"#
    );
    let (status, body) = f
        .call("POST", "/api/v1/patch-policies", &policy_body(&window))
        .await;
    assert_eq!(status, StatusCode::CREATED, "{body}");
    // Two replicas scheduling at the same moment, and again later.
    let (a, b) = tokio::join!(
        super::rollout::schedule(&f.state, now),
        super::rollout::schedule(&f.state, now)
    );
    let made = a.expect("schedule").len() + b.expect("schedule").len();
    assert_eq!(made, 1, "one rollout for the window opening");
    let again = super::rollout::schedule(&f.state, now + 60_000)
        .await
        .expect("schedule");
    assert!(again.is_empty());
    let (_, list) = f.call("GET", "/api/v1/patch-rollouts", "").await;
    let rollouts = list["patch_rollouts"].as_array().expect("list");
    assert_eq!(rollouts.len(), 1, "{list}");
    assert_eq!(rollouts[0]["requested_by"], "system");
    assert!(rollouts[0]["occurrence"].is_string());
    // After the window closed, what did not start is skipped.
    let rid = rollouts[0]["id"].as_str().expect("id");
    super::rollout::tick(&f.state, now + 11 * 60_000).await;
    let r = f.rollout(rid).await;
    assert_eq!(r["state"], "completed", "{r}");
    assert!(states(&r).iter().all(|s| s == "skipped"), "{r}");
}

#[tokio::test]
async fn exclusions_holds_and_approval_by_age_shape_the_plan() {
    let mut f = Fleet::new().await;
    // web-1's vim update appeared just now; openssl's long ago (T0).
    let mut inv = inventory();
    inv.insert_update(Update {
        name: "curl".into(),
        arch: "amd64".into(),
        installed: "7.88.1-10".into(),
        candidate: "7.88.1-11".into(),
        security: false,
        status: Status::Pending,
        detail: String::new(),
        origins: Vec::new(),
        advisories: Vec::new(),
        severity: String::new(),
        cves: Vec::new(),
    });
    inv.insert_installed(Installed {
        name: "curl".into(),
        arch: "amd64".into(),
        version: "7.88.1-10".into(),
        source: "curl".into(),
        held: false,
    });
    store_inventory(&f.state, HOSTS[0].0, 2, inv, crate::now_millis()).await;
    let body = format!(
        r#"{{"name":"by age","host_ids":["{}"],"selection":{{"kind":"all"}},"exclude":["vi?"],"auto_approve_after_days":7}}"#,
        HOSTS[0].0
    );
    let (status, policy) = f.call("POST", "/api/v1/patch-policies", &body).await;
    assert_eq!(status, StatusCode::CREATED, "{policy}");
    let id = policy["id"].as_str().expect("id");
    let (_, rollout) = f
        .call("POST", &format!("/api/v1/patch-policies/{id}/run"), "")
        .await;
    let rid = rollout["id"].as_str().expect("rollout").to_owned();
    let dry = f.received(0);
    let u = upgrade(&dry[0]);
    // Not "all": vim is excluded by pattern, curl is younger than 7 days;
    // openssl, offered since T0, is planned at its candidate.
    assert!(!u.all);
    let names: Vec<(&str, &str)> = u
        .packages
        .iter()
        .map(|t| (t.name.as_str(), t.version.as_str()))
        .collect();
    assert_eq!(names, [("openssl", "3.0.15-1")]);
    // Approval by age: the plan runs without a person.
    f.reports(
        0,
        done(
            &dry[0].command_id,
            pb::CommandStatus::Succeeded,
            openssl_change(),
        ),
    )
    .await;
    let real = f.received(0);
    assert_eq!(real.len(), 1);
    assert!(!upgrade(&real[0]).dry_run);
    let r = f.rollout(&rid).await;
    assert_eq!(r["runs"][0]["state"], "running", "{r}");
    assert_eq!(r["runs"][0]["exclude"], serde_json::json!(["vi?"]));
}

#[tokio::test]
async fn policies_are_checked_scoped_and_shown() {
    let f = Fleet::new().await;
    for (body, says) in [
        (r#"{"name":"x","selection":{"kind":"all"}}"#, "no host"),
        (
            r#"{"name":"x","host_ids":["h"],"selection":{"kind":"all"},"window":{"days":["sat"],"start":"02:00","duration_minutes":60,"time_zone":"Nowhere/Else"}}"#,
            "time zone",
        ),
    ] {
        let (status, reply) = f.call("POST", "/api/v1/patch-policies", body).await;
        assert_eq!(status, StatusCode::BAD_REQUEST, "{reply}");
        assert!(
            reply["error"].as_str().is_some_and(|e| e.contains(says)),
            "{reply}"
        );
    }
    let (status, _) = f
        .call("POST", "/api/v1/patch-policies", &policy_body(""))
        .await;
    assert_eq!(status, StatusCode::CREATED);
    let (status, _) = f
        .call("POST", "/api/v1/patch-policies", &policy_body(""))
        .await;
    assert_eq!(status, StatusCode::CONFLICT, "names are unique");
    // A viewer may read policies but not create one.
    let viewer = testing::create_user(&f.state, "viewer", "pw", "viewer").await;
    let cookie = testing::session(&f.state, &viewer).await;
    let reply = testing::send(
        &f.app,
        Request::builder()
            .method("POST")
            .uri("/api/v1/patch-policies")
            .header(header::HOST, HOST)
            .header(header::ORIGIN, ORIGIN)
            .header(header::COOKIE, format!("{SESSION_COOKIE}={cookie}"))
            .body(Body::from(policy_body("")))
            .expect("request"),
    )
    .await;
    assert_eq!(reply.status, StatusCode::FORBIDDEN, "{}", reply.body);
    // The pages render the policy and a creation form, without JavaScript.
    let page = testing::send(
        &f.app,
        Request::get("/patch-policies")
            .header(header::HOST, HOST)
            .header(header::COOKIE, format!("{SESSION_COOKIE}={}", f.admin))
            .body(Body::empty())
            .expect("request"),
    )
    .await;
    assert_eq!(page.status, StatusCode::OK);
    assert!(page.body.contains("weekly") && page.body.contains("id=\"new-policy\""));
    assert!(
        page.body
            .contains(r#"<form method="post" action="/patch-policies" id="new-policy">"#)
    );
}

#[tokio::test]
async fn reboot_if_required_follows_what_the_host_said_after_the_upgrade() {
    let mut f = Fleet::new().await;
    let (_, policy) = f
        .call(
            "POST",
            "/api/v1/patch-policies",
            &policy_body(r#","concurrency":3,"reboot":"if_required","max_failure_percent":100"#),
        )
        .await;
    let id = policy["id"].as_str().expect("id");
    let (_, rollout) = f
        .call("POST", &format!("/api/v1/patch-policies/{id}/run"), "")
        .await;
    let rid = rollout["id"].as_str().expect("rollout id").to_owned();
    for (i, required) in [(0, Some(true)), (1, Some(false)), (2, None)] {
        let dry = f.received(i);
        f.reports(
            i,
            done(
                &dry[0].command_id,
                pb::CommandStatus::Succeeded,
                openssl_change(),
            ),
        )
        .await;
        let real = f.received(i);
        let mut result = done(
            &real[0].command_id,
            pb::CommandStatus::Succeeded,
            openssl_change(),
        );
        result.reboot_required = required;
        if i == 0 {
            result.restarts = vec![pb::ServiceRestart {
                unit: "nginx.service".into(),
                pids: vec![812, 813],
                files: vec!["/usr/lib/x86_64-linux-gnu/libssl.so.3".into()],
            }];
        }
        f.reports(i, result).await;
    }
    f.tick().await;
    let r = f.rollout(&rid).await;
    let runs = r["runs"].as_array().expect("runs");
    assert_eq!(runs[0]["reboot_required"], true, "{r}");
    assert_eq!(runs[0]["reboot_state"], "issued");
    assert_eq!(runs[0]["restarts"][0]["unit"], "nginx.service");
    assert_eq!(
        runs[0]["restarts"][0]["pids"],
        serde_json::json!([812, 813])
    );
    assert_eq!(runs[1]["reboot_state"], "not_needed");
    // The host could not tell: no reboot on a guess.
    assert_eq!(runs[2]["reboot_required"], serde_json::Value::Null);
    assert_eq!(runs[2]["reboot_state"], "not_needed");
    assert!(matches!(
        f.received(0)[..],
        [TypedCommand {
            action: CommandAction::Reboot { .. },
            ..
        }]
    ));
    assert!(f.received(1).is_empty() && f.received(2).is_empty());
}
