-- Palisade backend schema, version 14 (SQLite): patch policies, rollouts
-- over many hosts, reboots and services to restart (issue 11), and the
-- typed reboot command (issue 14).
--
-- commands: a new type (reboot). New columns, from an upgrade's result:
--   reboot_required: the host needs a reboot after it (1/0; NULL when the
--     result did not say);
--   restarts: JSON list of {unit, pids, files}: services still running
--     files the upgrade replaced.
-- patch_runs: two new states (queued: in a rollout, not started yet;
--   skipped: its rollout stopped or its window closed before it started).
--   New columns: rollout_id and rollout_position (order in the rollout, canaries
--   first); exclude (JSON list of name patterns) and
--   auto_approve_after_days, applied when the run is planned; reboot
--   (never, if_required, always), reboot_state and reboot_command_id; reboot_required
--   and restarts copied from the upgrade's result.
-- patch_policies: what to patch where and when (JSON columns: host_ids,
--   group_ids, selection, exclude, maintenance_window).
-- patch_rollouts: one run of a policy (or of a request) over many hosts.
--   occurrence is the start of the maintenance window it was made for;
--   (policy_id, occurrence) is unique, so replicas racing to start the
--   same window make one rollout.
-- update_first_seen: when a host's package manager first offered an
--   update (name, arch, candidate): what "approve updates N days after
--   they appeared" counts from.

CREATE TABLE commands_v14 (
    id                 TEXT    PRIMARY KEY,
    host_id            TEXT    NOT NULL REFERENCES hosts (id) ON DELETE CASCADE,
    type               TEXT    NOT NULL
        CHECK (type IN ('ping', 'restart_service', 'refresh_inventory', 'upgrade_packages', 'cancel',
                        'reboot')),
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
    output_truncated   INTEGER NOT NULL DEFAULT 0,
    reboot_required    INTEGER,
    restarts           TEXT
);
INSERT INTO commands_v14 (id, host_id, type, payload, requested_by, source_ip, user_agent, issued_at,
                          expires_at, command_bytes, signature, status, delivered_at, exit_code, output,
                          error, started_at, finished_at, result_received_at, result_seq, changes,
                          streamed_bytes, output_bytes, output_truncated)
    SELECT id, host_id, type, payload, requested_by, source_ip, user_agent, issued_at,
           expires_at, command_bytes, signature, status, delivered_at, exit_code, output,
           error, started_at, finished_at, result_received_at, result_seq, changes,
           streamed_bytes, output_bytes, output_truncated
    FROM commands;
-- command_outputs refers to commands: keep its rows across the rebuild.
CREATE TABLE command_outputs_v14 AS SELECT * FROM command_outputs;
DROP TABLE command_outputs;
DROP TABLE commands;
ALTER TABLE commands_v14 RENAME TO commands;
CREATE INDEX commands_host_issued_at ON commands (host_id, issued_at);
CREATE INDEX commands_host_status ON commands (host_id, status, expires_at);
CREATE TABLE command_outputs (
    command_id  TEXT    NOT NULL REFERENCES commands (id) ON DELETE CASCADE,
    byte_offset INTEGER NOT NULL,
    bytes       INTEGER NOT NULL,
    text        TEXT    NOT NULL,
    PRIMARY KEY (command_id, byte_offset)
) WITHOUT ROWID;
INSERT INTO command_outputs SELECT command_id, byte_offset, bytes, text FROM command_outputs_v14;
DROP TABLE command_outputs_v14;

CREATE TABLE patch_policies (
    id                      TEXT    PRIMARY KEY,
    name                    TEXT    NOT NULL UNIQUE,
    description             TEXT    NOT NULL DEFAULT '',
    enabled                 INTEGER NOT NULL,
    host_ids                TEXT    NOT NULL,
    group_ids               TEXT    NOT NULL,
    selection               TEXT    NOT NULL,
    exclude                 TEXT    NOT NULL,
    approval                TEXT    NOT NULL CHECK (approval IN ('other_user', 'any', 'none')),
    auto_approve_after_days INTEGER,
    reboot                  TEXT    NOT NULL CHECK (reboot IN ('never', 'if_required', 'always')),
    -- {"days": ["mon", ...], "start": "HH:MM", "duration_minutes": N, "time_zone": "Area/City"}
    maintenance_window      TEXT,
    concurrency             INTEGER NOT NULL CHECK (concurrency >= 1),
    canary                  INTEGER NOT NULL CHECK (canary >= 0),
    max_failure_percent     INTEGER NOT NULL CHECK (max_failure_percent BETWEEN 0 AND 100),
    timeout_secs            INTEGER NOT NULL,
    created_by              TEXT    NOT NULL,
    created_at              INTEGER NOT NULL,
    updated_by              TEXT    NOT NULL,
    updated_at              INTEGER NOT NULL
);

CREATE TABLE patch_rollouts (
    id                  TEXT    PRIMARY KEY,
    policy_id           TEXT    REFERENCES patch_policies (id) ON DELETE SET NULL,
    policy_name         TEXT    NOT NULL,
    occurrence          INTEGER,
    -- The end of the window: runs not started by then are skipped.
    window_end          INTEGER,
    state               TEXT    NOT NULL CHECK (state IN ('running', 'completed', 'stopped', 'cancelled')),
    concurrency         INTEGER NOT NULL,
    canary              INTEGER NOT NULL,
    max_failure_percent INTEGER NOT NULL,
    -- The policy as it was (JSON).
    policy              TEXT    NOT NULL,
    requested_by        TEXT    NOT NULL,
    requested_at        INTEGER NOT NULL,
    finished_at         INTEGER,
    stop_reason         TEXT,
    UNIQUE (policy_id, occurrence)
);
CREATE INDEX patch_rollouts_requested_at ON patch_rollouts (requested_at);
CREATE INDEX patch_rollouts_state ON patch_rollouts (state);

CREATE TABLE patch_runs_v14 (
    id                      TEXT    PRIMARY KEY,
    host_id                 TEXT    NOT NULL REFERENCES hosts (id) ON DELETE CASCADE,
    state                   TEXT    NOT NULL
        CHECK (state IN ('queued', 'planning', 'awaiting_approval', 'approved', 'running', 'succeeded',
                         'failed', 'cancelled', 'timed_out', 'nothing_to_do', 'skipped')),
    selection               TEXT    NOT NULL,
    approval                TEXT    NOT NULL CHECK (approval IN ('other_user', 'any', 'none')),
    manager                 TEXT    NOT NULL CHECK (manager IN ('dpkg', 'rpm')),
    requested_by            TEXT    NOT NULL,
    requested_by_user       INTEGER,
    requested_at            INTEGER NOT NULL,
    approved_by             TEXT,
    approved_at             INTEGER,
    cancelled_by            TEXT,
    cancelled_at            INTEGER,
    started_at              INTEGER,
    finished_at             INTEGER,
    dry_run_command_id      TEXT,
    command_id              TEXT,
    cancel_command_id       TEXT,
    plan                    TEXT,
    changes                 TEXT,
    exit_code               INTEGER,
    error                   TEXT,
    timeout_secs            INTEGER NOT NULL,
    policy                  TEXT    NOT NULL,
    rollout_id              TEXT    REFERENCES patch_rollouts (id) ON DELETE CASCADE,
    rollout_position        INTEGER,
    exclude                 TEXT    NOT NULL DEFAULT '[]',
    auto_approve_after_days INTEGER,
    reboot                  TEXT    NOT NULL DEFAULT 'never' CHECK (reboot IN ('never', 'if_required', 'always')),
    -- NULL (no reboot asked for), due (the run succeeded and its reboot
    -- policy asks for one), issued (reboot_command_id), not_needed.
    reboot_state            TEXT    CHECK (reboot_state IN ('due', 'issued', 'not_needed')),
    reboot_command_id       TEXT,
    reboot_required         INTEGER,
    restarts                TEXT
);
INSERT INTO patch_runs_v14 (id, host_id, state, selection, approval, manager, requested_by, requested_by_user,
                            requested_at, approved_by, approved_at, cancelled_by, cancelled_at, started_at,
                            finished_at, dry_run_command_id, command_id, cancel_command_id, plan, changes,
                            exit_code, error, timeout_secs, policy)
    SELECT id, host_id, state, selection, approval, manager, requested_by, requested_by_user,
           requested_at, approved_by, approved_at, cancelled_by, cancelled_at, started_at,
           finished_at, dry_run_command_id, command_id, cancel_command_id, plan, changes,
           exit_code, error, timeout_secs, policy
    FROM patch_runs;
DROP TABLE patch_runs;
ALTER TABLE patch_runs_v14 RENAME TO patch_runs;
CREATE INDEX patch_runs_requested_at ON patch_runs (requested_at);
CREATE INDEX patch_runs_host_requested_at ON patch_runs (host_id, requested_at);
CREATE INDEX patch_runs_dry_run_command ON patch_runs (dry_run_command_id);
CREATE INDEX patch_runs_command ON patch_runs (command_id);
CREATE INDEX patch_runs_reboot_command ON patch_runs (reboot_command_id);
CREATE INDEX patch_runs_reboot_state ON patch_runs (reboot_state);
CREATE INDEX patch_runs_rollout ON patch_runs (rollout_id, rollout_position);

CREATE TABLE update_first_seen (
    host_id    TEXT    NOT NULL REFERENCES hosts (id) ON DELETE CASCADE,
    name       TEXT    NOT NULL,
    arch       TEXT    NOT NULL,
    candidate  TEXT    NOT NULL,
    first_seen INTEGER NOT NULL,
    PRIMARY KEY (host_id, name, arch, candidate)
) WITHOUT ROWID;
