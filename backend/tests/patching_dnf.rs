//! A patch run end to end on an rpm host, through real processes: a real
//! backend, a real agent (four processes, sandboxed as root) managing a
//! private rpm root the test made, and the real dnf and rpm
//! (`dnf --installroot`). The dnf counterpart of `patching.rs`.
//!
//! The root has a local repository made with `createrepo_c` whose
//! `updateinfo.xml` carries a security advisory (Important, one CVE) for
//! pal-sec 1.1, whose `%pre` scriptlet takes a few seconds and prints as
//! it goes; pal-plain has a normal update and pal-excluded one that
//! `dnf.conf` excludes (see `support::patch_host::dnf`). Then: control runs
//! `dnf makecache` on a refresh → the collector reads dnf's cache in the
//! root and the inventory shows pal-sec's update flagged security with the
//! advisory's id, severity and CVE → a patch run for security updates
//! plans exactly it in a dry run (`dnf repoquery --upgrades`) → the
//! requester cannot approve it, a second operator does → the signed
//! command runs `dnf upgrade pal-sec-1.1-1.noarch` through control →
//! output reaches the API while the run is still running → the record
//! holds the before/after versions read from the rpm database → the
//! inventory shows no security update pending, and the normal and excluded
//! ones untouched.
//!
//! Needs root (the agent's sandbox, and rpm chroots into the root to run
//! scriptlets), rpm, rpmbuild, createrepo_c, modifyrepo_c and dnf; without
//! them it says so and passes, except under `CI=true`, where it fails.

mod support;

use serde_json::{Value, json};
use support::patch_host::{self, dnf};
use support::*;

on_both_databases!(a_dnf_security_patch_run_is_planned_approved_streamed_and_recorded);

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

fn installed(packages: &Value) -> Vec<(String, String)> {
    packages["installed"]
        .as_array()
        .expect("installed")
        .iter()
        .map(|p| {
            (
                p["name"].as_str().unwrap_or_default().to_owned(),
                p["version"].as_str().unwrap_or_default().to_owned(),
            )
        })
        .collect()
}

async fn a_dnf_security_patch_run_is_planned_approved_streamed_and_recorded(db: TestDb) {
    if !palisade_testkit::rpm::can_manage_roots() {
        return;
    }
    let dir = tempfile::tempdir().expect("tempdir");
    let root = dnf::make(dir.path());
    let backend = Backend::start_in(&dir.path().join("backend"), &db);
    let requester = backend.api_token();
    let approver = backend.cli_ok(&["api-token", "create", "approver", "--role", "admin"]);
    let token = backend.token(&["--max-per-day", "5", "--expires", "1h"]);
    let state = dir.path().join("agent");
    let out = enroll(&backend.server(), &token, &state);
    assert!(
        out.status.success(),
        "enroll: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    let host_id = String::from_utf8(out.stdout)
        .expect("utf-8")
        .trim()
        .to_owned();
    let agent = patch_host::start_agent(&state, &root);
    let client = Https::new(&backend);
    let packages_path = format!("/api/v1/hosts/{host_id}/packages");

    // The inventory arrives from the root's rpm database, without updates:
    // dnf has cached no metadata yet.
    let packages = eventually("the root's inventory", || async {
        let resp = client.get(&packages_path, Some(&requester)).await;
        (resp.status == 200).then(|| resp.json())
    })
    .await;
    assert_eq!(packages["manager"], "rpm", "{packages}");
    let mut names: Vec<String> = installed(&packages).into_iter().map(|(n, _)| n).collect();
    names.sort();
    let mut expected: Vec<&str> = dnf::INSTALLED.to_vec();
    expected.sort_unstable();
    assert_eq!(names, expected, "{packages}");
    assert_eq!(packages["updates"].as_array().map(Vec::len), Some(0));

    // Control refreshes dnf's cache; the collector reads it, advisories
    // included.
    let refresh = post(
        &client,
        &requester,
        &format!("/api/v1/hosts/{host_id}/commands"),
        json!({"type": "refresh_inventory"}),
    )
    .await;
    assert_eq!(refresh.status, 202, "refresh: {}", refresh.text());
    let packages = eventually("the security update in the inventory", || async {
        let packages = get_json(&client, &requester, &packages_path).await;
        update(&packages, "pal-sec").is_some().then_some(packages)
    })
    .await;
    let sec = update(&packages, "pal-sec").expect("pal-sec");
    assert_eq!(sec["security"], true, "{sec}");
    assert_eq!(sec["status"], "pending", "{sec}");
    assert_eq!(sec["arch"], "noarch", "{sec}");
    assert_eq!(sec["installed"], "1.0-1", "{sec}");
    assert_eq!(sec["candidate"], "1.1-1", "{sec}");
    assert_eq!(sec["advisories"], json!([dnf::ADVISORY]), "{sec}");
    assert_eq!(sec["severity"], "Important", "{sec}");
    assert_eq!(sec["cves"], json!([dnf::CVE]), "{sec}");
    assert_eq!(sec["origins"], json!(["pal"]), "{sec}");
    let plain = update(&packages, "pal-plain").expect("pal-plain");
    assert_eq!(plain["security"], false, "{plain}");
    assert_eq!(plain["status"], "pending", "{plain}");
    assert_eq!(plain["advisories"], json!([]), "{plain}");
    let excluded = update(&packages, "pal-excluded").expect("pal-excluded");
    assert_eq!(excluded["status"], "excluded", "{excluded}");

    // A patch run for the security updates: the dry run plans exactly one.
    let created = post(
        &client,
        &requester,
        "/api/v1/patch-runs",
        json!({"host_id": host_id, "selection": {"kind": "security"}}),
    )
    .await;
    assert_eq!(created.status, 201, "create: {}", created.text());
    let run_id = created.json()["id"].as_str().expect("id").to_owned();
    let run_path = format!("/api/v1/patch-runs/{run_id}");
    let run = eventually("the dry run's plan", || async {
        let run = get_json(&client, &requester, &run_path).await;
        assert!(
            matches!(
                run["state"].as_str(),
                Some("planning" | "awaiting_approval")
            ),
            "{run}"
        );
        (run["state"] == "awaiting_approval").then_some(run)
    })
    .await;
    let plan: Vec<(String, String, String)> = run["plan"]
        .as_array()
        .expect("plan")
        .iter()
        .map(|c| {
            (
                c["name"].as_str().unwrap_or_default().to_owned(),
                c["before"].as_str().unwrap_or_default().to_owned(),
                c["after"].as_str().unwrap_or_default().to_owned(),
            )
        })
        .collect();
    assert_eq!(
        plan,
        [("pal-sec".into(), "1.0-1".into(), "1.1-1".into())],
        "{run}"
    );

    // Four eyes: the requester cannot approve it; another operator can.
    let own = post(
        &client,
        &requester,
        &format!("{run_path}/approve"),
        json!({}),
    )
    .await;
    assert_eq!(own.status, 403, "self-approval: {}", own.text());
    let approved = post(
        &client,
        &approver,
        &format!("{run_path}/approve"),
        json!({}),
    )
    .await;
    assert_eq!(approved.status, 200, "approve: {}", approved.text());

    // Output reaches the API while the run is still running: dnf's own
    // lines as it starts the transaction, while the scriptlet sleeps (dnf
    // prints a scriptlet's output only once the scriptlet has ended).
    let partial = eventually("output while the run is running", || async {
        let run = get_json(&client, &requester, &run_path).await;
        let output = get_json(&client, &requester, &format!("{run_path}/output?from=0")).await;
        let text = output["text"].as_str().unwrap_or_default().to_owned();
        assert!(
            run["state"] == "running" || run["state"] == "approved",
            "the run ended before any output was seen: {run} {output}"
        );
        (run["state"] == "running" && text.contains("Running transaction")).then_some(text)
    })
    .await;
    assert!(
        partial.contains("upgrade pal-sec-1.1-1.noarch"),
        "the pinned version: {partial}"
    );
    assert!(!partial.contains("Complete!"), "{partial}");

    let run = eventually("the run's end", || async {
        let run = get_json(&client, &requester, &run_path).await;
        (!matches!(run["state"].as_str(), Some("approved" | "running"))).then_some(run)
    })
    .await;
    assert_eq!(run["state"], "succeeded", "{run}");
    assert_eq!(run["exit_code"], 0, "{run}");
    let changes = run["changes"].as_array().expect("changes");
    assert_eq!(changes.len(), 1, "{run}");
    assert_eq!(changes[0]["name"], "pal-sec");
    assert_eq!(changes[0]["before"], "1.0-1");
    assert_eq!(changes[0]["after"], "1.1-1");
    assert_ne!(run["requested_by"], run["approved_by"], "{run}");
    for field in ["requested_at", "approved_at", "started_at", "finished_at"] {
        assert!(run[field].is_string(), "{field}: {run}");
    }
    assert_eq!(run["output"]["complete"], true, "{run}");
    let output = run["output"]["text"]
        .as_str()
        .expect("output with read_output");
    assert!(output.contains("pal-sec pre step 6"), "{output}");
    assert!(output.contains("Upgraded:"), "{output}");
    assert!(output.contains("Complete!"), "{output}");

    // The inventory follows: nothing security pending, the rest untouched.
    let packages = eventually("the inventory after the run", || async {
        let packages = get_json(&client, &requester, &packages_path).await;
        update(&packages, "pal-sec").is_none().then_some(packages)
    })
    .await;
    let installed = installed(&packages);
    for (name, version) in [
        ("pal-sec", "1.1-1"),
        ("pal-plain", "1.0-1"),
        ("pal-excluded", "1.0-1"),
    ] {
        assert!(
            installed.contains(&(name.into(), version.into())),
            "{name} {version}: {installed:?}"
        );
    }
    assert!(
        !packages["updates"]
            .as_array()
            .expect("updates")
            .iter()
            .any(|u| u["security"] == true),
        "{packages}"
    );
    assert_eq!(
        update(&packages, "pal-plain").expect("plain")["status"],
        "pending"
    );
    assert_eq!(
        update(&packages, "pal-excluded").expect("excluded")["status"],
        "excluded"
    );

    let list = get_json(
        &client,
        &requester,
        &format!("/api/v1/patch-runs?host_id={host_id}"),
    )
    .await;
    let ids: Vec<&str> = list["patch_runs"]
        .as_array()
        .expect("patch_runs")
        .iter()
        .filter_map(|r| r["id"].as_str())
        .collect();
    assert_eq!(ids, [run_id.as_str()]);
    drop(agent);
}
