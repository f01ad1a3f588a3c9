//! `api_keys` ([`tidemark_store::keys`]).

use tidemark_store::db::fresh_test_database;
use tidemark_store::keys::{count, insert, role_of};

#[tokio::test]
async fn keys_are_found_by_their_hash() {
    let pool = fresh_test_database().await.1;
    assert_eq!(count(&pool).await.unwrap(), 0);
    insert(&pool, "reader", "read", b"hash-1").await.unwrap();
    assert_eq!(count(&pool).await.unwrap(), 1);
    assert_eq!(
        role_of(&pool, b"hash-1").await.unwrap().as_deref(),
        Some("read")
    );
    assert_eq!(role_of(&pool, b"hash-2").await.unwrap(), None);
    assert!(
        insert(&pool, "bad", "root", b"hash-3").await.is_err(),
        "roles are checked by the table"
    );
}
