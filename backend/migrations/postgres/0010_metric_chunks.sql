-- Palisade backend schema, version 10 (PostgreSQL): metric samples in
-- chunks. The same table as sqlite/0010_metric_chunks.sql (read its notes),
-- partitioned by day on first_at as metric_samples was on collected_at: a
-- chunk never spans a UTC hour, so it lies inside one day's partition and
-- retention drops whole partitions. The default partition takes chunks
-- whose day has no partition yet.
--
-- The samples of metric_samples are moved into chunks by code that runs in
-- this migration's transaction; version 11 then drops metric_samples.

CREATE TABLE metric_chunks (
    host_id   TEXT   NOT NULL,
    first_at  BIGINT NOT NULL,
    first_seq BIGINT NOT NULL,
    last_at   BIGINT NOT NULL,
    last_seq  BIGINT NOT NULL,
    samples   BIGINT NOT NULL,
    data      BYTEA  NOT NULL,
    PRIMARY KEY (host_id, first_at, first_seq)
) PARTITION BY RANGE (first_at);
CREATE TABLE metric_chunks_default PARTITION OF metric_chunks DEFAULT;

-- Minute rollups to recompute are marked per host and hour: `since` is the
-- earliest time of a sample added since the last pass, and the rollup job
-- recomputes that hour's minutes from there on. One mark per batch and
-- hour instead of one per minute (a batch of 512 samples 10 s apart
-- touched 86 minutes). metric_rollups_dirty keeps the hour marks.
CREATE TABLE metric_minutes_dirty (
    host_id TEXT   NOT NULL,
    hour    BIGINT NOT NULL,
    since   BIGINT NOT NULL,
    PRIMARY KEY (host_id, hour)
);
INSERT INTO metric_minutes_dirty (host_id, hour, since)
SELECT host_id, bucket - (bucket % 3600000), MIN(bucket) FROM metric_rollups_dirty
WHERE resolution = 60000
GROUP BY host_id, bucket - (bucket % 3600000);
DELETE FROM metric_rollups_dirty WHERE resolution = 60000;
