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
//!
//! This module decides what a round claims and releases; the statements are in
//! `tidemark_store::leases`.

use std::time::Duration;

use tidemark_store::db::PgPool;
use tidemark_store::leases::{self, Round};

pub use tidemark_store::leases::Owned;

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
pub async fn round(pool: &PgPool, config: &LeaseConfig, partitions: i32) -> anyhow::Result<Owned> {
    let (mut round, members) = Round::begin(pool, &config.topic, &config.owner, config.ttl).await?;
    let mut owned = round.renew(partitions).await?;
    let share = fair_share(partitions, members);
    let release = surplus(&owned.keys().copied().collect::<Vec<_>>(), share);
    if !release.is_empty() {
        round.release(&release).await?;
        owned.retain(|p, _| !release.contains(p));
    }
    let wanted = share.saturating_sub(owned.len());
    if wanted > 0 {
        owned.extend(round.claim(partitions, wanted).await?);
    }
    round.commit().await?;
    Ok(owned)
}

/// Gives up every lease and leaves, so that a standby takes over at its next round
/// instead of after the lease time.
pub async fn release_all(pool: &PgPool, config: &LeaseConfig) -> anyhow::Result<()> {
    leases::release_all(pool, &config.topic, &config.owner).await
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
