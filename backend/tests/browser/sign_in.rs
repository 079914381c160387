//! Issue 10 in the browser: the first sign-in's password choice, the
//! lockout message, the session list and ending another session.

use crate::Site;

/// Locks an account at the third failure in a row (the first two are
/// answered at once), for ten minutes.
const LOCK_AT_THREE: &str = "\
[sign_in]
account_free_failures = 2
account_lockout_failures = 3
lockout_secs = 600
";

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_new_user_chooses_a_password_at_the_first_sign_in() {
    let Some(site) = Site::start("a_new_user_chooses_a_password_at_the_first_sign_in", "") else {
        return;
    };
    // Without --password-is-final: the password is the admin's, not hers.
    let given = site
        .backend
        .cli_ok(&["user", "create", "nina", "--role", "viewer"]);
    let nina = site.browser("palisade-test nina").await;
    nina.sign_in_to("nina", &given, "/account").await;
    assert!(
        nina.text("#password-due")
            .await
            .contains("Choose your own password"),
        "{}",
        nina.main_text().await
    );
    // Nothing else opens until she has.
    nina.goto("/hosts").await;
    nina.wait_path("/account").await;

    // A common password (long enough for the form's own check) is refused
    // by the server, with the reason.
    nina.fill("#current_password", &given).await;
    nina.fill("#new_password", "Password1234!").await;
    nina.fill("#confirm_password", "Password1234!").await;
    nina.click("#password-form button[type=submit]").await;
    let problems = nina.text("#password-problems").await;
    assert!(
        problems.contains("is a commonly used password"),
        "{problems}"
    );
    assert!(nina.count("#password-due").await == 1, "still due");

    let chosen = "lantern orbit meadow gravel";
    nina.fill("#current_password", &given).await;
    nina.fill("#new_password", chosen).await;
    nina.fill("#confirm_password", chosen).await;
    nina.click("#password-form button[type=submit]").await;
    nina.wait_path("/account").await;
    assert!(nina.path().await.ends_with("?done=password"));
    assert!(
        nina.text("[role=status]")
            .await
            .contains("Your password was changed")
    );
    assert_eq!(nina.count("#password-due").await, 0);
    nina.goto("/hosts").await;
    nina.wait_path("/hosts").await;
    assert!(nina.heading().await.starts_with("Hosts"));

    // Signing out and in again: the old password is refused, the new one
    // goes straight to the hosts.
    nina.click("form.logout button[type=submit]").await;
    nina.wait_path("/login").await;
    nina.sign_in("nina", &given).await;
    nina.wait_path("/login").await;
    assert!(
        nina.text("[role=alert]")
            .await
            .contains("invalid username or password")
    );
    nina.sign_in_to("nina", chosen, "/hosts").await;
    nina.close().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn repeated_wrong_passwords_lock_the_account_with_a_clear_message() {
    let Some(site) = Site::start(
        "repeated_wrong_passwords_lock_the_account_with_a_clear_message",
        LOCK_AT_THREE,
    ) else {
        return;
    };
    let password = site.user("lena", "viewer", None);
    let browser = site.browser("palisade-test lena").await;
    for attempt in 1..=2 {
        browser.sign_in("lena", "wrong password").await;
        browser.wait_path("/login").await;
        assert_eq!(
            browser
                .text("[role=alert]")
                .await
                .split(" (request id")
                .next(),
            Some("invalid username or password"),
            "attempt {attempt}"
        );
    }
    browser.sign_in("lena", "wrong password").await;
    browser.wait_path("/login").await;
    let locked = browser.text("[role=alert]").await;
    assert!(
        locked.contains("sign-in is locked for about 10 minutes")
            && locked.contains("An administrator can lift the lock"),
        "{locked}"
    );

    // The right password does not get through the lock.
    browser.sign_in("lena", &password).await;
    browser.wait_path("/login").await;
    let refused = browser.text("[role=alert]").await;
    assert!(refused.contains("sign-in is locked"), "{refused}");

    // A name that matches no account reads the same, once locked.
    for _ in 0..3 {
        browser.sign_in("nobody-here", "wrong password").await;
        browser.wait_path("/login").await;
    }
    let unknown = browser.text("[role=alert]").await;
    assert!(unknown.contains("sign-in is locked"), "{unknown}");

    // An administrator lifts the lock; the right password signs in.
    site.backend.cli_ok(&["user", "unlock", "lena"]);
    browser.sign_in_to("lena", &password, "/hosts").await;
    browser.close().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_user_sees_their_sessions_and_ends_another_one() {
    let Some(site) = Site::start("a_user_sees_their_sessions_and_ends_another_one", "") else {
        return;
    };
    let password = site.user("sam", "viewer", None);
    let laptop = site.browser("palisade-test laptop").await;
    let phone = site.browser("palisade-test phone").await;
    laptop.sign_in_to("sam", &password, "/hosts").await;
    phone.sign_in_to("sam", &password, "/hosts").await;

    laptop.click("header a.whoami").await;
    laptop.wait_path("/account").await;
    let rows = laptop.texts("#sessions tbody tr").await;
    assert_eq!(rows.len(), 2, "{rows:?}");
    let this = rows
        .iter()
        .find(|r| r.contains("this one"))
        .expect("the current session is marked");
    assert!(this.contains("palisade-test laptop"), "{this}");
    assert!(
        rows.iter()
            .any(|r| r.contains("palisade-test phone") && !r.contains("this one")),
        "{rows:?}"
    );

    // End the phone's session from the laptop.
    let mut ended = false;
    for row in laptop.all("#sessions tbody tr").await {
        let text = row.text().await.expect("row text");
        if text.contains("palisade-test phone") {
            let button = row
                .find(fantoccini::Locator::Css("button[type=submit]"))
                .await
                .expect("an End button");
            laptop.click_element(button).await;
            ended = true;
            break;
        }
    }
    assert!(ended, "the phone's session has an End button");
    laptop.wait_path("/account").await;
    assert!(laptop.path().await.ends_with("?done=session"));
    let rows = laptop.texts("#sessions tbody tr").await;
    assert_eq!(rows.len(), 1, "{rows:?}");
    assert!(rows[0].contains("palisade-test laptop"));

    // The phone is sent to sign in; the laptop goes on.
    phone.goto("/hosts").await;
    phone.wait_path("/login").await;
    assert_eq!(phone.count("header nav").await, 0, "signed out");
    laptop.goto("/hosts").await;
    laptop.wait_path("/hosts").await;
    phone.close().await;
    laptop.close().await;
}
