//! The aggregator's flush against real Postgres: a partition's deltas commit only if the
//! stored offset is still the one they started from, so a stale owner cannot apply what
//! the new owner already applied.

use std::collections::{BTreeMap, HashMap};

use sqlx::Row;
use tidemark_aggregator::state::{Fence, PartitionState, SeriesCache};
use tidemark_aggregator::store;
use tidemark_schemas::{SampleBatch, WireSample};

use crate::support::fresh_database;

const TOPIC: &str = "f.samples";

fn batch(values: &[f64]) -> SampleBatch {
    let samples = values
        .iter()
        .map(|&value| WireSample {
            service: "svc".into(),
            metric: "m".into(),
            value,
            count: 1,
            error: false,
            timestamp: 1_790_000_000_000,
            tags: BTreeMap::new(),
        })
        .collect();
    SampleBatch {
        batch_id: "b".into(),
        produced_at: 0,
        samples,
        chunks: vec![],
    }
}

/// A partition's deltas after folding messages `from..to`, starting from `fence`.
fn owner(fence: Fence, from: i64, to: i64) -> HashMap<i32, PartitionState> {
    let mut series = SeriesCache::default();
    let mut st = PartitionState::new(fence, from);
    for offset in from..to {
        st.fold(offset, &batch(&[offset as f64]).view(), &mut series);
    }
    HashMap::from([(0, st)])
}

async fn stored(pool: &sqlx::PgPool) -> (i64, i64) {
    let count: i64 = sqlx::query_scalar("SELECT coalesce(sum(count), 0)::bigint FROM buckets")
        .fetch_one(pool)
        .await
        .unwrap();
    let offset =
        sqlx::query("SELECT next_offset FROM consumer_offsets WHERE topic = $1 AND partition = 0")
            .bind(TOPIC)
            .fetch_optional(pool)
            .await
            .unwrap()
            .map_or(-1, |r| r.get(0));
    (count, offset)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_stale_owner_cannot_commit() {
    let (_, pool) = fresh_database().await;
    // Two owners both started with no stored offset; the first to flush wins.
    let first = owner(Fence::Absent, 0, 10);
    let stale = owner(Fence::Absent, 0, 12);
    let out = store::flush(&pool, TOPIC, "c1", &first).await.unwrap();
    assert_eq!(
        (out.committed.as_slice(), out.fenced.as_slice()),
        (&[0][..], &[][..])
    );
    assert_eq!(stored(&pool).await, (10, 10));
    let out = store::flush(&pool, TOPIC, "c1", &stale).await.unwrap();
    assert_eq!(
        (out.committed.as_slice(), out.fenced.as_slice()),
        (&[][..], &[0][..]),
        "the stale owner is fenced"
    );
    assert_eq!(
        stored(&pool).await,
        (10, 10),
        "nothing of the stale owner's deltas was applied"
    );

    // From a stored row: the owner that read offset 10 commits, a second one that read
    // the same row is fenced once the first has moved it.
    let next = owner(Fence::Row(10, "c1".into()), 10, 15);
    let stale = owner(Fence::Row(10, "c1".into()), 10, 14);
    assert_eq!(
        store::flush(&pool, TOPIC, "c1", &next)
            .await
            .unwrap()
            .committed,
        vec![0]
    );
    assert_eq!(stored(&pool).await, (15, 15));
    assert_eq!(
        store::flush(&pool, TOPIC, "c1", &stale)
            .await
            .unwrap()
            .fenced,
        vec![0]
    );
    assert_eq!(stored(&pool).await, (15, 15));

    // A row of another (restarted, embedded) cluster is replaced only by an owner that
    // read that very row.
    let moved = owner(Fence::Row(15, "c1".into()), 0, 3);
    assert_eq!(
        store::flush(&pool, TOPIC, "c2", &moved)
            .await
            .unwrap()
            .committed,
        vec![0]
    );
    assert_eq!(stored(&pool).await, (18, 3));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn flushes_merge_into_stored_buckets() {
    let (_, pool) = fresh_database().await;
    store::flush(&pool, TOPIC, "c", &owner(Fence::Absent, 0, 50))
        .await
        .unwrap();
    let out = store::flush(
        &pool,
        TOPIC,
        "c",
        &owner(Fence::Row(50, "c".into()), 50, 100),
    )
    .await
    .unwrap();
    let merged = &out.buckets[0].bucket;
    assert_eq!(
        (merged.count, merged.min, merged.max, merged.sum),
        (100, 0.0, 99.0, (0..100).sum::<i64>() as f64)
    );
    assert_eq!(merged.sketch.count(), 100);
}
