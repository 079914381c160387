-- Palisade backend schema, version 14 (PostgreSQL): patch policies,
-- rollouts, reboots and services to restart. Mirrors
-- sqlite/0014_patch_policies.sql (which explains the columns); here the
-- constraints are replaced in place.

ALTER TABLE commands DROP CONSTRAINT commands_type_check;
ALTER TABLE commands ADD CONSTRAINT commands_type_check
    CHECK (type IN ('ping', 'restart_service', 'refresh_inventory', 'upgrade_packages', 'cancel', 'reboot'));
ALTER TABLE commands ADD COLUMN reboot_required BOOLEAN;
ALTER TABLE commands ADD COLUMN restarts TEXT;

CREATE TABLE patch_policies (
    id                      TEXT    PRIMARY KEY,
    name                    TEXT    NOT NULL UNIQUE,
    description             TEXT    NOT NULL DEFAULT '',
    enabled                 BOOLEAN NOT NULL,
    host_ids                TEXT    NOT NULL,
    group_ids               TEXT    NOT NULL,
    selection               TEXT    NOT NULL,
    exclude                 TEXT    NOT NULL,
    approval                TEXT    NOT NULL CHECK (approval IN ('other_user', 'any', 'none')),
    auto_approve_after_days BIGINT,
    reboot                  TEXT    NOT NULL CHECK (reboot IN ('never', 'if_required', 'always')),
    maintenance_window      TEXT,
    concurrency             BIGINT  NOT NULL CHECK (concurrency >= 1),
    canary                  BIGINT  NOT NULL CHECK (canary >= 0),
    max_failure_percent     BIGINT  NOT NULL CHECK (max_failure_percent BETWEEN 0 AND 100),
    timeout_secs            BIGINT  NOT NULL,
    created_by              TEXT    NOT NULL,
    created_at              BIGINT  NOT NULL,
    updated_by              TEXT    NOT NULL,
    updated_at              BIGINT  NOT NULL
);

CREATE TABLE patch_rollouts (
    id                  TEXT   PRIMARY KEY,
    policy_id           TEXT   REFERENCES patch_policies (id) ON DELETE SET NULL,
    policy_name         TEXT   NOT NULL,
    occurrence          BIGINT,
    window_end          BIGINT,
    state               TEXT   NOT NULL CHECK (state IN ('running', 'completed', 'stopped', 'cancelled')),
    concurrency         BIGINT NOT NULL,
    canary              BIGINT NOT NULL,
    max_failure_percent BIGINT NOT NULL,
    policy              TEXT   NOT NULL,
    requested_by        TEXT   NOT NULL,
    requested_at        BIGINT NOT NULL,
    finished_at         BIGINT,
    stop_reason         TEXT,
    UNIQUE (policy_id, occurrence)
);
CREATE INDEX patch_rollouts_requested_at ON patch_rollouts (requested_at);
CREATE INDEX patch_rollouts_state ON patch_rollouts (state);

ALTER TABLE patch_runs DROP CONSTRAINT patch_runs_state_check;
ALTER TABLE patch_runs ADD CONSTRAINT patch_runs_state_check
    CHECK (state IN ('queued', 'planning', 'awaiting_approval', 'approved', 'running', 'succeeded',
                     'failed', 'cancelled', 'timed_out', 'nothing_to_do', 'skipped'));
ALTER TABLE patch_runs ADD COLUMN rollout_id TEXT REFERENCES patch_rollouts (id) ON DELETE CASCADE;
ALTER TABLE patch_runs ADD COLUMN rollout_position BIGINT;
ALTER TABLE patch_runs ADD COLUMN exclude TEXT NOT NULL DEFAULT '[]';
ALTER TABLE patch_runs ADD COLUMN auto_approve_after_days BIGINT;
ALTER TABLE patch_runs ADD COLUMN reboot TEXT NOT NULL DEFAULT 'never'
    CHECK (reboot IN ('never', 'if_required', 'always'));
ALTER TABLE patch_runs ADD COLUMN reboot_state TEXT CHECK (reboot_state IN ('due', 'issued', 'not_needed'));
ALTER TABLE patch_runs ADD COLUMN reboot_command_id TEXT;
ALTER TABLE patch_runs ADD COLUMN reboot_required BOOLEAN;
ALTER TABLE patch_runs ADD COLUMN restarts TEXT;
CREATE INDEX patch_runs_reboot_command ON patch_runs (reboot_command_id);
CREATE INDEX patch_runs_reboot_state ON patch_runs (reboot_state);
CREATE INDEX patch_runs_rollout ON patch_runs (rollout_id, rollout_position);

CREATE TABLE update_first_seen (
    host_id    TEXT   NOT NULL REFERENCES hosts (id) ON DELETE CASCADE,
    name       TEXT   NOT NULL,
    arch       TEXT   NOT NULL,
    candidate  TEXT   NOT NULL,
    first_seen BIGINT NOT NULL,
    PRIMARY KEY (host_id, name, arch, candidate)
);
