//! The one owner of Tidemark's storage: PostgreSQL (connections, migrations, the schema's
//! reads and writes) and Redis (the hot copy's whole key protocol). Every SQL statement
//! and Redis command of the project lives in this crate; callers see values.

pub mod buckets;
pub mod cardinality;
pub mod db;
pub mod hot;
pub mod keys;
pub mod leases;
pub mod quarantine;
pub mod reads;
