//! Partition ownership held in Postgres, so that failover depends on nothing the
//! aggregators do not control: each live aggregator renews a lease row per partition it
//! reads, and takes expired or released ones up to a fair share of the partitions among
//! the aggregators seen within one lease time. A killed owner's partitions move to a
//! standby once its leases expire; a restarted owner with the same identity takes its
//! own leases back at once; one leaving gracefully releases them.
//!
//! Leases decide who reads a partition, not who may commit: two aggregators that both
//! believe they own one (a paused owner whose lease expired meanwhile) are kept apart by
//! the offset fence of every flush (see `store::flush`), and the stale one drops the
//! partition at its next round.

use std::collections::BTreeMap;
use std::time::Duration;

use sqlx::{PgPool, Row};

/// The partitions held, with the lease epoch of each (it grows whenever a lease changes
/// hands).
pub type Owned = BTreeMap<i32, i64>;

/// Who takes part, and for how long a lease holds without renewal.
#[derive(Debug, Clone)]
pub struct LeaseConfig {
    pub topic: String,
    /// This aggregator's identity; a restart with the same identity resumes its leases.
    pub owner: String,
    pub ttl: Duration,
}

impl LeaseConfig {
    /// How often leases are renewed and partitions claimed: three times per lease time,
    /// so one late round never loses a lease.
    pub fn interval(&self) -> Duration {
        self.ttl / 3
    }
}

/// How many partitions each of `members` live aggregators should hold at most.
pub fn fair_share(partitions: i32, members: i64) -> usize {
    let members = members.max(1) as usize;
    (partitions.max(0) as usize).div_ceil(members)
}

/// Of the partitions held, those to release to get down to `share`: the highest first,
/// so that the aggregators agree on which partitions move.
pub fn surplus(held: &[i32], share: usize) -> Vec<i32> {
    let mut held = held.to_vec();
    held.sort_unstable();
    held.split_off(share.min(held.len()))
}

/// One round: records this aggregator as live, renews its leases, releases those beyond
/// its fair share and claims free or expired ones up to it, in one transaction. Returns
/// what it holds afterwards.
pub async fn round(pool: &PgPool, config: &LeaseConfig, partitions: i32) -> sqlx::Result<Owned> {
    let ttl = config.ttl.as_secs_f64();
    let mut tx = pool.begin().await?;
    sqlx::query(
        "INSERT INTO aggregator_members (topic, id, seen_at) VALUES ($1, $2, now()) \
         ON CONFLICT (topic, id) DO UPDATE SET seen_at = now()",
    )
    .bind(&config.topic)
    .bind(&config.owner)
    .execute(&mut *tx)
    .await?;
    sqlx::query(
        "DELETE FROM aggregator_members WHERE topic = $1 AND seen_at < now() - make_interval(secs => $2)",
    )
    .bind(&config.topic)
    .bind(ttl)
    .execute(&mut *tx)
    .await?;
    let members: i64 =
        sqlx::query_scalar("SELECT count(*) FROM aggregator_members WHERE topic = $1")
            .bind(&config.topic)
            .fetch_one(&mut *tx)
            .await?;
    sqlx::query(
        "INSERT INTO partition_leases (topic, partition) SELECT $1, generate_series(0, $2 - 1) \
         ON CONFLICT DO NOTHING",
    )
    .bind(&config.topic)
    .bind(partitions)
    .execute(&mut *tx)
    .await?;
    let mut owned = held(
        sqlx::query(
            "UPDATE partition_leases SET expires_at = now() + make_interval(secs => $3) \
             WHERE topic = $1 AND owner = $2 AND partition < $4 RETURNING partition, epoch",
        )
        .bind(&config.topic)
        .bind(&config.owner)
        .bind(ttl)
        .bind(partitions)
        .fetch_all(&mut *tx)
        .await?,
    );
    let share = fair_share(partitions, members);
    let release = surplus(&owned.keys().copied().collect::<Vec<_>>(), share);
    if !release.is_empty() {
        sqlx::query(
            "UPDATE partition_leases SET owner = NULL, expires_at = '-infinity' \
             WHERE topic = $1 AND owner = $2 AND partition = ANY($3)",
        )
        .bind(&config.topic)
        .bind(&config.owner)
        .bind(&release)
        .execute(&mut *tx)
        .await?;
        owned.retain(|p, _| !release.contains(p));
    }
    let wanted = share.saturating_sub(owned.len());
    if wanted > 0 {
        owned.extend(held(
            sqlx::query(
                "UPDATE partition_leases l SET owner = $2, epoch = l.epoch + 1, \
                        expires_at = now() + make_interval(secs => $3) \
                 FROM (SELECT partition FROM partition_leases \
                       WHERE topic = $1 AND partition < $4 AND (owner IS NULL OR expires_at < now()) \
                       ORDER BY partition LIMIT $5 FOR UPDATE SKIP LOCKED) free \
                 WHERE l.topic = $1 AND l.partition = free.partition \
                 RETURNING l.partition, l.epoch",
            )
            .bind(&config.topic)
            .bind(&config.owner)
            .bind(ttl)
            .bind(partitions)
            .bind(wanted as i64)
            .fetch_all(&mut *tx)
            .await?,
        ));
    }
    tx.commit().await?;
    Ok(owned)
}

fn held(rows: Vec<sqlx::postgres::PgRow>) -> Owned {
    rows.iter().map(|r| (r.get(0), r.get(1))).collect()
}

/// Gives up every lease and leaves, so that a standby takes over at its next round
/// instead of after the lease time.
pub async fn release_all(pool: &PgPool, config: &LeaseConfig) -> sqlx::Result<()> {
    let mut tx = pool.begin().await?;
    sqlx::query(
        "UPDATE partition_leases SET owner = NULL, expires_at = '-infinity' WHERE topic = $1 AND owner = $2",
    )
    .bind(&config.topic)
    .bind(&config.owner)
    .execute(&mut *tx)
    .await?;
    sqlx::query("DELETE FROM aggregator_members WHERE topic = $1 AND id = $2")
        .bind(&config.topic)
        .bind(&config.owner)
        .execute(&mut *tx)
        .await?;
    tx.commit().await
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn shares_round_up_so_every_partition_has_a_taker() {
        assert_eq!(fair_share(1, 1), 1);
        assert_eq!(fair_share(1, 2), 1, "one partition: an owner and a standby");
        assert_eq!(fair_share(6, 2), 3);
        assert_eq!(fair_share(6, 4), 2);
        assert_eq!(fair_share(6, 0), 6, "a round counts its own aggregator");
    }

    #[test]
    fn the_highest_partitions_are_released_first() {
        assert_eq!(surplus(&[5, 0, 3, 1], 2), vec![3, 5]);
        assert_eq!(surplus(&[0, 1], 2), Vec::<i32>::new());
        assert_eq!(surplus(&[], 0), Vec::<i32>::new());
    }
}
