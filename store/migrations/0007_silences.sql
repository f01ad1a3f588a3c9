-- Silences (store/src/silences.rs): a silence mutes the open alerts whose labels satisfy
-- all of its `matchers` (a JSON array of {name, op, value}, op one of =, !=, =~, !~)
-- from `starts_at` (inclusive) to `ends_at` (exclusive). Expiring one sets `ends_at`
-- (and a later `starts_at`) to the instant of expiry and keeps the row: the history.
-- Whether an alert is silenced is computed when it is read or changed, never stored:
-- a silence starts and ends with no breach to record it.
CREATE TABLE silences (
    id          BIGSERIAL PRIMARY KEY,
    matchers    JSONB NOT NULL,
    starts_at   TIMESTAMPTZ NOT NULL,
    ends_at     TIMESTAMPTZ NOT NULL,
    created_by  TEXT NOT NULL,
    comment     TEXT NOT NULL,
    created_at  TIMESTAMPTZ NOT NULL DEFAULT now(),
    updated_at  TIMESTAMPTZ NOT NULL DEFAULT now(),
    CHECK (starts_at <= ends_at)
);

-- The silences not yet expired (`ends_at` after now), read for every alert list and
-- every breach the alerter applies.
CREATE INDEX silences_ends_at ON silences (ends_at);
