//! Which alerter is active: the one holding a session-level advisory lock of Postgres,
//! keyed by the breaches topic, on a connection of its own (taken out of the pool, so
//! the lock ends with the connection: a crashed or partitioned alerter loses it).

use sqlx::{Connection, PgConnection, PgPool};

/// A connection of its own that tries for, and then holds, the alerter lock of a topic.
pub struct AlerterLock {
    conn: PgConnection,
    topic: String,
}

impl AlerterLock {
    /// Opens the lock's connection (a standby keeps it between tries).
    pub async fn connect(pool: &PgPool, topic: &str) -> anyhow::Result<Self> {
        Ok(Self {
            conn: pool.acquire().await?.detach(),
            topic: topic.to_owned(),
        })
    }

    /// Takes the lock if no other session holds it; true when this one holds it.
    pub async fn try_acquire(&mut self) -> anyhow::Result<bool> {
        Ok(sqlx::query_scalar(
            "SELECT pg_try_advisory_lock(hashtext('tidemark.alerter'), hashtext($1))",
        )
        .bind(&self.topic)
        .fetch_one(&mut self.conn)
        .await?)
    }

    /// Whether the connection still answers (if it does not, the lock may be gone).
    pub async fn check(&mut self) -> anyhow::Result<()> {
        self.conn.ping().await?;
        Ok(())
    }

    /// Releases the lock, if held, then closes the connection. Unlocking first makes
    /// the lock free when this returns: the server ends a closed session's locks only
    /// once its backend has noticed the close.
    pub async fn release(mut self) -> anyhow::Result<()> {
        sqlx::query("SELECT pg_advisory_unlock_all()")
            .execute(&mut self.conn)
            .await?;
        self.conn.close().await?;
        Ok(())
    }
}
