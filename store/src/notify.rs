//! Announcements between Tidemark processes through PostgreSQL `NOTIFY`: a rules reload
//! asked of one process reaches every process of the deployment (its topic prefix).

use sqlx::postgres::PgListener;
use sqlx::PgPool;

/// The channel of rules reloads; the payload is the deployment's topic prefix.
const RULES_RELOAD: &str = "tidemark_rules_reload";

/// Asks every process of deployment `prefix` to reload its rules file.
pub async fn announce_rules_reload(pool: &PgPool, prefix: &str) -> anyhow::Result<()> {
    sqlx::query("SELECT pg_notify($1, $2)")
        .bind(RULES_RELOAD)
        .bind(prefix)
        .execute(pool)
        .await?;
    Ok(())
}

/// Listens for rules reloads; each [`RulesReloads::next`] returns at the next one for
/// deployment `prefix`.
pub struct RulesReloads {
    listener: PgListener,
    prefix: String,
}

impl RulesReloads {
    pub async fn listen(pool: &PgPool, prefix: &str) -> anyhow::Result<Self> {
        let mut listener = PgListener::connect_with(pool).await?;
        listener.listen(RULES_RELOAD).await?;
        Ok(Self {
            listener,
            prefix: prefix.to_owned(),
        })
    }

    /// Waits for the next reload of this deployment. The listener reconnects by itself
    /// after a connection loss (announcements sent meanwhile are lost).
    pub async fn next(&mut self) -> anyhow::Result<()> {
        loop {
            let n = self.listener.recv().await?;
            if n.payload() == self.prefix {
                return Ok(());
            }
        }
    }
}
