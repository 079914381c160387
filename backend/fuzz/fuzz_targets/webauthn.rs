//! WebAuthn responses as a browser (or an attacker) posts them: a
//! registration's clientDataJSON and attestationObject, then an assertion's
//! clientDataJSON, authenticatorData and signature, verified against the
//! registered key (or a fixed valid key when the registration fails).
//! Nothing panics; a registered credential's public key parses again with
//! its algorithm; an accepted assertion has a counter that went up (or
//! stayed at zero) and a verified user when verification was required.
//!
//! Input: one options byte (bit 0: require user verification; bits 1-2:
//! which fixed key; bits 3-7: the stored counter), four fields each behind a
//! big-endian u16 length, then the signature. The seeds are real responses
//! of the unit tests' software authenticator.

#![no_main]

use libfuzzer_sys::fuzz_target;
use palisade_backend::identity::webauthn::{
    self, ALGORITHMS, MAX_CREDENTIAL_ID, PublicKey, RelyingParty,
};

/// The next length-prefixed field (what is left, if the length overruns).
fn field<'a>(data: &mut &'a [u8]) -> &'a [u8] {
    let Some((len, rest)) = data.split_first_chunk::<2>() else {
        return std::mem::take(data);
    };
    let (field, rest) = rest.split_at(usize::from(u16::from_be_bytes(*len)).min(rest.len()));
    *data = rest;
    field
}

/// COSE keys of each supported algorithm, well-formed (their private keys
/// are unknown: no signature verifies with them).
fn fixed_key(choice: u8) -> Vec<u8> {
    match choice % 3 {
        // ES256, the P-256 base point.
        0 => [
            &[0xa5, 0x01, 0x02, 0x03, 0x26, 0x20, 0x01, 0x21, 0x58, 0x20][..],
            &hex("6b17d1f2e12c4247f8bce6e563a440f277037d812deb33a0f4a13945d898c296"),
            &[0x22, 0x58, 0x20],
            &hex("4fe342e2fe1a7f9b8ee7eb4a7c0f9e162bce33576b315ececbb6406837bf51f5"),
        ]
        .concat(),
        // EdDSA, the public key of RFC 8032's first test vector.
        1 => [
            &[0xa4, 0x01, 0x01, 0x03, 0x27, 0x20, 0x06, 0x21, 0x58, 0x20][..],
            &hex("d75a980182b10ab7d54bfed3c964073a0ee172f3daa62325af021a68f707511a"),
        ]
        .concat(),
        // RS256, an odd 2048-bit modulus and e = 65537.
        _ => [
            &[
                0xa4, 0x01, 0x03, 0x03, 0x39, 0x01, 0x00, 0x20, 0x59, 0x01, 0x00,
            ][..],
            &[0xc1; 256],
            &[0x21, 0x43, 0x01, 0x00, 0x01],
        ]
        .concat(),
    }
}

fn hex(s: &str) -> Vec<u8> {
    (0..s.len())
        .step_by(2)
        .map(|i| u8::from_str_radix(&s[i..i + 2], 16).expect("constant hex"))
        .collect()
}

fuzz_target!(|data: &[u8]| {
    let Some((&options, mut rest)) = data.split_first() else {
        return;
    };
    let create_json = field(&mut rest);
    let attestation_object = field(&mut rest);
    let get_json = field(&mut rest);
    let authenticator_data = field(&mut rest);
    let signature = rest;
    let require_uv = options & 1 != 0;
    let stored_count = u32::from(options >> 3);
    let rp = RelyingParty {
        id: "palisade.example.com".to_owned(),
        origins: vec!["https://palisade.example.com".to_owned()],
    };

    // Expect the challenge the client data names, so that inputs get past
    // that check to the ones after it.
    let challenge = webauthn::client_data_challenge(create_json).unwrap_or_default();
    let key = match webauthn::verify_registration(
        &rp,
        &challenge,
        create_json,
        attestation_object,
        require_uv,
    ) {
        Ok(credential) => {
            let key = PublicKey::from_cose(&credential.public_key)
                .expect("a registered public key parses again");
            assert_eq!(key.algorithm(), credential.algorithm);
            assert!(ALGORITHMS.contains(&credential.algorithm));
            assert!((1..=MAX_CREDENTIAL_ID).contains(&credential.id.len()));
            assert!(credential.user_verified || !require_uv);
            credential.public_key
        }
        Err(error) => {
            let _ = error.to_string();
            fixed_key(options >> 1)
        }
    };
    assert!(PublicKey::from_cose(&key).is_ok());

    let challenge = webauthn::client_data_challenge(get_json).unwrap_or_default();
    match webauthn::verify_assertion(
        &rp,
        &challenge,
        &key,
        stored_count,
        get_json,
        authenticator_data,
        signature,
        require_uv,
    ) {
        Ok(assertion) => {
            assert!(
                assertion.sign_count > stored_count
                    || (assertion.sign_count == 0 && stored_count == 0)
            );
            assert!(assertion.user_verified || !require_uv);
        }
        Err(error) => {
            let _ = error.to_string();
        }
    }
});
