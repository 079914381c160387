-- Palisade backend schema, version 2 (PostgreSQL): signed commands to agents.
-- Mirrors sqlite/0002_commands.sql.

CREATE TABLE commands (
    id                 TEXT   PRIMARY KEY,
    host_id            TEXT   NOT NULL REFERENCES hosts (id) ON DELETE CASCADE,
    type               TEXT   NOT NULL CHECK (type IN ('ping', 'restart_service', 'refresh_inventory')),
    payload            TEXT   NOT NULL,
    requested_by       TEXT   NOT NULL,
    source_ip          TEXT,
    user_agent         TEXT,
    issued_at          BIGINT NOT NULL,
    expires_at         BIGINT NOT NULL CHECK (expires_at > issued_at),
    command_bytes      BYTEA  NOT NULL,
    signature          BYTEA  NOT NULL,
    status             TEXT   NOT NULL DEFAULT 'pending'
        CHECK (status IN ('pending', 'delivered', 'succeeded', 'failed', 'rejected', 'expired')),
    delivered_at       BIGINT,
    exit_code          BIGINT,
    output             TEXT,
    error              TEXT,
    started_at         BIGINT,
    finished_at        BIGINT,
    result_received_at BIGINT,
    result_seq         BIGINT
);
CREATE INDEX commands_host_issued_at ON commands (host_id, issued_at);
CREATE INDEX commands_host_status ON commands (host_id, status, expires_at);
