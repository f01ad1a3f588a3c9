-- The alert lifecycle (alerter/, store/src/alerts.rs). The alerter applies each message
-- of the breaches topic in one transaction that changes the alert, records the
-- transition and the feed row, remembers the fingerprint's seq and advances
-- `alerter_offsets`, so the alert state is exactly once across any crash.
--
-- Later slices hang off these tables: notifications (an outbox per receiver) and
-- silences reference `alerts (id)` and `alert_transitions (alert_id, seq)`; grouping
-- and inhibition match on `labels` and `rule`/`service`.

-- One row per episode of a fingerprint (rule × series): opened by its first pending or
-- firing breach, closed (resolved) by its ok breach. `last_seq` is the alert's own
-- transition count (its latest `alert_transitions.seq`), not the breach's seq.
CREATE TABLE alerts (
    id               BIGSERIAL PRIMARY KEY,
    fingerprint      TEXT NOT NULL,
    rule             TEXT NOT NULL,
    service          TEXT NOT NULL,
    metric           TEXT NOT NULL,
    tags             JSONB NOT NULL,
    state            TEXT NOT NULL CHECK (state IN ('pending', 'firing', 'resolved')),
    severity         TEXT NOT NULL CHECK (severity IN ('critical', 'warning', 'info')),
    value            DOUBLE PRECISION,             -- null: the window held no samples
    threshold        DOUBLE PRECISION NOT NULL,
    op               TEXT NOT NULL,
    stat             TEXT NOT NULL,
    window_ms        BIGINT NOT NULL,
    labels           JSONB NOT NULL,
    annotations      JSONB NOT NULL,
    started_at       TIMESTAMPTZ NOT NULL,         -- the breach's active_since
    fired_at         TIMESTAMPTZ,                  -- its first firing; null if it never fired
    resolved_at      TIMESTAMPTZ,
    resolve_reason   TEXT,                         -- recovered, missing_series, maintenance, superseded
    acknowledged_at  TIMESTAMPTZ,
    acknowledged_by  TEXT,
    last_seq         BIGINT NOT NULL,
    updated_at       TIMESTAMPTZ NOT NULL DEFAULT now()
);

-- At most one open episode per fingerprint.
CREATE UNIQUE INDEX alerts_open_fingerprint ON alerts (fingerprint) WHERE state IN ('pending', 'firing');
-- The list (`GET /v1/alerts`, newest first) by each of its filters, and per-rule stats.
CREATE INDEX alerts_state_id ON alerts (state, id DESC);
CREATE INDEX alerts_service_id ON alerts (service, id DESC);
CREATE INDEX alerts_rule_id ON alerts (rule, id DESC);

-- Every change of an alert: a breach applied (`breach_seq` set) or an acknowledgement
-- (`actor` set). `seq` numbers an alert's transitions from 1; the feed carries it.
CREATE TABLE alert_transitions (
    alert_id    BIGINT NOT NULL REFERENCES alerts (id),
    seq         BIGINT NOT NULL,
    breach_seq  BIGINT,
    state       TEXT NOT NULL CHECK (state IN ('pending', 'firing', 'resolved')),
    reason      TEXT NOT NULL,     -- breached, escalated, recovered, missing_series, maintenance, superseded, acknowledged
    severity    TEXT NOT NULL,
    value       DOUBLE PRECISION,
    threshold   DOUBLE PRECISION NOT NULL,
    at          TIMESTAMPTZ NOT NULL,
    schedule    TEXT,
    actor       TEXT,
    PRIMARY KEY (alert_id, seq)
);

-- The last breach applied per fingerprint, as (episode start, seq): a breach at or below
-- it is a repeat (the aggregator may publish a transition again after a crash). The
-- episode comes first because an aggregator that forgot an idle series numbers its next
-- episode from 1 again.
CREATE TABLE alert_fingerprints (
    fingerprint        TEXT PRIMARY KEY,
    last_active_since  BIGINT NOT NULL,       -- ms
    last_seq           BIGINT NOT NULL,
    updated_at         TIMESTAMPTZ NOT NULL DEFAULT now()
);

-- Where the alerter resumes each partition of the breaches topic, in which Kafka cluster
-- (a restarted embedded broker is a new cluster whose offsets start again at 0).
CREATE TABLE alerter_offsets (
    topic        TEXT NOT NULL,
    partition    INTEGER NOT NULL,
    next_offset  BIGINT NOT NULL,
    cluster_id   TEXT NOT NULL,
    updated_at   TIMESTAMPTZ NOT NULL DEFAULT now(),
    PRIMARY KEY (topic, partition)
);

-- The outbox of the on-call feed (`<prefix>.alerts`): one row per alert transition,
-- written with it, produced by the alerter's publisher and then marked published.
CREATE TABLE alert_feed (
    id            BIGSERIAL PRIMARY KEY,
    alert_id      BIGINT NOT NULL REFERENCES alerts (id),
    seq           BIGINT NOT NULL,
    fingerprint   TEXT NOT NULL,      -- the message key
    payload       JSONB NOT NULL,
    created_at    TIMESTAMPTZ NOT NULL DEFAULT now(),
    published_at  TIMESTAMPTZ
);
CREATE INDEX alert_feed_unpublished ON alert_feed (id) WHERE published_at IS NULL;
