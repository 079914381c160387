-- Palisade backend schema, version 6 (SQLite): signed audit checkpoints.
--
-- - audit_checkpoints: Ed25519 signatures, by a key kept outside the
--   database, over (kind, audit_id, audit_hash, at). A "head" checkpoint
--   vouches for the chain up to audit_id; a "prune" checkpoint is the
--   boundary retention leaves: the rows up to audit_id are gone and the
--   next row chains from audit_hash.
-- - audit_log stays append-only, except that rows behind a prune
--   checkpoint may be deleted.

CREATE TABLE audit_checkpoints (
    id         INTEGER PRIMARY KEY,
    kind       TEXT    NOT NULL CHECK (kind IN ('head', 'prune')),
    audit_id   INTEGER NOT NULL,
    audit_hash TEXT    NOT NULL,
    at         INTEGER NOT NULL,
    key_id     TEXT    NOT NULL,
    signature  TEXT    NOT NULL
);
CREATE INDEX audit_checkpoints_kind_audit_id ON audit_checkpoints (kind, audit_id);

DROP TRIGGER audit_log_no_delete;
CREATE TRIGGER audit_log_no_delete BEFORE DELETE ON audit_log
WHEN OLD.id > (SELECT COALESCE(MAX(audit_id), 0) FROM audit_checkpoints WHERE kind = 'prune')
BEGIN
    SELECT RAISE(ABORT, 'audit_log is append-only');
END;
