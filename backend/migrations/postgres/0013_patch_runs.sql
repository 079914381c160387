-- Palisade backend schema, version 13 (PostgreSQL): patch runs (issue 11).
-- Mirrors sqlite/0013_patch_runs.sql (which explains the columns); here the
-- commands constraints are replaced in place.

ALTER TABLE commands DROP CONSTRAINT commands_type_check;
ALTER TABLE commands ADD CONSTRAINT commands_type_check
    CHECK (type IN ('ping', 'restart_service', 'refresh_inventory', 'upgrade_packages', 'cancel'));
ALTER TABLE commands DROP CONSTRAINT commands_status_check;
ALTER TABLE commands ADD CONSTRAINT commands_status_check
    CHECK (status IN ('pending', 'delivered', 'succeeded', 'failed', 'rejected', 'expired',
                      'timed_out', 'cancelled'));
ALTER TABLE commands ADD COLUMN changes TEXT;
ALTER TABLE commands ADD COLUMN streamed_bytes BIGINT NOT NULL DEFAULT 0;
ALTER TABLE commands ADD COLUMN output_bytes BIGINT NOT NULL DEFAULT 0;
ALTER TABLE commands ADD COLUMN output_truncated BOOLEAN NOT NULL DEFAULT false;

CREATE TABLE command_outputs (
    command_id  TEXT   NOT NULL REFERENCES commands (id) ON DELETE CASCADE,
    byte_offset BIGINT NOT NULL,
    bytes       BIGINT NOT NULL,
    text        TEXT   NOT NULL,
    PRIMARY KEY (command_id, byte_offset)
);

CREATE TABLE patch_runs (
    id                 TEXT   PRIMARY KEY,
    host_id            TEXT   NOT NULL REFERENCES hosts (id) ON DELETE CASCADE,
    state              TEXT   NOT NULL
        CHECK (state IN ('planning', 'awaiting_approval', 'approved', 'running', 'succeeded', 'failed',
                         'cancelled', 'timed_out', 'nothing_to_do')),
    selection          TEXT   NOT NULL,
    approval           TEXT   NOT NULL CHECK (approval IN ('other_user', 'any', 'none')),
    manager            TEXT   NOT NULL CHECK (manager IN ('dpkg', 'rpm')),
    requested_by       TEXT   NOT NULL,
    requested_by_user  BIGINT,
    requested_at       BIGINT NOT NULL,
    approved_by        TEXT,
    approved_at        BIGINT,
    cancelled_by       TEXT,
    cancelled_at       BIGINT,
    started_at         BIGINT,
    finished_at        BIGINT,
    dry_run_command_id TEXT,
    command_id         TEXT,
    cancel_command_id  TEXT,
    plan               TEXT,
    changes            TEXT,
    exit_code          BIGINT,
    error              TEXT,
    timeout_secs       BIGINT NOT NULL,
    policy             TEXT   NOT NULL
);
CREATE INDEX patch_runs_requested_at ON patch_runs (requested_at);
CREATE INDEX patch_runs_host_requested_at ON patch_runs (host_id, requested_at);
CREATE INDEX patch_runs_dry_run_command ON patch_runs (dry_run_command_id);
CREATE INDEX patch_runs_command ON patch_runs (command_id);
