-- Palisade backend schema, version 7: sign-in throttling and lockout,
-- passwords users choose (first sign-in, change, forced reset, history).
--
-- One row per throttled key: `account:<keyed digest of the name>` (names
-- that match no account too, so a lockout does not tell whether one
-- exists) or `address:<ip or IPv6 /64>`. A successful sign-in deletes its
-- account row; rows whose last failure is older than the window are
-- forgotten when next touched.

CREATE TABLE sign_in_throttle (
    key             TEXT   PRIMARY KEY,
    failures        BIGINT NOT NULL,
    last_failure_at BIGINT NOT NULL,
    next_attempt_at BIGINT NOT NULL,
    locked_until    BIGINT
);

-- A user whose password was set by someone else (created, reset) must
-- choose their own at the next sign-in.
ALTER TABLE users ADD COLUMN must_change_password BOOLEAN NOT NULL DEFAULT FALSE;
ALTER TABLE users ADD COLUMN password_changed_at BIGINT;

-- Earlier password hashes, for the optional "not one of the last N" rule.
CREATE TABLE password_history (
    user_id       BIGINT NOT NULL REFERENCES users (id) ON DELETE CASCADE,
    password_hash TEXT   NOT NULL,
    changed_at    BIGINT NOT NULL,
    PRIMARY KEY (user_id, changed_at)
);
