-- Palisade backend schema, version 2 (SQLite): signed commands to agents.
--
-- Portable SQL only (see 0001_init.sql for the PostgreSQL mapping).

-- One row per command an operator issued, from the request to the result.
CREATE TABLE commands (
    -- A UUID; also Command.command_id, which control never accepts twice.
    id                 TEXT    PRIMARY KEY,
    host_id            TEXT    NOT NULL REFERENCES hosts (id) ON DELETE CASCADE,
    type               TEXT    NOT NULL CHECK (type IN ('ping', 'restart_service', 'refresh_inventory')),
    -- The request as JSON, e.g. {"type":"restart_service","unit":"nginx.service"}.
    payload            TEXT    NOT NULL,
    -- 'user:<name>' or 'api-token:<id>', as in the audit log.
    requested_by       TEXT    NOT NULL,
    source_ip          TEXT,
    user_agent         TEXT,
    issued_at          INTEGER NOT NULL,
    expires_at         INTEGER NOT NULL CHECK (expires_at > issued_at),
    -- The encoded Command and the backend's Ed25519 signature over
    -- "palisade-command-v1" || 0x00 || command_bytes: every delivery sends
    -- exactly these bytes.
    command_bytes      BLOB    NOT NULL,
    signature          BLOB    NOT NULL,
    -- pending: not sent yet; delivered: queued on the agent's connection;
    -- succeeded / failed / rejected: the agent's result; expired: never
    -- delivered before it expired (so it never ran).
    status             TEXT    NOT NULL DEFAULT 'pending'
        CHECK (status IN ('pending', 'delivered', 'succeeded', 'failed', 'rejected', 'expired')),
    delivered_at       INTEGER,
    -- From the result; started/finished are the agent's clock.
    exit_code          INTEGER,
    output             TEXT,
    error              TEXT,
    started_at         INTEGER,
    finished_at        INTEGER,
    -- The backend's clock when the result was stored, and its record.
    result_received_at INTEGER,
    result_seq         INTEGER
);
-- A host's commands, newest first.
CREATE INDEX commands_host_issued_at ON commands (host_id, issued_at);
-- What to deliver when an agent connects.
CREATE INDEX commands_host_status ON commands (host_id, status, expires_at);
