//! One message of the breaches topic, one Postgres transaction: the alert change, its
//! transition and feed row, and the partition's next offset commit together
//! (`tidemark_store::alerts::apply_breach`, which marks the alert silenced and inhibited
//! as it is then, by the inhibit rules in force). A message that does not decode, or whose
//! data Postgres refuses, is logged and its offset passed in a transaction of its own,
//! so it never halts the alerter. While Postgres is unavailable the transaction is
//! retried with backoff, and nothing after the message is read.

use std::time::Duration;

use tidemark_rules::InhibitRule;
use tidemark_runtime::backoff::Backoff;
use tidemark_schemas::{decode_breach, Breach};
use tidemark_store::alerts::{self, Applied, Position};
use tidemark_store::buckets::{FlushError, Tx};
use tidemark_store::db::PgPool;
use tokio_util::sync::CancellationToken;

use crate::telemetry;

const MAX_BACKOFF: Duration = Duration::from_secs(30);

/// What became of a message once committed.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Outcome {
    Applied(Applied),
    /// Not a breach; its offset was passed.
    Undecodable,
    /// Postgres refused its data; its offset was passed.
    Refused,
}

impl Outcome {
    /// The outcome as a metric label.
    pub fn label(self) -> &'static str {
        match self {
            Self::Applied(applied) => applied.label(),
            Self::Undecodable => "undecodable",
            Self::Refused => "refused",
        }
    }
}

/// Commits the message at `pos`, inhibiting by the built-in rules and `inhibit` (a rules
/// file's), retrying while Postgres is unavailable; `None` when `shutdown` began first
/// (nothing committed: it is read again after restart).
pub async fn commit(
    pool: &PgPool,
    pos: &Position<'_>,
    payload: &[u8],
    inhibit: &[InhibitRule],
    shutdown: &CancellationToken,
) -> Option<Outcome> {
    let mut breach = decode_breach(payload).map_err(|e| {
        telemetry::undecodable(pos, &e);
        Outcome::Undecodable
    });
    let mut backoff = Backoff::new(Duration::from_millis(100), MAX_BACKOFF);
    loop {
        match once(pool, pos, breach.as_ref().map_err(|why| *why), inhibit).await {
            Ok(outcome) => return Some(outcome),
            Err(e) if e.is_data() && breach.is_ok() => {
                telemetry::refused(pos, &e);
                breach = Err(Outcome::Refused);
            }
            Err(e) => {
                telemetry::apply_failed(&e, backoff.attempts());
                tokio::select! {
                    () = shutdown.cancelled() => return None,
                    () = backoff.wait() => {}
                }
            }
        }
    }
}

/// One transaction: applies the breach with its offset, or, for a message that cannot
/// be applied (`Err(why)`), only passes its offset.
async fn once(
    pool: &PgPool,
    pos: &Position<'_>,
    breach: Result<&Breach, Outcome>,
    inhibit: &[InhibitRule],
) -> Result<Outcome, FlushError> {
    let mut tx = Tx::begin(pool).await?;
    let outcome = match breach {
        Ok(b) => Outcome::Applied(alerts::apply_breach(&mut tx, b, pos, inhibit).await?),
        Err(why) if alerts::skip(&mut tx, pos).await? => why,
        Err(_) => Outcome::Applied(Applied::AlreadyApplied),
    };
    tx.commit().await?;
    Ok(outcome)
}
