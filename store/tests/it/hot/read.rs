//! The read side of the hot copy ([`tidemark_store::hot::read`]).

use redis::AsyncCommands;
use tidemark_model::Bucket;
use tidemark_store::hot::read::recent_buckets;
use tidemark_store::hot::{delete_test_keys, field, test_connection, test_redis, HotKeys};
use tidemark_store::reads::ServiceBucket;

#[tokio::test]
async fn answers_only_when_ready_and_for_known_services() {
    let (redis, prefix) = test_redis().await;
    redis.ping().await.unwrap();
    let keys = HotKeys::new(&prefix);
    let hours = [0, 3_600_000];
    let mut bucket = Bucket::default();
    bucket.add(1.0, 2, false, 5);
    let mut c = test_connection().await;
    redis::pipe()
        .hset(keys.hour(hours[1], "svc"), field("m", 7), bucket.to_bytes())
        .sadd(keys.services(), "svc")
        .query_async::<()>(&mut c)
        .await
        .unwrap();
    assert_eq!(
        recent_buckets(&redis, &keys, None, hours).await.unwrap(),
        None
    );

    c.set::<_, _, ()>(keys.ready(), 1).await.unwrap();
    assert_eq!(
        recent_buckets(&redis, &keys, Some("other"), hours)
            .await
            .unwrap(),
        None,
        "a service missing from the set is left to Postgres"
    );
    let rows = recent_buckets(&redis, &keys, None, hours)
        .await
        .unwrap()
        .unwrap();
    let expected = ServiceBucket {
        service: "svc".into(),
        metric: "m".into(),
        hour_ms: hours[1],
        bucket,
    };
    assert_eq!(
        rows,
        [ServiceBucket::listing("svc".into(), hours[0]), expected]
    );

    delete_test_keys(
        &redis,
        &[keys.hour(hours[1], "svc"), keys.services(), keys.ready()],
    )
    .await;
}
