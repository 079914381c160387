//! Issue 10's second factor in the browser: enrolling an authenticator app
//! and signing in with its codes or a backup code, enrollment required by
//! role, and the re-authentication prompt before a dangerous operation.
//!
//! Codes are computed here from the key the page shows, as the user's
//! authenticator app would. Each 30-s step's code is accepted once (and
//! none older than the last one used); one step of drift is accepted, so
//! a second code within a step is the next step's.

use std::time::Duration;

use palisade_backend::identity::totp::{code_at_step, step_at};

use crate::Site;
use crate::harness::Browser;

/// Operators must have a second factor.
const OPERATORS_NEED_A_FACTOR: &str = "\
[mfa]
required_roles = [\"operator\"]
";

/// A proof of identity counts for ten seconds (the shortest allowed).
const REAUTH_AFTER_TEN_SECONDS: &str = "\
[mfa]
reauth_window_secs = 10
";

/// The current 30-s step.
fn current_step() -> i64 {
    step_at(palisade_backend::now_millis())
}

/// The 6-digit code of `step` for the key shown as `secret` (base32,
/// no padding).
fn code(secret: &[u8], step: i64) -> String {
    format!("{:06}", code_at_step(secret, step))
}

/// Enrolls the signed-in user's authenticator app through the account
/// pages (the QR code must be shown); returns the key and the step whose
/// code confirmed it, and the backup codes.
async fn enroll(browser: &Browser) -> (Vec<u8>, i64, Vec<String>) {
    browser.goto("/account").await;
    browser.click("#second-factor-link").await;
    browser.wait_path("/account/second-factor").await;
    assert!(
        browser.text("#totp-status").await.contains("Not set up"),
        "{}",
        browser.main_text().await
    );
    browser.click("#totp-begin").await;
    assert_eq!(browser.count("#totp-qr svg").await, 1, "a QR code is shown");
    let shown = browser.text("#totp-secret").await;
    let secret = data_encoding::BASE32_NOPAD
        .decode(shown.trim().as_bytes())
        .unwrap_or_else(|e| panic!("the key {shown:?} is not base32: {e}"));
    assert!(secret.len() >= 16, "a key of {} bytes", secret.len());
    let step = current_step();
    browser
        .fill("#totp-confirm #code", &code(&secret, step))
        .await;
    browser.click("#totp-confirm button[type=submit]").await;
    let backup_codes = browser.texts("#backup-codes li code").await;
    assert_eq!(
        backup_codes.len(),
        10,
        "ten backup codes: {}",
        browser.main_text().await
    );
    assert!(
        backup_codes.iter().all(|c| c.trim().len() >= 8),
        "{backup_codes:?}"
    );
    (secret, step, backup_codes)
}

pub async fn sign_out(browser: &Browser) {
    browser.click("form.logout button[type=submit]").await;
    browser.wait_path("/login").await;
}

/// Signs in with the password, then types `code` at the second step.
async fn sign_in_with_code(browser: &Browser, username: &str, password: &str, code: &str) {
    browser
        .sign_in_to(username, password, "/login/second-factor")
        .await;
    browser.fill("#code-form #code", code).await;
    browser.click("#code-form button[type=submit]").await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_user_enrolls_an_authenticator_and_signs_in_with_its_codes() {
    let Some(site) = Site::start(
        "a_user_enrolls_an_authenticator_and_signs_in_with_its_codes",
        "",
    ) else {
        return;
    };
    let password = site.user("tess", "viewer", None);
    let browser = site.browser("palisade-test tess").await;
    browser.sign_in_to("tess", &password, "/hosts").await;
    let (secret, step, backup_codes) = enroll(&browser).await;
    browser.goto("/account/second-factor").await;
    assert!(
        browser
            .text("#totp-status")
            .await
            .contains("Set up. 10 unused backup codes"),
        "{}",
        browser.main_text().await
    );

    // The password alone no longer signs in: the code of the next step
    // (the confirming one is used) does.
    sign_out(&browser).await;
    let next_code = code(&secret, step + 1);
    sign_in_with_code(&browser, "tess", &password, &next_code).await;
    browser.wait_path("/hosts").await;
    assert_eq!(browser.count("#code-form").await, 0);

    // A backup code signs in too, once; the page says how many are left.
    sign_out(&browser).await;
    sign_in_with_code(&browser, "tess", &password, &backup_codes[0]).await;
    browser.wait_path("/account/second-factor").await;
    assert!(browser.path().await.ends_with("?backup_codes_left=9"));
    let notice = browser.text("#factor-notice").await;
    assert!(notice.contains('9'), "{notice}");

    // A code already used is refused, the app's and the backup one alike;
    // the same challenge still takes an unused backup code.
    sign_out(&browser).await;
    sign_in_with_code(&browser, "tess", &password, &next_code).await;
    browser.wait_path("/login/second-factor").await;
    let refused = browser.text("#code-error").await;
    assert!(!refused.is_empty(), "the replayed code is refused");
    browser.fill("#code-form #code", &backup_codes[0]).await;
    browser.click("#code-form button[type=submit]").await;
    browser.wait_path("/login/second-factor").await;
    assert!(!browser.text("#code-error").await.is_empty());
    assert_eq!(browser.count("header nav").await, 0, "not signed in");
    browser.fill("#code-form #code", &backup_codes[1]).await;
    browser.click("#code-form button[type=submit]").await;
    browser.wait_path("/account/second-factor").await;
    assert!(browser.path().await.ends_with("?backup_codes_left=8"));
    browser.close().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_operator_is_held_on_the_enrollment_page_until_enrolled() {
    let Some(site) = Site::start(
        "an_operator_is_held_on_the_enrollment_page_until_enrolled",
        OPERATORS_NEED_A_FACTOR,
    ) else {
        return;
    };
    let password = site.user("otto", "operator", None);
    let browser = site.browser("palisade-test otto").await;
    browser.sign_in("otto", &password).await;
    browser.wait_path("/account/second-factor").await;
    assert!(
        browser
            .text("#enrollment-required")
            .await
            .contains("must have a second factor"),
        "{}",
        browser.main_text().await
    );
    // Every page but the account's own sends the operator back.
    for elsewhere in ["/hosts", "/audit", "/host-groups"] {
        browser.goto(elsewhere).await;
        browser.wait_path("/account/second-factor").await;
        assert_eq!(
            browser.count("#enrollment-required").await,
            1,
            "{elsewhere}"
        );
    }

    enroll(&browser).await;
    assert_eq!(browser.count("#enrollment-required").await, 0);

    browser.goto("/hosts").await;
    browser.wait_path("/hosts").await;
    assert!(browser.heading().await.starts_with("Hosts"));
    // No way back out of the requirement: removing the app is not offered.
    browser.goto("/account/second-factor").await;
    assert_eq!(
        browser
            .count("form[action='/account/second-factor/remove']")
            .await,
        0
    );
    browser.close().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_dangerous_operation_asks_for_the_password_again_after_the_window() {
    let Some(site) = Site::start(
        "a_dangerous_operation_asks_for_the_password_again_after_the_window",
        REAUTH_AFTER_TEN_SECONDS,
    ) else {
        return;
    };
    let admin_password = site.user("ada", "admin", None);
    site.user("vic", "viewer", None);
    let admin = site.browser("palisade-test ada").await;
    admin.sign_in_to("ada", &admin_password, "/hosts").await;
    admin.goto("/users").await;
    // The users table links each name to its page.
    let mut vic_page = String::new();
    for link in admin.all("table.data a").await {
        if link.text().await.expect("link text") == "vic" {
            vic_page = link.attr("href").await.expect("href").unwrap_or_default();
        }
    }
    assert!(vic_page.starts_with("/users/"), "{vic_page:?}");
    let reset = format!("form[action='{vic_page}/password-reset'] button[type=submit]");

    // The sign-in's proof is more than ten seconds old.
    tokio::time::sleep(Duration::from_secs(11)).await;
    admin.goto(&vic_page).await;
    admin.click(&reset).await;
    admin.wait_path("/reauth").await;
    assert_eq!(admin.count("#reauth-form").await, 1);
    assert_eq!(
        admin.count("#reauth-form #code").await,
        0,
        "no second factor"
    );
    assert_eq!(admin.count("#one-time-password").await, 0);

    admin
        .fill("#reauth-form #password", "not the password")
        .await;
    admin.click("#reauth-form button[type=submit]").await;
    admin.wait_path("/reauth").await;
    assert!(
        admin
            .text("#reauth-error")
            .await
            .contains("password is not right")
    );

    admin.fill("#reauth-form #password", &admin_password).await;
    admin.click("#reauth-form button[type=submit]").await;
    admin.wait_path(&vic_page).await;
    admin.click(&reset).await;
    let shown = admin.text("#one-time-password").await;
    assert!(shown.len() >= 12, "a one-time password: {shown:?}");
    assert!(admin.heading().await.contains("vic"));

    // The new password signs vic in (and asks for his own).
    let vic = site.browser("palisade-test vic").await;
    vic.sign_in_to("vic", &shown, "/account").await;
    assert_eq!(vic.count("#password-due").await, 1);
    vic.close().await;
    admin.close().await;
}
