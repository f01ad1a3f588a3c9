//! The store's tests that need PostgreSQL or Redis (the `local` layer of
//! `scripts/test.sh`): each makes its own database (`db::fresh_test_database`) or key
//! prefix (`hot::test_redis`) on the servers of `TIDEMARK_TEST_DATABASE_URL` and
//! `TIDEMARK_TEST_REDIS_URL`. The flush's statements (`buckets`) and `quarantine` are tested
//! through the aggregator, in the root `tests/it/local/fencing.rs` and `tests/it/broker/`.

mod alerts;
mod cardinality;
mod hot;
mod keys;
mod leases;
mod reads;
mod rule_states;
