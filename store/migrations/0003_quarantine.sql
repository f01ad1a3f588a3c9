-- Messages of the samples topic the aggregator could not apply because of their data
-- (undecodable, failing validation, or refused by Postgres), kept whole so that
-- `tidemark quarantine replay` can apply them once the cause is fixed. Written in the
-- flush transaction that advances the partition's offset past them.

CREATE TABLE quarantine (
    id              BIGSERIAL PRIMARY KEY,
    topic           TEXT NOT NULL,
    partition       INTEGER NOT NULL,
    "offset"        BIGINT NOT NULL,
    cluster_id      TEXT NOT NULL,
    payload         BYTEA NOT NULL,
    reason          TEXT NOT NULL,
    quarantined_at  TIMESTAMPTZ NOT NULL DEFAULT now(),
    replayed_at     TIMESTAMPTZ,
    UNIQUE (topic, partition, cluster_id, "offset")
);
