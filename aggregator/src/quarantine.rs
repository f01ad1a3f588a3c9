//! Replaying the quarantine: messages of the samples topic that the aggregator set aside
//! because of their data (undecodable, failing validation, refused by Postgres), kept in
//! the quarantine table (`tidemark_store::quarantine`) with their partition, offset and
//! reason. `replay` applies one once its cause is fixed, exactly once: the buckets and
//! the entry's `replayed_at` change in one transaction, and chunks of idempotent
//! requests count only if their id is new.

use tidemark_store::buckets::{self, Tx};
use tidemark_store::db::PgPool;
use tidemark_store::quarantine::{lock_waiting, mark_replayed};

use crate::state::{Fence, PartitionState, SeriesCache};
use crate::store::{self, Written};

pub use tidemark_store::quarantine::pending;

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
    let mut tx = Tx::begin(pool).await?;
    let entry = lock_waiting(&mut tx, id)
        .await?
        .ok_or_else(|| anyhow::anyhow!("no quarantined message {id} waits for a replay"))?;
    let mut st = PartitionState::new(Fence::Absent, 0);
    if let Err(q) = st.apply(0, &entry.payload, &mut SeriesCache::default(), None) {
        return Ok(Replayed::StillRefused(q.reason.clone()));
    }
    let ids = st.chunk_ids();
    let new = buckets::record_chunks(&mut tx, &entry.topic, entry.partition, &ids).await?;
    let chunk_deltas = st.chunk_deltas(|id| new.contains(id));
    let buckets = match store::apply_deltas(&mut tx, &[&st.buckets, &chunk_deltas]).await {
        Ok(b) => b,
        Err(e) if e.is_data() => return Ok(Replayed::StillRefused(e.to_string())),
        Err(e) => return Err(e.into()),
    };
    mark_replayed(&mut tx, id).await?;
    tx.commit().await?;
    Ok(Replayed::Applied {
        samples: st.samples,
        buckets,
    })
}
