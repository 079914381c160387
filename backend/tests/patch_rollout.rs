//! A patch policy's rollout over two hosts, canary first, through real
//! processes: a real backend (its scheduler ticking as in production) and
//! two real agents, each managing a private apt/dpkg root of its own with
//! its own repository (`support::patch_host`), and the real apt-get and
//! dpkg.
//!
//! Both hosts have pal-sec 1.0 installed and a security update to 1.1
//! offered. On the canary, 1.1's maintainer script fails, as a broken
//! update does. The policy: both hosts, security updates, no approval, one
//! canary, two hosts at a time.
//! 1. The canary's run fails with dpkg's error; the rollout stops with a
//!    reason naming the canary; the other host's run is skipped, no upgrade
//!    command was ever issued to it, its dpkg database still has 1.0 and
//!    its inventory still offers the update.
//! 2. The vendor publishes a fixed 1.2 for the canary; the policy runs
//!    again: the canary upgrades alone (concurrency 2 notwithstanding),
//!    then the other host; both succeed, the rollout completes, both dpkg
//!    databases have the new version and neither inventory has a security
//!    update pending.
//!
//! The canary is the first host in hostname order, then host id. Both
//! agents are named after this machine, so the test enrolls both first,
//! orders them as the backend does, and only then builds the roots: the
//! broken update goes to the canary by construction.
//!
//! Needs root (the agents' sandbox, and dpkg chroots into the roots to run
//! maintainer scripts), apt, dpkg-deb and apt-ftparchive; without them it
//! says so and passes, except under `CI=true`, where it fails.

mod support;

use std::path::PathBuf;

use serde_json::{Value, json};
use support::patch_host::{self, FAILING_PREINST, SLOW_PREINST};
use support::*;

on_both_databases!(a_failed_canary_stops_the_rollout_and_a_fixed_one_lets_it_through);

/// The fixed update's maintainer script: quick, so the second rollout takes
/// one slow upgrade (the other host's 1.1) rather than two.
const FIXED_PREINST: &str = "echo 'pal-sec 1.2 preinst: configuration migrated'";

/// One enrolled host: its agent's state, its root and repository.
struct Host {
    id: String,
    hostname: String,
    /// Where `patch_host` makes its repository and root.
    dir: PathBuf,
    state: PathBuf,
    root: PathBuf,
}

async fn post(client: &Https, bearer: &str, path: &str, body: Value) -> Response {
    let auth = format!("Bearer {bearer}");
    client
        .request(
            "POST",
            path,
            &[
                ("content-type", "application/json"),
                ("authorization", auth.as_str()),
            ],
            body.to_string().into_bytes(),
        )
        .await
}

async fn get_json(client: &Https, bearer: &str, path: &str) -> Value {
    let resp = client.get(path, Some(bearer)).await;
    assert_eq!(resp.status, 200, "GET {path}: {}", resp.text());
    resp.json()
}

fn update<'a>(packages: &'a Value, name: &str) -> Option<&'a Value> {
    packages["updates"]
        .as_array()?
        .iter()
        .find(|u| u["name"] == name)
}

fn str_field<'a>(value: &'a Value, field: &str) -> &'a str {
    value[field].as_str().unwrap_or_default()
}

/// (host, state) of each run of a rollout, in rollout order.
fn run_states(rollout: &Value) -> Vec<(String, String)> {
    rollout["runs"]
        .as_array()
        .expect("runs")
        .iter()
        .map(|r| {
            (
                str_field(r, "host_id").to_owned(),
                str_field(r, "state").to_owned(),
            )
        })
        .collect()
}

fn timestamp(run: &Value, field: &str) -> jiff::Timestamp {
    str_field(run, field)
        .parse()
        .unwrap_or_else(|e| panic!("{field} of {run}: {e}"))
}

/// The kinds of the commands issued to `host_id`, oldest first.
async fn command_kinds(client: &Https, bearer: &str, host_id: &str) -> Vec<String> {
    let list = get_json(client, bearer, &format!("/api/v1/hosts/{host_id}/commands")).await;
    let mut kinds: Vec<String> = list["commands"]
        .as_array()
        .expect("commands")
        .iter()
        .map(|c| str_field(c, "type").to_owned())
        .collect();
    kinds.reverse();
    kinds
}

/// Refreshes the host's indexes through control and waits until its
/// inventory offers pal-sec at `candidate`, as a security update.
async fn refresh_until_offered(client: &Https, bearer: &str, host: &Host, candidate: &str) {
    let refresh = post(
        client,
        bearer,
        &format!("/api/v1/hosts/{}/commands", host.id),
        json!({"type": "refresh_inventory"}),
    )
    .await;
    assert_eq!(refresh.status, 202, "refresh: {}", refresh.text());
    let path = format!("/api/v1/hosts/{}/packages", host.id);
    let packages = eventually(
        &format!("pal-sec {candidate} offered to {}", host.id),
        || async {
            let resp = client.get(&path, Some(bearer)).await;
            if resp.status != 200 {
                return None;
            }
            let packages = resp.json();
            update(&packages, "pal-sec")
                .is_some_and(|u| u["candidate"] == candidate)
                .then_some(packages)
        },
    )
    .await;
    let sec = update(&packages, "pal-sec").expect("pal-sec");
    assert_eq!(sec["security"], true, "{sec}");
    assert_eq!(sec["status"], "pending", "{sec}");
}

/// Runs the policy now; returns the rollout as the answer shows it.
async fn run_policy(client: &Https, bearer: &str, policy_id: &str) -> Value {
    let created = post(
        client,
        bearer,
        &format!("/api/v1/patch-policies/{policy_id}/run"),
        json!({}),
    )
    .await;
    assert_eq!(created.status, 201, "run the policy: {}", created.text());
    created.json()
}

/// Polls the rollout until it ended, checking on every look that no
/// other host's run started before the canary's ended.
async fn until_ended(client: &Https, bearer: &str, rollout_id: &str, canary: &Host) -> Value {
    let path = format!("/api/v1/patch-rollouts/{rollout_id}");
    eventually("the rollout's end", || async {
        let rollout = get_json(client, bearer, &path).await;
        let runs = run_states(&rollout);
        assert_eq!(
            runs[0].0, canary.id,
            "the first host by hostname, then id, is not the canary: {rollout}"
        );
        let canary_going = matches!(
            runs[0].1.as_str(),
            "queued" | "planning" | "awaiting_approval" | "approved" | "running"
        );
        assert!(
            !canary_going || runs[1..].iter().all(|(_, s)| s == "queued"),
            "a host started while the canary was still going: {rollout}"
        );
        (rollout["state"] != "running").then_some(rollout)
    })
    .await
}

async fn a_failed_canary_stops_the_rollout_and_a_fixed_one_lets_it_through(db: TestDb) {
    if !palisade_testkit::apt::can_manage_roots() {
        return;
    }
    let dir = tempfile::tempdir().expect("tempdir");
    // The agents' users must reach the roots below (tempdirs are 0700).
    {
        use std::os::unix::fs::PermissionsExt;
        std::fs::set_permissions(dir.path(), std::fs::Permissions::from_mode(0o755))
            .expect("chmod");
    }
    let backend = Backend::start_in(&dir.path().join("backend"), &db);
    let api = backend.api_token();
    let client = Https::new(&backend);
    let enrollment = backend.token(&["--max-per-day", "5", "--expires", "1h"]);

    // Enroll both, then order them as the rollout will: by hostname, then
    // by id.
    let mut hosts = Vec::new();
    for name in ["host-a", "host-b"] {
        let host_dir = dir.path().join(name);
        std::fs::create_dir_all(&host_dir).expect("mkdir");
        let state = host_dir.join("agent");
        let out = enroll(&backend.server(), &enrollment, &state);
        assert!(
            out.status.success(),
            "enroll: {}",
            String::from_utf8_lossy(&out.stderr)
        );
        let id = String::from_utf8(out.stdout)
            .expect("utf-8")
            .trim()
            .to_owned();
        let root = host_dir.join("root");
        hosts.push(Host {
            id,
            hostname: String::new(),
            dir: host_dir,
            state,
            root,
        });
    }
    for listed in support::hosts(&client, &api).await {
        if let Some(host) = hosts.iter_mut().find(|h| listed["id"] == h.id.as_str()) {
            host.hostname = str_field(&listed, "hostname").to_owned();
        }
    }
    hosts.sort_by(|a, b| (&a.hostname, &a.id).cmp(&(&b.hostname, &b.id)));
    let [canary, other] = <[Host; 2]>::try_from(hosts).unwrap_or_else(|_| unreachable!());
    assert!(!canary.hostname.is_empty() && !other.hostname.is_empty());

    // The broken update is the canary's alone.
    assert_eq!(
        patch_host::make_with(&canary.dir, FAILING_PREINST),
        canary.root
    );
    assert_eq!(patch_host::make_with(&other.dir, SLOW_PREINST), other.root);
    let _agents = [&canary, &other].map(|h| patch_host::start_agent(&h.state, &h.root));
    for host in [&canary, &other] {
        refresh_until_offered(&client, &api, host, "1.1").await;
    }

    let policy = post(
        &client,
        &api,
        "/api/v1/patch-policies",
        json!({
            "name": "security, canary first",
            "host_ids": [canary.id, other.id],
            "selection": {"kind": "security"},
            "approval": "none",
            "canary": 1,
            "concurrency": 2,
        }),
    )
    .await;
    assert_eq!(policy.status, 201, "policy: {}", policy.text());
    let policy_id = str_field(&policy.json(), "id").to_owned();

    // 1. The broken update: the canary fails, nobody else is touched.
    let rollout = run_policy(&client, &api, &policy_id).await;
    assert_eq!(
        run_states(&rollout),
        [
            (canary.id.clone(), "planning".to_owned()),
            (other.id.clone(), "queued".to_owned())
        ],
        "the canary alone starts at once: {rollout}"
    );
    let rollout = until_ended(&client, &api, str_field(&rollout, "id"), &canary).await;
    assert_eq!(rollout["state"], "stopped", "{rollout}");
    let reason = str_field(&rollout, "stop_reason");
    assert!(
        reason.contains(&format!("canary host {} failed", canary.id)),
        "{rollout}"
    );
    assert_eq!(
        run_states(&rollout),
        [
            (canary.id.clone(), "failed".to_owned()),
            (other.id.clone(), "skipped".to_owned())
        ],
        "{rollout}"
    );
    let skipped = &rollout["runs"][1];
    assert!(
        str_field(skipped, "error").contains("the rollout stopped"),
        "{skipped}"
    );
    assert!(skipped["command_id"].is_null(), "{skipped}");
    assert!(skipped["dry_run_command_id"].is_null(), "{skipped}");

    // The canary's run holds the package manager's own words.
    let failed_id = str_field(&rollout["runs"][0], "id");
    let failed = get_json(&client, &api, &format!("/api/v1/patch-runs/{failed_id}")).await;
    assert_eq!(failed["exit_code"], 100, "apt-get's failure code: {failed}");
    assert!(
        str_field(&failed, "error").contains("exited with status 100"),
        "{failed}"
    );
    assert_eq!(failed["changes"], json!([]), "{failed}");
    let output = failed["output"]["text"].as_str().expect("the run's output");
    for said in [
        "cannot migrate /etc/pal-sec (broken update)",
        "pre-installation script subprocess returned error exit status 1",
    ] {
        assert!(output.contains(said), "{said:?} not in: {output}");
    }
    // dpkg put the canary back where it was.
    assert_eq!(
        patch_host::installed_version(&canary.root, "pal-sec").as_deref(),
        Some("1.0")
    );

    // The other host got no upgrade, not even a dry run; its packages and
    // its inventory are as before.
    assert_eq!(
        command_kinds(&client, &api, &other.id).await,
        ["refresh_inventory"]
    );
    assert_eq!(
        command_kinds(&client, &api, &canary.id).await,
        ["refresh_inventory", "upgrade_packages", "upgrade_packages"],
        "the canary's dry run and upgrade"
    );
    assert_eq!(
        patch_host::installed_version(&other.root, "pal-sec").as_deref(),
        Some("1.0")
    );
    let packages = get_json(
        &client,
        &api,
        &format!("/api/v1/hosts/{}/packages", other.id),
    )
    .await;
    let sec = update(&packages, "pal-sec").expect("pal-sec still offered");
    assert_eq!(
        (&sec["status"], &sec["candidate"]),
        (&json!("pending"), &json!("1.1")),
        "{sec}"
    );

    // 2. The vendor fixes the update; the rollout goes through, canary
    // first.
    patch_host::publish_security(&canary.dir, "1.2", FIXED_PREINST);
    refresh_until_offered(&client, &api, &canary, "1.2").await;
    let rollout = run_policy(&client, &api, &policy_id).await;
    let rollout = until_ended(&client, &api, str_field(&rollout, "id"), &canary).await;
    assert_eq!(rollout["state"], "completed", "{rollout}");
    assert!(rollout["stop_reason"].is_null(), "{rollout}");
    assert_eq!(
        run_states(&rollout),
        [
            (canary.id.clone(), "succeeded".to_owned()),
            (other.id.clone(), "succeeded".to_owned())
        ],
        "{rollout}"
    );
    let runs = &rollout["runs"];
    // Both agents run on this machine's clock.
    assert!(
        timestamp(&runs[1], "started_at") >= timestamp(&runs[0], "finished_at"),
        "the other host's upgrade started before the canary's ended: {rollout}"
    );
    for (run, host, after) in [(&runs[0], &canary, "1.2"), (&runs[1], &other, "1.1")] {
        assert_eq!(
            run["changes"],
            json!([{"name": "pal-sec", "arch": "all", "before": "1.0", "after": after}]),
            "{run}"
        );
        assert_eq!(
            patch_host::installed_version(&host.root, "pal-sec").as_deref(),
            Some(after)
        );
        let path = format!("/api/v1/hosts/{}/packages", host.id);
        let packages = eventually("the inventory after the rollout", || async {
            let packages = get_json(&client, &api, &path).await;
            update(&packages, "pal-sec").is_none().then_some(packages)
        })
        .await;
        let security: Vec<&Value> = packages["updates"]
            .as_array()
            .expect("updates")
            .iter()
            .filter(|u| u["security"] == true)
            .collect();
        assert!(security.is_empty(), "{}: {security:?}", host.id);
        // The normal update was not the policy's to take.
        assert_eq!(
            update(&packages, "pal-plain").expect("pal-plain")["status"],
            "pending"
        );
    }
}
