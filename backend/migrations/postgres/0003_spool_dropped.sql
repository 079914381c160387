-- The number of records the host's agent reported dropping from its spool
-- because it was full. Mirrors sqlite/0003_spool_dropped.sql.

ALTER TABLE hosts ADD COLUMN spool_dropped_total BIGINT NOT NULL DEFAULT 0;
