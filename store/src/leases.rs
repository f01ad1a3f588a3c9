//! The partition lease and membership tables: which aggregators are live for a topic
//! (`aggregator_members`) and which holds each partition until when (`partition_leases`).
//! What a round claims or releases is the aggregator's decision; here are the statements
//! of one [`Round`], all in one transaction.

use std::collections::BTreeMap;
use std::time::Duration;

use sqlx::{PgPool, Postgres, Row, Transaction};

/// Partitions held, with the lease epoch of each (it grows whenever a lease changes
/// hands).
pub type Owned = BTreeMap<i32, i64>;

/// One round of an aggregator (`owner`) for `topic`: everything it does to its leases
/// happens at once when it commits.
pub struct Round<'a> {
    tx: Transaction<'static, Postgres>,
    topic: &'a str,
    owner: &'a str,
    /// Seconds a lease or a membership holds without renewal.
    ttl: f64,
}

impl<'a> Round<'a> {
    /// Begins a round: records `owner` as live and forgets members not seen within `ttl`.
    /// Returns the round and how many members are live, `owner` included.
    pub async fn begin(
        pool: &PgPool,
        topic: &'a str,
        owner: &'a str,
        ttl: Duration,
    ) -> anyhow::Result<(Self, i64)> {
        let ttl = ttl.as_secs_f64();
        let mut tx = pool.begin().await?;
        sqlx::query(
            "INSERT INTO aggregator_members (topic, id, seen_at) VALUES ($1, $2, now()) \
             ON CONFLICT (topic, id) DO UPDATE SET seen_at = now()",
        )
        .bind(topic)
        .bind(owner)
        .execute(&mut *tx)
        .await?;
        sqlx::query(
            "DELETE FROM aggregator_members WHERE topic = $1 AND seen_at < now() - make_interval(secs => $2)",
        )
        .bind(topic)
        .bind(ttl)
        .execute(&mut *tx)
        .await?;
        let members: i64 =
            sqlx::query_scalar("SELECT count(*) FROM aggregator_members WHERE topic = $1")
                .bind(topic)
                .fetch_one(&mut *tx)
                .await?;
        let round = Self {
            tx,
            topic,
            owner,
            ttl,
        };
        Ok((round, members))
    }

    /// Makes sure partitions `0..partitions` have a lease row, and renews the leases the
    /// owner holds among them; returns those.
    pub async fn renew(&mut self, partitions: i32) -> anyhow::Result<Owned> {
        sqlx::query(
            "INSERT INTO partition_leases (topic, partition) SELECT $1, generate_series(0, $2 - 1) \
             ON CONFLICT DO NOTHING",
        )
        .bind(self.topic)
        .bind(partitions)
        .execute(&mut *self.tx)
        .await?;
        let rows = sqlx::query(
            "UPDATE partition_leases SET expires_at = now() + make_interval(secs => $3) \
             WHERE topic = $1 AND owner = $2 AND partition < $4 RETURNING partition, epoch",
        )
        .bind(self.topic)
        .bind(self.owner)
        .bind(self.ttl)
        .bind(partitions)
        .fetch_all(&mut *self.tx)
        .await?;
        Ok(held(rows))
    }

    /// Gives up the owner's leases of `partitions`.
    pub async fn release(&mut self, partitions: &[i32]) -> anyhow::Result<()> {
        release(&mut self.tx, self.topic, self.owner, Some(partitions)).await
    }

    /// Takes up to `wanted` free or expired leases among partitions `0..partitions`, the
    /// lowest first, skipping rows another round holds locked; returns those taken.
    pub async fn claim(&mut self, partitions: i32, wanted: usize) -> anyhow::Result<Owned> {
        let rows = sqlx::query(
            "UPDATE partition_leases l SET owner = $2, epoch = l.epoch + 1, \
                    expires_at = now() + make_interval(secs => $3) \
             FROM (SELECT partition FROM partition_leases \
                   WHERE topic = $1 AND partition < $4 AND (owner IS NULL OR expires_at < now()) \
                   ORDER BY partition LIMIT $5 FOR UPDATE SKIP LOCKED) free \
             WHERE l.topic = $1 AND l.partition = free.partition \
             RETURNING l.partition, l.epoch",
        )
        .bind(self.topic)
        .bind(self.owner)
        .bind(self.ttl)
        .bind(partitions)
        .bind(wanted as i64)
        .fetch_all(&mut *self.tx)
        .await?;
        Ok(held(rows))
    }

    /// Commits the round: its leases change now, all together.
    pub async fn commit(self) -> anyhow::Result<()> {
        Ok(self.tx.commit().await?)
    }
}

/// The partitions and epochs of `rows` (`partition, epoch`).
fn held(rows: Vec<sqlx::postgres::PgRow>) -> Owned {
    rows.iter().map(|r| (r.get(0), r.get(1))).collect()
}

/// Gives up every lease of `owner` and leaves, so that a standby takes over at its next
/// round instead of after the lease time.
pub async fn release_all(pool: &PgPool, topic: &str, owner: &str) -> anyhow::Result<()> {
    let mut tx = pool.begin().await?;
    release(&mut tx, topic, owner, None).await?;
    sqlx::query("DELETE FROM aggregator_members WHERE topic = $1 AND id = $2")
        .bind(topic)
        .bind(owner)
        .execute(&mut *tx)
        .await?;
    Ok(tx.commit().await?)
}

/// Frees the leases `owner` holds of `partitions` (all of them with `None`), so that the
/// next claim of any aggregator may take them.
async fn release(
    tx: &mut Transaction<'static, Postgres>,
    topic: &str,
    owner: &str,
    partitions: Option<&[i32]>,
) -> anyhow::Result<()> {
    sqlx::query(
        "UPDATE partition_leases SET owner = NULL, expires_at = '-infinity' \
         WHERE topic = $1 AND owner = $2 AND ($3::int[] IS NULL OR partition = ANY($3))",
    )
    .bind(topic)
    .bind(owner)
    .bind(partitions)
    .execute(&mut **tx)
    .await?;
    Ok(())
}
