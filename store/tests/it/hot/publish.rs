//! The write side of the hot copy ([`tidemark_store::hot::publish`]).

use tidemark_model::bucket::hour_start;
use tidemark_model::Bucket;
use tidemark_store::buckets::{self, BucketRow, SeriesRow, Tx};
use tidemark_store::db::fresh_test_database;
use tidemark_store::hot::publish::{invalidate, publish, refill};
use tidemark_store::hot::{
    delete_test_keys, field, is_ready, test_connection, test_redis, HotKeys,
};

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_refill_copies_postgres_and_marks_the_copy_ready_until_invalidated() {
    let (_, pool) = fresh_test_database().await;
    let (redis, prefix) = test_redis().await;
    let keys = HotKeys::new(&prefix);
    // The current hour: one of the recent hours the copy holds.
    let hour = hour_start(chrono::Utc::now().timestamp_millis());
    let mut stored = Bucket::default();
    stored.add(1.0, 1, false, hour);
    let series = SeriesRow {
        id: 7,
        service: "svc",
        metric: "m",
        tags_json: "{}",
    };
    let row = |bucket| BucketRow {
        series,
        hour,
        bucket,
    };
    let mut tx = Tx::begin(&pool).await.unwrap();
    buckets::apply_deltas(&mut tx, &[row(&stored)])
        .await
        .unwrap();
    tx.commit().await.unwrap();

    assert!(!is_ready(&redis, &keys).await.unwrap());
    let mut fresher = stored.clone();
    fresher.add(2.0, 1, false, hour);
    publish(&redis, &keys, &[row(&fresher)]).await.unwrap();
    assert_eq!(refill(&redis, &keys, &pool).await.unwrap(), 1);
    assert!(is_ready(&redis, &keys).await.unwrap());
    let (bytes, members): (Vec<u8>, Vec<String>) = redis::pipe()
        .hget(keys.hour(hour, "svc"), field("m", 7))
        .smembers(keys.services())
        .query_async(&mut test_connection().await)
        .await
        .unwrap();
    assert_eq!(
        Bucket::from_bytes(&bytes).unwrap(),
        fresher,
        "a refill does not overwrite what was published meanwhile"
    );
    assert_eq!(members, ["svc"]);

    invalidate(&redis, &keys).await.unwrap();
    assert!(!is_ready(&redis, &keys).await.unwrap());
    delete_test_keys(&redis, &[keys.hour(hour, "svc"), keys.services()]).await;
}
