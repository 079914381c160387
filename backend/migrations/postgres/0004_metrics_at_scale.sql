-- Palisade backend schema, version 4 (PostgreSQL): metrics at fleet scale.
-- The same tables as sqlite/0004_metrics_at_scale.sql; metric_samples is
-- partitioned by day on collected_at (declarative partitioning): the backend
-- creates each day's partition ahead of time and retention drops whole
-- partitions. The default partition takes samples whose day has no
-- partition (an agent clock far off); retention deletes from it by row.

DROP TABLE metrics;
DELETE FROM host_records WHERE kind = 'metrics';

CREATE TABLE metric_samples (
    host_id                TEXT             NOT NULL,
    collected_at           BIGINT           NOT NULL,
    seq                    BIGINT           NOT NULL,
    cpu_percent            DOUBLE PRECISION NOT NULL,
    memory_total_bytes     BIGINT           NOT NULL,
    memory_available_bytes BIGINT           NOT NULL,
    swap_total_bytes       BIGINT           NOT NULL,
    swap_free_bytes        BIGINT           NOT NULL,
    load_1                 DOUBLE PRECISION NOT NULL,
    load_5                 DOUBLE PRECISION NOT NULL,
    load_15                DOUBLE PRECISION NOT NULL,
    uptime_seconds         BIGINT           NOT NULL,
    process_count          BIGINT           NOT NULL,
    filesystems            TEXT             NOT NULL,
    network                TEXT             NOT NULL,
    PRIMARY KEY (host_id, collected_at, seq)
) PARTITION BY RANGE (collected_at);
CREATE TABLE metric_samples_default PARTITION OF metric_samples DEFAULT;

CREATE TABLE host_latest_metrics (
    host_id                TEXT             PRIMARY KEY REFERENCES hosts (id) ON DELETE CASCADE,
    collected_at           BIGINT           NOT NULL,
    seq                    BIGINT           NOT NULL,
    cpu_percent            DOUBLE PRECISION NOT NULL,
    memory_total_bytes     BIGINT           NOT NULL,
    memory_available_bytes BIGINT           NOT NULL,
    swap_total_bytes       BIGINT           NOT NULL,
    swap_free_bytes        BIGINT           NOT NULL,
    load_1                 DOUBLE PRECISION NOT NULL,
    load_5                 DOUBLE PRECISION NOT NULL,
    load_15                DOUBLE PRECISION NOT NULL,
    uptime_seconds         BIGINT           NOT NULL,
    process_count          BIGINT           NOT NULL,
    filesystems            TEXT             NOT NULL,
    network                TEXT             NOT NULL
);

CREATE TABLE metric_rollups (
    host_id              TEXT             NOT NULL,
    resolution           BIGINT           NOT NULL CHECK (resolution IN (60000, 3600000)),
    bucket               BIGINT           NOT NULL,
    samples              BIGINT           NOT NULL,
    cpu_avg              DOUBLE PRECISION NOT NULL,
    cpu_max              DOUBLE PRECISION NOT NULL,
    memory_used_avg      DOUBLE PRECISION NOT NULL,
    memory_used_max      BIGINT           NOT NULL,
    memory_total         BIGINT           NOT NULL,
    swap_used_avg        DOUBLE PRECISION NOT NULL,
    load_1_avg           DOUBLE PRECISION NOT NULL,
    load_1_max           DOUBLE PRECISION NOT NULL,
    process_count_avg    DOUBLE PRECISION NOT NULL,
    PRIMARY KEY (host_id, resolution, bucket)
);

CREATE TABLE metric_rollups_dirty (
    host_id    TEXT   NOT NULL,
    resolution BIGINT NOT NULL,
    bucket     BIGINT NOT NULL,
    PRIMARY KEY (host_id, resolution, bucket)
);

-- Host lists are pages in (hostname, id) order: one index range per page.
DROP INDEX hosts_hostname;
CREATE INDEX hosts_hostname_id ON hosts (hostname, id);
