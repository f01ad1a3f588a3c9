//! PostgreSQL connection and migrations (the whole schema), and the decoding of a bucket
//! row that the other modules share. Connecting explains a failure in one line that names
//! the URL (without its password) and what to do.

use std::str::FromStr;
use std::time::Duration;

use sqlx::postgres::{PgConnectOptions, PgPoolOptions};
use sqlx::{ConnectOptions, Connection, Row};
use tidemark_sketch::Sketch;

use tidemark_model::secret::{redact_url, Secret};
use tidemark_model::Bucket;

/// The connection pool every caller passes back to this crate's functions.
pub use sqlx::PgPool;

fn unreachable(url: &Secret, err: sqlx::Error) -> anyhow::Error {
    let missing_database = err
        .as_database_error()
        .and_then(|e| e.code())
        .is_some_and(|c| c == "3D000");
    let hint = if missing_database {
        "run `tidemark migrate` to create it, or set TIDEMARK_DATABASE_URL"
    } else {
        "start PostgreSQL or set TIDEMARK_DATABASE_URL"
    };
    anyhow::anyhow!(
        "cannot connect to PostgreSQL at {} ({err}); {hint}",
        redact_url(url.expose())
    )
}

/// Opens a pool; with `create_database`, first creates the database when it is missing.
pub async fn connect(
    url: &Secret,
    max_connections: u32,
    create_database: bool,
) -> anyhow::Result<PgPool> {
    let options = PgConnectOptions::from_str(url.expose())
        .map_err(|e| anyhow::anyhow!("TIDEMARK_DATABASE_URL is not a valid URL: {e}"))?
        .log_statements(tracing::log::LevelFilter::Debug);
    if create_database {
        create_database_if_missing(url, &options).await?;
    }
    PgPoolOptions::new()
        .max_connections(max_connections)
        .acquire_timeout(Duration::from_secs(5))
        .connect_with(options)
        .await
        .map_err(|e| unreachable(url, e))
}

async fn create_database_if_missing(
    url: &Secret,
    options: &PgConnectOptions,
) -> anyhow::Result<()> {
    let Some(name) = options.get_database().map(str::to_owned) else {
        return Ok(());
    };
    let mut admin = options
        .clone()
        .database("postgres")
        .connect()
        .await
        .map_err(|e| unreachable(url, e))?;
    let exists: bool =
        sqlx::query_scalar("SELECT EXISTS (SELECT 1 FROM pg_database WHERE datname = $1)")
            .bind(&name)
            .fetch_one(&mut admin)
            .await?;
    if !exists {
        let quoted = format!("\"{}\"", name.replace('"', "\"\""));
        if let Err(e) = sqlx::query(&format!("CREATE DATABASE {quoted}"))
            .execute(&mut admin)
            .await
        {
            // Another process may have created it at the same moment.
            let raced = e
                .as_database_error()
                .and_then(|d| d.code())
                .is_some_and(|c| c == "42P04");
            if !raced {
                return Err(anyhow::anyhow!("cannot create database {name}: {e}"));
            }
        }
        tracing::info!(database = %name, "created database");
    }
    admin.close().await?;
    Ok(())
}

/// Whether PostgreSQL answers a trivial query (readiness checks).
pub async fn ping(pool: &PgPool) -> anyhow::Result<()> {
    sqlx::query("SELECT 1").execute(pool).await?;
    Ok(())
}

/// Whether `err` (at any depth of its context) is the pool running out of connections:
/// overload, which callers answer with 503 rather than as a fault.
pub fn is_pool_exhausted(err: &anyhow::Error) -> bool {
    matches!(
        err.downcast_ref::<sqlx::Error>(),
        Some(sqlx::Error::PoolTimedOut)
    )
}

/// Applies the embedded migrations (idempotent; safe from several processes at once).
pub async fn migrate(pool: &PgPool) -> anyhow::Result<()> {
    sqlx::migrate!("./migrations")
        .run(pool)
        .await
        .map_err(|e| anyhow::anyhow!("applying migrations failed: {e}"))
}

/// The columns of a bucket row (table alias `b`), in the order [`bucket_from_row`] reads.
pub const BUCKET_COLUMNS: &str =
    "b.count, b.error_count, b.sum, b.min, b.max, (extract(epoch FROM b.last_at) * 1000)::bigint, b.sketch";

/// Reads a bucket from [`BUCKET_COLUMNS`] selected from column `first` on.
pub fn bucket_from_row(r: &sqlx::postgres::PgRow, first: usize) -> sqlx::Result<Bucket> {
    let sketch: Vec<u8> = r.try_get(first + 6)?;
    Ok(Bucket {
        count: r.try_get::<i64, _>(first)? as u64,
        error_count: r.try_get::<i64, _>(first + 1)? as u64,
        sum: r.try_get(first + 2)?,
        min: r.try_get(first + 3)?,
        max: r.try_get(first + 4)?,
        last_at_ms: r.try_get(first + 5)?,
        sketch: Sketch::from_bytes(&sketch).map_err(|e| sqlx::Error::Decode(Box::new(e)))?,
    })
}

/// A new, empty, migrated database for one test, named `tm_it_…` (which
/// `scripts/test.sh` drops before each run), on the server of
/// `TIDEMARK_TEST_DATABASE_URL` (default: the local `postgres` database). Returns its URL
/// and a pool on it.
#[cfg(feature = "test-support")]
pub async fn fresh_test_database() -> (String, PgPool) {
    let admin_url = std::env::var("TIDEMARK_TEST_DATABASE_URL")
        .unwrap_or_else(|_| "postgres://postgres@127.0.0.1:5432/postgres".to_owned());
    let name = format!("tm_it_{}", &uuid::Uuid::new_v4().simple().to_string()[..12]);
    let admin = PgPool::connect(&admin_url)
        .await
        .expect("connect to the test Postgres");
    sqlx::query(&format!("CREATE DATABASE {name}"))
        .execute(&admin)
        .await
        .unwrap();
    admin.close().await;
    let (base, _) = admin_url
        .rsplit_once('/')
        .expect("database URL with a path");
    let url = format!("{base}/{name}");
    let pool = PgPool::connect(&url).await.unwrap();
    migrate(&pool).await.unwrap();
    (url, pool)
}
