//! Silences' storage (`silences`, `migrations/0007_silences.sql`): create, list by state
//! at an instant, read, expire (the row stays: the history), and the silences active at
//! an instant, which [`crate::alerts`] matches alerts against. What a silence matches
//! and when it is active is [`tidemark_rules::silence`]'s.

use std::collections::BTreeMap;

use serde_json::{json, Value};
use sqlx::postgres::PgRow;
use sqlx::types::Json;
use sqlx::{PgExecutor, PgPool, Row};
use tidemark_rules::silence::{self, Matcher, MatcherSpec, Silence, State};

/// A silence to create, already checked ([`silence::matchers`], [`silence::window`]).
#[derive(Debug, Clone)]
pub struct NewSilence {
    pub matchers: Vec<Matcher>,
    pub starts_at_ms: i64,
    pub ends_at_ms: i64,
    pub created_by: String,
    pub comment: String,
}

/// The columns of a silence row, in the order [`from_row`] reads.
const COLUMNS: &str = "id, matchers, (extract(epoch FROM starts_at) * 1000)::bigint, \
     (extract(epoch FROM ends_at) * 1000)::bigint, created_by, comment, \
     (extract(epoch FROM created_at) * 1000)::bigint, (extract(epoch FROM updated_at) * 1000)::bigint";

fn matchers_json(matchers: &[Matcher]) -> Value {
    matchers
        .iter()
        .map(|m| json!({"name": m.name, "op": m.op.as_str(), "value": m.value}))
        .collect()
}

fn from_row(r: &PgRow) -> sqlx::Result<Silence> {
    // As written by [`matchers_json`]: objects of `name`, `op` and `value`.
    let stored: Json<Vec<BTreeMap<String, String>>> = r.try_get(1)?;
    let part = |m: &BTreeMap<String, String>, key: &str| -> sqlx::Result<String> {
        m.get(key)
            .cloned()
            .ok_or_else(|| sqlx::Error::Decode(format!("a stored matcher has no {key}").into()))
    };
    let stored = stored
        .0
        .iter()
        .map(|m| Ok([part(m, "name")?, part(m, "op")?, part(m, "value")?]))
        .collect::<sqlx::Result<Vec<_>>>()?;
    let specs: Vec<MatcherSpec<'_>> = stored
        .iter()
        .map(|[name, op, value]| MatcherSpec { name, op, value })
        .collect();
    let matchers = silence::matchers(&specs).map_err(|e| sqlx::Error::Decode(e.into()))?;
    Ok(Silence {
        id: r.try_get(0)?,
        matchers,
        starts_at_ms: r.try_get(2)?,
        ends_at_ms: r.try_get(3)?,
        created_by: r.try_get(4)?,
        comment: r.try_get(5)?,
        created_at_ms: r.try_get(6)?,
        updated_at_ms: r.try_get(7)?,
    })
}

fn all_from(rows: &[PgRow]) -> sqlx::Result<Vec<Silence>> {
    rows.iter().map(from_row).collect()
}

/// Stores `new`; returns it with its id.
pub async fn create(pool: &PgPool, new: &NewSilence) -> anyhow::Result<Silence> {
    let row = sqlx::query(&format!(
        "INSERT INTO silences (matchers, starts_at, ends_at, created_by, comment) \
         VALUES ($1, to_timestamp($2 / 1000.0), to_timestamp($3 / 1000.0), $4, $5) \
         RETURNING {COLUMNS}"
    ))
    .bind(Json(matchers_json(&new.matchers)))
    .bind(new.starts_at_ms)
    .bind(new.ends_at_ms)
    .bind(&new.created_by)
    .bind(&new.comment)
    .fetch_one(pool)
    .await?;
    Ok(from_row(&row)?)
}

/// The silences in `state` at `at_ms` (all when `None`), newest first, at most `limit`.
pub async fn list(
    pool: &PgPool,
    state: Option<State>,
    at_ms: i64,
    limit: i64,
) -> anyhow::Result<Vec<Silence>> {
    // The order of `Silence::state`: expiry first.
    let rows = sqlx::query(&format!(
        "SELECT {COLUMNS} FROM silences \
         WHERE $1::text IS NULL OR $1 = CASE \
           WHEN ends_at <= to_timestamp($2 / 1000.0) THEN 'expired' \
           WHEN starts_at > to_timestamp($2 / 1000.0) THEN 'pending' \
           ELSE 'active' END \
         ORDER BY id DESC LIMIT $3"
    ))
    .bind(state.map(State::as_str))
    .bind(at_ms)
    .bind(limit)
    .fetch_all(pool)
    .await?;
    Ok(all_from(&rows)?)
}

/// Silence `id`; `None` when there is none.
pub async fn get(pool: &PgPool, id: i64) -> anyhow::Result<Option<Silence>> {
    let row = sqlx::query(&format!("SELECT {COLUMNS} FROM silences WHERE id = $1"))
        .bind(id)
        .fetch_optional(pool)
        .await?;
    Ok(row.as_ref().map(from_row).transpose()?)
}

/// Expires silence `id` at `at_ms` if it was pending or active then (a pending one
/// also starts then, so that it never was active); an expired one is left as it is.
/// Returns the silence after; `None` when there is none.
pub async fn expire(pool: &PgPool, id: i64, at_ms: i64) -> anyhow::Result<Option<Silence>> {
    let row = sqlx::query(&format!(
        "UPDATE silences SET starts_at = least(starts_at, to_timestamp($2 / 1000.0)), \
           ends_at = to_timestamp($2 / 1000.0), updated_at = now() \
         WHERE id = $1 AND ends_at > to_timestamp($2 / 1000.0) RETURNING {COLUMNS}"
    ))
    .bind(id)
    .bind(at_ms)
    .fetch_optional(pool)
    .await?;
    match row {
        Some(row) => Ok(Some(from_row(&row)?)),
        None => get(pool, id).await,
    }
}

/// The silences active at `at_ms`. A stored silence that no longer reads (its matchers
/// refused by this version) is logged and left out rather than failing the alert read
/// or the breach that asked.
pub async fn active<'c>(db: impl PgExecutor<'c>, at_ms: i64) -> sqlx::Result<Vec<Silence>> {
    let rows = sqlx::query(&format!(
        "SELECT {COLUMNS} FROM silences \
         WHERE ends_at > to_timestamp($1 / 1000.0) AND starts_at <= to_timestamp($1 / 1000.0)"
    ))
    .bind(at_ms)
    .fetch_all(db)
    .await?;
    Ok(rows
        .iter()
        .filter_map(|r| {
            from_row(r)
                .map_err(|e| {
                    let id = r.try_get::<i64, _>(0).unwrap_or_default();
                    tracing::warn!(silence = id, error = %e, "a stored silence does not read; ignored");
                })
                .ok()
        })
        .collect())
}
