//! Issue 11 in the browser: a patch run started from the host page, its
//! approval step (the requester is told another user must approve; a
//! second operator approves), and the run's page showing the output grow
//! while the run is in progress, then the record of what changed. The
//! host is a real agent managing a private apt/dpkg root
//! (`support::patch_host`); its security update's maintainer script takes
//! six seconds and prints as it goes.

use serde_json::json;

use crate::Site;
use crate::harness::Browser;
use crate::support::{eventually, patch_host};

/// The run's state as its page shows it, or `None` while the page reloads.
async fn state(browser: &Browser) -> Option<String> {
    let badge = browser.all("#state").await.into_iter().next()?;
    badge.text().await.ok()
}

/// The output as the page shows it (empty when there is none yet).
async fn output(browser: &Browser) -> Option<String> {
    let pre = browser.all("#output").await.into_iter().next()?;
    pre.text().await.ok()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_patch_run_is_approved_by_another_user_and_its_output_grows_on_its_page() {
    if !palisade_testkit::apt::can_manage_roots() {
        return;
    }
    let Some(site) = Site::start(
        "a_patch_run_is_approved_by_another_user_and_its_output_grows_on_its_page",
        "",
    ) else {
        return;
    };
    let ada_password = site.user("ada", "operator", None);
    let bob_password = site.user("bob", "admin", None);
    let root = patch_host::make(site.dir.path());
    let host = site.enroll_host("alpha");
    let agent = patch_host::start_agent(&site.dir.path().join("agent-alpha"), &root);

    // The host's indexes are refreshed through the API; the inventory
    // then shows the pending security update.
    let api = site.backend.api_token();
    let client = crate::support::Https::new(&site.backend);
    let auth = format!("Bearer {api}");
    eventually("the host's inventory", || async {
        let resp = client
            .get(&format!("/api/v1/hosts/{host}/packages"), Some(&api))
            .await;
        (resp.status == 200).then_some(())
    })
    .await;
    let refresh = client
        .request(
            "POST",
            &format!("/api/v1/hosts/{host}/commands"),
            &[
                ("content-type", "application/json"),
                ("authorization", auth.as_str()),
            ],
            json!({"type": "refresh_inventory"})
                .to_string()
                .into_bytes(),
        )
        .await;
    assert_eq!(refresh.status, 202, "{}", refresh.text());
    eventually("the security update in the inventory", || async {
        let packages = client
            .get(&format!("/api/v1/hosts/{host}/packages"), Some(&api))
            .await
            .json();
        packages["updates"]
            .as_array()
            .is_some_and(|u| u.iter().any(|u| u["name"] == "pal-sec"))
            .then_some(())
    })
    .await;

    // Ada starts a dry run of the security updates from the host page.
    let ada = site.browser("palisade-test ada").await;
    ada.sign_in_to("ada", &ada_password, "/hosts").await;
    ada.goto(&format!("/hosts/{host}")).await;
    ada.click("#patch button[type=submit]").await;
    let run_page = eventually("the run's page", || async {
        let path = ada.path().await;
        path.starts_with("/patch-runs/").then_some(path)
    })
    .await;
    eventually("the plan", || async {
        (state(&ada).await.as_deref() == Some("awaiting_approval")).then_some(())
    })
    .await;
    assert_eq!(
        ada.texts("#plan tbody td").await,
        ["pal-sec", "all", "1.0", "1.1"],
        "the plan shows the security update"
    );
    assert!(
        ada.text("#awaiting-other").await.contains("another user"),
        "the requester is told someone else must approve"
    );
    assert!(
        !ada.post_actions()
            .await
            .iter()
            .any(|a| a.ends_with("/approve")),
        "the requester is not offered the approval"
    );

    // Bob approves; the page shows the run and its output growing.
    let bob = site.browser("palisade-test bob").await;
    bob.sign_in_to("bob", &bob_password, "/hosts").await;
    bob.goto(&run_page).await;
    bob.click("form[action$='/approve'] button[type=submit]")
        .await;
    let mut seen: Vec<String> = Vec::new();
    let deadline = std::time::Instant::now() + crate::support::DEADLINE;
    let last = loop {
        assert!(
            std::time::Instant::now() < deadline,
            "the run did not end on its page; output seen: {seen:?}"
        );
        if let Some(state) = state(&bob).await {
            let text = output(&bob).await.unwrap_or_default();
            if state == "running" && !text.is_empty() && seen.last() != Some(&text) {
                seen.push(text);
            }
            if matches!(
                state.as_str(),
                "succeeded" | "failed" | "timed_out" | "cancelled"
            ) {
                break state;
            }
        }
        tokio::time::sleep(std::time::Duration::from_millis(200)).await;
    };
    assert_eq!(last, "succeeded");
    let steps: Vec<usize> = seen
        .iter()
        .map(|t| t.matches("pal-sec preinst step").count())
        .collect();
    assert!(
        steps.windows(2).any(|w| w[0] < w[1]) && steps.iter().any(|&n| n > 0 && n < 6),
        "the output grew on the page while the run was in progress: {steps:?}"
    );
    assert_eq!(
        bob.texts("#changes tbody td").await,
        ["pal-sec", "all", "1.0", "1.1"],
        "the record shows what changed"
    );
    let facts = bob.main_text().await;
    assert!(facts.contains("ada") && facts.contains("bob"), "{facts}");
    ada.close().await;
    bob.close().await;
    drop(agent);
}
