//! The outbox of the on-call feed (`alert_feed`): a row per alert transition, written in
//! the transaction of the transition, read back in order by the alerter's publisher,
//! which produces each to `<prefix>.alerts` and then marks it published. The payload's
//! shape is documented with the publisher (`tidemark_alerter::feed`).

use serde_json::json;
use sqlx::types::Json;
use sqlx::{PgPool, Row};

use super::{Alert, Transition};
use crate::buckets::Tx;

/// A feed row waiting to be published.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct FeedRow {
    pub id: i64,
    /// The alert's fingerprint: the message key, so one alert's changes stay in order.
    pub fingerprint: String,
    /// The message, JSON text.
    pub payload: String,
}

/// Writes the feed row of `alert`'s transition `t` (its latest).
pub(super) async fn insert(tx: &mut Tx, alert: &Alert, t: &Transition) -> sqlx::Result<()> {
    let payload = json!({
        "alert_id": alert.id,
        "seq": t.seq,
        "fingerprint": alert.fingerprint,
        "transition": t.to_json(),
        "alert": alert.to_json(),
    });
    sqlx::query(
        "INSERT INTO alert_feed (alert_id, seq, fingerprint, payload) VALUES ($1, $2, $3, $4)",
    )
    .bind(alert.id)
    .bind(t.seq)
    .bind(&alert.fingerprint)
    .bind(Json(payload))
    .execute(&mut *tx.0)
    .await?;
    Ok(())
}

/// The oldest unpublished rows, at most `limit`, in the order they were written.
pub async fn unpublished(pool: &PgPool, limit: i64) -> anyhow::Result<Vec<FeedRow>> {
    let rows = sqlx::query(
        "SELECT id, fingerprint, payload::text FROM alert_feed WHERE published_at IS NULL \
         ORDER BY id LIMIT $1",
    )
    .bind(limit)
    .fetch_all(pool)
    .await?;
    Ok(rows
        .iter()
        .map(|r| FeedRow {
            id: r.get(0),
            fingerprint: r.get(1),
            payload: r.get(2),
        })
        .collect())
}

/// Marks rows published.
pub async fn mark_published(pool: &PgPool, ids: &[i64]) -> anyhow::Result<()> {
    sqlx::query("UPDATE alert_feed SET published_at = now() WHERE id = ANY($1)")
        .bind(ids)
        .execute(pool)
        .await?;
    Ok(())
}
