-- Chunks of idempotent requests already applied, per partition: a retry's chunks are
-- found here and skipped. Written in the flush transaction that applies the chunk;
-- pruned after TIDEMARK_IDEMPOTENCY_RETENTION.

CREATE TABLE idempotency_chunks (
    topic      TEXT NOT NULL,
    partition  INTEGER NOT NULL,
    id         TEXT NOT NULL,
    seen_at    TIMESTAMPTZ NOT NULL DEFAULT now(),
    PRIMARY KEY (topic, partition, id)
);
CREATE INDEX idempotency_chunks_seen_at ON idempotency_chunks (seen_at);
