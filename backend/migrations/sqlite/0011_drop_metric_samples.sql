-- Palisade backend schema, version 11: version 10 moved every sample of
-- metric_samples into metric_chunks; the old table goes.

DROP TABLE metric_samples;
