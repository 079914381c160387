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
    failures        INTEGER NOT NULL,
    last_failure_at INTEGER NOT NULL,
    next_attempt_at INTEGER NOT NULL,
    locked_until    INTEGER
);

-- A user whose password was set by someone else (created, reset) must
-- choose their own at the next sign-in.
ALTER TABLE users ADD COLUMN must_change_password INTEGER NOT NULL DEFAULT 0 CHECK (must_change_password IN (0, 1));
ALTER TABLE users ADD COLUMN password_changed_at INTEGER;

-- Earlier password hashes, for the optional "not one of the last N" rule.
CREATE TABLE password_history (
    user_id       INTEGER NOT NULL REFERENCES users (id) ON DELETE CASCADE,
    password_hash TEXT   NOT NULL,
    changed_at    INTEGER NOT NULL,
    PRIMARY KEY (user_id, changed_at)
);
