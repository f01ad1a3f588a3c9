//! The runtime's tests that need PostgreSQL (the `local` layer of `scripts/test.sh`),
//! each on a database of its own (`tidemark_store::db::fresh_test_database`), and the
//! router-level tests of the HTTP layers that share their helpers.

mod auth;
mod http;
