-- Which aggregator reads which partition (see aggregator/src/lease.rs): a lease per
-- partition, renewed by its owner, taken over once expired or released; and the
-- aggregators seen recently, whose number sets each one's fair share.

CREATE TABLE partition_leases (
    topic       TEXT NOT NULL,
    partition   INTEGER NOT NULL,
    owner       TEXT,
    epoch       BIGINT NOT NULL DEFAULT 0,   -- grows whenever the lease changes hands
    expires_at  TIMESTAMPTZ NOT NULL DEFAULT '-infinity',
    PRIMARY KEY (topic, partition)
);

CREATE TABLE aggregator_members (
    topic    TEXT NOT NULL,
    id       TEXT NOT NULL,
    seen_at  TIMESTAMPTZ NOT NULL DEFAULT now(),
    PRIMARY KEY (topic, id)
);
