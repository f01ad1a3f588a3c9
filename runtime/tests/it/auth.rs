//! API keys through [`KeyStore`], on the test Postgres: its caches of known keys and
//! unknown tokens, and its limit on unknown tokens per client address.

use std::net::IpAddr;
use std::time::Duration;

use sha2::{Digest, Sha256};
use tidemark_runtime::auth::{create_key, Auth, KeyStore, Role};
use tidemark_store::db::fresh_test_database;
use tidemark_store::keys;

/// What `api_keys` stores of a token: its SHA-256 hash.
fn hash(token: &str) -> Vec<u8> {
    Sha256::digest(token.as_bytes()).to_vec()
}

/// A token tried before its key existed is refused for at most the unknown TTL, and
/// answered from the cache meanwhile.
#[tokio::test]
async fn unknown_tokens_are_remembered_briefly() {
    let pool = fresh_test_database().await.1;
    let ttl = Duration::from_millis(300);
    let store = KeyStore::new(pool.clone()).with_unknown_ttl(ttl);
    let token = "tm_created_later";
    assert_eq!(
        store.authenticate(token, None).await.unwrap(),
        Auth::Unknown
    );
    keys::insert(&pool, "later", "read", &hash(token))
        .await
        .unwrap();
    assert_eq!(
        store.authenticate(token, None).await.unwrap(),
        Auth::Unknown,
        "answered from the negative cache"
    );
    tokio::time::sleep(ttl + Duration::from_millis(50)).await;
    assert_eq!(
        store.authenticate(token, None).await.unwrap(),
        Auth::Known(Role::Read)
    );
}

/// Past the limit of unknown tokens, a client is refused without a lookup (the pool
/// is closed, so a lookup would fail), while a remembered key still works and other
/// clients are still looked up.
#[tokio::test]
async fn a_flood_of_unknown_tokens_is_refused_without_lookups() {
    let pool = fresh_test_database().await.1;
    let valid = create_key(&pool, Role::Ingest, "valid").await.unwrap();
    let store = KeyStore::new(pool.clone()).with_failure_limit(3, Duration::from_secs(10));
    let client: IpAddr = "192.0.2.7".parse().unwrap();
    assert_eq!(
        store.authenticate(&valid, Some(client)).await.unwrap(),
        Auth::Known(Role::Ingest)
    );
    for i in 0..3 {
        let outcome = store
            .authenticate(&format!("tm_bad{i}"), Some(client))
            .await;
        assert_eq!(outcome.unwrap(), Auth::Unknown, "attempt {i}");
    }
    pool.close().await;
    match store
        .authenticate("tm_bad_next", Some(client))
        .await
        .unwrap()
    {
        Auth::Limited { retry_after, limit } => {
            assert_eq!(limit, 3);
            assert!(retry_after <= Duration::from_secs(10) && !retry_after.is_zero());
        }
        other => panic!("expected Limited, got {other:?}"),
    }
    assert_eq!(
        store.authenticate(&valid, Some(client)).await.unwrap(),
        Auth::Known(Role::Ingest)
    );
    let other: IpAddr = "192.0.2.8".parse().unwrap();
    assert!(
        store
            .authenticate("tm_bad_next", Some(other))
            .await
            .is_err(),
        "another client is looked up (and the closed pool fails)"
    );
}
