//! Start-up failures explain themselves: one line naming the variable or URL at fault
//! (without its password) and what to do, and a non-zero exit.

use std::process::Command;

use crate::support;

fn run(role: &str, env: &[(&str, &str)]) -> (i32, String) {
    let out = Command::new(env!("CARGO_BIN_EXE_tidemark"))
        .arg(role)
        .env_clear()
        .env("TIDEMARK_LOG", "off")
        .envs(env.iter().copied())
        .output()
        .expect("run tidemark");
    (
        out.status.code().unwrap_or(-1),
        String::from_utf8_lossy(&out.stderr).into_owned(),
    )
}

#[test]
fn unreachable_postgres_names_the_url_without_its_password() {
    let (code, stderr) = run(
        "api",
        &[
            ("TIDEMARK_KAFKA_BROKERS", "127.0.0.1:1"),
            (
                "TIDEMARK_DATABASE_URL",
                "postgres://tm:hunter2@127.0.0.1:1/tidemark",
            ),
        ],
    );
    assert_ne!(code, 0);
    assert_eq!(stderr.lines().count(), 1, "one line: {stderr}");
    assert!(
        stderr.contains("cannot connect to PostgreSQL at postgres://tm:***@127.0.0.1:1/tidemark"),
        "{stderr}"
    );
    assert!(stderr.contains("TIDEMARK_DATABASE_URL"), "{stderr}");
    assert!(!stderr.contains("hunter2"), "password leaked: {stderr}");
}

#[test]
fn unreachable_redis_names_the_url() {
    let database = crate::support::env(
        "TIDEMARK_TEST_DATABASE_URL",
        "postgres://postgres@127.0.0.1:5432/postgres",
    );
    let env = [
        ("TIDEMARK_KAFKA_BROKERS", "127.0.0.1:1"),
        ("TIDEMARK_DATABASE_URL", database.as_str()),
        ("TIDEMARK_REDIS_URL", "redis://:s3cret@127.0.0.1:1"),
    ];
    let (code, stderr) = run("api", &env);
    assert_ne!(code, 0);
    assert_eq!(stderr.lines().count(), 1, "one line: {stderr}");
    assert!(
        stderr.contains("cannot connect to Redis at redis://:***@127.0.0.1:1"),
        "{stderr}"
    );
    assert!(
        stderr.contains("TIDEMARK_REDIS_URL") && !stderr.contains("s3cret"),
        "{stderr}"
    );
}

#[test]
fn a_missing_database_says_how_to_create_it() {
    let server = support::env(
        "TIDEMARK_TEST_DATABASE_URL",
        "postgres://postgres@127.0.0.1:5432/postgres",
    );
    let (base, _) = server.rsplit_once('/').expect("database URL with a path");
    let missing_database = format!("{base}/tm_no_such_db");
    let (code, stderr) = run(
        "api",
        &[
            ("TIDEMARK_KAFKA_BROKERS", "127.0.0.1:1"),
            ("TIDEMARK_DATABASE_URL", &missing_database),
        ],
    );
    assert_ne!(code, 0);
    assert!(
        stderr.contains("run `tidemark migrate` to create it"),
        "{stderr}"
    );
}

#[test]
fn a_bad_value_names_its_variable() {
    let (code, stderr) = run("api", &[("TIDEMARK_PARTITIONS", "many")]);
    assert_eq!(code, 2);
    assert!(
        stderr.starts_with("error: TIDEMARK_PARTITIONS: invalid value \"many\""),
        "{stderr}"
    );
    let (code, stderr) = run("ingest", &[("TIDEMARK_INGEST_ADDR", "localhost")]);
    assert_eq!(code, 2);
    assert!(stderr.contains("TIDEMARK_INGEST_ADDR"), "{stderr}");
}

#[test]
fn roles_other_than_standalone_need_brokers() {
    let (code, stderr) = run("aggregator", &[]);
    assert_ne!(code, 0);
    assert!(
        stderr.contains("TIDEMARK_KAFKA_BROKERS is required"),
        "{stderr}"
    );
}
