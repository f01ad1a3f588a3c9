//! The quarantine table: messages of the samples topic set aside because of their data,
//! kept whole with their partition, offset and reason. Entries are written by the commit
//! that advances the offset past them, listed, and marked replayed in the transaction
//! that applies them.

use sqlx::{PgPool, Row};

use crate::buckets::{FlushError, Tx};

/// One quarantined message, without its payload.
#[derive(Debug, Clone, PartialEq)]
pub struct Entry {
    pub id: i64,
    pub topic: String,
    pub partition: i32,
    pub offset: i64,
    pub bytes: i32,
    pub reason: String,
    /// Unix milliseconds.
    pub quarantined_at: i64,
    pub replayed_at: Option<i64>,
}

/// A message to set aside, at `offset` of the partition.
#[derive(Debug, Clone)]
pub struct NewEntry<'a> {
    pub offset: i64,
    pub payload: &'a [u8],
    pub reason: String,
}

/// A message waiting for a replay, payload included.
#[derive(Debug, Clone)]
pub struct Waiting {
    pub topic: String,
    pub partition: i32,
    pub payload: Vec<u8>,
}

/// Writes the messages a partition set aside. Only the commit that advances the offset
/// past a message writes it, so each is written once; `ON CONFLICT` is a guard.
pub async fn insert(
    tx: &mut Tx,
    topic: &str,
    partition: i32,
    cluster_id: &str,
    entries: &[NewEntry<'_>],
) -> Result<(), FlushError> {
    if entries.is_empty() {
        return Ok(());
    }
    let offsets: Vec<i64> = entries.iter().map(|e| e.offset).collect();
    let payloads: Vec<&[u8]> = entries.iter().map(|e| e.payload).collect();
    let reasons: Vec<&str> = entries.iter().map(|e| e.reason.as_str()).collect();
    sqlx::query(
        "INSERT INTO quarantine (topic, partition, cluster_id, \"offset\", payload, reason) \
         SELECT $1, $2, $3, o, p, r FROM UNNEST($4::bigint[], $5::bytea[], $6::text[]) AS u(o, p, r) \
         ON CONFLICT DO NOTHING",
    )
    .bind(topic)
    .bind(partition)
    .bind(cluster_id)
    .bind(&offsets)
    .bind(&payloads)
    .bind(&reasons)
    .execute(&mut *tx.0)
    .await?;
    Ok(())
}

/// Entries in the order they were set aside; replayed ones only with `all`.
pub async fn list(pool: &PgPool, all: bool) -> anyhow::Result<Vec<Entry>> {
    let rows = sqlx::query(
        "SELECT id, topic, partition, \"offset\", octet_length(payload), reason, \
                (extract(epoch FROM quarantined_at) * 1000)::bigint, \
                (extract(epoch FROM replayed_at) * 1000)::bigint \
         FROM quarantine WHERE $1 OR replayed_at IS NULL ORDER BY id",
    )
    .bind(all)
    .fetch_all(pool)
    .await?;
    Ok(rows
        .into_iter()
        .map(|r| Entry {
            id: r.get(0),
            topic: r.get(1),
            partition: r.get(2),
            offset: r.get(3),
            bytes: r.get(4),
            reason: r.get(5),
            quarantined_at: r.get(6),
            replayed_at: r.get(7),
        })
        .collect())
}

/// How many entries wait for a replay, and the reason of the newest: `/readyz` detail.
pub async fn pending(pool: &PgPool) -> anyhow::Result<(i64, Option<String>)> {
    let row = sqlx::query(
        "SELECT count(*), (SELECT reason FROM quarantine WHERE replayed_at IS NULL ORDER BY id DESC LIMIT 1) \
         FROM quarantine WHERE replayed_at IS NULL",
    )
    .fetch_one(pool)
    .await?;
    Ok((row.get(0), row.get(1)))
}

/// Row-locks entry `id` if it waits for a replay, and returns it.
pub async fn lock_waiting(tx: &mut Tx, id: i64) -> Result<Option<Waiting>, FlushError> {
    let row = sqlx::query(
        "SELECT topic, partition, payload FROM quarantine \
         WHERE id = $1 AND replayed_at IS NULL FOR UPDATE",
    )
    .bind(id)
    .fetch_optional(&mut *tx.0)
    .await?;
    Ok(row.map(|r| Waiting {
        topic: r.get(0),
        partition: r.get(1),
        payload: r.get(2),
    }))
}

/// Marks entry `id` replayed.
pub async fn mark_replayed(tx: &mut Tx, id: i64) -> Result<(), FlushError> {
    sqlx::query("UPDATE quarantine SET replayed_at = now() WHERE id = $1")
        .bind(id)
        .execute(&mut *tx.0)
        .await?;
    Ok(())
}
