//! Tidemark's integration tests, one binary for the workspace, in layers a developer can
//! run apart (README, "Tests"):
//!
//! - `local::` needs only PostgreSQL and Redis: in-process roles, librdkafka's mock
//!   cluster, and role processes on the embedded broker;
//! - `broker::` runs the roles as processes on the external broker that
//!   `scripts/test.sh` starts (`TIDEMARK_TEST_BROKERS`);
//! - `chaos::` also needs that broker, and stops and pauses processes and databases, so
//!   its scenarios run one at a time whatever the test runner.

mod support;

mod local {
    pub(crate) mod alerts;
    mod api_limits;
    mod compose;
    mod fencing;
    mod health;
    mod ingest;
    mod rules;
    mod rules_api;
    mod silences;
    mod slowloris;
    mod standalone;
    mod startup;
    mod telemetry;
}

mod broker {
    mod alerts;
    mod blackbox;
    mod evaluation;
    mod gaps;
    mod idempotency;
    mod properties;
    pub(crate) mod quarantine;
    mod replay;
}

mod chaos;
