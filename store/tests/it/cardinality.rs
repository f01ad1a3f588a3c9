//! The admitted series of each service ([`tidemark_store::cardinality`]).

use tidemark_store::cardinality::SeriesSets;
use tidemark_store::hot::{delete_test_keys, test_redis};

#[tokio::test]
async fn admits_up_to_the_limit_and_keeps_what_it_admitted() {
    let (redis, prefix) = test_redis().await;
    let sets = SeriesSets::new(&prefix, redis.clone());
    assert_eq!(sets.admit("svc", 2, &[1, 2, 3]).await.unwrap(), [3]);
    assert_eq!(sets.admit("svc", 2, &[2, 4, 1]).await.unwrap(), [4]);
    assert!(sets.admit("other", 2, &[4]).await.unwrap().is_empty());
    let keys = [
        format!("{prefix}:series:svc"),
        format!("{prefix}:series:other"),
    ];
    delete_test_keys(&redis, &keys).await;
}
