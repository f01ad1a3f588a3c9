-- The latest evaluation of each rule by each aggregator (aggregator/src/alerting):
-- when, over how many series, and what went wrong, for `GET /v1/rules`.

CREATE TABLE rule_evaluations (
    topic         TEXT NOT NULL,          -- the samples topic
    rule          TEXT NOT NULL,
    owner         TEXT NOT NULL,          -- the aggregator's instance id
    evaluated_at  TIMESTAMPTZ NOT NULL,
    series        INTEGER NOT NULL,       -- series evaluated (of partitions not frozen)
    frozen        INTEGER NOT NULL,       -- owned partitions left out: rebuilding or lagging
    error         TEXT,                   -- why its transitions were not published, if they were not
    PRIMARY KEY (topic, rule, owner)
);
