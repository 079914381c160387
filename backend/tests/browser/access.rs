//! Issue 9 in the browser: each role is offered only what it may do, a
//! group-scoped operator sees only its group's hosts, and the audit page's
//! filters and exports work as a person uses them.

use crate::Site;
use crate::harness::Browser;

/// What a signed-in user who may change nothing is offered: signing out.
const ONLY_SIGN_OUT: &[&str] = &["/logout"];

/// The `(text, href)` of every link in the page's data tables.
async fn table_links(browser: &Browser) -> Vec<(String, String)> {
    let mut out = Vec::new();
    for link in browser.all("table.data a").await {
        let text = link.text().await.expect("link text");
        let href = link.attr("href").await.expect("href").unwrap_or_default();
        out.push((text, href));
    }
    out
}

/// The href of the table link whose text is `text`.
async fn link_to(browser: &Browser, text: &str) -> String {
    let links = table_links(browser).await;
    links
        .iter()
        .find(|(t, _)| t == text)
        .map(|(_, href)| href.clone())
        .unwrap_or_else(|| panic!("no link {text:?} in the table: {links:?}"))
}

/// Creates host group `name` through the host-groups page, as an admin.
async fn create_group(admin: &Browser, name: &str) {
    admin.goto("/host-groups").await;
    admin.fill("form[action='/host-groups'] #name", name).await;
    admin
        .click("form[action='/host-groups'] button[type=submit]")
        .await;
    admin.wait_path("/host-groups").await;
    let groups = admin.texts("table.data tbody td:first-child").await;
    assert!(
        groups.iter().any(|g| g == name),
        "{name} is listed after its creation: {groups:?}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn each_role_is_offered_only_the_actions_it_may_take() {
    let Some(site) = Site::start("each_role_is_offered_only_the_actions_it_may_take", "") else {
        return;
    };
    let admin_password = site.user("ada", "admin", None);
    let viewer_password = site.user("vera", "viewer", None);
    let auditor_password = site.user("audrey", "auditor", None);
    let host = site.enroll_host("alpha");

    // The admin: every management page, each with its forms.
    let admin = site.browser("palisade-test admin").await;
    admin.sign_in_to("ada", &admin_password, "/hosts").await;
    assert_eq!(
        admin.nav().await,
        [
            "Hosts",
            "Updates",
            "Patch runs",
            "Patch policies",
            "Host groups",
            "Enrollment",
            "Users",
            "Roles",
            "API tokens",
            "Audit"
        ]
    );
    create_group(&admin, "web").await;
    let actions = admin.post_actions().await;
    assert!(
        actions.iter().any(|a| a == "/host-groups")
            && actions
                .iter()
                .any(|a| a.starts_with("/host-groups/") && a.ends_with("/delete")),
        "the admin may create, rename and delete host groups: {actions:?}"
    );

    admin.goto("/users").await;
    admin.fill("#username", "carol").await;
    admin.select("#role", "operator").await;
    admin
        .click("form[action='/users'] button[type=submit]")
        .await;
    admin.wait_path("/users").await;
    let created = admin.text("section.alert.ok").await;
    assert!(created.contains("User carol created"), "{created}");
    assert!(
        admin.text("section.alert.ok code.secret").await.len() >= 12,
        "the generated password is shown once"
    );
    let vera_page = link_to(&admin, "vera").await;
    admin.goto(&vera_page).await;
    let actions = admin.post_actions().await;
    for action in ["/roles", "/disable", "/password-reset", "/delete"] {
        assert!(
            actions.iter().any(|a| a == &format!("{vera_page}{action}")),
            "the admin is offered {action} on {vera_page}: {actions:?}"
        );
    }
    for (page, form) in [
        ("/roles", "/roles"),
        ("/api-tokens", "/api-tokens"),
        ("/enrollment-tokens", "/enrollment-tokens"),
    ] {
        admin.goto(page).await;
        let actions = admin.post_actions().await;
        assert!(
            actions.iter().any(|a| a == form),
            "the admin is offered {form} on {page}: {actions:?}"
        );
    }
    admin.goto(&format!("/hosts/{host}")).await;
    let actions = admin.post_actions().await;
    for action in ["group", "revoke", "delete"] {
        assert!(
            actions
                .iter()
                .any(|a| a == &format!("/hosts/{host}/{action}")),
            "the admin is offered {action} on the host: {actions:?}"
        );
    }
    admin.goto("/audit").await;
    assert_eq!(
        admin.count("p.exports a[download]").await,
        2,
        "CSV and JSON"
    );
    admin.close().await;

    // The viewer and the auditor: on every page they may open, nothing to
    // change; the pages they may not open answer 403.
    let pages = [
        "/hosts".to_owned(),
        format!("/hosts/{host}"),
        "/host-groups".to_owned(),
        "/enrollment-tokens".to_owned(),
        "/users".to_owned(),
        vera_page.clone(),
        "/roles".to_owned(),
        "/roles/admin".to_owned(),
        "/api-tokens".to_owned(),
        "/audit".to_owned(),
    ];
    for (name, password, nav, forbidden) in [
        (
            "vera",
            &viewer_password,
            &[
                "Hosts",
                "Updates",
                "Patch runs",
                "Patch policies",
                "Host groups",
            ][..],
            &[
                "/enrollment-tokens",
                "/users",
                vera_page.as_str(),
                "/roles",
                "/roles/admin",
                "/audit",
            ][..],
        ),
        (
            "audrey",
            &auditor_password,
            &[
                "Hosts",
                "Updates",
                "Patch runs",
                "Patch policies",
                "Host groups",
                "Enrollment",
                "Users",
                "Roles",
                "Audit",
            ][..],
            &[][..],
        ),
    ] {
        let browser = site.browser(&format!("palisade-test {name}")).await;
        browser.sign_in_to(name, password, "/hosts").await;
        assert_eq!(browser.nav().await, nav, "{name}'s navigation");
        for page in &pages {
            browser.goto(page).await;
            let heading = browser.heading().await;
            if forbidden.contains(&page.as_str()) {
                assert_eq!(heading, "403 Forbidden", "{name} on {page}");
                continue;
            }
            assert!(
                !heading.starts_with("40"),
                "{name} may open {page}: {heading}"
            );
            assert_eq!(
                browser.post_actions().await,
                ONLY_SIGN_OUT,
                "{name} is offered a change on {page}"
            );
        }
        browser.goto("/audit").await;
        if name == "audrey" {
            assert_eq!(browser.heading().await, "Audit trail");
            assert!(
                browser.count("table.audit tbody tr").await > 0,
                "the auditor reads the trail"
            );
            assert_eq!(
                browser.count("p.exports a[download]").await,
                2,
                "the auditor may export"
            );
        }
        browser.close().await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_group_scoped_operator_sees_only_the_hosts_of_its_group() {
    let Some(site) = Site::start(
        "a_group_scoped_operator_sees_only_the_hosts_of_its_group",
        "",
    ) else {
        return;
    };
    let admin_password = site.user("ada", "admin", None);
    let admin = site.browser("palisade-test admin").await;
    admin.sign_in_to("ada", &admin_password, "/hosts").await;
    create_group(&admin, "alpha").await;
    create_group(&admin, "beta").await;
    let beta_filter = link_to(&admin, "beta").await;
    assert!(beta_filter.starts_with("/hosts?group="), "{beta_filter}");

    // Enrollment tokens of each group put a real host in each.
    let host_a = site.enroll_host("alpha");
    let host_b = site.enroll_host("beta");
    let operator_password = site.user("otto", "operator", Some("alpha"));

    admin.goto("/hosts").await;
    let hrefs = admin.attrs("table.data a", "href").await;
    for host in [&host_a, &host_b] {
        assert!(
            hrefs.contains(&format!("/hosts/{host}")),
            "the admin sees {host}: {hrefs:?}"
        );
    }
    admin.close().await;

    let otto = site.browser("palisade-test operator").await;
    otto.sign_in_to("otto", &operator_password, "/hosts").await;
    assert_eq!(
        otto.attrs("table.data a", "href").await,
        [format!("/hosts/{host_a}")],
        "only group alpha's host is listed"
    );
    let count = otto.text("h1 .count").await;
    assert!(count.ends_with("of 1 online"), "{count}");
    assert_eq!(
        otto.texts("#group option").await,
        ["Any", "alpha"],
        "only its own group to filter by"
    );

    // Beta's host by its address: not found, as if it did not exist.
    otto.goto(&format!("/hosts/{host_b}")).await;
    assert_eq!(otto.heading().await, "404 Not Found");
    assert!(!otto.main_text().await.contains(&host_b));
    // Beta's group as a filter: nothing.
    otto.goto(&beta_filter).await;
    assert_eq!(otto.count("table.data a").await, 0);
    assert!(
        otto.main_text().await.contains("No host matches."),
        "{}",
        otto.main_text().await
    );

    // Alpha's host opens; the host groups page shows alpha only.
    otto.goto(&format!("/hosts/{host_a}")).await;
    assert_eq!(otto.text(".breadcrumb a").await, "Hosts");
    assert!(!otto.heading().await.starts_with("40"));
    otto.goto("/host-groups").await;
    assert_eq!(
        otto.texts("table.data tbody td:first-child").await,
        ["alpha"]
    );
    otto.close().await;
}

/// Rows of the audit table: (actor, action, outcome).
async fn audit_rows(browser: &Browser) -> Vec<(String, String, String)> {
    let mut rows = Vec::new();
    for row in browser.all("table.audit tbody tr").await {
        let mut cells = Vec::new();
        for cell in row
            .find_all(fantoccini::Locator::Css("td"))
            .await
            .expect("cells")
        {
            cells.push(cell.text().await.expect("cell text"));
        }
        assert_eq!(cells.len(), 8, "an audit row has 8 cells: {cells:?}");
        rows.push((cells[1].clone(), cells[2].clone(), cells[6].clone()));
    }
    rows
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_audit_page_filters_and_exports_what_matches() {
    let Some(site) = Site::start("the_audit_page_filters_and_exports_what_matches", "") else {
        return;
    };
    let bob_password = site.user("bob", "viewer", None);
    let auditor_password = site.user("audrey", "auditor", None);

    // Bob mistypes his password once, then signs in.
    let bob = site.browser("palisade-test bob").await;
    bob.sign_in("bob", "not bob's password").await;
    bob.wait_path("/login").await;
    assert!(
        bob.text("[role=alert]")
            .await
            .contains("invalid username or password")
    );
    bob.sign_in_to("bob", &bob_password, "/hosts").await;
    bob.close().await;

    let audrey = site.browser("palisade-test auditor").await;
    audrey
        .sign_in_to("audrey", &auditor_password, "/hosts")
        .await;
    audrey.click("header nav a[href='/audit']").await;
    audrey.wait_path("/audit").await;
    let everything = audit_rows(&audrey).await;
    assert!(
        everything
            .iter()
            .any(|(_, _, outcome)| outcome == "success")
            && everything
                .iter()
                .any(|(_, _, outcome)| outcome == "failure"),
        "the unfiltered trail holds both outcomes: {everything:?}"
    );

    // Bob's failures, through the form.
    audrey.select("#outcome", "failure").await;
    audrey.fill("#user", "bob").await;
    audrey.click("form.filters button[type=submit]").await;
    audrey.wait_path("/audit").await;
    let query = audrey.path().await;
    assert!(
        query.contains("outcome=failure") && query.contains("user=bob"),
        "{query}"
    );
    let failures = audit_rows(&audrey).await;
    assert_eq!(
        failures,
        [(
            "user:bob".to_owned(),
            "auth.login".to_owned(),
            "failure".to_owned()
        )],
        "exactly bob's failed sign-in"
    );

    // The exports of that filter land in the download directory.
    audrey
        .click_download("p.exports a[href*='format=csv']")
        .await;
    let csv = audrey.downloaded("palisade-audit.csv").await;
    let lines: Vec<&str> = csv.lines().collect();
    assert_eq!(
        lines.first().copied(),
        Some("id,at,actor,action,category,target,source_ip,user_agent,outcome,details,hash")
    );
    assert_eq!(lines.len(), 2, "the header and bob's failure: {csv}");
    for field in ["user:bob", "auth.login", "failure", "palisade-test bob"] {
        assert!(lines[1].contains(field), "{field} in {}", lines[1]);
    }
    audrey
        .click_download("p.exports a[href*='format=json']")
        .await;
    let json: serde_json::Value =
        serde_json::from_str(&audrey.downloaded("palisade-audit.json").await)
            .expect("the JSON export parses");
    let events = json.as_array().expect("an array of events");
    assert_eq!(events.len(), 1, "{json}");
    assert_eq!(events[0]["action"], "auth.login");
    assert_eq!(events[0]["outcome"], "failure");
    assert_eq!(events[0]["actor"], "user:bob");

    // The same user's successes: the sign-in, not the failure.
    audrey.select("#outcome", "success").await;
    audrey.click("form.filters button[type=submit]").await;
    audrey.wait_path("/audit").await;
    let successes = audit_rows(&audrey).await;
    assert!(
        successes.contains(&(
            "user:bob".to_owned(),
            "auth.login".to_owned(),
            "success".to_owned()
        )) && successes
            .iter()
            .all(|(actor, _, outcome)| actor == "user:bob" && outcome == "success"),
        "{successes:?}"
    );
    audrey.close().await;
}
