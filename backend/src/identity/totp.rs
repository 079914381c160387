//! Time-based one-time passwords (RFC 6238 over RFC 4226's HOTP) and the
//! backup codes that stand in for a lost authenticator.
//!
//! Invariants:
//! - A code is accepted once: the step it matched is stored and a later
//!   code must match a later step ([`verify`] takes the last used step).
//! - Clock drift of one step (30 s) either way is tolerated, no more.
//! - The seed is stored sealed ([`crate::audit::AuditKey::seal`]) with the
//!   user's id as associated data: the database alone does not yield it and
//!   a sealed seed moved to another user does not open.
//! - Backup codes are stored as SHA-256 digests and each is used once.

use crate::db::Millis;

/// Seconds per step (RFC 6238's default, what every authenticator app uses).
pub const STEP_SECS: i64 = 30;
/// Digits per code.
pub const DIGITS: u32 = 6;
/// Bytes of seed (160 bits, RFC 4226's recommendation for HMAC-SHA1).
pub const SECRET_BYTES: usize = 20;
/// Steps of drift tolerated each way.
const DRIFT_STEPS: i64 = 1;
/// Backup codes issued at a time.
pub const BACKUP_CODES: usize = 10;
/// Characters of a backup code (without the dash): 10 of 32 symbols, 50 bits.
const BACKUP_CODE_CHARS: usize = 10;
/// Symbols of a backup code: Crockford's base32 (no i, l, o, u); when typed
/// back, `o` reads as 0 and `i`/`l` as 1.
const BACKUP_ALPHABET: &[u8; 32] = b"0123456789abcdefghjkmnpqrstvwxyz";

/// A fresh random seed.
pub fn generate_secret() -> Result<[u8; SECRET_BYTES], ring::error::Unspecified> {
    use ring::rand::SecureRandom;
    let mut secret = [0u8; SECRET_BYTES];
    ring::rand::SystemRandom::new().fill(&mut secret)?;
    Ok(secret)
}

/// The step a time falls in.
pub fn step_at(now: Millis) -> i64 {
    now.div_euclid(1000).div_euclid(STEP_SECS)
}

/// RFC 4226 HOTP with `DIGITS` digits.
pub fn code_at_step(secret: &[u8], step: i64) -> u32 {
    let key = ring::hmac::Key::new(ring::hmac::HMAC_SHA1_FOR_LEGACY_USE_ONLY, secret);
    let counter = u64::try_from(step).unwrap_or(0).to_be_bytes();
    let tag = ring::hmac::sign(&key, &counter);
    let mac = tag.as_ref();
    let offset = usize::from(mac[mac.len() - 1] & 0x0f);
    let binary = u32::from_be_bytes([
        mac[offset] & 0x7f,
        mac[offset + 1],
        mac[offset + 2],
        mac[offset + 3],
    ]);
    binary % 10u32.pow(DIGITS)
}

/// The step `code` matches, if it is a valid code at `now` (± drift) for a
/// step after `last_used` (so each code is accepted once, and a code older
/// than the last one used is refused too).
pub fn verify(secret: &[u8], code: &str, now: Millis, last_used: Option<i64>) -> Option<i64> {
    let code = normalize_code(code)?;
    let current = step_at(now);
    let mut matched = None;
    // Every candidate is computed (no early exit on a match).
    for step in (current - DRIFT_STEPS)..=(current + DRIFT_STEPS) {
        let expected = format!(
            "{:0width$}",
            code_at_step(secret, step),
            width = DIGITS as usize
        );
        let equal = ring_constant_time_eq(expected.as_bytes(), code.as_bytes());
        if equal && last_used.is_none_or(|last| step > last) && matched.is_none() {
            matched = Some(step);
        }
    }
    matched
}

fn ring_constant_time_eq(a: &[u8], b: &[u8]) -> bool {
    use subtle::ConstantTimeEq;
    a.len() == b.len() && bool::from(a.ct_eq(b))
}

/// Digits only, spaces allowed between them (apps show "123 456").
fn normalize_code(code: &str) -> Option<String> {
    let digits: String = code.chars().filter(|c| !c.is_whitespace()).collect();
    (digits.len() == DIGITS as usize && digits.bytes().all(|b| b.is_ascii_digit()))
        .then_some(digits)
}

/// The seed as authenticator apps take it: base32 without padding.
pub fn secret_base32(secret: &[u8]) -> String {
    data_encoding::BASE32_NOPAD.encode(secret)
}

/// The `otpauth://` URI an authenticator app scans.
pub fn otpauth_uri(issuer: &str, account: &str, secret: &[u8]) -> String {
    let label: String =
        form_urlencoded::byte_serialize(format!("{issuer}:{account}").as_bytes()).collect();
    let issuer_q: String = form_urlencoded::byte_serialize(issuer.as_bytes()).collect();
    format!(
        "otpauth://totp/{label}?secret={}&issuer={issuer_q}&algorithm=SHA1&digits={DIGITS}&period={STEP_SECS}",
        secret_base32(secret)
    )
    .replace('+', "%20")
}

/// The URI as an SVG QR code, rendered on the server (no script, no
/// third party sees the seed).
pub fn qr_svg(uri: &str) -> Result<String, qrcode::types::QrError> {
    let code = qrcode::QrCode::with_error_correction_level(uri, qrcode::EcLevel::M)?;
    Ok(code
        .render::<qrcode::render::svg::Color<'_>>()
        .min_dimensions(200, 200)
        .quiet_zone(true)
        .build())
}

/// `BACKUP_CODES` fresh codes, formatted `xxxxx-xxxxx`.
pub fn generate_backup_codes() -> Result<Vec<String>, ring::error::Unspecified> {
    use ring::rand::SecureRandom;
    let rng = ring::rand::SystemRandom::new();
    let mut codes = Vec::with_capacity(BACKUP_CODES);
    for _ in 0..BACKUP_CODES {
        let mut bytes = [0u8; BACKUP_CODE_CHARS];
        rng.fill(&mut bytes)?;
        let chars: String = bytes
            .iter()
            .map(|b| char::from(BACKUP_ALPHABET[usize::from(b & 31)]))
            .collect();
        codes.push(format!(
            "{}-{}",
            &chars[..BACKUP_CODE_CHARS / 2],
            &chars[BACKUP_CODE_CHARS / 2..]
        ));
    }
    Ok(codes)
}

/// The canonical form of a backup code as typed (case, spaces and the dash
/// do not matter), if it could be one.
pub fn normalize_backup_code(code: &str) -> Option<String> {
    let chars: String = code
        .chars()
        .filter(|c| !c.is_whitespace() && *c != '-')
        .flat_map(char::to_lowercase)
        .map(|c| match c {
            'o' => '0',
            'i' | 'l' => '1',
            c => c,
        })
        .collect();
    (chars.len() == BACKUP_CODE_CHARS && chars.bytes().all(|b| BACKUP_ALPHABET.contains(&b))).then(
        || {
            format!(
                "{}-{}",
                &chars[..BACKUP_CODE_CHARS / 2],
                &chars[BACKUP_CODE_CHARS / 2..]
            )
        },
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    /// RFC 6238 appendix B, SHA-1 column, reduced to six digits.
    #[test]
    fn rfc_6238_vectors() {
        let secret = b"12345678901234567890";
        for (secs, eight) in [
            (59i64, 94287082u32),
            (1111111109, 7081804),
            (1111111111, 14050471),
            (1234567890, 89005924),
            (2000000000, 69279037),
            (20000000000, 65353130),
        ] {
            assert_eq!(
                code_at_step(secret, step_at(secs * 1000)),
                eight % 1_000_000,
                "at {secs}"
            );
        }
    }

    #[test]
    fn a_code_is_accepted_once_and_drift_is_bounded() {
        let secret = generate_secret().expect("random");
        let now: Millis = 1_700_000_000_000;
        let step = step_at(now);
        let code = format!("{:06}", code_at_step(&secret, step));
        assert_eq!(verify(&secret, &code, now, None), Some(step));
        // Replay: the same code after it was used.
        assert_eq!(verify(&secret, &code, now, Some(step)), None);
        // Spaces as apps show them.
        let spaced = format!("{} {}", &code[..3], &code[3..]);
        assert_eq!(verify(&secret, &spaced, now, None), Some(step));
        // One step late is fine, two are not.
        assert_eq!(verify(&secret, &code, now + 30_000, None), Some(step));
        let old = format!("{:06}", code_at_step(&secret, step - 2));
        assert_eq!(verify(&secret, &old, now, None), None);
        // Not a code at all.
        for bad in ["", "12345", "1234567", "abcdef", "12345\u{0661}"] {
            assert_eq!(verify(&secret, bad, now, None), None, "{bad:?}");
        }
    }

    #[test]
    fn an_older_code_is_refused_after_a_newer_one() {
        let secret = generate_secret().expect("random");
        let now: Millis = 1_700_000_000_000;
        let step = step_at(now);
        let previous = format!("{:06}", code_at_step(&secret, step - 1));
        assert_eq!(verify(&secret, &previous, now, Some(step)), None);
    }

    #[test]
    fn uri_and_qr_code() {
        let secret = [0xffu8; SECRET_BYTES];
        let uri = otpauth_uri("Palisade", "ann smith", &secret);
        assert!(uri.starts_with("otpauth://totp/Palisade%3Aann%20smith?secret="));
        assert!(uri.contains(&secret_base32(&secret)));
        let svg = qr_svg(&uri).expect("fits in a QR code");
        assert!(svg.contains("<svg"));
    }

    #[test]
    fn backup_codes_are_distinct_and_normalize() {
        let codes = generate_backup_codes().expect("random");
        assert_eq!(codes.len(), BACKUP_CODES);
        let unique: std::collections::BTreeSet<_> = codes.iter().collect();
        assert_eq!(unique.len(), BACKUP_CODES);
        for code in &codes {
            assert_eq!(normalize_backup_code(code).as_deref(), Some(code.as_str()));
            let typed = code.replace('-', " ").to_uppercase();
            assert_eq!(
                normalize_backup_code(&typed).as_deref(),
                Some(code.as_str())
            );
        }
        assert_eq!(normalize_backup_code("short"), None);
        assert_eq!(normalize_backup_code("uuuuu-uuuuu"), None);
        assert_eq!(
            normalize_backup_code("OOIIL-abcde").as_deref(),
            Some("00111-abcde")
        );
    }
}
