-- Palisade backend schema, version 8: second factors (TOTP with backup
-- codes), the pending step of a two-step sign-in, and the time a session
-- last proved its user (for re-authentication before dangerous operations).

-- At most one authenticator app per user. The seed is sealed with a key
-- kept outside the database, bound to the user's id; `confirmed_at` is null
-- until the user typed a first code; `last_step` is the TOTP step of the
-- last code accepted (a code is accepted once).
CREATE TABLE totp_factors (
    user_id       BIGINT PRIMARY KEY REFERENCES users (id) ON DELETE CASCADE,
    sealed_secret BYTEA   NOT NULL,
    created_at    BIGINT  NOT NULL,
    confirmed_at  BIGINT,
    last_step     BIGINT
);

-- Single-use backup codes, as SHA-256 digests.
CREATE TABLE backup_codes (
    user_id    BIGINT  NOT NULL REFERENCES users (id) ON DELETE CASCADE,
    code_hash  BYTEA   NOT NULL,
    created_at BIGINT  NOT NULL,
    used_at    BIGINT,
    PRIMARY KEY (user_id, code_hash)
);

-- A sign-in whose password was right and whose second factor is awaited.
-- Its cookie is not a session: it reaches only the second-factor form.
CREATE TABLE sign_in_challenges (
    id_hash    BYTEA   PRIMARY KEY,
    user_id    BIGINT  NOT NULL REFERENCES users (id) ON DELETE CASCADE,
    created_at BIGINT  NOT NULL,
    expires_at BIGINT  NOT NULL,
    failures   BIGINT  NOT NULL DEFAULT 0
);

-- When the session's user last gave their password (and second factor):
-- at sign-in, and again at each re-authentication.
ALTER TABLE sessions ADD COLUMN authenticated_at BIGINT  NOT NULL DEFAULT 0;
