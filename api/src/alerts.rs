//! Alerts (SPEC §3, §6): `GET /v1/alerts` (filtered, newest first), `GET /v1/alerts/{id}`
//! with its transitions, `GET /v1/alerts/stats` (per-rule counts and mean times to
//! acknowledge and to resolve), behind the `read` role; `POST /v1/alerts/{id}/ack`
//! behind `admin`. The bodies are the alert and transition shapes of the on-call feed
//! (`tidemark_alerter::feed`); an alert's `silenced_by` and `inhibited_by` are computed
//! at the request, inhibiting by the built-in rules and those of the rules in force.

use std::sync::Arc;

use axum::body::Bytes;
use axum::extract::rejection::QueryRejection;
use axum::extract::{Path, Query, State};
use axum::http::StatusCode;
use axum::routing::{get, post};
use axum::{Json, Router};
use serde::Deserialize;
use serde_json::{json, Value};
use tidemark_runtime::auth::{KeyStore, Role};
use tidemark_runtime::http::{self, needs_role, ApiError};
use tidemark_store::alerts::{self, Ack, AlertFilter, AlertState};

use crate::params;
use crate::ApiState;

/// Alerts one list answers by default, and at most.
pub const DEFAULT_LIMIT: i64 = 100;
pub const MAX_LIMIT: i64 = 1000;

/// The longest rule name or acknowledger a request may give.
const MAX_NAME_CHARS: usize = 256;

/// Who an acknowledgement without `by` is recorded as: the API does not know a key's
/// name, only its role.
const DEFAULT_ACKNOWLEDGER: &str = "admin";

/// The alert routes, each behind its role.
pub fn router(state: ApiState, keys: Arc<KeyStore>) -> Router {
    let read = needs_role(
        Router::new()
            .route("/v1/alerts", get(list))
            .route("/v1/alerts/stats", get(stats))
            .route("/v1/alerts/{id}", get(one)),
        &keys,
        Role::Read,
    );
    let admin = needs_role(
        Router::new().route("/v1/alerts/{id}/ack", post(acknowledge)),
        &keys,
        Role::Admin,
    );
    read.merge(admin).with_state(state)
}

#[derive(Debug, Default, Deserialize)]
pub struct ListQuery {
    state: Option<String>,
    service: Option<String>,
    rule: Option<String>,
    since: Option<String>,
    limit: Option<String>,
}

fn bad(message: String) -> ApiError {
    ApiError::bad_request("invalid_query", message)
}

fn query<T>(query: Result<Query<T>, QueryRejection>) -> Result<T, ApiError> {
    query
        .map(|Query(q)| q)
        .map_err(|e| bad(format!("query: {}", http::quote_within(&e.body_text()))))
}

/// A rule name or an acknowledger: 1 to [`MAX_NAME_CHARS`] characters, none a control
/// character (rule names are free text in the rules file).
fn name<'a>(code: &'static str, param: &str, value: &'a str) -> Result<&'a str, ApiError> {
    let fits = (1..=MAX_NAME_CHARS).contains(&value.chars().count());
    if !fits || value.chars().any(char::is_control) {
        return Err(ApiError::bad_request(
            code,
            format!(
                "{param}: must be 1-{MAX_NAME_CHARS} characters, none of them a control character"
            ),
        ));
    }
    Ok(value)
}

/// A present, non-empty parameter.
fn given(value: &Option<String>) -> Option<&str> {
    value.as_deref().filter(|v| !v.is_empty())
}

fn validate(q: &ListQuery) -> Result<AlertFilter<'_>, ApiError> {
    let state = given(&q.state)
        .map(|s| {
            s.parse::<AlertState>()
                .map_err(|e| bad(format!("state: {e}")))
        })
        .transpose()?;
    let service = given(&q.service)
        .map(|s| params::service("invalid_query", "service", s))
        .transpose()?;
    let rule = given(&q.rule)
        .map(|r| name("invalid_query", "rule", r))
        .transpose()?;
    let since_ms = given(&q.since)
        .map(|s| params::instant(Some(s), "since", 0))
        .transpose()?;
    let limit = match given(&q.limit) {
        None => DEFAULT_LIMIT,
        Some(text) => text
            .parse::<i64>()
            .ok()
            .filter(|n| (1..=MAX_LIMIT).contains(n))
            .ok_or_else(|| bad(format!("limit: must be an integer from 1 to {MAX_LIMIT}")))?,
    };
    Ok(AlertFilter {
        state,
        service,
        rule,
        since_ms,
        limit,
    })
}

/// `GET /v1/alerts?state=&service=&rule=&since=&limit=`: `since` keeps the alerts open
/// at some instant from then on (not resolved, or resolved at or after it).
pub async fn list(
    State(state): State<ApiState>,
    q: Result<Query<ListQuery>, QueryRejection>,
) -> Result<Json<Value>, ApiError> {
    let q = query(q)?;
    let filter = validate(&q)?;
    let found = alerts::list(&state.pool, &filter, &state.rules.current().inhibit).await?;
    let alerts: Vec<Value> = found.iter().map(alerts::Alert::to_json).collect();
    Ok(Json(json!({ "alerts": alerts })))
}

#[derive(Debug, Default, Deserialize)]
pub struct StatsQuery {
    since: Option<String>,
}

/// `GET /v1/alerts/stats?since=`: per rule, its alerts in each state and the mean times
/// from firing to acknowledgement and to resolution, over the alerts started since.
pub async fn stats(
    State(state): State<ApiState>,
    q: Result<Query<StatsQuery>, QueryRejection>,
) -> Result<Json<Value>, ApiError> {
    let q = query(q)?;
    let since_ms = given(&q.since)
        .map(|s| params::instant(Some(s), "since", 0))
        .transpose()?;
    let rules = alerts::stats(&state.pool, since_ms).await?;
    let rules: Vec<Value> = rules.iter().map(alerts::RuleStats::to_json).collect();
    Ok(Json(json!({ "rules": rules })))
}

fn not_found(id: i64) -> ApiError {
    ApiError::NotFound(format!("no alert has id {id}"))
}

/// `GET /v1/alerts/{id}`: the alert and its transitions, oldest first.
pub async fn one(
    State(state): State<ApiState>,
    Path(id): Path<String>,
) -> Result<Json<Value>, ApiError> {
    let id = params::path_id(&id)?;
    let (alert, transitions) = alerts::get(&state.pool, id, &state.rules.current().inhibit)
        .await?
        .ok_or_else(|| not_found(id))?;
    let mut body = alert.to_json();
    body["transitions"] = transitions
        .iter()
        .map(alerts::Transition::to_json)
        .collect();
    Ok(Json(body))
}

#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
struct AckBody {
    by: Option<String>,
}

/// `POST /v1/alerts/{id}/ack`, body optional `{"by": "..."}`: acknowledges an open
/// alert (`200` with the alert; again: `200`, unchanged). A resolved alert: `409`.
pub async fn acknowledge(
    State(state): State<ApiState>,
    Path(id): Path<String>,
    body: Bytes,
) -> Result<Json<Value>, ApiError> {
    let id = params::path_id(&id)?;
    let body: AckBody = if body.iter().all(u8::is_ascii_whitespace) {
        AckBody::default()
    } else {
        serde_json::from_slice(&body).map_err(|e| {
            ApiError::bad_request(
                "invalid_body",
                format!("body: {}", http::quote_within(&e.to_string())),
            )
        })?
    };
    let by = match given(&body.by) {
        Some(by) => name("invalid_body", "by", by)?,
        None => DEFAULT_ACKNOWLEDGER,
    };
    let rules = state.rules.current();
    match alerts::acknowledge(&state.pool, id, by, &rules.inhibit).await? {
        None => Err(not_found(id)),
        Some(Ack::Done(alert) | Ack::Already(alert)) => Ok(Json(alert.to_json())),
        Some(Ack::Resolved(_)) => Err(ApiError::Status {
            status: StatusCode::CONFLICT,
            message: format!("alert {id} is resolved; there is nothing to acknowledge"),
        }),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn list_query(pairs: &[(&str, &str)]) -> ListQuery {
        let get = |k: &str| {
            pairs
                .iter()
                .find(|(name, _)| *name == k)
                .map(|(_, v)| (*v).to_owned())
        };
        ListQuery {
            state: get("state"),
            service: get("service"),
            rule: get("rule"),
            since: get("since"),
            limit: get("limit"),
        }
    }

    fn refusal(pairs: &[(&str, &str)]) -> String {
        match validate(&list_query(pairs)) {
            Err(ApiError::BadRequest { code, message }) => {
                assert_eq!(code, "invalid_query");
                message
            }
            other => panic!("{pairs:?}: expected a 400, got {other:?}"),
        }
    }

    #[test]
    fn list_parameters_are_checked_and_refusals_name_them() {
        let empty = list_query(&[]);
        let f = validate(&empty).unwrap();
        assert_eq!(
            (f.state, f.service, f.rule, f.since_ms, f.limit),
            (None, None, None, None, DEFAULT_LIMIT)
        );
        let q = list_query(&[
            ("state", "firing"),
            ("service", "api"),
            ("rule", "API latency (p95)"),
            ("since", "1970-01-01T00:00:01Z"),
            ("limit", "5"),
        ]);
        let f = validate(&q).unwrap();
        assert_eq!(f.state, Some(AlertState::Firing));
        assert_eq!(
            (f.service, f.rule),
            (Some("api"), Some("API latency (p95)"))
        );
        assert_eq!((f.since_ms, f.limit), (Some(1000), 5));

        assert_eq!(
            refusal(&[("state", "ok")]),
            "state: use pending, firing or resolved"
        );
        assert!(refusal(&[("service", "a b")]).starts_with("service: "));
        assert!(refusal(&[("rule", "a\0b")]).starts_with("rule: "));
        assert!(refusal(&[("rule", &"r".repeat(257))]).starts_with("rule: "));
        assert!(refusal(&[("since", "yesterday")]).starts_with("since: "));
        for limit in ["0", "1001", "-1", "ten"] {
            assert!(
                refusal(&[("limit", limit)]).starts_with("limit: "),
                "{limit}"
            );
        }
    }
}
