-- Palisade backend schema, version 13 (SQLite): patch runs (issue 11).
--
-- commands: two new types (upgrade_packages, cancel) and two new final
--   statuses (timed_out, cancelled). SQLite cannot change a CHECK
--   constraint, so the table is rebuilt with the same rows. New columns:
--   changes: JSON list of {name, arch, before, after} an upgrade reported;
--   streamed_bytes: bytes of output the agent said it streamed;
--   output_bytes: bytes of streamed output stored in command_outputs;
--   output_truncated: output beyond the cap (16 MiB) was dropped.
-- command_outputs: pieces of a running command's output, once per
--   (command, byte offset): a resent piece is stored once.
-- patch_runs: one row per patch run, from the dry run to the record of
--   what changed. selection, plan, changes and policy are JSON.

CREATE TABLE commands_v13 (
    id                 TEXT    PRIMARY KEY,
    host_id            TEXT    NOT NULL REFERENCES hosts (id) ON DELETE CASCADE,
    type               TEXT    NOT NULL
        CHECK (type IN ('ping', 'restart_service', 'refresh_inventory', 'upgrade_packages', 'cancel')),
    payload            TEXT    NOT NULL,
    requested_by       TEXT    NOT NULL,
    source_ip          TEXT,
    user_agent         TEXT,
    issued_at          INTEGER NOT NULL,
    expires_at         INTEGER NOT NULL CHECK (expires_at > issued_at),
    command_bytes      BLOB    NOT NULL,
    signature          BLOB    NOT NULL,
    status             TEXT    NOT NULL DEFAULT 'pending'
        CHECK (status IN ('pending', 'delivered', 'succeeded', 'failed', 'rejected', 'expired',
                          'timed_out', 'cancelled')),
    delivered_at       INTEGER,
    exit_code          INTEGER,
    output             TEXT,
    error              TEXT,
    started_at         INTEGER,
    finished_at        INTEGER,
    result_received_at INTEGER,
    result_seq         INTEGER,
    changes            TEXT,
    streamed_bytes     INTEGER NOT NULL DEFAULT 0,
    output_bytes       INTEGER NOT NULL DEFAULT 0,
    output_truncated   INTEGER NOT NULL DEFAULT 0
);
INSERT INTO commands_v13 (id, host_id, type, payload, requested_by, source_ip, user_agent, issued_at,
                          expires_at, command_bytes, signature, status, delivered_at, exit_code, output,
                          error, started_at, finished_at, result_received_at, result_seq)
    SELECT id, host_id, type, payload, requested_by, source_ip, user_agent, issued_at,
           expires_at, command_bytes, signature, status, delivered_at, exit_code, output,
           error, started_at, finished_at, result_received_at, result_seq
    FROM commands;
DROP TABLE commands;
ALTER TABLE commands_v13 RENAME TO commands;
CREATE INDEX commands_host_issued_at ON commands (host_id, issued_at);
CREATE INDEX commands_host_status ON commands (host_id, status, expires_at);

CREATE TABLE command_outputs (
    command_id  TEXT    NOT NULL REFERENCES commands (id) ON DELETE CASCADE,
    -- The byte position of text in the whole output.
    byte_offset INTEGER NOT NULL,
    -- Bytes of text (UTF-8).
    bytes       INTEGER NOT NULL,
    text        TEXT    NOT NULL,
    PRIMARY KEY (command_id, byte_offset)
) WITHOUT ROWID;

CREATE TABLE patch_runs (
    id                 TEXT    PRIMARY KEY,
    host_id            TEXT    NOT NULL REFERENCES hosts (id) ON DELETE CASCADE,
    state              TEXT    NOT NULL
        CHECK (state IN ('planning', 'awaiting_approval', 'approved', 'running', 'succeeded', 'failed',
                         'cancelled', 'timed_out', 'nothing_to_do')),
    -- {"kind":"all"} | {"kind":"security"} | {"kind":"packages","packages":[...]}
    selection          TEXT    NOT NULL,
    approval           TEXT    NOT NULL CHECK (approval IN ('other_user', 'any', 'none')),
    manager            TEXT    NOT NULL CHECK (manager IN ('dpkg', 'rpm')),
    -- Actors as in the audit log ('user:<name>', 'api-token:<id>').
    requested_by       TEXT    NOT NULL,
    -- The user behind requested_by (signed in, or owning the API token):
    -- who may not approve a run that needs another user's approval.
    requested_by_user  INTEGER,
    requested_at       INTEGER NOT NULL,
    approved_by        TEXT,
    approved_at        INTEGER,
    cancelled_by       TEXT,
    cancelled_at       INTEGER,
    -- The agent's clock, from the real run's result.
    started_at         INTEGER,
    finished_at        INTEGER,
    dry_run_command_id TEXT,
    command_id         TEXT,
    cancel_command_id  TEXT,
    -- JSON list of {name, arch, before, after}: what the dry run said.
    plan               TEXT,
    -- JSON list of {name, arch, before, after}: what the real run changed.
    changes            TEXT,
    exit_code          INTEGER,
    error              TEXT,
    timeout_secs       INTEGER NOT NULL,
    -- JSON: the request as it was (policies come later).
    policy             TEXT    NOT NULL
);
-- Newest first, fleet-wide and per host.
CREATE INDEX patch_runs_requested_at ON patch_runs (requested_at);
CREATE INDEX patch_runs_host_requested_at ON patch_runs (host_id, requested_at);
-- The run a command result belongs to.
CREATE INDEX patch_runs_dry_run_command ON patch_runs (dry_run_command_id);
CREATE INDEX patch_runs_command ON patch_runs (command_id);
