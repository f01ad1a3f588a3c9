//! The API-key table, `api_keys`: each key's name, role and the hash of its token (the
//! token itself is never stored).

use sqlx::PgPool;

/// Stores a key.
pub async fn insert(
    pool: &PgPool,
    name: &str,
    role: &str,
    token_hash: &[u8],
) -> anyhow::Result<()> {
    sqlx::query("INSERT INTO api_keys (name, role, token_hash) VALUES ($1, $2, $3)")
        .bind(name)
        .bind(role)
        .bind(token_hash)
        .execute(pool)
        .await?;
    Ok(())
}

/// How many keys there are.
pub async fn count(pool: &PgPool) -> anyhow::Result<i64> {
    Ok(sqlx::query_scalar("SELECT count(*) FROM api_keys")
        .fetch_one(pool)
        .await?)
}

/// The role of the key whose token hashes to `token_hash`, `None` if there is none.
pub async fn role_of(pool: &PgPool, token_hash: &[u8]) -> anyhow::Result<Option<String>> {
    Ok(
        sqlx::query_scalar::<_, String>("SELECT role FROM api_keys WHERE token_hash = $1")
            .bind(token_hash)
            .fetch_optional(pool)
            .await?,
    )
}
