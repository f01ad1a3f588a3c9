-- Series, hourly buckets, the aggregator's consumed offsets and API keys.

CREATE TABLE series (
    id          BIGINT PRIMARY KEY,          -- xxh3 of (service, metric, sorted tags)
    service     TEXT NOT NULL,
    metric      TEXT NOT NULL,
    tags        JSONB NOT NULL DEFAULT '{}'::jsonb,
    first_seen  TIMESTAMPTZ NOT NULL DEFAULT now()
);
CREATE INDEX series_service_metric ON series (service, metric);

CREATE TABLE buckets (
    series_id    BIGINT NOT NULL REFERENCES series (id),
    hour         TIMESTAMPTZ NOT NULL,
    count        BIGINT NOT NULL,
    error_count  BIGINT NOT NULL,
    sum          DOUBLE PRECISION NOT NULL,
    min          DOUBLE PRECISION NOT NULL,
    max          DOUBLE PRECISION NOT NULL,
    last_at      TIMESTAMPTZ NOT NULL,
    sketch       BYTEA NOT NULL,
    updated_at   TIMESTAMPTZ NOT NULL DEFAULT now(),
    PRIMARY KEY (series_id, hour)
);
CREATE INDEX buckets_hour ON buckets (hour);

-- The next offset to consume per partition. Advanced only in the transaction that
-- applies the samples before it; `cluster_id` tells a restarted embedded broker apart.
CREATE TABLE consumer_offsets (
    topic        TEXT NOT NULL,
    partition    INTEGER NOT NULL,
    next_offset  BIGINT NOT NULL,
    cluster_id   TEXT NOT NULL,
    updated_at   TIMESTAMPTZ NOT NULL DEFAULT now(),
    PRIMARY KEY (topic, partition)
);

CREATE TABLE api_keys (
    id          BIGSERIAL PRIMARY KEY,
    name        TEXT NOT NULL,
    role        TEXT NOT NULL CHECK (role IN ('ingest', 'read', 'admin')),
    token_hash  BYTEA NOT NULL UNIQUE,       -- SHA-256 of the token; the token is never stored
    created_at  TIMESTAMPTZ NOT NULL DEFAULT now()
);
