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

/// Partition 0's deltas after folding messages `from..to`, starting from `fence`.
fn owner(fence: Fence, from: i64, to: i64) -> HashMap<i32, PartitionState> {
    owner_of(0, fence, from, to)
}

fn owner_of(partition: i32, fence: Fence, from: i64, to: i64) -> HashMap<i32, PartitionState> {
    let mut series = SeriesCache::default();
    let mut st = PartitionState::new(fence, from);
    for offset in from..to {
        st.fold(offset, &batch(&[offset as f64]).view(), &mut series)
            .unwrap();
    }
    HashMap::from([(partition, st)])
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
    let out = store::flush(&pool, TOPIC, "c1", &first, None)
        .await
        .unwrap();
    assert_eq!(
        (out.committed.as_slice(), out.fenced.as_slice()),
        (&[0][..], &[][..])
    );
    assert_eq!(stored(&pool).await, (10, 10));
    let out = store::flush(&pool, TOPIC, "c1", &stale, None)
        .await
        .unwrap();
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
        store::flush(&pool, TOPIC, "c1", &next, None)
            .await
            .unwrap()
            .committed,
        vec![0]
    );
    assert_eq!(stored(&pool).await, (15, 15));
    assert_eq!(
        store::flush(&pool, TOPIC, "c1", &stale, None)
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
        store::flush(&pool, TOPIC, "c2", &moved, None)
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
    store::flush(&pool, TOPIC, "c", &owner(Fence::Absent, 0, 50), None)
        .await
        .unwrap();
    let out = store::flush(
        &pool,
        TOPIC,
        "c",
        &owner(Fence::Row(50, "c".into()), 50, 100),
        None,
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

/// Two flushes creating the same bucket row: one from another partition (a series that
/// moved partition) commits it after this one found it absent. Overwriting the row would
/// lose the other flush's samples; the flush must fail and, retried, merge into it.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_bucket_row_created_meanwhile_is_merged_not_overwritten() {
    let (_, pool) = fresh_database().await;
    let ts = batch(&[0.0]).samples[0].timestamp;
    let id = tidemark_model::series::series_id("svc", "m", Vec::<(&str, &str)>::new());
    let mut other = tidemark_model::Bucket::default();
    for v in [1.0, 2.0, 3.0] {
        other.add(v, 1, false, ts);
    }
    let mut creator = pool.begin().await.unwrap();
    sqlx::query("INSERT INTO series (id, service, metric, tags) VALUES ($1, 'svc', 'm', '{}')")
        .bind(id)
        .execute(&mut *creator)
        .await
        .unwrap();
    sqlx::query(
        "INSERT INTO buckets (series_id, hour, count, error_count, sum, min, max, last_at, sketch) \
         VALUES ($1, to_timestamp($2 / 1000.0), $3, 0, $4, $5, $6, to_timestamp($7 / 1000.0), $8)",
    )
    .bind(id)
    .bind(tidemark_model::bucket::hour_start(ts))
    .bind(other.count as i64)
    .bind(other.sum)
    .bind(other.min)
    .bind(other.max)
    .bind(other.last_at_ms)
    .bind(other.sketch.to_bytes())
    .execute(&mut *creator)
    .await
    .unwrap();

    // This flush sees no row (the creator has not committed) and waits on its insert.
    let mover = owner_of(1, Fence::Absent, 0, 5);
    let flush = {
        let pool = pool.clone();
        tokio::spawn(async move { store::flush(&pool, TOPIC, "c", &mover, None).await })
    };
    wait_for_lock_waiter(&pool).await;
    creator.commit().await.unwrap();
    let raced = flush.await.unwrap();
    assert!(
        matches!(raced, Err(store::FlushError::Raced(1))),
        "the flush must not overwrite a row created meanwhile: {raced:?}"
    );

    let out = store::flush(&pool, TOPIC, "c", &owner_of(1, Fence::Absent, 0, 5), None)
        .await
        .unwrap();
    assert_eq!(out.committed, vec![1]);
    let merged = &out.buckets[0].bucket;
    assert_eq!(
        (merged.count, merged.min, merged.max, merged.sum),
        (8, 0.0, 4.0, 6.0 + 10.0)
    );
    let stored: i64 = sqlx::query_scalar("SELECT sum(count)::bigint FROM buckets")
        .fetch_one(&pool)
        .await
        .unwrap();
    assert_eq!(stored, 8, "both flushes' samples are stored");
}

/// Waits until a session of this database waits on a lock.
async fn wait_for_lock_waiter(pool: &sqlx::PgPool) {
    for _ in 0..200 {
        let waiting: i64 = sqlx::query_scalar(
            "SELECT count(*) FROM pg_stat_activity WHERE datname = current_database() AND wait_event_type = 'Lock'",
        )
        .fetch_one(pool)
        .await
        .unwrap();
        if waiting > 0 {
            return;
        }
        tokio::time::sleep(std::time::Duration::from_millis(50)).await;
    }
    panic!("the flush never waited on the uncommitted row");
}
