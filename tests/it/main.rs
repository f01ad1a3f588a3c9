//! Tidemark's integration tests, one binary for the workspace: in-process tests on
//! librdkafka's mock cluster, and black-box tests of the role processes on the external
//! broker started by `scripts/test.sh`.

mod api_limits;
mod blackbox;
mod chaos;
mod compose;
mod fencing;
mod gaps;
mod idempotency;
mod ingest;
mod properties;
mod quarantine;
mod replay;
mod slowloris;
mod standalone;
mod startup;
mod support;
