//! The one owner of Tidemark's storage: PostgreSQL (connections, migrations, the schema's
//! reads and writes) and Redis (the hot copy's whole key protocol, the admitted series).
//! Every SQL statement and Redis command of the project lives in this crate; callers see
//! values.
//!
//! | module | owns |
//! | --- | --- |
//! | [`db`] | connecting to PostgreSQL, the migrations (`migrations/`: the whole schema) |
//! | [`buckets`] | writes to `buckets` and `series`; `consumer_offsets`, `idempotency_chunks` |
//! | [`reads`] | reads of `buckets` and `series` |
//! | [`quarantine`] | `quarantine` |
//! | [`leases`] | `partition_leases`, `aggregator_members` |
//! | [`keys`] | `api_keys` |
//! | [`notify`] | `NOTIFY tidemark_rules_reload`, rules reloads announced to every process |
//! | [`rule_states`] | `rule_states`, the aggregator's rule evaluation state |
//! | [`hot`] | connecting to Redis; `<prefix>:hot:*`, the hot copy ([`hot::publish`] writes it, [`hot::read`] reads it) |
//! | [`cardinality`] | `<prefix>:series:<service>`, the admitted series |
//! | [`alerts`] | `alerts`, `alert_transitions`, `alert_fingerprints`, `alerter_offsets`, `alert_feed`; the alerter's advisory lock |
//! | [`silences`] | `silences`; the silences active at an instant, which [`alerts`] marks alerts with |

pub mod alerts;
pub mod buckets;
pub mod cardinality;
pub mod db;
pub mod hot;
pub mod keys;
pub mod leases;
pub mod notify;
pub mod quarantine;
pub mod reads;
pub mod rule_states;
pub mod silences;
