-- Palisade backend schema, version 6 (PostgreSQL): signed audit checkpoints.
--
-- - audit_checkpoints: Ed25519 signatures, by a key kept outside the
--   database, over (kind, audit_id, audit_hash, at). A "head" checkpoint
--   vouches for the chain up to audit_id; a "prune" checkpoint is the
--   boundary retention leaves: the rows up to audit_id are gone and the
--   next row chains from audit_hash.
-- - audit_log stays append-only, except that rows behind a prune
--   checkpoint may be deleted (never truncated).

CREATE TABLE audit_checkpoints (
    id         BIGINT PRIMARY KEY,
    kind       TEXT   NOT NULL CHECK (kind IN ('head', 'prune')),
    audit_id   BIGINT NOT NULL,
    audit_hash TEXT   NOT NULL,
    at         BIGINT NOT NULL,
    key_id     TEXT   NOT NULL,
    signature  TEXT   NOT NULL
);
CREATE INDEX audit_checkpoints_kind_audit_id ON audit_checkpoints (kind, audit_id);

CREATE FUNCTION audit_log_delete_behind_boundary() RETURNS trigger LANGUAGE plpgsql AS $$
BEGIN
    IF OLD.id > (SELECT COALESCE(MAX(audit_id), 0) FROM audit_checkpoints WHERE kind = 'prune') THEN
        RAISE EXCEPTION 'audit_log is append-only';
    END IF;
    RETURN OLD;
END;
$$;
DROP TRIGGER audit_log_no_update ON audit_log;
CREATE TRIGGER audit_log_no_update BEFORE UPDATE ON audit_log
    FOR EACH ROW EXECUTE FUNCTION audit_log_append_only();
CREATE TRIGGER audit_log_no_delete BEFORE DELETE ON audit_log
    FOR EACH ROW EXECUTE FUNCTION audit_log_delete_behind_boundary();
