//! Second factors: passkeys (added once, counters moved by compare-and-set,
//! challenges answered once, removed with the backup codes when no factor
//! is left), backup codes used once.

use palisade_backend::identity::factor_store::{self as factors, Passkey};
use palisade_backend::identity::{NewUser, store};

use crate::{Ctx, HOUR, T0, conformance};

conformance!(
    passkeys_are_added_once_and_their_counter_moves_forward_once,
    a_passkey_challenge_is_answered_once_until_it_expires,
    backup_codes_are_used_once_and_go_with_the_last_factor,
);

async fn user(ctx: &Ctx, name: &'static str) -> i64 {
    ctx.db
        .write("t", move |tx| {
            store::create_user(
                tx,
                &NewUser {
                    username: name.into(),
                    password_hash: "$argon2id$v=19$m=19456,t=2,p=1$c2FsdHNhbHQ$aGFzaA".into(),
                    created_at: T0,
                },
            )
        })
        .await
        .unwrap()
        .id
}

fn passkey(id: &str, user_id: i64, credential: &[u8]) -> Passkey {
    Passkey {
        id: id.into(),
        user_id,
        credential_id: credential.to_vec(),
        // Any bytes: the store keeps the COSE key as given.
        public_key: vec![0xa5, 0x01, 0x02, 0x03, 0x26],
        algorithm: -7,
        sign_count: 0,
        name: "Laptop".into(),
        created_at: T0,
        last_used_at: None,
    }
}

async fn passkeys_are_added_once_and_their_counter_moves_forward_once(ctx: Ctx) {
    let alice = user(&ctx, "alice").await;
    let bob = user(&ctx, "bob").await;
    let (a, b) = (passkey("p1", alice, &[1; 32]), passkey("p2", bob, &[1; 32]));
    let added = ctx
        .db
        .write("t", move |tx| {
            let first = factors::add_passkey(tx, &a)?;
            // The same credential again, even for someone else: refused.
            let again = factors::add_passkey(tx, &b)?;
            Ok((first, again))
        })
        .await
        .unwrap();
    assert_eq!(added, (true, false));
    let (found, factor, bobs) = ctx
        .db
        .read("t", move |tx| {
            Ok((
                factors::passkey_by_credential(tx, &[1; 32])?,
                factors::has_second_factor(tx, alice)?,
                factors::has_second_factor(tx, bob)?,
            ))
        })
        .await
        .unwrap();
    let found = found.expect("found by its credential id");
    assert_eq!(found, passkey("p1", alice, &[1; 32]));
    assert!(factor && !bobs);
    // Two uses read counter 0; only the first moves it.
    let moved = ctx
        .db
        .write("t", |tx| {
            Ok((
                factors::record_passkey_use(tx, "p1", 0, 1, T0 + 1)?,
                factors::record_passkey_use(tx, "p1", 0, 2, T0 + 2)?,
            ))
        })
        .await
        .unwrap();
    assert_eq!(moved, (true, false));
    let now = ctx
        .db
        .read("t", move |tx| factors::passkeys_of(tx, alice))
        .await
        .unwrap();
    assert_eq!((now[0].sign_count, now[0].last_used_at), (1, Some(T0 + 1)));
    // Removed only by its owner.
    let removed = ctx
        .db
        .write("t", move |tx| {
            Ok((
                factors::remove_passkey(tx, bob, "p1")?,
                factors::remove_passkey(tx, alice, "p1")?,
                factors::has_second_factor(tx, alice)?,
            ))
        })
        .await
        .unwrap();
    assert_eq!(removed, (false, true, false));
}

async fn a_passkey_challenge_is_answered_once_until_it_expires(ctx: Ctx) {
    let challenge = vec![7u8; 52];
    let (c1, c2) = (challenge.clone(), challenge.clone());
    let answered = ctx
        .db
        .write("t", move |tx| {
            Ok((
                factors::use_passkey_challenge(tx, &c1, T0 + HOUR)?,
                factors::use_passkey_challenge(tx, &c2, T0 + HOUR)?,
            ))
        })
        .await
        .unwrap();
    assert_eq!(answered, (true, false));
    // Forgotten once expired (by then the seal refuses it anyway).
    let forgotten = ctx
        .db
        .write("t", move |tx| {
            let swept = factors::forget_expired_challenges(tx, T0 + HOUR)?;
            Ok((
                swept,
                factors::use_passkey_challenge(tx, &challenge, T0 + 2 * HOUR)?,
            ))
        })
        .await
        .unwrap();
    assert_eq!(forgotten, (1, true));
}

async fn backup_codes_are_used_once_and_go_with_the_last_factor(ctx: Ctx) {
    let alice = user(&ctx, "alice").await;
    let key = passkey("p1", alice, &[2; 16]);
    let codes = vec!["aaaa-bbbb".to_owned(), "cccc-dddd".to_owned()];
    let used = ctx
        .db
        .write("t", move |tx| {
            factors::add_passkey(tx, &key)?;
            factors::replace_backup_codes(tx, alice, &codes, T0)?;
            Ok((
                factors::use_backup_code(tx, alice, "aaaa-bbbb", T0 + 1)?,
                factors::use_backup_code(tx, alice, "aaaa-bbbb", T0 + 2)?,
                factors::unused_backup_codes(tx, alice)?,
            ))
        })
        .await
        .unwrap();
    assert_eq!(used, (true, false, 1));
    let left = ctx
        .db
        .write("t", move |tx| {
            factors::lock_user(tx, alice)?;
            let removed = factors::remove_passkeys(tx, alice)?;
            Ok((removed, factors::unused_backup_codes(tx, alice)?))
        })
        .await
        .unwrap();
    assert_eq!(left, (1, 0), "no factor left, no backup codes");
}
