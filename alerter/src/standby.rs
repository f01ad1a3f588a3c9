//! Only one alerter applies breaches at a time: the one holding the alerter lock
//! (`tidemark_store::alerts::lock`). The others wait here as standbys, trying for the
//! lock every [`STANDBY_POLL`]; one takes over within about that long after the active
//! alerter stops or its connection to Postgres ends.

use std::time::Duration;

use tidemark_runtime::backoff::Backoff;
use tidemark_store::alerts::lock::AlerterLock;
use tidemark_store::db::PgPool;
use tokio_util::sync::CancellationToken;

/// How often a standby tries for the lock.
pub const STANDBY_POLL: Duration = Duration::from_secs(2);

/// Waits until this alerter holds the lock of `topic`; `None` if `shutdown` began first.
pub async fn wait_for_lock(
    pool: &PgPool,
    topic: &str,
    shutdown: &CancellationToken,
) -> Option<AlerterLock> {
    let mut waiting = false;
    let mut backoff = Backoff::new(Duration::from_millis(200), Duration::from_secs(30));
    let mut conn: Option<AlerterLock> = None;
    loop {
        let tried = match conn.take() {
            Some(lock) => Ok(lock),
            None => AlerterLock::connect(pool, topic).await,
        };
        let pause = match tried {
            Ok(mut lock) => match lock.try_acquire().await {
                Ok(true) => {
                    tracing::info!(topic, "alerter active: holding the alerter lock");
                    return Some(lock);
                }
                Ok(false) => {
                    if !waiting {
                        tracing::info!(
                            topic,
                            "alerter on standby: another alerter holds the lock; taking over when it is released"
                        );
                        waiting = true;
                    }
                    conn = Some(lock);
                    STANDBY_POLL
                }
                Err(e) => unavailable(&e, &mut backoff),
            },
            Err(e) => unavailable(&e, &mut backoff),
        };
        tokio::select! {
            () = shutdown.cancelled() => return None,
            () = tokio::time::sleep(pause) => {}
        }
    }
}

/// Postgres could not be asked for the lock: how long to wait before asking again.
fn unavailable(error: &anyhow::Error, backoff: &mut Backoff) -> Duration {
    tracing::warn!(
        error = format!("{error:#}"),
        "cannot try for the alerter lock (Postgres unavailable); retrying"
    );
    backoff.next_delay()
}
