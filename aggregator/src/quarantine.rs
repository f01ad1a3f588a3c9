//! The quarantine: messages of the samples topic that the aggregator set aside because
//! of their data (undecodable, failing validation, refused by Postgres), kept whole with
//! their partition, offset and reason. `list` shows them; `replay` applies one once its
//! cause is fixed, exactly once: the buckets and the entry's `replayed_at` change in one
//! transaction, and chunks of idempotent requests count only if their id is new.

use sqlx::{PgPool, Row};

use crate::state::{Fence, PartitionState, SeriesCache};
use crate::store::{self, Written};

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

/// Entries in the order they were set aside; replayed ones only with `all`.
pub async fn list(pool: &PgPool, all: bool) -> sqlx::Result<Vec<Entry>> {
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
pub async fn pending(pool: &PgPool) -> sqlx::Result<(i64, Option<String>)> {
    let row = sqlx::query(
        "SELECT count(*), (SELECT reason FROM quarantine WHERE replayed_at IS NULL ORDER BY id DESC LIMIT 1) \
         FROM quarantine WHERE replayed_at IS NULL",
    )
    .fetch_one(pool)
    .await?;
    Ok((row.get(0), row.get(1)))
}

/// What replaying one entry did.
#[derive(Debug)]
pub enum Replayed {
    /// Its samples were applied; the buckets as written.
    Applied { samples: u64, buckets: Vec<Written> },
    /// It still cannot be applied; nothing changed.
    StillRefused(String),
}

/// Applies quarantined entry `id` (not yet replayed) to the buckets.
pub async fn replay(pool: &PgPool, id: i64) -> anyhow::Result<Replayed> {
    let mut tx = pool.begin().await?;
    let row = sqlx::query(
        "SELECT topic, partition, payload FROM quarantine \
         WHERE id = $1 AND replayed_at IS NULL FOR UPDATE",
    )
    .bind(id)
    .fetch_optional(&mut *tx)
    .await?
    .ok_or_else(|| anyhow::anyhow!("no quarantined message {id} waits for a replay"))?;
    let (topic, partition, payload): (String, i32, Vec<u8>) = (row.get(0), row.get(1), row.get(2));
    let mut st = PartitionState::new(Fence::Absent, 0);
    if let Err(q) = st.apply(0, &payload, &mut SeriesCache::default()) {
        return Ok(Replayed::StillRefused(q.reason.clone()));
    }
    let ids = st.chunk_ids();
    let new = store::record_chunks(&mut tx, &topic, partition, &ids).await?;
    let chunk_deltas = st.chunk_deltas(|id| new.contains(id));
    let deltas = vec![(partition, &st.buckets), (partition, &chunk_deltas)];
    let buckets = match store::apply_deltas(&mut tx, deltas).await {
        Ok(b) => b,
        Err(e) if e.is_data() => return Ok(Replayed::StillRefused(e.to_string())),
        Err(e) => return Err(e.into()),
    };
    sqlx::query("UPDATE quarantine SET replayed_at = now() WHERE id = $1")
        .bind(id)
        .execute(&mut *tx)
        .await?;
    tx.commit().await?;
    Ok(Replayed::Applied {
        samples: st.samples,
        buckets,
    })
}
