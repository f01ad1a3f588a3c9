//! Partition leases and aggregator membership ([`tidemark_store::leases`]).

use std::time::Duration;

use tidemark_store::db::fresh_test_database;
use tidemark_store::leases::{release_all, Owned, Round};

#[tokio::test]
async fn released_leases_are_claimed_again() {
    let pool = fresh_test_database().await.1;
    let ttl = Duration::from_secs(30);
    let round = |owner| Round::begin(&pool, "t", owner, ttl);
    let (mut a, members) = round("a").await.unwrap();
    assert_eq!(members, 1);
    assert!(a.renew(3).await.unwrap().is_empty());
    assert_eq!(
        a.claim(3, 3).await.unwrap(),
        Owned::from([(0, 1), (1, 1), (2, 1)])
    );
    a.release(&[1]).await.unwrap();
    a.commit().await.unwrap();

    let (mut b, members) = round("b").await.unwrap();
    assert_eq!(members, 2);
    assert_eq!(b.claim(3, 3).await.unwrap(), Owned::from([(1, 2)]));
    b.commit().await.unwrap();

    release_all(&pool, "t", "a").await.unwrap();
    let (mut b, members) = round("b").await.unwrap();
    assert_eq!(members, 1, "a left");
    assert_eq!(b.renew(3).await.unwrap(), Owned::from([(1, 2)]));
    assert_eq!(b.claim(3, 3).await.unwrap(), Owned::from([(0, 2), (2, 2)]));
    b.commit().await.unwrap();
}
