//! The enrollment token an operator pastes into `palisade-agent enroll`.
//!
//! Shape: `<id>.<secret>.<pin>` where `id` is 16 lowercase hex characters,
//! `secret` is 43 base64url characters (256 random bits) and `pin` is the
//! SHA-256, in 64 lowercase hex characters, of the SubjectPublicKeyInfo of the
//! CA certificate that anchors the backend's TLS chain (as kubeadm's
//! `--discovery-token-ca-cert-hash`). The agent sends only `<id>.<secret>`;
//! it checks the pin itself, so it never trusts on first use.

use std::fmt;

/// A parsed enrollment token.
#[derive(Clone, PartialEq, Eq)]
pub struct EnrollmentToken {
    pub id: String,
    pub secret: String,
    pub ca_pin: [u8; 32],
}

#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum TokenError {
    #[error("enrollment token must look like <id>.<secret>.<ca-pin>")]
    Shape,
    #[error("enrollment token id must be 16 lowercase hex characters")]
    Id,
    #[error("enrollment token secret must be 43 base64url characters")]
    Secret,
    #[error("enrollment token CA pin must be 64 lowercase hex characters")]
    Pin,
}

#[derive(Debug, thiserror::Error)]
#[error("cannot read the CA certificate to pin: {0}")]
pub struct PinError(String);

fn is_lower_hex(s: &str) -> bool {
    s.bytes()
        .all(|b| b.is_ascii_digit() || (b'a'..=b'f').contains(&b))
}

fn is_base64url(s: &str) -> bool {
    s.bytes()
        .all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'_')
}

/// Checks the `<id>` part of a token.
pub fn valid_id(id: &str) -> bool {
    id.len() == 16 && is_lower_hex(id)
}

/// Checks the `<secret>` part of a token.
pub fn valid_secret(secret: &str) -> bool {
    secret.len() == 43 && is_base64url(secret)
}

impl EnrollmentToken {
    /// What the agent sends to the backend: `<id>.<secret>`.
    pub fn credential(&self) -> String {
        format!("{}.{}", self.id, self.secret)
    }
}

impl std::str::FromStr for EnrollmentToken {
    type Err = TokenError;

    fn from_str(s: &str) -> Result<Self, TokenError> {
        let mut parts = s.trim().split('.');
        let (Some(id), Some(secret), Some(pin), None) =
            (parts.next(), parts.next(), parts.next(), parts.next())
        else {
            return Err(TokenError::Shape);
        };
        if !valid_id(id) {
            return Err(TokenError::Id);
        }
        if !valid_secret(secret) {
            return Err(TokenError::Secret);
        }
        if pin.len() != 64 || !is_lower_hex(pin) {
            return Err(TokenError::Pin);
        }
        let mut ca_pin = [0u8; 32];
        hex::decode_to_slice(pin, &mut ca_pin).map_err(|_| TokenError::Pin)?;
        Ok(EnrollmentToken {
            id: id.to_owned(),
            secret: secret.to_owned(),
            ca_pin,
        })
    }
}

impl fmt::Display for EnrollmentToken {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "{}.{}.{}",
            self.id,
            self.secret,
            hex::encode(self.ca_pin)
        )
    }
}

impl fmt::Debug for EnrollmentToken {
    // The secret never reaches a log.
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("EnrollmentToken")
            .field("id", &self.id)
            .field("secret", &"<redacted>")
            .field("ca_pin", &hex::encode(self.ca_pin))
            .finish()
    }
}

/// SHA-256 of the SubjectPublicKeyInfo of a certificate (DER).
pub fn spki_pin(cert_der: &[u8]) -> Result<[u8; 32], PinError> {
    use x509_parser::prelude::FromDer;
    let (_, cert) = x509_parser::certificate::X509Certificate::from_der(cert_der)
        .map_err(|e| PinError(e.to_string()))?;
    let digest = ring::digest::digest(&ring::digest::SHA256, cert.tbs_certificate.subject_pki.raw);
    let mut pin = [0u8; 32];
    pin.copy_from_slice(digest.as_ref());
    Ok(pin)
}

#[cfg(test)]
mod tests {
    use super::*;

    const GOOD: &str = "0123456789abcdef.AAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAA.\
                        00112233445566778899aabbccddeeff00112233445566778899aabbccddeeff";

    #[test]
    fn round_trip() {
        let t: EnrollmentToken = GOOD.parse().expect("valid token");
        assert_eq!(t.to_string(), GOOD);
        assert_eq!(
            t.credential(),
            "0123456789abcdef.AAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAA"
        );
        assert!(
            !format!("{t:?}").contains("AAAA"),
            "debug output must not show the secret"
        );
    }

    #[test]
    fn bad_shapes() {
        assert_eq!("".parse::<EnrollmentToken>(), Err(TokenError::Shape));
        assert_eq!("a.b".parse::<EnrollmentToken>(), Err(TokenError::Shape));
        assert_eq!(
            format!("{GOOD}.x").parse::<EnrollmentToken>(),
            Err(TokenError::Shape)
        );
        assert_eq!(
            GOOD.replacen("0123", "XYZ1", 1).parse::<EnrollmentToken>(),
            Err(TokenError::Id)
        );
        assert_eq!(
            GOOD.replacen("AAAA", "AA.A", 1).parse::<EnrollmentToken>(),
            Err(TokenError::Shape)
        );
        assert_eq!(
            GOOD.replacen("AAAA", "AA+A", 1).parse::<EnrollmentToken>(),
            Err(TokenError::Secret)
        );
        assert_eq!(
            GOOD.replacen("0011", "00G1", 1).parse::<EnrollmentToken>(),
            Err(TokenError::Pin)
        );
    }

    #[test]
    fn pin_of_garbage_is_an_error() {
        assert!(spki_pin(b"not a certificate").is_err());
    }
}
