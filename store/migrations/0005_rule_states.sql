-- Where each (rule, series) stands in the aggregator's evaluation (see
-- aggregator/src/alerting): written after its transition reached the breaches topic, read
-- when an aggregator gains the partition, so a pending `for` timer and a firing alert
-- survive a restart or a failover.

CREATE TABLE rule_states (
    topic        TEXT NOT NULL,      -- the samples topic whose partition owns the series
    partition    INTEGER NOT NULL,
    rule         TEXT NOT NULL,
    fingerprint  TEXT NOT NULL,      -- identity of (rule, series), as on the breaches topic
    series       JSONB NOT NULL,     -- {"service", "metric", "tags"}
    state        JSONB NOT NULL,     -- tidemark_rules::eval::SeriesState
    updated_at   TIMESTAMPTZ NOT NULL DEFAULT now(),
    PRIMARY KEY (topic, partition, fingerprint)
);
