-- Where each (rule, series) stands in the aggregator's evaluation (see
-- aggregator/src/alerting): written with the breach announcing it before that breach is
-- produced, read when an aggregator gains the partition (which produces any breach still
-- unsent), so a pending `for` timer and a firing alert survive a restart or a failover
-- and no transition is lost or told twice differently.

CREATE TABLE rule_states (
    topic        TEXT NOT NULL,      -- the samples topic whose partition owns the series
    partition    INTEGER NOT NULL,
    rule         TEXT NOT NULL,
    fingerprint  TEXT NOT NULL,      -- identity of (rule, series), as on the breaches topic
    series       JSONB NOT NULL,     -- {"service", "metric", "tags"}
    state        JSONB NOT NULL,     -- tidemark_rules::eval::SeriesState
    unsent       BYTEA,              -- the breach announcing `state`, until the broker acknowledged it
    updated_at   TIMESTAMPTZ NOT NULL DEFAULT now(),
    PRIMARY KEY (topic, partition, fingerprint)
);
