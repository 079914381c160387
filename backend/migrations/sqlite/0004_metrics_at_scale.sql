-- Palisade backend schema, version 4 (SQLite): metrics at fleet scale.
--
-- - metric_samples replaces metrics: keyed (host_id, collected_at, seq) and
--   stored in that order (WITHOUT ROWID), so a host's chart is one range
--   scan and a resent sample conflicts with itself (stored once). Metric
--   records no longer go through host_records: the sample is its own ledger.
--   No foreign key: ingest stays one B-tree insert per sample; deleting a
--   host deletes its samples explicitly.
-- - host_latest_metrics: each host's newest sample, so the host list is one
--   query (no query per host).
-- - metric_rollups: 1-minute and 1-hour aggregates for long charts, kept
--   longer than raw samples; metric_rollups_dirty lists the buckets whose
--   samples changed since they were last aggregated.

CREATE TABLE metric_samples (
    host_id                TEXT    NOT NULL,
    collected_at           INTEGER NOT NULL,
    seq                    INTEGER NOT NULL,
    cpu_percent            REAL    NOT NULL,
    memory_total_bytes     INTEGER NOT NULL,
    memory_available_bytes INTEGER NOT NULL,
    swap_total_bytes       INTEGER NOT NULL,
    swap_free_bytes        INTEGER NOT NULL,
    load_1                 REAL    NOT NULL,
    load_5                 REAL    NOT NULL,
    load_15                REAL    NOT NULL,
    uptime_seconds         INTEGER NOT NULL,
    process_count          INTEGER NOT NULL,
    -- JSON array of {mount_point, device, fs_type, total_bytes, used_bytes, available_bytes}.
    filesystems            TEXT    NOT NULL,
    -- JSON array of {interface, rx_bytes, tx_bytes}.
    network                TEXT    NOT NULL,
    PRIMARY KEY (host_id, collected_at, seq)
) WITHOUT ROWID;

INSERT INTO metric_samples
SELECT host_id, collected_at, seq, cpu_percent, memory_total_bytes, memory_available_bytes, swap_total_bytes,
       swap_free_bytes, load_1, load_5, load_15, uptime_seconds, process_count, filesystems, network
FROM metrics;
DROP TABLE metrics;
DELETE FROM host_records WHERE kind = 'metrics';

CREATE TABLE host_latest_metrics (
    host_id                TEXT    PRIMARY KEY REFERENCES hosts (id) ON DELETE CASCADE,
    collected_at           INTEGER NOT NULL,
    seq                    INTEGER NOT NULL,
    cpu_percent            REAL    NOT NULL,
    memory_total_bytes     INTEGER NOT NULL,
    memory_available_bytes INTEGER NOT NULL,
    swap_total_bytes       INTEGER NOT NULL,
    swap_free_bytes        INTEGER NOT NULL,
    load_1                 REAL    NOT NULL,
    load_5                 REAL    NOT NULL,
    load_15                REAL    NOT NULL,
    uptime_seconds         INTEGER NOT NULL,
    process_count          INTEGER NOT NULL,
    filesystems            TEXT    NOT NULL,
    network                TEXT    NOT NULL
);

INSERT INTO host_latest_metrics
SELECT host_id, collected_at, seq, cpu_percent, memory_total_bytes, memory_available_bytes, swap_total_bytes,
       swap_free_bytes, load_1, load_5, load_15, uptime_seconds, process_count, filesystems, network
FROM (SELECT *, ROW_NUMBER() OVER (PARTITION BY host_id ORDER BY collected_at DESC, seq DESC) AS newest
      FROM metric_samples)
WHERE newest = 1 AND host_id IN (SELECT id FROM hosts);

-- resolution: 60000 (1 minute) or 3600000 (1 hour); bucket: its start.
CREATE TABLE metric_rollups (
    host_id              TEXT    NOT NULL,
    resolution           INTEGER NOT NULL CHECK (resolution IN (60000, 3600000)),
    bucket               INTEGER NOT NULL,
    samples              INTEGER NOT NULL,
    cpu_avg              REAL    NOT NULL,
    cpu_max              REAL    NOT NULL,
    memory_used_avg      REAL    NOT NULL,
    memory_used_max      INTEGER NOT NULL,
    memory_total         INTEGER NOT NULL,
    swap_used_avg        REAL    NOT NULL,
    load_1_avg           REAL    NOT NULL,
    load_1_max           REAL    NOT NULL,
    process_count_avg    REAL    NOT NULL,
    PRIMARY KEY (host_id, resolution, bucket)
) WITHOUT ROWID;

CREATE TABLE metric_rollups_dirty (
    host_id    TEXT    NOT NULL,
    resolution INTEGER NOT NULL,
    bucket     INTEGER NOT NULL,
    PRIMARY KEY (host_id, resolution, bucket)
) WITHOUT ROWID;

INSERT INTO metric_rollups_dirty (host_id, resolution, bucket)
SELECT DISTINCT host_id, 60000, collected_at - (collected_at % 60000) FROM metric_samples;

-- Host lists are pages in (hostname, id) order: one index range per page.
DROP INDEX hosts_hostname;
CREATE INDEX hosts_hostname_id ON hosts (hostname, id);
