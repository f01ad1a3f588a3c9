//! The one owner of Tidemark's storage: PostgreSQL (connections, migrations, the schema's
//! reads and writes) and Redis (the hot copy's whole key protocol). Every SQL statement
//! and Redis command of the project lives in this crate; callers see values.

pub mod db;
pub mod hot;
