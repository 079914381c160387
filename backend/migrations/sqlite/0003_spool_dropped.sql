-- The number of records the host's agent reported dropping from its spool
-- because the spool was full (the agent's persistent counter, sent in every
-- hello). Numbered 3: migration 2 is the command tables.

ALTER TABLE hosts ADD COLUMN spool_dropped_total INTEGER NOT NULL DEFAULT 0;
