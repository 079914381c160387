//! Random values and their one-way hashes.
//!
//! Used by the CLI (enrollment and API tokens, the first admin password), the
//! web login (session ids, passwords) and enrollment (token checks). All
//! randomness comes from [`ring::rand::SystemRandom`] (the kernel's CSPRNG);
//! a failure of it is a [`SecretsError::Random`], never a panic.
//!
//! Tokens have the shape `<id>.<secret>`: the id is public and is the lookup
//! key, the secret is 256 random bits of which the database keeps only the
//! SHA-256 (see [`hash_secret`]).

use std::fmt;

use argon2::password_hash::{PasswordHash, PasswordHasher, PasswordVerifier, SaltString};
use argon2::{Algorithm, Argon2, Params, Version};
use base64::Engine as _;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use ring::digest;
use ring::rand::{SecureRandom, SystemRandom};
use subtle::ConstantTimeEq;

/// Random bytes in a token id (16 hex characters).
const TOKEN_ID_BYTES: usize = 8;
/// Length of a token id in characters.
const TOKEN_ID_LEN: usize = TOKEN_ID_BYTES * 2;
/// Random bytes in a token secret (256 bits).
const TOKEN_SECRET_BYTES: usize = 32;
/// Length of a token secret in characters: base64url of 32 bytes, no padding.
const TOKEN_SECRET_LEN: usize = 43;

/// argon2id parameters, the OWASP Password Storage Cheat Sheet's first
/// recommendation: 19 MiB of memory, 2 passes, 1 lane.
const ARGON2_M_COST_KIB: u32 = 19_456;
const ARGON2_T_COST: u32 = 2;
const ARGON2_P_COST: u32 = 1;
/// Salt length in bytes (the `password-hash` crate's recommendation).
const SALT_BYTES: usize = 16;

/// Length of [`generate_password`]'s output.
const GENERATED_PASSWORD_LEN: usize = 24;
const PASSWORD_ALPHABET: &[u8] = b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789";

#[derive(Debug, thiserror::Error)]
pub enum SecretsError {
    #[error("the system random number generator failed")]
    Random,
    #[error("argon2id password hashing failed: {0}")]
    PasswordHash(String),
}

/// A freshly generated token: the public id and the secret shown once to the
/// user. `Debug` hides the secret; `Display` gives the whole `<id>.<secret>`
/// token, for printing it to the one person who must receive it.
#[derive(Clone, PartialEq, Eq)]
pub struct TokenParts {
    pub id: String,
    pub secret: String,
}

impl TokenParts {
    /// A new token: 8 random bytes as 16 lowercase hex characters for the
    /// id, 32 random bytes as 43 base64url characters for the secret.
    pub fn generate() -> Result<TokenParts, SecretsError> {
        let id = hex::encode(random_bytes::<TOKEN_ID_BYTES>()?);
        let secret = URL_SAFE_NO_PAD.encode(random_bytes::<TOKEN_SECRET_BYTES>()?);
        Ok(TokenParts { id, secret })
    }
}

impl fmt::Display for TokenParts {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}.{}", self.id, self.secret)
    }
}

impl fmt::Debug for TokenParts {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("TokenParts")
            .field("id", &self.id)
            .field("secret", &"<redacted>")
            .finish()
    }
}

/// Splits `<id>.<secret>` into its parts if, and only if, it has exactly the
/// shape [`TokenParts::generate`] produces: a 16-character lowercase hex id
/// and a 43-character canonical base64url secret of 32 bytes. Anything else
/// is rejected before it reaches a database lookup.
pub fn split_token(s: &str) -> Option<(&str, &str)> {
    let (id, secret) = s.split_once('.')?;
    let id_ok =
        id.len() == TOKEN_ID_LEN && id.bytes().all(|b| matches!(b, b'0'..=b'9' | b'a'..=b'f'));
    let secret_ok = secret.len() == TOKEN_SECRET_LEN
        && secret.bytes().all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'_')
        // The last character carries 2 unused bits; the decoder rejects them
        // when set, so every secret has exactly one accepted spelling.
        && URL_SAFE_NO_PAD.decode(secret).is_ok_and(|bytes| bytes.len() == TOKEN_SECRET_BYTES);
    (id_ok && secret_ok).then_some((id, secret))
}

/// SHA-256 of a token secret or session id, the form stored in the database.
///
/// A fast hash is enough here, unlike for passwords: these secrets are 256
/// random bits from the system RNG, so there is no dictionary to try and
/// brute force over 2^256 values is out of reach whatever the hash costs. A
/// slow hash would only make every API request and page view slower.
pub fn hash_secret(secret: &str) -> Vec<u8> {
    digest::digest(&digest::SHA256, secret.as_bytes())
        .as_ref()
        .to_vec()
}

/// Whether `secret` hashes to `stored_hash`, compared in constant time (with
/// `subtle`, as `ring` keeps its constant-time comparison private), so the
/// timing of a failed check says nothing about how many bytes matched.
pub fn secret_matches(secret: &str, stored_hash: &[u8]) -> bool {
    bool::from(hash_secret(secret).as_slice().ct_eq(stored_hash))
}

fn argon2id() -> Result<Argon2<'static>, SecretsError> {
    let params = Params::new(ARGON2_M_COST_KIB, ARGON2_T_COST, ARGON2_P_COST, None)
        .map_err(|e| SecretsError::PasswordHash(format!("invalid parameters: {e}")))?;
    Ok(Argon2::new(Algorithm::Argon2id, Version::V0x13, params))
}

/// Hashes a password with argon2id (OWASP parameters, 16-byte random salt)
/// into a PHC string such as `$argon2id$v=19$m=19456,t=2,p=1$<salt>$<hash>`.
/// Takes tens of milliseconds by design: call it off the async runtime.
pub fn hash_password(password: &str) -> Result<String, SecretsError> {
    let salt = SaltString::encode_b64(&random_bytes::<SALT_BYTES>()?)
        .map_err(|e| SecretsError::PasswordHash(format!("encoding the salt: {e}")))?;
    let hash = argon2id()?
        .hash_password(password.as_bytes(), &salt)
        .map_err(|e| SecretsError::PasswordHash(e.to_string()))?;
    Ok(hash.to_string())
}

/// Whether `password` matches the stored argon2id PHC string, using the
/// parameters recorded in it. A malformed string, or one of another
/// algorithm, is `false`.
pub fn verify_password(password: &str, phc: &str) -> bool {
    let Ok(parsed) = PasswordHash::new(phc) else {
        return false;
    };
    if parsed.algorithm != argon2::ARGON2ID_IDENT {
        return false;
    }
    // `Argon2::default()` only selects the implementation: verification
    // recomputes the hash with the algorithm, version and parameters of
    // `parsed`, and compares in constant time.
    Argon2::default()
        .verify_password(password.as_bytes(), &parsed)
        .is_ok()
}

/// A random password of 24 letters and digits (about 143 bits), for the
/// first administrator account and resets.
pub fn generate_password() -> Result<String, SecretsError> {
    // Rejection sampling keeps every character equally likely: a byte is
    // used only if it falls below the largest multiple of the alphabet size
    // (248 = 4 * 62), so `byte % 62` has no bias towards the first letters.
    const ALPHABET_LEN: usize = PASSWORD_ALPHABET.len();
    const ACCEPT_BELOW: usize = 256 - 256 % ALPHABET_LEN;
    let mut password = String::with_capacity(GENERATED_PASSWORD_LEN);
    while password.len() < GENERATED_PASSWORD_LEN {
        for byte in random_bytes::<32>()? {
            let byte = usize::from(byte);
            if byte < ACCEPT_BELOW && password.len() < GENERATED_PASSWORD_LEN {
                password.push(char::from(PASSWORD_ALPHABET[byte % ALPHABET_LEN]));
            }
        }
    }
    Ok(password)
}

/// `bytes` random bytes as base64url without padding (session ids, nonces).
pub fn random_urlsafe(bytes: usize) -> Result<String, SecretsError> {
    let mut buf = vec![0u8; bytes];
    SystemRandom::new()
        .fill(&mut buf)
        .map_err(|_| SecretsError::Random)?;
    Ok(URL_SAFE_NO_PAD.encode(buf))
}

fn random_bytes<const N: usize>() -> Result<[u8; N], SecretsError> {
    let mut buf = [0u8; N];
    SystemRandom::new()
        .fill(&mut buf)
        .map_err(|_| SecretsError::Random)?;
    Ok(buf)
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;
    use std::collections::HashSet;

    #[test]
    fn token_has_the_documented_shape_and_splits_back() {
        let token = TokenParts::generate().unwrap();
        assert_eq!(token.id.len(), 16);
        assert!(
            token
                .id
                .bytes()
                .all(|b| b.is_ascii_digit() || (b'a'..=b'f').contains(&b))
        );
        assert_eq!(token.secret.len(), 43);
        let text = token.to_string();
        assert_eq!(
            split_token(&text),
            Some((token.id.as_str(), token.secret.as_str()))
        );
    }

    #[test]
    fn token_debug_hides_the_secret() {
        let token = TokenParts::generate().unwrap();
        let debug = format!("{token:?}");
        assert!(debug.contains(&token.id));
        assert!(!debug.contains(&token.secret));
    }

    #[test]
    fn generated_tokens_are_unique() {
        let tokens: HashSet<String> = (0..1000)
            .map(|_| TokenParts::generate().unwrap().to_string())
            .collect();
        assert_eq!(tokens.len(), 1000);
        let ids: HashSet<String> = (0..1000)
            .map(|_| TokenParts::generate().unwrap().id)
            .collect();
        assert_eq!(ids.len(), 1000);
    }

    #[test]
    fn split_token_rejects_every_bad_shape() {
        let good = TokenParts::generate().unwrap();
        let id = good.id.as_str();
        let secret = good.secret.as_str();
        // A secret whose last character sets the 2 unused bits ('B' = 000001).
        let non_canonical = format!("{}B", &"A".repeat(42));
        let bad: Vec<String> = vec![
            String::new(),
            ".".into(),
            id.into(),
            format!("{id}."),
            format!(".{secret}"),
            secret.into(),
            format!("{id}{secret}"),
            format!("{id}.{secret}.x"),
            format!("{id}.{secret}="),
            format!("{}.{secret}", &id[..15]),
            format!("{id}0.{secret}"),
            format!("ABCDEF0123456789.{secret}"),
            format!("{}g.{secret}", &id[..15]),
            format!("{id}.{}", &secret[..42]),
            format!("{id}.{secret}A"),
            format!("{id}.{}+", &secret[..42]),
            format!("{id}.{}/", &secret[..42]),
            format!("{id}.{}=", &secret[..42]),
            format!("{id}.{} ", &secret[..42]),
            format!(" {id}.{secret}"),
            format!("{id}.{}é", &secret[..41]),
            format!("{id}.{non_canonical}"),
            format!("{id}:{secret}"),
        ];
        for s in &bad {
            assert_eq!(split_token(s), None, "accepted {s:?}");
        }
        // The canonical spelling of the same shape is accepted.
        assert!(split_token(&format!("{id}.{}", "A".repeat(43))).is_some());
    }

    #[test]
    fn secret_hash_round_trip() {
        let token = TokenParts::generate().unwrap();
        let stored = hash_secret(&token.secret);
        assert_eq!(stored.len(), 32);
        assert!(secret_matches(&token.secret, &stored));
        let other = TokenParts::generate().unwrap();
        assert!(!secret_matches(&other.secret, &stored));
        assert!(!secret_matches(&token.secret, &stored[..31]));
        assert!(!secret_matches(&token.secret, &[]));
    }

    #[test]
    fn password_round_trip_and_wrong_password() {
        let phc = hash_password("correct horse battery staple").unwrap();
        assert!(phc.starts_with("$argon2id$v=19$m=19456,t=2,p=1$"), "{phc}");
        assert!(verify_password("correct horse battery staple", &phc));
        assert!(!verify_password("correct horse battery stapl", &phc));
        assert!(!verify_password("", &phc));
        // Same password, fresh salt, different string.
        assert_ne!(hash_password("correct horse battery staple").unwrap(), phc);
    }

    #[test]
    fn malformed_stored_hash_is_false() {
        let phc = hash_password("pw").unwrap();
        let argon2i = phc.replacen("$argon2id$", "$argon2i$", 1);
        let truncated = &phc[..phc.len() - 10];
        let bad_params = phc.replacen("m=19456", "m=1", 1);
        for stored in [
            "",
            "$",
            "not a hash",
            "$argon2id$",
            "$argon2id$v=19$m=x$y$z",
            truncated,
            &argon2i,
            &bad_params,
        ] {
            assert!(!verify_password("pw", stored), "accepted {stored:?}");
        }
    }

    #[test]
    fn generated_passwords_are_alphanumeric_and_unique() {
        let passwords: HashSet<String> = (0..200).map(|_| generate_password().unwrap()).collect();
        assert_eq!(passwords.len(), 200);
        for p in &passwords {
            assert_eq!(p.len(), 24);
            assert!(p.bytes().all(|b| b.is_ascii_alphanumeric()), "{p}");
        }
        // Every character of the alphabet shows up across 4800 draws (each
        // is missed with probability (61/62)^4800, about 1e-34).
        let seen: HashSet<u8> = passwords.iter().flat_map(|p| p.bytes()).collect();
        assert_eq!(seen.len(), PASSWORD_ALPHABET.len());
    }

    #[test]
    fn random_urlsafe_has_the_expected_length() {
        assert_eq!(random_urlsafe(32).unwrap().len(), 43);
        assert_eq!(random_urlsafe(0).unwrap(), "");
        let a = random_urlsafe(32).unwrap();
        assert!(
            a.bytes()
                .all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'_')
        );
        assert_ne!(a, random_urlsafe(32).unwrap());
    }
}
