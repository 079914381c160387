//! The password policy (`[passwords]`): NIST SP 800-63B by default (length
//! over composition, a blocklist of common and context-derived passwords,
//! no periodic expiry), with the options auditors ask for (character
//! classes, expiry, history), all off by default.

use crate::config::PasswordConfig;
use crate::db::Millis;

/// Longer passwords are refused: hashing cost must stay bounded.
pub const MAX_LENGTH: usize = 256;

/// Common passwords (and keyboard walks), compared after lower-casing and
/// dropping trailing digits and symbols ("Password123!" is "password").
/// Short on purpose: the minimum length already rules out most leaked
/// lists; these are the long ones people still pick.
const COMMON: &[&str] = &[
    "password",
    "passw0rd",
    "p@ssw0rd",
    "p@ssword",
    "passwort",
    "motdepasse",
    "contrasena",
    "qwerty",
    "qwertyuiop",
    "qwertyuiopasdfghjkl",
    "asdfghjkl",
    "asdfghjkl;",
    "zxcvbnm",
    "1qaz2wsx",
    "1q2w3e4r",
    "1q2w3e4r5t",
    "q1w2e3r4",
    "qazwsx",
    "qazwsxedc",
    "azerty",
    "azertyuiop",
    "abcdefgh",
    "abcdefghijkl",
    "abcdefghijklmnop",
    "letmein",
    "letmeinplease",
    "welcome",
    "welcometothejungle",
    "iloveyou",
    "iloveyousomuch",
    "trustno",
    "trustnoone",
    "sunshine",
    "princess",
    "football",
    "baseball",
    "basketball",
    "superman",
    "batman",
    "starwars",
    "dragon",
    "monkey",
    "shadow",
    "master",
    "masterkey",
    "administrator",
    "admin",
    "adminadmin",
    "changeme",
    "changemenow",
    "changeit",
    "default",
    "secret",
    "topsecret",
    "supersecret",
    "mysecret",
    "mypassword",
    "yourpassword",
    "newpassword",
    "oldpassword",
    "temppassword",
    "temporary",
    "whatever",
    "nothing",
    "computer",
    "internet",
    "security",
    "securepassword",
    "strongpassword",
    "verysecure",
    "loveyou",
    "lovely",
    "freedom",
    "liberty",
    "michael",
    "jennifer",
    "jordan",
    "charlie",
    "thomas",
    "hunter",
    "killer",
    "soccer",
    "hockey",
    "ranger",
    "harley",
    "mustang",
    "corvette",
    "ferrari",
    "mercedes",
    "chocolate",
    "cookie",
    "pokemon",
    "minecraft",
    "fortnite",
    "matrix",
    "summer",
    "winter",
    "spring",
    "autumn",
    "january",
    "february",
    "september",
    "october",
    "november",
    "december",
    "monday",
    "friday",
    "sunday",
    "linux",
    "ubuntu",
    "debian",
    "redhat",
    "centos",
    "fedora",
    "windows",
    "microsoft",
    "google",
    "facebook",
    "twitter",
    "linkedin",
    "server",
    "servers",
    "database",
    "root",
    "toor",
    "rootroot",
    "rootpassword",
    "system",
    "sysadmin",
    "operator",
    "support",
    "helpdesk",
    "service",
    "guest",
    "user",
    "test",
    "testing",
    "testtest",
    "demo",
    "sample",
    "example",
    "correcthorsebatterystaple",
    "palisade",
    "palisadeadmin",
    "opensesame",
    "abracadabra",
    "blink",
    "zaq1zaq1",
    "zaq12wsx",
    "xsw2zaq1",
    "asdf",
    "asdfasdf",
    "asdfjkl",
    "qweasd",
    "qweasdzxc",
    "qwe123",
    "aaaaaaaa",
    "abc",
    "abcabc",
    "abcd",
    "password1",
    "iloveu",
];

/// What is wrong with a password, all of it at once.
pub fn problems(password: &str, username: &str, policy: &PasswordConfig) -> Vec<String> {
    let mut out = Vec::new();
    let length = password.chars().count();
    if length < policy.min_length {
        out.push(format!(
            "is shorter than {} characters (a few words make a long password that is easy to remember)",
            policy.min_length
        ));
    }
    if length > MAX_LENGTH {
        out.push(format!("is longer than {MAX_LENGTH} characters"));
    }
    if policy.blocklist {
        if is_common(password) {
            out.push("is a commonly used password".into());
        }
        let lower = password.to_lowercase();
        let name = username.to_lowercase();
        if name.chars().count() >= 3 && lower.contains(&name) {
            out.push("contains your user name".into());
        }
        if is_trivial(password) {
            out.push("is a repeated character or a simple sequence".into());
        }
    }
    if policy.require_classes > 0 {
        let classes = [
            password.chars().any(|c| c.is_lowercase()),
            password.chars().any(|c| c.is_uppercase()),
            password.chars().any(|c| c.is_ascii_digit()),
            password.chars().any(|c| !c.is_alphanumeric()),
        ]
        .iter()
        .filter(|x| **x)
        .count();
        if classes < usize::from(policy.require_classes) {
            out.push(format!(
                "needs characters of at least {} kinds (lower case, upper case, digits, symbols)",
                policy.require_classes
            ));
        }
    }
    out
}

/// Lower-cased, with leading and trailing digits and symbols dropped, then
/// l33t letters read back: the common word under "P@ssw0rd2024!".
fn is_common(password: &str) -> bool {
    let lower = password.to_lowercase();
    let core = lower.trim_matches(|c: char| !c.is_alphabetic());
    let unleet: String = core
        .chars()
        .map(|c| match c {
            '@' | '4' => 'a',
            '3' => 'e',
            '1' | '!' => 'i',
            '0' => 'o',
            '$' | '5' => 's',
            '7' => 't',
            c => c,
        })
        .collect();
    let candidates = [lower.as_str(), core, unleet.as_str()];
    candidates
        .iter()
        .any(|c| !c.is_empty() && COMMON.contains(c))
}

/// One character repeated, or a run of consecutive characters
/// ("abcdefghijkl", "987654321012").
fn is_trivial(password: &str) -> bool {
    let chars: Vec<char> = password.chars().collect();
    if chars.len() < 2 {
        return false;
    }
    if chars.iter().all(|c| *c == chars[0]) {
        return true;
    }
    let steps: Vec<i64> = chars
        .windows(2)
        .map(|w| i64::from(u32::from(w[1])) - i64::from(u32::from(w[0])))
        .collect();
    steps.iter().all(|s| *s == 1) || steps.iter().all(|s| *s == -1)
}

/// Whether a password set at `changed_at` has expired at `now`.
pub fn expired(policy: &PasswordConfig, changed_at: Millis, now: Millis) -> bool {
    policy.max_age_days > 0
        && now.saturating_sub(changed_at) > Millis::from(policy.max_age_days) * 86_400_000
}

#[cfg(test)]
mod tests {
    use super::*;

    fn default_problems(password: &str) -> Vec<String> {
        problems(password, "alice", &PasswordConfig::default())
    }

    #[test]
    fn long_uncommon_passwords_pass_whatever_their_composition() {
        assert!(default_problems("correct horse battery").is_empty());
        assert!(default_problems("ribbon tuesday kettle").is_empty());
        assert!(default_problems("vX9#tq2LmP0z").is_empty());
    }

    #[test]
    fn short_common_trivial_and_personal_passwords_are_refused() {
        assert!(default_problems("Tr0ub4dor&3")[0].contains("shorter than 12"));
        for common in [
            "Password123!",
            "P@ssw0rd2024",
            "qwertyuiop12",
            "CorrectHorseBatteryStaple",
        ] {
            let p = default_problems(common);
            assert!(
                p.iter().any(|p| p.contains("commonly used")),
                "{common}: {p:?}"
            );
        }
        assert!(
            default_problems("aaaaaaaaaaaaaaa")
                .iter()
                .any(|p| p.contains("repeated"))
        );
        assert!(
            default_problems("abcdefghijklmnopq")
                .iter()
                .any(|p| p.contains("sequence"))
        );
        assert!(
            default_problems("alice-in-wonderland")
                .iter()
                .any(|p| p.contains("user name"))
        );
        let long = "x".repeat(MAX_LENGTH + 1) + "yz";
        assert!(default_problems(&long).iter().any(|p| p.contains("longer")));
    }

    #[test]
    fn the_options_auditors_ask_for_are_enforced_when_set() {
        let policy = PasswordConfig {
            require_classes: 3,
            max_age_days: 90,
            ..PasswordConfig::default()
        };
        assert!(!problems("only lower case words", "bob", &policy).is_empty());
        assert!(problems("Lower and Upper 2 digits", "bob", &policy).is_empty());
        let day = 86_400_000;
        assert!(!expired(&policy, 0, 90 * day));
        assert!(expired(&policy, 0, 91 * day));
        assert!(!expired(&PasswordConfig::default(), 0, 10_000 * day));
    }
}
