//! What a sign-in, re-authentication or password form carries, as a browser
//! (or an attacker) sends it: the form body, the password checked against
//! the policy, a TOTP code and a backup code as typed. Nothing panics; a
//! code that verifies is six digits, and a normalized backup code
//! normalizes to itself.

#![no_main]

use libfuzzer_sys::fuzz_target;
use palisade_backend::config::PasswordConfig;
use palisade_backend::identity::{password, totp};
use palisade_backend::web::form::FormFields;

fuzz_target!(|body: &[u8]| {
    let form = FormFields::parse(body);
    let (name, secret, code) = (form.get("username"), form.get("password"), form.get("code"));
    let policy = PasswordConfig {
        require_classes: 4,
        history: 3,
        ..PasswordConfig::default()
    };
    let _ = password::problems(secret, name, &policy);
    let seed = [7u8; totp::SECRET_BYTES];
    let now = 1_700_000_000_000;
    if totp::verify(&seed, code, now, None).is_some() {
        let digits: String = code.chars().filter(|c| !c.is_whitespace()).collect();
        assert_eq!(digits.len(), 6, "{code:?}");
        assert!(digits.bytes().all(|b| b.is_ascii_digit()), "{code:?}");
    }
    if let Some(normal) = totp::normalize_backup_code(code) {
        assert_eq!(
            totp::normalize_backup_code(&normal).as_deref(),
            Some(normal.as_str())
        );
    }
});
