//! WebAuthn verification against a software authenticator: real ES256,
//! EdDSA and RS256 keys (ring), real CBOR (ciborium), real signatures. Each
//! check of §7.1 and §7.2 is made to fail by changing one thing in an
//! otherwise valid response.
//!
//! `testdata/rs256-test-key.pk8` is a 2048-bit RSA key made for these tests
//! (ring verifies RSA but cannot generate keys) with `openssl genpkey
//! -algorithm RSA -pkeyopt rsa_keygen_bits:2048 -outform DER`, then `openssl
//! pkcs8 -topk8 -nocrypt -inform DER -outform DER` (OpenSSL 3.0 writes PKCS#1
//! in DER, ring reads PKCS#8). It protects nothing.

use base64::Engine as _;
use base64::engine::general_purpose::{URL_SAFE, URL_SAFE_NO_PAD};
use ciborium::value::Value;
use ring::rand::SystemRandom;
use ring::signature::{self, EcdsaKeyPair, Ed25519KeyPair, KeyPair as _, RsaKeyPair};

use super::webauthn::{
    ALGORITHMS, Assertion, Error, MAX_CLIENT_DATA_JSON, NewCredential, PublicKey, RelyingParty,
    client_data_challenge, verify_assertion, verify_registration,
};

const RP_ID: &str = "palisade.example.com";
const ORIGIN: &str = "https://palisade.example.com";
const CHALLENGE: &[u8] = b"a challenge of 32 random bytes!!";

const UP: u8 = 0x01;
const UV: u8 = 0x04;
const BE: u8 = 0x08;
const BS: u8 = 0x10;
const AT: u8 = 0x40;
const ED: u8 = 0x80;

fn rp() -> RelyingParty {
    RelyingParty {
        id: RP_ID.to_owned(),
        origins: vec!["https://localhost:8443".to_owned(), ORIGIN.to_owned()],
    }
}

fn cbor(value: &Value) -> Vec<u8> {
    let mut out = Vec::new();
    ciborium::ser::into_writer(value, &mut out).expect("encode CBOR");
    out
}

fn int(i: i64) -> Value {
    Value::Integer(i.into())
}

/// A COSE_Key from (label, value) pairs, in the given order.
fn cose(entries: Vec<(i64, Value)>) -> Vec<u8> {
    cbor(&Value::Map(
        entries.into_iter().map(|(k, v)| (int(k), v)).collect(),
    ))
}

/// (n, e) of a DER RSAPublicKey (SEQUENCE of two INTEGERs), as ring gives it.
fn rsa_components(der: &[u8]) -> (Vec<u8>, Vec<u8>) {
    fn element(input: &[u8], tag: u8) -> (&[u8], &[u8]) {
        assert_eq!(input[0], tag);
        let (len, header) = match input[1] {
            short @ 0..=0x7f => (usize::from(short), 2),
            long => {
                let octets = usize::from(long & 0x7f);
                let len = input[2..2 + octets]
                    .iter()
                    .fold(0, |acc, &b| (acc << 8) | usize::from(b));
                (len, 2 + octets)
            }
        };
        (&input[header..header + len], &input[header + len..])
    }
    let (sequence, _) = element(der, 0x30);
    let (n, rest) = element(sequence, 0x02);
    let (e, _) = element(rest, 0x02);
    (n.to_vec(), e.to_vec())
}

enum Signer {
    Es256(EcdsaKeyPair),
    Ed25519(Ed25519KeyPair),
    Rs256(RsaKeyPair),
}

impl Signer {
    fn es256() -> Self {
        let rng = SystemRandom::new();
        let alg = &signature::ECDSA_P256_SHA256_ASN1_SIGNING;
        let pkcs8 = EcdsaKeyPair::generate_pkcs8(alg, &rng).expect("generate P-256 key");
        Self::Es256(EcdsaKeyPair::from_pkcs8(alg, pkcs8.as_ref(), &rng).expect("P-256 key"))
    }

    fn ed25519() -> Self {
        let pkcs8 = Ed25519KeyPair::generate_pkcs8(&SystemRandom::new()).expect("Ed25519 key");
        Self::Ed25519(Ed25519KeyPair::from_pkcs8(pkcs8.as_ref()).expect("Ed25519 key"))
    }

    fn rs256() -> Self {
        let pkcs8 = include_bytes!("testdata/rs256-test-key.pk8");
        Self::Rs256(RsaKeyPair::from_pkcs8(pkcs8).expect("RSA test key"))
    }

    fn cose_key(&self) -> Vec<u8> {
        match self {
            Self::Es256(key) => {
                let point = key.public_key().as_ref();
                assert_eq!(point.len(), 65);
                cose(vec![
                    (1, int(2)),
                    (3, int(-7)),
                    (-1, int(1)),
                    (-2, Value::Bytes(point[1..33].to_vec())),
                    (-3, Value::Bytes(point[33..].to_vec())),
                ])
            }
            Self::Ed25519(key) => cose(vec![
                (1, int(1)),
                (3, int(-8)),
                (-1, int(6)),
                (-2, Value::Bytes(key.public_key().as_ref().to_vec())),
            ]),
            Self::Rs256(key) => {
                let (n, e) = rsa_components(key.public().as_ref());
                cose(vec![
                    (1, int(3)),
                    (3, int(-257)),
                    (-1, Value::Bytes(n)),
                    (-2, Value::Bytes(e)),
                ])
            }
        }
    }

    fn sign(&self, message: &[u8]) -> Vec<u8> {
        let rng = SystemRandom::new();
        match self {
            Self::Es256(key) => key.sign(&rng, message).expect("sign").as_ref().to_vec(),
            Self::Ed25519(key) => key.sign(message).as_ref().to_vec(),
            Self::Rs256(key) => {
                let mut sig = vec![0; key.public().modulus_len()];
                key.sign(&signature::RSA_PKCS1_SHA256, &rng, message, &mut sig)
                    .expect("sign");
                sig
            }
        }
    }
}

/// What the browser and the authenticator put in one response. Tests change
/// one field of a valid response.
#[derive(Clone)]
struct Response {
    kind: &'static str,
    challenge: Vec<u8>,
    origin: String,
    cross_origin: Option<bool>,
    rp_id: String,
    flags: u8,
    sign_count: u32,
    /// Bytes after the attested credential data (registration) or after
    /// the fixed 37 bytes (assertion): extensions, or garbage.
    tail: Vec<u8>,
}

impl Response {
    fn create() -> Self {
        Self {
            kind: "webauthn.create",
            challenge: CHALLENGE.to_vec(),
            origin: ORIGIN.to_owned(),
            cross_origin: Some(false),
            rp_id: RP_ID.to_owned(),
            flags: UP | UV | AT,
            sign_count: 0,
            tail: Vec::new(),
        }
    }

    fn get(sign_count: u32) -> Self {
        Self {
            kind: "webauthn.get",
            flags: UP | UV,
            sign_count,
            ..Self::create()
        }
    }

    fn client_data_json(&self) -> Vec<u8> {
        let mut json = serde_json::json!({
            "type": self.kind,
            "challenge": URL_SAFE_NO_PAD.encode(&self.challenge),
            "origin": self.origin,
        });
        if let Some(cross_origin) = self.cross_origin {
            json["crossOrigin"] = cross_origin.into();
        }
        serde_json::to_vec(&json).expect("client data")
    }

    /// authenticatorData with `middle` (attested credential data) before
    /// the tail.
    fn authenticator_data(&self, middle: &[u8]) -> Vec<u8> {
        let rp_id_hash = ring::digest::digest(&ring::digest::SHA256, self.rp_id.as_bytes());
        let mut data = rp_id_hash.as_ref().to_vec();
        data.push(self.flags);
        data.extend_from_slice(&self.sign_count.to_be_bytes());
        data.extend_from_slice(middle);
        data.extend_from_slice(&self.tail);
        data
    }
}

/// The attested credential data of §6.5.1 (a zero AAGUID, as with "none").
fn attested_credential(id: &[u8], cose_key: &[u8]) -> Vec<u8> {
    let mut data = vec![0; 16];
    data.extend_from_slice(&u16::try_from(id.len()).expect("id length").to_be_bytes());
    data.extend_from_slice(id);
    data.extend_from_slice(cose_key);
    data
}

fn attestation_object(auth_data: Vec<u8>) -> Vec<u8> {
    cbor(&Value::Map(vec![
        (Value::Text("fmt".into()), Value::Text("none".into())),
        (Value::Text("attStmt".into()), Value::Map(Vec::new())),
        (Value::Text("authData".into()), Value::Bytes(auth_data)),
    ]))
}

struct Authenticator {
    signer: Signer,
    credential_id: Vec<u8>,
}

/// An assertion as the browser posts it.
struct Signed {
    client_data_json: Vec<u8>,
    authenticator_data: Vec<u8>,
    signature: Vec<u8>,
}

impl Authenticator {
    fn new(signer: Signer) -> Self {
        Self {
            signer,
            credential_id: (0u8..32).collect(),
        }
    }

    /// (clientDataJSON, attestationObject) of a registration.
    fn create(&self, response: &Response) -> (Vec<u8>, Vec<u8>) {
        self.create_with_key(response, &self.signer.cose_key())
    }

    fn create_with_key(&self, response: &Response, cose_key: &[u8]) -> (Vec<u8>, Vec<u8>) {
        let middle = attested_credential(&self.credential_id, cose_key);
        (
            response.client_data_json(),
            attestation_object(response.authenticator_data(&middle)),
        )
    }

    fn get(&self, response: &Response) -> Signed {
        let client_data_json = response.client_data_json();
        let authenticator_data = response.authenticator_data(&[]);
        let mut signed = authenticator_data.clone();
        signed.extend_from_slice(
            ring::digest::digest(&ring::digest::SHA256, &client_data_json).as_ref(),
        );
        Signed {
            signature: self.signer.sign(&signed),
            client_data_json,
            authenticator_data,
        }
    }
}

fn register(
    authenticator: &Authenticator,
    response: &Response,
    require_uv: bool,
) -> Result<NewCredential, Error> {
    let (client_data_json, attestation_object) = authenticator.create(response);
    verify_registration(
        &rp(),
        CHALLENGE,
        &client_data_json,
        &attestation_object,
        require_uv,
    )
}

fn verify(
    credential: &NewCredential,
    stored_count: u32,
    signed: &Signed,
    require_uv: bool,
) -> Result<Assertion, Error> {
    verify_assertion(
        &rp(),
        CHALLENGE,
        &credential.public_key,
        stored_count,
        &signed.client_data_json,
        &signed.authenticator_data,
        &signed.signature,
        require_uv,
    )
}

/// A registered authenticator and its credential.
fn registered(signer: Signer) -> (Authenticator, NewCredential) {
    let authenticator = Authenticator::new(signer);
    let credential = register(&authenticator, &Response::create(), true).expect("registration");
    (authenticator, credential)
}

fn round_trip(signer: Signer, algorithm: i64) {
    let authenticator = Authenticator::new(signer);
    let credential = register(&authenticator, &Response::create(), true).expect("registration");
    assert_eq!(
        credential,
        NewCredential {
            id: authenticator.credential_id.clone(),
            public_key: authenticator.signer.cose_key(),
            algorithm,
            sign_count: 0,
            user_verified: true,
            backup_eligible: false,
        }
    );
    assert_eq!(
        PublicKey::from_cose(&credential.public_key)
            .expect("stored key parses")
            .algorithm(),
        algorithm
    );
    for (stored, now) in [(0, 1), (1, 2), (2, 40)] {
        let signed = authenticator.get(&Response::get(now));
        assert_eq!(
            verify(&credential, stored, &signed, true).expect("assertion"),
            Assertion {
                sign_count: now,
                user_verified: true
            }
        );
    }
}

#[test]
fn es256_registers_and_signs_in() {
    round_trip(Signer::es256(), -7);
}

#[test]
fn eddsa_registers_and_signs_in() {
    round_trip(Signer::ed25519(), -8);
}

#[test]
fn rs256_registers_and_signs_in() {
    round_trip(Signer::rs256(), -257);
}

#[test]
fn algorithms_are_offered_in_order_of_preference() {
    assert_eq!(ALGORITHMS, [-7, -8, -257]);
}

#[test]
fn the_challenge_is_read_from_the_client_data() {
    let json = Response::create().client_data_json();
    assert_eq!(client_data_challenge(&json).expect("challenge"), CHALLENGE);

    // Browsers never pad; padding, standard base64 and garbage are refused.
    let padded = format!(
        r#"{{"type":"webauthn.get","challenge":"{}","origin":"{ORIGIN}"}}"#,
        URL_SAFE.encode(b"seventeen bytes!!")
    );
    assert!(padded.contains('='));
    assert!(matches!(
        client_data_challenge(padded.as_bytes()),
        Err(Error::Malformed(_))
    ));
    let standard = r#"{"type":"webauthn.get","challenge":"a+b/","origin":"x"}"#;
    assert!(matches!(
        client_data_challenge(standard.as_bytes()),
        Err(Error::Malformed(_))
    ));

    for bad in [
        &b""[..],
        b"{}",
        b"[]",
        b"\xff\xfe",
        br#"{"type":"webauthn.get","origin":"x"}"#,
    ] {
        assert!(
            matches!(client_data_challenge(bad), Err(Error::Malformed(_))),
            "{bad:?}"
        );
    }
    let mut huge = Response::create();
    huge.origin = "x".repeat(MAX_CLIENT_DATA_JSON);
    assert!(matches!(
        client_data_challenge(&huge.client_data_json()),
        Err(Error::TooLarge(_))
    ));
}

#[test]
fn the_wrong_type_is_refused() {
    let (authenticator, credential) = registered(Signer::es256());
    let mut create = Response::create();
    create.kind = "webauthn.get";
    assert!(matches!(
        register(&authenticator, &create, true),
        Err(Error::WrongType)
    ));

    let mut get = Response::get(1);
    get.kind = "webauthn.create";
    let signed = authenticator.get(&get);
    assert!(matches!(
        verify(&credential, 0, &signed, true),
        Err(Error::WrongType)
    ));
}

#[test]
fn the_wrong_challenge_is_refused() {
    let (authenticator, credential) = registered(Signer::es256());
    let mut create = Response::create();
    create.challenge[0] ^= 1;
    assert!(matches!(
        register(&authenticator, &create, true),
        Err(Error::WrongChallenge)
    ));

    let mut get = Response::get(1);
    get.challenge.pop();
    let signed = authenticator.get(&get);
    assert!(matches!(
        verify(&credential, 0, &signed, true),
        Err(Error::WrongChallenge)
    ));

    // An empty expected challenge (a caller's mistake) matches nothing, not
    // even an empty one.
    let mut empty = Response::create();
    empty.challenge.clear();
    let (json, object) = authenticator.create(&empty);
    assert!(matches!(
        verify_registration(&rp(), b"", &json, &object, true),
        Err(Error::WrongChallenge)
    ));
}

#[test]
fn the_wrong_origin_is_refused() {
    let (authenticator, credential) = registered(Signer::es256());
    for origin in [
        "https://evil.example.com",
        "http://palisade.example.com",
        "https://palisade.example.com:443",
        "",
    ] {
        let mut create = Response::create();
        create.origin = origin.to_owned();
        assert!(
            matches!(
                register(&authenticator, &create, true),
                Err(Error::WrongOrigin)
            ),
            "{origin}"
        );

        let mut get = Response::get(1);
        get.origin = origin.to_owned();
        let signed = authenticator.get(&get);
        assert!(
            matches!(
                verify(&credential, 0, &signed, true),
                Err(Error::WrongOrigin)
            ),
            "{origin}"
        );
    }
    // Every configured origin is accepted.
    let mut get = Response::get(1);
    get.origin = "https://localhost:8443".to_owned();
    assert!(verify(&credential, 0, &authenticator.get(&get), true).is_ok());
}

#[test]
fn cross_origin_ceremonies_are_refused() {
    let (authenticator, credential) = registered(Signer::es256());
    let mut create = Response::create();
    create.cross_origin = Some(true);
    assert!(matches!(
        register(&authenticator, &create, true),
        Err(Error::CrossOrigin)
    ));
    let mut get = Response::get(1);
    get.cross_origin = Some(true);
    assert!(matches!(
        verify(&credential, 0, &authenticator.get(&get), true),
        Err(Error::CrossOrigin)
    ));

    // Absent (older browsers) is same-origin.
    let mut create = Response::create();
    create.cross_origin = None;
    assert!(register(&authenticator, &create, true).is_ok());
    let mut get = Response::get(1);
    get.cross_origin = None;
    assert!(verify(&credential, 0, &authenticator.get(&get), true).is_ok());
}

#[test]
fn another_relying_partys_authenticator_data_is_refused() {
    let (authenticator, credential) = registered(Signer::es256());
    for rp_id in ["example.com", "evil.example.com", "localhost"] {
        let mut create = Response::create();
        create.rp_id = rp_id.to_owned();
        assert!(matches!(
            register(&authenticator, &create, true),
            Err(Error::WrongRelyingParty)
        ));
        let mut get = Response::get(1);
        get.rp_id = rp_id.to_owned();
        assert!(matches!(
            verify(&credential, 0, &authenticator.get(&get), true),
            Err(Error::WrongRelyingParty)
        ));
    }
}

#[test]
fn user_presence_is_required() {
    let (authenticator, credential) = registered(Signer::es256());
    let mut create = Response::create();
    create.flags &= !UP;
    assert!(matches!(
        register(&authenticator, &create, false),
        Err(Error::UserNotPresent)
    ));
    let mut get = Response::get(1);
    get.flags &= !UP;
    assert!(matches!(
        verify(&credential, 0, &authenticator.get(&get), false),
        Err(Error::UserNotPresent)
    ));
}

#[test]
fn user_verification_is_required_when_asked_for() {
    let (authenticator, credential) = registered(Signer::es256());
    let mut create = Response::create();
    create.flags &= !UV;
    assert!(matches!(
        register(&authenticator, &create, true),
        Err(Error::UserNotVerified)
    ));
    let unverified = register(&authenticator, &create, false).expect("UV not required");
    assert!(!unverified.user_verified);

    let mut get = Response::get(1);
    get.flags &= !UV;
    let signed = authenticator.get(&get);
    assert!(matches!(
        verify(&credential, 0, &signed, true),
        Err(Error::UserNotVerified)
    ));
    assert_eq!(
        verify(&credential, 0, &signed, false).expect("UV not required"),
        Assertion {
            sign_count: 1,
            user_verified: false
        }
    );
}

#[test]
fn backup_flags_are_reported_and_must_agree() {
    let authenticator = Authenticator::new(Signer::ed25519());
    let mut create = Response::create();
    create.flags |= BE | BS;
    assert!(
        register(&authenticator, &create, true)
            .expect("synced passkey")
            .backup_eligible
    );
    create.flags &= !BE;
    assert!(matches!(
        register(&authenticator, &create, true),
        Err(Error::Malformed(_))
    ));
}

#[test]
fn a_tampered_signature_is_refused() {
    for signer in [Signer::es256(), Signer::ed25519(), Signer::rs256()] {
        let (authenticator, credential) = registered(signer);
        let signed = authenticator.get(&Response::get(1));
        for i in [0, signed.signature.len() / 2, signed.signature.len() - 1] {
            let mut tampered = Signed {
                signature: signed.signature.clone(),
                client_data_json: signed.client_data_json.clone(),
                authenticator_data: signed.authenticator_data.clone(),
            };
            tampered.signature[i] ^= 0x01;
            assert!(matches!(
                verify(&credential, 0, &tampered, true),
                Err(Error::BadSignature)
            ));
        }
        // Signed data changed after signing: the counter, the client data.
        let mut tampered = Signed {
            signature: signed.signature.clone(),
            client_data_json: signed.client_data_json.clone(),
            authenticator_data: signed.authenticator_data.clone(),
        };
        tampered.authenticator_data[36] ^= 0x02;
        assert!(matches!(
            verify(&credential, 0, &tampered, true),
            Err(Error::BadSignature)
        ));
        tampered.authenticator_data = signed.authenticator_data.clone();
        tampered.client_data_json.push(b' ');
        assert!(matches!(
            verify(&credential, 0, &tampered, true),
            Err(Error::BadSignature)
        ));
        assert!(matches!(
            verify(
                &credential,
                0,
                &Signed {
                    signature: Vec::new(),
                    ..tampered
                },
                true
            ),
            Err(Error::BadSignature)
        ));
    }
}

#[test]
fn a_signature_by_another_key_is_refused() {
    for (signer, other) in [
        (Signer::es256(), Signer::es256()),
        (Signer::ed25519(), Signer::ed25519()),
        (Signer::rs256(), Signer::es256()),
    ] {
        let (_, credential) = registered(signer);
        let impostor = Authenticator::new(other);
        let signed = impostor.get(&Response::get(1));
        assert!(matches!(
            verify(&credential, 0, &signed, true),
            Err(Error::BadSignature)
        ));
    }
}

#[test]
fn the_counter_must_increase_unless_never_used() {
    let (authenticator, credential) = registered(Signer::es256());
    for (stored, now) in [(5, 5), (5, 4), (5, 0), (u32::MAX, 0)] {
        let signed = authenticator.get(&Response::get(now));
        assert!(
            matches!(
                verify(&credential, stored, &signed, true),
                Err(Error::CounterWentBack)
            ),
            "{stored} -> {now}"
        );
    }
    // Authenticators without a counter (most synced passkeys) send zero.
    let signed = authenticator.get(&Response::get(0));
    assert_eq!(
        verify(&credential, 0, &signed, true)
            .expect("0/0")
            .sign_count,
        0
    );
    // A bad signature is reported as such, whatever the counter.
    let mut forged = authenticator.get(&Response::get(3));
    forged.signature[10] ^= 1;
    assert!(matches!(
        verify(&credential, 7, &forged, true),
        Err(Error::BadSignature)
    ));
}

#[test]
fn truncated_authenticator_data_is_refused() {
    let (authenticator, credential) = registered(Signer::es256());
    let signed = authenticator.get(&Response::get(1));
    for len in [0, 1, 32, 33, 36] {
        let truncated = Signed {
            authenticator_data: signed.authenticator_data[..len].to_vec(),
            client_data_json: signed.client_data_json.clone(),
            signature: signed.signature.clone(),
        };
        assert!(
            matches!(
                verify(&credential, 0, &truncated, true),
                Err(Error::Malformed(_))
            ),
            "{len}"
        );
    }

    // A registration cut anywhere in the attested credential data or key.
    let response = Response::create();
    let full = response.authenticator_data(&attested_credential(
        &authenticator.credential_id,
        &authenticator.signer.cose_key(),
    ));
    for len in [36, 37, 50, 54, 55, 70, full.len() - 1] {
        let object = attestation_object(full[..len].to_vec());
        let result = verify_registration(
            &rp(),
            CHALLENGE,
            &response.client_data_json(),
            &object,
            true,
        );
        assert!(
            matches!(result, Err(Error::Malformed(_) | Error::BadKey(_))),
            "{len}: {result:?}"
        );
    }
}

#[test]
fn trailing_bytes_are_refused() {
    let (authenticator, credential) = registered(Signer::es256());
    let mut create = Response::create();
    create.tail = vec![0x00];
    assert!(matches!(
        register(&authenticator, &create, true),
        Err(Error::Malformed(_))
    ));

    let mut get = Response::get(1);
    get.tail = b"garbage".to_vec();
    assert!(matches!(
        verify(&credential, 0, &authenticator.get(&get), true),
        Err(Error::Malformed(_))
    ));

    // After the attestation object itself.
    let (json, mut object) = authenticator.create(&Response::create());
    object.push(0xa0);
    assert!(matches!(
        verify_registration(&rp(), CHALLENGE, &json, &object, true),
        Err(Error::Malformed(_))
    ));
    // After the stored key.
    let mut key = credential.public_key.clone();
    key.push(0);
    let signed = authenticator.get(&Response::get(1));
    assert!(matches!(
        verify(
            &NewCredential {
                public_key: key,
                ..credential
            },
            0,
            &signed,
            true
        ),
        Err(Error::BadKey(_))
    ));
}

#[test]
fn extensions_must_be_a_cbor_map_when_flagged() {
    let (authenticator, credential) = registered(Signer::es256());
    let extensions = cbor(&Value::Map(vec![(
        Value::Text("credProtect".into()),
        int(2),
    )]));

    let mut create = Response::create();
    create.flags |= ED;
    create.tail = extensions.clone();
    assert!(register(&authenticator, &create, true).is_ok());
    let mut get = Response::get(1);
    get.flags |= ED;
    get.tail = extensions.clone();
    assert!(verify(&credential, 0, &authenticator.get(&get), true).is_ok());

    // Flagged but absent, not a map, not CBOR, or followed by more.
    let mut followed = extensions.clone();
    followed.push(0x01);
    for tail in [Vec::new(), cbor(&int(1)), vec![0xff, 0x00], followed] {
        create.tail = tail.clone();
        assert!(
            matches!(
                register(&authenticator, &create, true),
                Err(Error::Malformed(_))
            ),
            "{tail:?}"
        );
        get.tail = tail.clone();
        assert!(
            matches!(
                verify(&credential, 0, &authenticator.get(&get), true),
                Err(Error::Malformed(_))
            ),
            "{tail:?}"
        );
    }
    // Present but not flagged.
    let mut get = Response::get(1);
    get.tail = extensions;
    assert!(matches!(
        verify(&credential, 0, &authenticator.get(&get), true),
        Err(Error::Malformed(_))
    ));
}

#[test]
fn attested_credential_data_is_required_at_registration_only() {
    let (authenticator, credential) = registered(Signer::es256());
    let mut create = Response::create();
    create.flags &= !AT;
    assert!(matches!(
        register(&authenticator, &create, true),
        Err(Error::Malformed(_))
    ));

    // An assertion carrying attested credential data is not one.
    let mut get = Response::get(1);
    get.flags |= AT;
    get.tail = attested_credential(&authenticator.credential_id, &credential.public_key);
    assert!(matches!(
        verify(&credential, 0, &authenticator.get(&get), true),
        Err(Error::Malformed(_))
    ));
}

#[test]
fn credential_ids_are_1_to_1023_bytes() {
    let mut authenticator = Authenticator::new(Signer::ed25519());
    authenticator.credential_id = vec![7; 1023];
    assert_eq!(
        register(&authenticator, &Response::create(), true)
            .expect("1023 bytes")
            .id
            .len(),
        1023
    );
    for len in [0, 1024] {
        authenticator.credential_id = vec![7; len];
        assert!(
            matches!(
                register(&authenticator, &Response::create(), true),
                Err(Error::Malformed(_))
            ),
            "{len}"
        );
    }
}

#[test]
fn unsupported_algorithms_are_refused() {
    let authenticator = Authenticator::new(Signer::es256());
    let es384 = cose(vec![
        (1, int(2)),
        (3, int(-35)),
        (-1, int(2)),
        (-2, Value::Bytes(vec![1; 48])),
        (-3, Value::Bytes(vec![2; 48])),
    ]);
    let (json, object) = authenticator.create_with_key(&Response::create(), &es384);
    assert!(matches!(
        verify_registration(&rp(), CHALLENGE, &json, &object, true),
        Err(Error::UnsupportedAlgorithm(-35))
    ));
    for alg in [-36, -37, -65535, 1, 0] {
        let key = cose(vec![(1, int(2)), (3, int(alg)), (-1, int(1))]);
        assert!(
            matches!(PublicKey::from_cose(&key), Err(Error::UnsupportedAlgorithm(a)) if a == alg)
        );
    }
}

#[test]
fn keys_must_match_their_algorithm() {
    let x = || Value::Bytes(vec![9; 32]);
    let cases = [
        (
            "ES256 on an OKP key",
            vec![
                (1, int(1)),
                (3, int(-7)),
                (-1, int(1)),
                (-2, x()),
                (-3, x()),
            ],
        ),
        (
            "EdDSA on an EC2 key",
            vec![(1, int(2)), (3, int(-8)), (-1, int(6)), (-2, x())],
        ),
        (
            "RS256 on an EC2 key",
            vec![
                (1, int(2)),
                (3, int(-257)),
                (-1, int(1)),
                (-2, x()),
                (-3, x()),
            ],
        ),
        (
            "ES256 on P-384",
            vec![
                (1, int(2)),
                (3, int(-7)),
                (-1, int(2)),
                (-2, x()),
                (-3, x()),
            ],
        ),
        (
            "EdDSA on Ed448",
            vec![(1, int(1)), (3, int(-8)), (-1, int(7)), (-2, x())],
        ),
        (
            "EdDSA on X25519",
            vec![(1, int(1)), (3, int(-8)), (-1, int(4)), (-2, x())],
        ),
        (
            "no algorithm",
            vec![(1, int(2)), (-1, int(1)), (-2, x()), (-3, x())],
        ),
        (
            "text algorithm",
            vec![
                (1, int(2)),
                (3, Value::Text("ES256".into())),
                (-1, int(1)),
                (-2, x()),
                (-3, x()),
            ],
        ),
        (
            "no key type",
            vec![(3, int(-7)), (-1, int(1)), (-2, x()), (-3, x())],
        ),
        (
            "short x",
            vec![
                (1, int(2)),
                (3, int(-7)),
                (-1, int(1)),
                (-2, Value::Bytes(vec![9; 31])),
                (-3, x()),
            ],
        ),
        (
            "compressed point",
            vec![
                (1, int(2)),
                (3, int(-7)),
                (-1, int(1)),
                (-2, x()),
                (-3, Value::Bool(true)),
            ],
        ),
        (
            "no y",
            vec![(1, int(2)), (3, int(-7)), (-1, int(1)), (-2, x())],
        ),
        (
            "long Ed25519 key",
            vec![
                (1, int(1)),
                (3, int(-8)),
                (-1, int(6)),
                (-2, Value::Bytes(vec![9; 33])),
            ],
        ),
        (
            "twice the algorithm",
            vec![
                (1, int(2)),
                (3, int(-7)),
                (3, int(-7)),
                (-1, int(1)),
                (-2, x()),
                (-3, x()),
            ],
        ),
        (
            "RSA-1024",
            vec![
                (1, int(3)),
                (3, int(-257)),
                (-1, Value::Bytes(vec![0xc1; 128])),
                (-2, Value::Bytes(vec![1, 0, 1])),
            ],
        ),
        (
            "even modulus",
            vec![
                (1, int(3)),
                (3, int(-257)),
                (-1, Value::Bytes(vec![0xc2; 256])),
                (-2, Value::Bytes(vec![1, 0, 1])),
            ],
        ),
        (
            "exponent 1",
            vec![
                (1, int(3)),
                (3, int(-257)),
                (-1, Value::Bytes(vec![0xc1; 256])),
                (-2, Value::Bytes(vec![1])),
            ],
        ),
        (
            "even exponent",
            vec![
                (1, int(3)),
                (3, int(-257)),
                (-1, Value::Bytes(vec![0xc1; 256])),
                (-2, Value::Bytes(vec![1, 0, 0])),
            ],
        ),
        (
            "huge exponent",
            vec![
                (1, int(3)),
                (3, int(-257)),
                (-1, Value::Bytes(vec![0xc1; 256])),
                (-2, Value::Bytes(vec![3; 6])),
            ],
        ),
    ];
    let authenticator = Authenticator::new(Signer::es256());
    for (what, entries) in cases {
        let key = cose(entries);
        assert!(
            matches!(PublicKey::from_cose(&key), Err(Error::BadKey(_))),
            "{what}"
        );
        let (json, object) = authenticator.create_with_key(&Response::create(), &key);
        assert!(
            matches!(
                verify_registration(&rp(), CHALLENGE, &json, &object, true),
                Err(Error::BadKey(_))
            ),
            "{what}"
        );
    }
    for garbage in [
        &b""[..],
        b"\xa0",
        b"\x80",
        b"\xff",
        &[0x5a; super::webauthn::MAX_PUBLIC_KEY + 1],
    ] {
        assert!(PublicKey::from_cose(garbage).is_err());
    }
    // Unknown labels (kid) are allowed; a signed RSA encoding (leading zero) too.
    let signer = Signer::rs256();
    let Signer::Rs256(pair) = &signer else {
        unreachable!()
    };
    let (n, e) = rsa_components(pair.public().as_ref());
    assert_eq!(n[0], 0, "DER keeps the sign byte");
    let key = cose(vec![
        (2, Value::Bytes(b"kid".to_vec())),
        (1, int(3)),
        (3, int(-257)),
        (-1, Value::Bytes(n)),
        (-2, Value::Bytes(e)),
    ]);
    let parsed = PublicKey::from_cose(&key).expect("RSA key with a kid");
    let message = b"message";
    assert!(parsed.verify(message, &signer.sign(message)).is_ok());
}

#[test]
fn malformed_attestation_objects_are_refused() {
    let authenticator = Authenticator::new(Signer::es256());
    let response = Response::create();
    let auth_data = response.authenticator_data(&attested_credential(
        &authenticator.credential_id,
        &authenticator.signer.cose_key(),
    ));
    let text = |s: &str| Value::Text(s.into());
    let objects = [
        cbor(&Value::Array(vec![])),
        cbor(&Value::Map(vec![
            (text("fmt"), text("none")),
            (text("attStmt"), Value::Map(vec![])),
        ])),
        cbor(&Value::Map(vec![
            (text("fmt"), int(1)),
            (text("attStmt"), Value::Map(vec![])),
            (text("authData"), Value::Bytes(auth_data.clone())),
        ])),
        cbor(&Value::Map(vec![
            (text("fmt"), text("none")),
            (text("authData"), Value::Bytes(auth_data.clone())),
        ])),
        cbor(&Value::Map(vec![
            (text("fmt"), text("none")),
            (text("attStmt"), Value::Map(vec![])),
            (text("authData"), Value::Text("not bytes".into())),
        ])),
        cbor(&Value::Map(vec![
            (text("fmt"), text("none")),
            (text("attStmt"), Value::Map(vec![])),
            (text("authData"), Value::Bytes(auth_data.clone())),
            (text("authData"), Value::Bytes(auth_data.clone())),
        ])),
        Vec::new(),
        vec![0xa3],
    ];
    for object in objects {
        let result = verify_registration(
            &rp(),
            CHALLENGE,
            &response.client_data_json(),
            &object,
            true,
        );
        assert!(
            matches!(result, Err(Error::Malformed(_))),
            "{object:02x?}: {result:?}"
        );
    }
    let huge = vec![0; super::webauthn::MAX_ATTESTATION_OBJECT + 1];
    assert!(matches!(
        verify_registration(&rp(), CHALLENGE, &response.client_data_json(), &huge, true),
        Err(Error::TooLarge(_))
    ));
    // Attestation is not verified: any format and statement are recorded as
    // self-asserted.
    let packed = cbor(&Value::Map(vec![
        (text("fmt"), text("packed")),
        (
            text("attStmt"),
            Value::Map(vec![
                (text("alg"), int(-7)),
                (text("sig"), Value::Bytes(vec![0; 8])),
            ]),
        ),
        (text("authData"), Value::Bytes(auth_data)),
    ]));
    assert!(
        verify_registration(
            &rp(),
            CHALLENGE,
            &response.client_data_json(),
            &packed,
            true
        )
        .is_ok()
    );
}

#[test]
fn error_messages_do_not_repeat_the_input() {
    let mut create = Response::create();
    create.origin = "https://secret-origin.example".to_owned();
    let authenticator = Authenticator::new(Signer::es256());
    let error = register(&authenticator, &create, true).expect_err("wrong origin");
    assert_eq!(
        error.to_string(),
        "the response comes from an origin that is not ours"
    );
    assert!(!error.to_string().contains("secret"));
}
