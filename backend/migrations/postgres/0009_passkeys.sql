-- Palisade backend schema, version 9: passkeys (WebAuthn credentials), a
-- second factor and, where [passkeys] passwordless allows it, a sign-in of
-- their own.

-- One row per credential. `public_key` is the COSE key as the authenticator
-- gave it; `sign_count` the authenticator's counter at its last use (a
-- counter that goes back means a cloned authenticator: refused).
CREATE TABLE passkeys (
    id            TEXT    PRIMARY KEY,
    user_id       BIGINT  NOT NULL REFERENCES users (id) ON DELETE CASCADE,
    credential_id BYTEA   NOT NULL UNIQUE,
    public_key    BYTEA   NOT NULL,
    algorithm     BIGINT  NOT NULL,
    sign_count    BIGINT  NOT NULL,
    name          TEXT    NOT NULL,
    created_at    BIGINT  NOT NULL,
    last_used_at  BIGINT
);
CREATE INDEX passkeys_user ON passkeys (user_id);

-- Ceremony challenges are sealed, not stored, when they are handed out;
-- one that was answered is recorded here until it expires, so each is
-- answered once.
CREATE TABLE passkey_challenges_used (
    challenge_hash BYTEA   PRIMARY KEY,
    expires_at     BIGINT  NOT NULL
);
