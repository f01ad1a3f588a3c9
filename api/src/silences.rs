//! Silences (SPEC §3, issue 15): `GET /v1/silences?state=&limit=`, `GET
//! /v1/silences/{id}` with the open alerts it matches, and `POST /v1/silences/preview`
//! (the open alerts a silence would match, nothing stored) behind the `read` role;
//! `POST /v1/silences` and `DELETE /v1/silences/{id}` (expires it, the row stays) behind
//! `admin`. Matching and states are `tidemark_rules::silence`'s, on the API's clock.
//!
//! A silence as shown:
//!
//! ```json
//! {"id": 7, "matchers": [{"name": "service", "op": "=", "value": "api"}],
//!  "starts_at": "2026-09-19T10:00:00.000Z", "ends_at": "2026-09-19T12:00:00.000Z",
//!  "created_by": "alice", "comment": "deploy", "state": "active",
//!  "created_at": "2026-09-19T10:00:00.000Z", "updated_at": "2026-09-19T10:00:00.000Z"}
//! ```

use std::sync::Arc;

use axum::body::Bytes;
use axum::extract::rejection::QueryRejection;
use axum::extract::{Path, Query, State};
use axum::http::StatusCode;
use axum::routing::{get, post};
use axum::{Json, Router};
use serde::Deserialize;
use serde_json::{json, Value};
use tidemark_model::sample::STORABLE_MS;
use tidemark_model::time::{format_instant, parse_instant};
use tidemark_rules::silence::{self, FieldError, Matcher, MatcherSpec, Silence};
use tidemark_runtime::auth::{KeyStore, Role};
use tidemark_runtime::http::{self, needs_role, ApiError};
use tidemark_store::alerts::{self, Alert};
use tidemark_store::silences::{self, NewSilence};

use crate::{params, ApiState};

/// Silences one list answers by default, and at most.
pub const DEFAULT_LIMIT: i64 = 100;
pub const MAX_LIMIT: i64 = 1000;

/// The longest `created_by` and `comment`, in characters.
const MAX_CREATED_BY_CHARS: usize = 256;
const MAX_COMMENT_CHARS: usize = 4096;

/// The silence routes, each behind its role.
pub fn router(state: ApiState, keys: Arc<KeyStore>) -> Router {
    let read = needs_role(
        Router::new()
            .route("/v1/silences", get(list))
            .route("/v1/silences/preview", post(preview))
            .route("/v1/silences/{id}", get(one)),
        &keys,
        Role::Read,
    );
    let admin = needs_role(
        Router::new()
            .route("/v1/silences", post(create))
            .route("/v1/silences/{id}", axum::routing::delete(expire)),
        &keys,
        Role::Admin,
    );
    read.merge(admin).with_state(state)
}

fn now_ms() -> i64 {
    chrono::Utc::now().timestamp_millis()
}

fn bad_body(e: impl std::fmt::Display) -> ApiError {
    ApiError::bad_request("invalid_body", e.to_string())
}

/// A matcher as a request gives it.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct MatcherBody {
    name: String,
    op: String,
    value: String,
}

/// The body of `POST /v1/silences` and of its preview (which reads only `matchers`).
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct SilenceBody {
    matchers: Vec<MatcherBody>,
    starts_at: Option<String>,
    ends_at: Option<String>,
    created_by: Option<String>,
    comment: Option<String>,
}

fn parse_body(body: &Bytes) -> Result<SilenceBody, ApiError> {
    serde_json::from_slice(body)
        .map_err(|e| bad_body(format!("body: {}", http::quote_within(&e.to_string()))))
}

fn checked_matchers(body: &SilenceBody) -> Result<Vec<Matcher>, ApiError> {
    let specs: Vec<MatcherSpec<'_>> = body
        .matchers
        .iter()
        .map(|m| MatcherSpec {
            name: &m.name,
            op: &m.op,
            value: &m.value,
        })
        .collect();
    silence::matchers(&specs).map_err(bad_body)
}

fn field(name: &str, message: impl Into<String>) -> ApiError {
    bad_body(FieldError {
        field: name.to_owned(),
        message: message.into(),
    })
}

/// An instant of the body: RFC 3339 (or Unix milliseconds), within what Postgres holds.
fn instant(name: &str, text: &str) -> Result<i64, ApiError> {
    parse_instant(text)
        .ok()
        .filter(|ms| STORABLE_MS.contains(ms))
        .ok_or_else(|| {
            field(
                name,
                "must be an RFC 3339 instant such as 2026-09-19T12:00:00Z",
            )
        })
}

/// Free text of the body: 1 to `max` characters, none a control character but a
/// newline or tab.
fn text(name: &str, value: Option<&str>, max: usize) -> Result<String, ApiError> {
    let value = value.unwrap_or_default();
    let count = value.chars().count();
    let controls = value
        .chars()
        .any(|c| c.is_control() && c != '\n' && c != '\t');
    if count == 0 || count > max || controls {
        return Err(field(
            name,
            format!("must be 1-{max} characters, no control characters but newlines and tabs"),
        ));
    }
    Ok(value.to_owned())
}

/// A silence to store, checked at `now_ms`.
fn new_silence(body: &SilenceBody, now_ms: i64) -> Result<NewSilence, ApiError> {
    let matchers = checked_matchers(body)?;
    let starts = body
        .starts_at
        .as_deref()
        .map(|t| instant("starts_at", t))
        .transpose()?;
    let ends = body
        .ends_at
        .as_deref()
        .ok_or_else(|| field("ends_at", "is required"))
        .and_then(|t| instant("ends_at", t))?;
    let (starts_at_ms, ends_at_ms) = silence::window(starts, ends, now_ms).map_err(bad_body)?;
    Ok(NewSilence {
        matchers,
        starts_at_ms,
        ends_at_ms,
        created_by: text(
            "created_by",
            body.created_by.as_deref(),
            MAX_CREATED_BY_CHARS,
        )?,
        comment: text("comment", body.comment.as_deref(), MAX_COMMENT_CHARS)?,
    })
}

/// The silence as shown, with its state at `at_ms`.
pub fn to_json(s: &Silence, at_ms: i64) -> Value {
    let matchers: Vec<Value> = s
        .matchers
        .iter()
        .map(|m| json!({"name": m.name, "op": m.op.as_str(), "value": m.value}))
        .collect();
    json!({
        "id": s.id,
        "matchers": matchers,
        "starts_at": format_instant(s.starts_at_ms),
        "ends_at": format_instant(s.ends_at_ms),
        "created_by": s.created_by,
        "comment": s.comment,
        "state": s.state(at_ms).as_str(),
        "created_at": format_instant(s.created_at_ms),
        "updated_at": format_instant(s.updated_at_ms),
    })
}

/// The open alerts `matchers` match, as shown.
async fn matching_alerts(state: &ApiState, matchers: &[Matcher]) -> Result<Value, ApiError> {
    let open = alerts::open(&state.pool, &state.rules.current().inhibit).await?;
    Ok(open
        .iter()
        .filter(|a| silence::matches_all(matchers, &a.match_labels()))
        .map(Alert::to_json)
        .collect())
}

/// `POST /v1/silences`: `201` with the silence.
pub async fn create(
    State(state): State<ApiState>,
    body: Bytes,
) -> Result<(StatusCode, Json<Value>), ApiError> {
    let now = now_ms();
    let new = new_silence(&parse_body(&body)?, now)?;
    let created = silences::create(&state.pool, &new).await?;
    Ok((StatusCode::CREATED, Json(to_json(&created, now))))
}

/// `POST /v1/silences/preview`: `{"alerts": [...]}`, the open alerts the body's
/// matchers match now.
pub async fn preview(State(state): State<ApiState>, body: Bytes) -> Result<Json<Value>, ApiError> {
    let matchers = checked_matchers(&parse_body(&body)?)?;
    let alerts = matching_alerts(&state, &matchers).await?;
    Ok(Json(json!({ "alerts": alerts })))
}

#[derive(Debug, Default, Deserialize)]
pub struct ListQuery {
    state: Option<String>,
    limit: Option<String>,
}

fn bad_query(message: String) -> ApiError {
    ApiError::bad_request("invalid_query", message)
}

/// `GET /v1/silences?state=active|pending|expired&limit=`: newest first.
pub async fn list(
    State(state): State<ApiState>,
    q: Result<Query<ListQuery>, QueryRejection>,
) -> Result<Json<Value>, ApiError> {
    let Query(q) =
        q.map_err(|e| bad_query(format!("query: {}", http::quote_within(&e.body_text()))))?;
    let wanted = q
        .state
        .as_deref()
        .filter(|s| !s.is_empty())
        .map(|s| {
            s.parse::<silence::State>()
                .map_err(|e| bad_query(format!("state: {e}")))
        })
        .transpose()?;
    let limit = match q.limit.as_deref().filter(|l| !l.is_empty()) {
        None => DEFAULT_LIMIT,
        Some(text) => text
            .parse::<i64>()
            .ok()
            .filter(|n| (1..=MAX_LIMIT).contains(n))
            .ok_or_else(|| bad_query(format!("limit: must be an integer from 1 to {MAX_LIMIT}")))?,
    };
    let now = now_ms();
    let found = silences::list(&state.pool, wanted, now, limit).await?;
    let shown: Vec<Value> = found.iter().map(|s| to_json(s, now)).collect();
    Ok(Json(json!({ "silences": shown })))
}

fn not_found(id: i64) -> ApiError {
    ApiError::NotFound(format!("no silence has id {id}"))
}

/// `GET /v1/silences/{id}`: the silence and `alerts`, the open alerts it matches.
pub async fn one(
    State(state): State<ApiState>,
    Path(id): Path<String>,
) -> Result<Json<Value>, ApiError> {
    let id = params::path_id(&id)?;
    let found = silences::get(&state.pool, id)
        .await?
        .ok_or_else(|| not_found(id))?;
    let mut body = to_json(&found, now_ms());
    body["alerts"] = matching_alerts(&state, &found.matchers).await?;
    Ok(Json(body))
}

/// `DELETE /v1/silences/{id}`: expires a pending or active silence now (an expired one
/// stays as it was); `200` with the silence after.
pub async fn expire(
    State(state): State<ApiState>,
    Path(id): Path<String>,
) -> Result<Json<Value>, ApiError> {
    let id = params::path_id(&id)?;
    let now = now_ms();
    let expired = silences::expire(&state.pool, id, now)
        .await?
        .ok_or_else(|| not_found(id))?;
    Ok(Json(to_json(&expired, now)))
}

#[cfg(test)]
mod tests {
    use super::*;

    const NOW: i64 = 1_790_000_000_000;

    fn refusal(body: &str) -> String {
        let result =
            parse_body(&Bytes::from(body.to_owned())).and_then(|b| new_silence(&b, NOW).map(drop));
        match result {
            Err(ApiError::BadRequest { code, message }) => {
                assert_eq!(code, "invalid_body");
                message
            }
            other => panic!("{body}: expected a 400, got {other:?}"),
        }
    }

    const M: &str = r#""matchers": [{"name": "service", "op": "=", "value": "api"}]"#;
    const WHO: &str = r#""created_by": "alice", "comment": "deploy""#;

    #[test]
    fn a_new_silence_is_checked_field_by_field() {
        let body = format!(r#"{{{M}, "ends_at": "2026-09-21T16:00:00Z", {WHO}}}"#);
        let new = new_silence(&parse_body(&Bytes::from(body)).unwrap(), NOW).unwrap();
        assert_eq!((new.starts_at_ms, new.ends_at_ms), (NOW, 1_790_006_400_000));
        assert_eq!(
            (new.created_by.as_str(), new.comment.as_str()),
            ("alice", "deploy")
        );

        assert_eq!(refusal(&format!("{{{M}, {WHO}}}")), "ends_at: is required");
        assert!(
            refusal(&format!(r#"{{{M}, "ends_at": "tomorrow", {WHO}}}"#))
                .starts_with("ends_at: must be an RFC 3339 instant")
        );
        assert!(refusal(&format!(
            r#"{{{M}, "starts_at": "2026-09-21T17:00:00Z", "ends_at": "2026-09-21T16:00:00Z", {WHO}}}"#
        ))
        .starts_with("ends_at: must be after starts_at"));
        assert!(refusal(&format!(
            r#"{{{M}, "ends_at": "2026-09-21T16:00:00Z", "comment": "x"}}"#
        ))
        .starts_with("created_by: "));
        assert!(refusal(&format!(
            r#"{{{M}, "ends_at": "2026-09-21T16:00:00Z", "created_by": "a", "comment": ""}}"#
        ))
        .starts_with("comment: "));
        assert!(refusal(&format!(
            r#"{{{M}, "ends_at": "2026-09-21T16:00:00Z", {WHO}, "x": 1}}"#
        ))
        .starts_with("body: unknown field `x`"));
    }
}
