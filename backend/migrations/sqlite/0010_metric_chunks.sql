-- Palisade backend schema, version 10 (SQLite): metric samples in chunks.
--
-- metric_chunks holds a host's samples a run at a time, column by column
-- (the format is backend/src/metrics/chunk.rs): one row per chunk instead
-- of one ~400-byte row per sample, which is what lets ingest keep up with a
-- fleet. A chunk never spans a UTC hour, so retention and the rollup job
-- find a time range's chunks through first_at alone. (host_id, first_at,
-- first_seq) names a chunk; a resent sample is recognised by the chunks
-- whose time and sequence ranges cover it.
--
-- A rowid table (not WITHOUT ROWID): a chunk is kilobytes, larger than
-- what belongs in an index B-tree.
--
-- The samples of metric_samples are moved into chunks by code that runs
-- in this migration's transaction (db::migrate, metrics::store::
-- move_legacy_samples); version 11 then drops metric_samples.

CREATE TABLE metric_chunks (
    host_id   TEXT    NOT NULL,
    first_at  INTEGER NOT NULL,
    first_seq INTEGER NOT NULL,
    last_at   INTEGER NOT NULL,
    last_seq  INTEGER NOT NULL,
    samples   INTEGER NOT NULL,
    data      BLOB    NOT NULL
);
CREATE UNIQUE INDEX metric_chunks_key ON metric_chunks (host_id, first_at, first_seq);
-- Retention walks the oldest chunks first.
CREATE INDEX metric_chunks_first_at ON metric_chunks (first_at);

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
