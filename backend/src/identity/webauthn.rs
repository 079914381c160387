//! WebAuthn (passkey) verification, sans-IO: the relying party's checks of a
//! registration (WebAuthn Level 2 §7.1) and of an authentication assertion
//! (§7.2), over the bytes the browser sent. No storage, no HTTP, no clock;
//! the caller finds the ceremony a response belongs to (with
//! [`client_data_challenge`]), stores credentials and their counters.
//!
//! Verified: the client data (type, challenge, origin, not cross-origin), the
//! authenticator data (RP ID hash, user presence, user verification when
//! required, backup flags consistent, layout exact to the last byte), the
//! credential public key (an algorithm of [`ALGORITHMS`] with a key of the
//! right type, curve and size) and the assertion's signature and counter.
//!
//! Deliberately not verified:
//! - Attestation. We request attestation `"none"`, so every credential is
//!   self-asserted: the attestation format is read but not trusted, the
//!   attestation statement and the AAGUID are not checked. Nothing here may
//!   be used to decide what make of authenticator a user holds.
//! - Token binding: browsers never shipped it and Level 3 drops it; the
//!   `tokenBinding` member of the client data is ignored.
//! - Extensions: their outputs must be well-formed CBOR but are not
//!   interpreted (we request none).
//!
//! Left to the caller: that the challenge was issued by us, is used once and
//! is not expired; that a new credential's id is not registered already and
//! equals the `rawId` the browser sent; that an assertion's credential
//! belongs to the user signing in; storing the returned signature counter.
//!
//! Invariants: no input makes this module panic; every input is size-bounded
//! before it is parsed; a credential public key returned by
//! [`verify_registration`] parses again with [`PublicKey::from_cose`] (it is
//! checked by that very function); challenges are compared in constant time
//! and one shorter than [`MIN_CHALLENGE`] never matches, so an empty expected
//! challenge passed by mistake lets nothing in.

use base64::Engine as _;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use ciborium::value::Value;
use ring::digest;
use ring::signature::{self, RsaPublicKeyComponents, UnparsedPublicKey};
use subtle::ConstantTimeEq;

/// COSE algorithm ids we accept, in our order of preference, for
/// `PublicKeyCredentialCreationOptions.pubKeyCredParams`: ES256 (-7), EdDSA
/// (-8), RS256 (-257).
pub const ALGORITHMS: [i64; 3] = [ES256, EDDSA, RS256];

const ES256: i64 = -7;
const EDDSA: i64 = -8;
const RS256: i64 = -257;

/// Largest clientDataJSON accepted. Browsers send a few hundred bytes.
pub const MAX_CLIENT_DATA_JSON: usize = 4 * 1024;
/// Largest attestationObject accepted; room for a certificate chain, which
/// `"none"` attestation does not even carry.
pub const MAX_ATTESTATION_OBJECT: usize = 64 * 1024;
/// Largest authenticatorData accepted: a credential id, an RSA-8192 key and
/// extension outputs fit many times over.
pub const MAX_AUTHENTICATOR_DATA: usize = 16 * 1024;
/// Largest COSE public key accepted: an RSA-8192 key is about 1,050 bytes.
pub const MAX_PUBLIC_KEY: usize = 2 * 1024;
/// Largest signature accepted (RSA-8192).
pub const MAX_SIGNATURE: usize = 1024;
/// Longest credential id (§7.1: at most 1023 bytes).
pub const MAX_CREDENTIAL_ID: usize = 1023;
/// Shortest challenge that can match (§13.4.3: at least 16 random bytes).
pub const MIN_CHALLENGE: usize = 16;
/// Deepest CBOR nesting read. A COSE key is one map deep, extension outputs a
/// few; the bound keeps the decoder's recursion (and stack) small.
const MAX_CBOR_NESTING: usize = 16;

// authenticatorData flags (§6.1).
const FLAG_UP: u8 = 0x01;
const FLAG_UV: u8 = 0x04;
const FLAG_BE: u8 = 0x08;
const FLAG_BS: u8 = 0x10;
const FLAG_AT: u8 = 0x40;
const FLAG_ED: u8 = 0x80;

/// Who we are to authenticators: the RP ID (a domain, e.g. "localhost" or
/// "palisade.example.com") and the origins pages are served from (e.g.
/// "https://localhost:8443").
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RelyingParty {
    pub id: String,
    pub origins: Vec<String>,
}

/// Why a response was refused. The messages name the check that failed and
/// never repeat the input.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    #[error("the {0} is larger than accepted")]
    TooLarge(&'static str),
    #[error("malformed WebAuthn response: {0}")]
    Malformed(&'static str),
    #[error("the client data is for another kind of ceremony")]
    WrongType,
    #[error("the response answers another challenge")]
    WrongChallenge,
    #[error("the response comes from an origin that is not ours")]
    WrongOrigin,
    #[error("cross-origin (embedded) ceremonies are refused")]
    CrossOrigin,
    #[error("the authenticator data is for another relying party")]
    WrongRelyingParty,
    #[error("the authenticator did not test user presence")]
    UserNotPresent,
    #[error("the authenticator did not verify the user")]
    UserNotVerified,
    #[error("unsupported COSE algorithm {0}")]
    UnsupportedAlgorithm(i64),
    #[error("unusable credential public key: {0}")]
    BadKey(&'static str),
    #[error("the signature does not verify")]
    BadSignature,
    #[error("the signature counter did not increase (possibly a cloned authenticator)")]
    CounterWentBack,
}

/// A credential created by navigator.credentials.create().
#[derive(Debug, Clone, PartialEq)]
pub struct NewCredential {
    pub id: Vec<u8>,
    /// The COSE_Key bytes, stored as-is and parsed again at each assertion.
    pub public_key: Vec<u8>,
    pub algorithm: i64,
    pub sign_count: u32,
    pub user_verified: bool,
    pub backup_eligible: bool,
}

/// What a verified assertion tells: the counter to store and whether the
/// user was verified (PIN, biometrics) rather than only present.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Assertion {
    pub sign_count: u32,
    pub user_verified: bool,
}

/// The challenge in a clientDataJSON, base64url-decoded (so the caller can
/// find/validate the ceremony it belongs to before verifying).
pub fn client_data_challenge(client_data_json: &[u8]) -> Result<Vec<u8>, Error> {
    Ok(ClientData::parse(client_data_json)?.challenge)
}

/// Verifies a registration response (§7.1) and returns the new credential.
///
/// The attestation statement is not verified (see the module documentation):
/// the credential is self-asserted. The caller must still check that the
/// credential id is not registered already.
pub fn verify_registration(
    rp: &RelyingParty,
    expected_challenge: &[u8],
    client_data_json: &[u8],
    attestation_object: &[u8],
    require_user_verification: bool,
) -> Result<NewCredential, Error> {
    if attestation_object.len() > MAX_ATTESTATION_OBJECT {
        return Err(Error::TooLarge("attestation object"));
    }
    ClientData::parse(client_data_json)?.check(rp, "webauthn.create", expected_challenge)?;
    let auth_data_bytes = authenticator_data_of(attestation_object)?;
    let auth_data = AuthenticatorData::parse(&auth_data_bytes)?;
    auth_data.check(rp, require_user_verification)?;
    let credential = auth_data
        .attested
        .ok_or(Error::Malformed("no attested credential data"))?;
    let key = PublicKey::from_cose(credential.public_key)?;
    Ok(NewCredential {
        id: credential.id.to_vec(),
        public_key: credential.public_key.to_vec(),
        algorithm: key.algorithm(),
        sign_count: auth_data.sign_count,
        user_verified: auth_data.flags & FLAG_UV != 0,
        backup_eligible: auth_data.flags & FLAG_BE != 0,
    })
}

/// Verifies an authentication assertion (§7.2) against a stored credential:
/// its COSE public key and the signature counter stored with it.
///
/// The counter must increase unless the authenticator keeps none (zero
/// before and now); anything else is [`Error::CounterWentBack`], the sign of
/// a cloned authenticator. It is checked after the signature, so that a
/// forged response cannot raise that alarm.
#[allow(clippy::too_many_arguments)] // The agreed API: one argument per field of the response.
pub fn verify_assertion(
    rp: &RelyingParty,
    expected_challenge: &[u8],
    public_key: &[u8],
    stored_sign_count: u32,
    client_data_json: &[u8],
    authenticator_data: &[u8],
    signature: &[u8],
    require_user_verification: bool,
) -> Result<Assertion, Error> {
    if signature.len() > MAX_SIGNATURE {
        return Err(Error::TooLarge("signature"));
    }
    let key = PublicKey::from_cose(public_key)?;
    ClientData::parse(client_data_json)?.check(rp, "webauthn.get", expected_challenge)?;
    let auth_data = AuthenticatorData::parse(authenticator_data)?;
    if auth_data.attested.is_some() {
        return Err(Error::Malformed("attested credential data in an assertion"));
    }
    auth_data.check(rp, require_user_verification)?;

    let client_data_hash = digest::digest(&digest::SHA256, client_data_json);
    let mut signed = Vec::with_capacity(authenticator_data.len() + client_data_hash.as_ref().len());
    signed.extend_from_slice(authenticator_data);
    signed.extend_from_slice(client_data_hash.as_ref());
    key.verify(&signed, signature)?;

    let sign_count = auth_data.sign_count;
    if (stored_sign_count != 0 || sign_count != 0) && sign_count <= stored_sign_count {
        return Err(Error::CounterWentBack);
    }
    Ok(Assertion {
        sign_count,
        user_verified: auth_data.flags & FLAG_UV != 0,
    })
}

/// A credential public key (a COSE_Key, RFC 9052 §7) of one of
/// [`ALGORITHMS`], checked for shape: key type, curve and sizes agree with
/// the algorithm. Whether an EC or Ed25519 point lies on its curve is checked
/// by ring at each verification; a key that does not verifies nothing.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PublicKey(Key);

#[derive(Debug, Clone, PartialEq, Eq)]
enum Key {
    /// The uncompressed SEC1 point, 0x04 || x || y.
    Es256 {
        point: [u8; 65],
    },
    Ed25519 {
        x: [u8; 32],
    },
    /// Modulus and exponent, big-endian without leading zeros.
    Rs256 {
        n: Vec<u8>,
        e: Vec<u8>,
    },
}

// COSE_Key labels (RFC 9052 §7.1, RFC 9053 §7).
const LABEL_KTY: i128 = 1;
const LABEL_ALG: i128 = 3;
/// `crv` for EC2 and OKP keys, `n` for RSA keys.
const LABEL_CRV_OR_N: i128 = -1;
/// `x` for EC2 and OKP keys, `e` for RSA keys.
const LABEL_X_OR_E: i128 = -2;
const LABEL_Y: i128 = -3;

const KTY_OKP: i128 = 1;
const KTY_EC2: i128 = 2;
const KTY_RSA: i128 = 3;
const CRV_P256: i128 = 1;
const CRV_ED25519: i128 = 6;

impl PublicKey {
    /// Parses a COSE_Key, the whole of `bytes`.
    pub fn from_cose(bytes: &[u8]) -> Result<Self, Error> {
        if bytes.len() > MAX_PUBLIC_KEY {
            return Err(Error::TooLarge("credential public key"));
        }
        let (value, used) = cbor_item(bytes).ok_or(Error::BadKey("not CBOR"))?;
        if used != bytes.len() {
            return Err(Error::BadKey("trailing bytes after the key"));
        }
        let Value::Map(entries) = value else {
            return Err(Error::BadKey("not a CBOR map"));
        };

        // Other labels (kid, key_ops...) are allowed and ignored; the ones we
        // read must appear once, or two parsers could see different keys.
        let (mut kty, mut alg, mut crv_or_n, mut x_or_e, mut y) = (None, None, None, None, None);
        for (label, value) in entries {
            let Value::Integer(label) = label else {
                continue;
            };
            let slot = match i128::from(label) {
                LABEL_KTY => &mut kty,
                LABEL_ALG => &mut alg,
                LABEL_CRV_OR_N => &mut crv_or_n,
                LABEL_X_OR_E => &mut x_or_e,
                LABEL_Y => &mut y,
                _ => continue,
            };
            if slot.replace(value).is_some() {
                return Err(Error::BadKey("a label appears twice"));
            }
        }

        let alg = alg
            .as_ref()
            .ok_or(Error::BadKey("no algorithm"))
            .and_then(|alg| integer(alg).ok_or(Error::BadKey("the algorithm is not an integer")))?;
        let alg = i64::try_from(alg).map_err(|_| Error::BadKey("the algorithm is out of range"))?;
        let kty = kty
            .as_ref()
            .and_then(integer)
            .ok_or(Error::BadKey("no integer key type"))?;
        let expected_kty = match alg {
            ES256 => KTY_EC2,
            EDDSA => KTY_OKP,
            RS256 => KTY_RSA,
            other => return Err(Error::UnsupportedAlgorithm(other)),
        };
        if kty != expected_kty {
            return Err(Error::BadKey("the key type does not match the algorithm"));
        }

        let key = match alg {
            ES256 => {
                check_curve(crv_or_n.as_ref(), CRV_P256)?;
                let x: &[u8; 32] = fixed_bytes(x_or_e.as_ref(), "x is not 32 bytes")?;
                let y: &[u8; 32] = fixed_bytes(y.as_ref(), "y is not 32 bytes")?;
                let mut point = [0x04; 65];
                point[1..33].copy_from_slice(x);
                point[33..].copy_from_slice(y);
                Key::Es256 { point }
            }
            EDDSA => {
                check_curve(crv_or_n.as_ref(), CRV_ED25519)?;
                let x: &[u8; 32] = fixed_bytes(x_or_e.as_ref(), "x is not 32 bytes")?;
                Key::Ed25519 { x: *x }
            }
            _ => {
                let n = rsa_modulus(crv_or_n.as_ref())?;
                let e = rsa_exponent(x_or_e.as_ref())?;
                Key::Rs256 {
                    n: n.to_vec(),
                    e: e.to_vec(),
                }
            }
        };
        Ok(Self(key))
    }

    /// The COSE algorithm id (one of [`ALGORITHMS`]).
    pub fn algorithm(&self) -> i64 {
        match self.0 {
            Key::Es256 { .. } => ES256,
            Key::Ed25519 { .. } => EDDSA,
            Key::Rs256 { .. } => RS256,
        }
    }

    /// Verifies `signature` over `message` as WebAuthn encodes them: ECDSA
    /// as ASN.1 DER, EdDSA raw, RSA PKCS#1 v1.5 with SHA-256.
    pub fn verify(&self, message: &[u8], signature: &[u8]) -> Result<(), Error> {
        let verified = match &self.0 {
            Key::Es256 { point } => {
                UnparsedPublicKey::new(&signature::ECDSA_P256_SHA256_ASN1, point)
                    .verify(message, signature)
            }
            Key::Ed25519 { x } => {
                UnparsedPublicKey::new(&signature::ED25519, x).verify(message, signature)
            }
            Key::Rs256 { n, e } => RsaPublicKeyComponents { n, e }.verify(
                &signature::RSA_PKCS1_2048_8192_SHA256,
                message,
                signature,
            ),
        };
        verified.map_err(|_| Error::BadSignature)
    }
}

fn integer(value: &Value) -> Option<i128> {
    match value {
        Value::Integer(i) => Some(i128::from(*i)),
        _ => None,
    }
}

fn check_curve(crv: Option<&Value>, expected: i128) -> Result<(), Error> {
    match crv.and_then(integer) {
        Some(crv) if crv == expected => Ok(()),
        _ => Err(Error::BadKey("the curve does not match the algorithm")),
    }
}

fn fixed_bytes<'a, const N: usize>(
    value: Option<&'a Value>,
    problem: &'static str,
) -> Result<&'a [u8; N], Error> {
    match value {
        Some(Value::Bytes(bytes)) => bytes
            .as_slice()
            .try_into()
            .map_err(|_| Error::BadKey(problem)),
        _ => Err(Error::BadKey(problem)),
    }
}

fn without_leading_zeros(bytes: &[u8]) -> &[u8] {
    let start = bytes.iter().position(|&b| b != 0).unwrap_or(bytes.len());
    bytes.get(start..).unwrap_or_default()
}

/// The modulus of an RSA key, which ring accepts for RS256 verification:
/// 2048 to 8192 bits and odd. Leading zero bytes (a signed encoding) are
/// tolerated and dropped.
fn rsa_modulus(value: Option<&Value>) -> Result<&[u8], Error> {
    let Some(Value::Bytes(n)) = value else {
        return Err(Error::BadKey("no RSA modulus"));
    };
    let n = without_leading_zeros(n);
    let bits = match n.first() {
        Some(&top) => n.len() * 8 - top.leading_zeros() as usize,
        None => 0,
    };
    if !(2048..=8192).contains(&bits) {
        return Err(Error::BadKey("the RSA modulus is not 2048 to 8192 bits"));
    }
    if n.last().is_none_or(|low| low & 1 == 0) {
        return Err(Error::BadKey("the RSA modulus is even"));
    }
    Ok(n)
}

/// The public exponent of an RSA key, within what ring verifies with: odd,
/// at least 3, at most 2^33 - 1.
fn rsa_exponent(value: Option<&Value>) -> Result<&[u8], Error> {
    let Some(Value::Bytes(e)) = value else {
        return Err(Error::BadKey("no RSA exponent"));
    };
    let e = without_leading_zeros(e);
    if e.len() > 5 {
        return Err(Error::BadKey("the RSA exponent is too large"));
    }
    let value = e.iter().fold(0u64, |acc, &b| (acc << 8) | u64::from(b));
    if !(3..(1 << 33)).contains(&value) || value & 1 == 0 {
        return Err(Error::BadKey("unsupported RSA exponent"));
    }
    Ok(e)
}

/// One CBOR data item from the front of `bytes`: its value and how many
/// bytes it took (the decoder reads exactly the item, so what is left in the
/// slice is what follows it).
fn cbor_item(bytes: &[u8]) -> Option<(Value, usize)> {
    let mut rest = bytes;
    let value: Value =
        ciborium::de::from_reader_with_recursion_limit(&mut rest, MAX_CBOR_NESTING).ok()?;
    Some((value, bytes.len() - rest.len()))
}

/// The client data (§5.8.1) as far as we read it. Other members
/// (`tokenBinding`, `topOrigin`, whatever browsers add) are ignored, as the
/// specification requires.
#[derive(serde::Deserialize)]
struct ClientDataJson {
    #[serde(rename = "type")]
    kind: String,
    challenge: String,
    origin: String,
    #[serde(rename = "crossOrigin", default)]
    cross_origin: Option<bool>,
}

struct ClientData {
    kind: String,
    challenge: Vec<u8>,
    origin: String,
    cross_origin: bool,
}

impl ClientData {
    fn parse(json: &[u8]) -> Result<Self, Error> {
        if json.len() > MAX_CLIENT_DATA_JSON {
            return Err(Error::TooLarge("client data"));
        }
        let data: ClientDataJson = serde_json::from_slice(json)
            .map_err(|_| Error::Malformed("the client data is not the expected JSON"))?;
        // Browsers encode the challenge as base64url without padding; one
        // encoding means one string per challenge.
        let challenge = URL_SAFE_NO_PAD
            .decode(&data.challenge)
            .map_err(|_| Error::Malformed("the challenge is not unpadded base64url"))?;
        Ok(Self {
            kind: data.kind,
            challenge,
            origin: data.origin,
            cross_origin: data.cross_origin.unwrap_or(false),
        })
    }

    /// §7.1 steps 7 to 9, §7.2 steps 11 to 13, and a refusal of embedded
    /// (cross-origin iframe) ceremonies, which we never start.
    fn check(&self, rp: &RelyingParty, kind: &str, expected_challenge: &[u8]) -> Result<(), Error> {
        if self.kind != kind {
            return Err(Error::WrongType);
        }
        let same: bool = self.challenge.ct_eq(expected_challenge).into();
        if !same || expected_challenge.len() < MIN_CHALLENGE {
            return Err(Error::WrongChallenge);
        }
        if !rp.origins.contains(&self.origin) {
            return Err(Error::WrongOrigin);
        }
        if self.cross_origin {
            return Err(Error::CrossOrigin);
        }
        Ok(())
    }
}

/// The `authData` of an attestation object (§6.5): a CBOR map with a text
/// `fmt`, a map `attStmt` (neither trusted) and a byte string `authData`,
/// and nothing after it.
fn authenticator_data_of(attestation_object: &[u8]) -> Result<Vec<u8>, Error> {
    let (value, used) = cbor_item(attestation_object)
        .ok_or(Error::Malformed("the attestation object is not CBOR"))?;
    if used != attestation_object.len() {
        return Err(Error::Malformed(
            "trailing bytes after the attestation object",
        ));
    }
    let Value::Map(entries) = value else {
        return Err(Error::Malformed("the attestation object is not a map"));
    };
    let (mut fmt, mut statement, mut auth_data) = (None, None, None);
    for (key, value) in entries {
        let Value::Text(key) = key else {
            continue;
        };
        let slot = match key.as_str() {
            "fmt" => &mut fmt,
            "attStmt" => &mut statement,
            "authData" => &mut auth_data,
            _ => continue,
        };
        if slot.replace(value).is_some() {
            return Err(Error::Malformed(
                "a member of the attestation object appears twice",
            ));
        }
    }
    if !matches!(fmt, Some(Value::Text(_))) {
        return Err(Error::Malformed("the attestation format is not text"));
    }
    if !matches!(statement, Some(Value::Map(_))) {
        return Err(Error::Malformed("the attestation statement is not a map"));
    }
    match auth_data {
        Some(Value::Bytes(auth_data)) => Ok(auth_data),
        _ => Err(Error::Malformed(
            "no authenticator data in the attestation object",
        )),
    }
}

/// authenticatorData (§6.1), parsed to its last byte.
struct AuthenticatorData<'a> {
    rp_id_hash: &'a [u8; 32],
    flags: u8,
    sign_count: u32,
    attested: Option<AttestedCredential<'a>>,
}

/// Attested credential data (§6.5.1), without the AAGUID, which we do not
/// trust (see the module documentation).
struct AttestedCredential<'a> {
    id: &'a [u8],
    public_key: &'a [u8],
}

impl<'a> AuthenticatorData<'a> {
    fn parse(data: &'a [u8]) -> Result<Self, Error> {
        if data.len() > MAX_AUTHENTICATOR_DATA {
            return Err(Error::TooLarge("authenticator data"));
        }
        let truncated = || Error::Malformed("the authenticator data is shorter than 37 bytes");
        let (rp_id_hash, rest) = data.split_first_chunk::<32>().ok_or_else(truncated)?;
        let (&flags, rest) = rest.split_first().ok_or_else(truncated)?;
        let (count, mut rest) = rest.split_first_chunk::<4>().ok_or_else(truncated)?;
        let sign_count = u32::from_be_bytes(*count);

        let attested = if flags & FLAG_AT != 0 {
            let (credential, after) = AttestedCredential::parse(rest)?;
            rest = after;
            Some(credential)
        } else {
            None
        };

        if flags & FLAG_ED != 0 {
            match cbor_item(rest) {
                Some((Value::Map(_), used)) if used == rest.len() => {}
                Some((Value::Map(_), _)) => {
                    return Err(Error::Malformed("trailing bytes after the extensions"));
                }
                _ => return Err(Error::Malformed("the extensions are not a CBOR map")),
            }
        } else if !rest.is_empty() {
            return Err(Error::Malformed("trailing bytes in the authenticator data"));
        }
        if flags & FLAG_BS != 0 && flags & FLAG_BE == 0 {
            return Err(Error::Malformed("backup state without backup eligibility"));
        }
        Ok(Self {
            rp_id_hash,
            flags,
            sign_count,
            attested,
        })
    }

    /// §7.1 steps 13 to 15, §7.2 steps 15 to 17.
    fn check(&self, rp: &RelyingParty, require_user_verification: bool) -> Result<(), Error> {
        let expected = digest::digest(&digest::SHA256, rp.id.as_bytes());
        if self.rp_id_hash.as_slice() != expected.as_ref() {
            return Err(Error::WrongRelyingParty);
        }
        if self.flags & FLAG_UP == 0 {
            return Err(Error::UserNotPresent);
        }
        if require_user_verification && self.flags & FLAG_UV == 0 {
            return Err(Error::UserNotVerified);
        }
        Ok(())
    }
}

impl<'a> AttestedCredential<'a> {
    /// The credential and what follows it in `data`.
    fn parse(data: &'a [u8]) -> Result<(Self, &'a [u8]), Error> {
        let truncated = || Error::Malformed("the attested credential data is truncated");
        let (_aaguid, rest) = data.split_first_chunk::<16>().ok_or_else(truncated)?;
        let (id_len, rest) = rest.split_first_chunk::<2>().ok_or_else(truncated)?;
        let id_len = usize::from(u16::from_be_bytes(*id_len));
        if id_len > MAX_CREDENTIAL_ID {
            return Err(Error::Malformed(
                "the credential id is longer than 1023 bytes",
            ));
        }
        if id_len == 0 {
            return Err(Error::Malformed("the credential id is empty"));
        }
        let (id, rest) = rest.split_at_checked(id_len).ok_or_else(truncated)?;
        let (_, key_len) =
            cbor_item(rest).ok_or(Error::BadKey("the credential public key is not CBOR"))?;
        let (public_key, rest) = rest.split_at_checked(key_len).ok_or_else(truncated)?;
        Ok((Self { id, public_key }, rest))
    }
}
