//! What control reads from the platform for a command, as a compromised
//! platform could send it: a `SignedCommand` envelope, its signature checked
//! against a pinned key, then the command bytes themselves. Also the pin file
//! control reads at start. Nothing may panic, and whatever decodes must
//! round-trip through the protobuf types unchanged.

#![no_main]

use libfuzzer_sys::fuzz_target;
use palisade_proto::frame::encode_body;
use palisade_proto::msg::{
    command_signing_message, decode_command, decode_control_pin, validate_signed_command,
};
use palisade_proto::pb;
use prost::Message;
use ring::signature::{ED25519, Ed25519KeyPair, KeyPair, UnparsedPublicKey};

fuzz_target!(|data: &[u8]| {
    // The command bytes as if their signature had verified: the decoder is
    // the first code that interprets them.
    if let Ok(command) = decode_command(data) {
        let wire = encode_body(&pb::Command::from(command.clone()));
        assert_eq!(
            decode_command(&wire),
            Ok(command),
            "a decoded command must round-trip"
        );
    }

    // The envelope and the signature check, in control's order. A fixed key
    // stands for the pinned one; a random signature must never verify.
    if let Ok(signed) = pb::SignedCommand::decode(data)
        && validate_signed_command(&signed).is_ok()
    {
        let Ok(key) = Ed25519KeyPair::from_seed_unchecked(&[7; 32]) else {
            return;
        };
        let pinned = UnparsedPublicKey::new(&ED25519, key.public_key().as_ref().to_vec());
        let message = command_signing_message(&signed.command);
        let forged = pinned.verify(&message, &signed.signature).is_ok();
        let genuine = key.sign(&message);
        assert!(
            !forged || signed.signature == genuine.as_ref(),
            "only the key's own signature may verify"
        );
    }

    if let Ok(pin) = decode_control_pin(data) {
        assert_eq!(
            decode_control_pin(&encode_body(&pb::ControlPin::from(pin.clone()))),
            Ok(pin),
            "a decoded pin must round-trip"
        );
    }
});
