//! HTTP plumbing shared by every role: the one place errors become responses, request
//! ids, security headers, per-route metrics, bearer-key auth and the ops routes
//! (`/metrics`, `/livez`, `/readyz`). Listening and serving are in [`crate::serve`].
//!
//! Every error answer carries SPEC's body `{"error": {"code": "...", "message": "..."}}`:
//!
//! - handlers return [`ApiError`], whose `into_response` is the only place that body is
//!   made;
//! - everything else that answers an error without that body (axum's 404 for an unknown
//!   path, its 405 for a method a route does not take, the timeout's 408, an extractor's
//!   plain-text rejection such as a bad query string, a repeated query parameter, bad
//!   UTF-8 in a path parameter or a JSON body that does not decode) is rewritten by one
//!   middleware of [`with_common_layers`] into an [`ApiError::Status`] with the same
//!   status and headers. Routes added later are covered without doing anything; a
//!   handler may still take `Result<Query<T>, QueryRejection>` to word its own 400.
//!
//! Error messages quote client input only through [`quote`] (at most [`QUOTE_CHARS`]
//! characters, then `…`); [`quote_within`] applies it to the quoted parts of serde's
//! messages, and `into_response` cuts any message at [`MAX_MESSAGE_CHARS`] as a last
//! resort. Each request runs in a `request` tracing span with its `x-request-id`, so
//! what is logged while serving it (such as an internal error) names the id the client
//! was given.

use std::future::Future;
use std::pin::Pin;
use std::sync::Arc;
use std::time::{Duration, Instant};

use axum::extract::{MatchedPath, Request, State};
use axum::http::{header, HeaderName, HeaderValue, StatusCode};
use axum::middleware::{self, Next};
use axum::response::{IntoResponse, Response};
use axum::routing::get;
use axum::{Json, Router};
use metrics_exporter_prometheus::PrometheusHandle;
use serde_json::json;
use tower_http::request_id::{MakeRequestUuid, PropagateRequestIdLayer, SetRequestIdLayer};
use tower_http::set_header::SetResponseHeaderLayer;
use tower_http::timeout::TimeoutLayer;

use crate::auth::{Auth, KeyStore, Role};
use crate::config::Secret;
use crate::telemetry::serving::{HTTP_REQUESTS, HTTP_REQUEST_DURATION};

pub const REQUEST_ID: HeaderName = HeaderName::from_static("x-request-id");

/// Every error a handler can return; `into_response` is the only mapping to HTTP.
#[derive(Debug, thiserror::Error)]
pub enum ApiError {
    #[error("{message}")]
    BadRequest { code: &'static str, message: String },
    #[error("request body larger than {limit} bytes")]
    PayloadTooLarge { limit: usize },
    #[error("unsupported content encoding {:?}: use gzip, zstd or none", quote(.0))]
    UnsupportedEncoding(String),
    #[error("missing or unknown API key")]
    Unauthorized,
    #[error("this API key's role may not use this route")]
    Forbidden,
    #[error("{0}")]
    NotFound(String),
    /// The request conflicts with the server's state or configuration: `409`.
    #[error("{message}")]
    Conflict { code: &'static str, message: String },
    #[error("{message}")]
    Unavailable {
        message: String,
        retry_after_secs: u64,
    },
    /// A client over a rate limit (such as [`crate::auth::limit`]): `429` with
    /// `Retry-After` and `RateLimit-*` headers.
    #[error("{message}")]
    TooManyRequests {
        message: String,
        limit: u32,
        retry_after_secs: u64,
    },
    /// A request with more samples than ingest may ever hold awaiting the broker.
    #[error(
        "a request may hold at most {limit} samples (TIDEMARK_MAX_INFLIGHT_SAMPLES); \
         split it into smaller requests"
    )]
    TooManySamples { limit: usize },
    /// An answer whose status says what went wrong, made from a response that had no
    /// SPEC error body: an unknown path (404), a method the route does not take (405),
    /// the request timeout (408), an extractor's rejection.
    #[error("{message}")]
    Status { status: StatusCode, message: String },
    #[error(transparent)]
    Internal(#[from] anyhow::Error),
}

/// How many characters of client input an error message quotes.
pub const QUOTE_CHARS: usize = 64;

/// The most characters an error message may have; longer ones are cut (a last resort:
/// messages quote client input through [`quote`]).
pub const MAX_MESSAGE_CHARS: usize = 2048;

/// Client input as an error message may quote it: whole if it has at most
/// [`QUOTE_CHARS`] characters, else its first [`QUOTE_CHARS`] characters and `…`.
pub fn quote(input: &str) -> String {
    cut(input, QUOTE_CHARS)
}

/// `text` cut after `max` characters (on a character boundary), marked with `…`.
fn cut(text: &str, max: usize) -> String {
    match text.char_indices().nth(max) {
        None => text.to_owned(),
        Some((end, _)) => format!("{}…", &text[..end]),
    }
}

/// A serde (serde_json, serde_urlencoded, ...) error message, or an axum rejection
/// quoting one, with the client input it quotes shortened by [`quote`]: the name in
/// "unknown field `…`" or "unknown variant `…`", every double-quoted (Debug-escaped)
/// string, as in "invalid type: string \"…\"", and any other run of more than
/// [`QUOTE_CHARS`] characters without a space. The position serde_json appends ("at line
/// 1 column 9") is kept. The result has at most about 600 characters.
pub fn quote_within(message: &str) -> String {
    const MAX_REST: usize = 512;
    let (core, position) = split_position(message);
    let named = ["unknown field `", "unknown variant `"]
        .into_iter()
        .filter_map(|marker| core.find(marker).map(|at| (at, at + marker.len())))
        .min();
    // The name ends where serde's list of what it expected begins, which names only
    // the type's own fields or variants.
    let name_end = named.and_then(|(_, start)| {
        ["`, expected", "`, there are no"]
            .into_iter()
            .filter_map(|e| core.rfind(e))
            .max()
            .filter(|&end| end >= start)
    });
    let mut out = match (named, name_end) {
        (Some((_, start)), Some(end)) => format!(
            "{}{}{}",
            &quote_strings(&core[..start]),
            quote(&core[start..end]),
            quote_strings(&core[end..])
        ),
        _ => quote_strings(core),
    };
    out = cut(&out, MAX_REST);
    out.push_str(position);
    out
}

/// `text` with each Debug-escaped string and each long run without spaces shortened by
/// [`quote`].
fn quote_strings(text: &str) -> String {
    let mut out = String::new();
    let mut rest = text;
    while let Some(open) = rest.find('"') {
        out.push_str(&quote_words(&rest[..=open]));
        rest = &rest[open + 1..];
        // A `"` inside a Debug-escaped string is escaped, so the first unescaped `"`
        // closes it.
        let mut escaped = false;
        let close = rest.char_indices().find_map(|(i, c)| {
            let closes = c == '"' && !escaped;
            escaped = c == '\\' && !escaped;
            closes.then_some(i)
        });
        let Some(close) = close else {
            break;
        };
        let inner = &rest[..close];
        match inner.char_indices().nth(QUOTE_CHARS) {
            None => out.push_str(inner),
            Some((mut end, _)) => {
                // Do not leave half an escape before the closing quote.
                let backslashes = inner[..end].bytes().rev().take_while(|&b| b == b'\\');
                if backslashes.count() % 2 == 1 {
                    end -= 1;
                }
                out.push_str(&inner[..end]);
                out.push('…');
            }
        }
        out.push('"');
        rest = &rest[close + 1..];
    }
    out.push_str(&quote_words(rest));
    out
}

/// `text` with each run of more than [`QUOTE_CHARS`] characters without a space
/// shortened by [`quote`].
fn quote_words(text: &str) -> String {
    text.split(' ').map(quote).collect::<Vec<_>>().join(" ")
}

/// Splits serde_json's " at line L column C" off the end of `message`.
fn split_position(message: &str) -> (&str, &str) {
    let Some(at) = message.rfind(" at line ") else {
        return (message, "");
    };
    let tail = &message[at + " at line ".len()..];
    let well_formed = tail.split_once(" column ").is_some_and(|(line, column)| {
        [line, column]
            .iter()
            .all(|n| !n.is_empty() && n.bytes().all(|b| b.is_ascii_digit()))
    });
    if well_formed {
        message.split_at(at)
    } else {
        (message, "")
    }
}

/// The `code` of an error answer with `status` that no [`ApiError`] variant names.
fn code_of(status: StatusCode) -> &'static str {
    match status {
        StatusCode::BAD_REQUEST => "bad_request",
        StatusCode::UNAUTHORIZED => "unauthorized",
        StatusCode::FORBIDDEN => "forbidden",
        StatusCode::NOT_FOUND => "not_found",
        StatusCode::METHOD_NOT_ALLOWED => "method_not_allowed",
        StatusCode::NOT_ACCEPTABLE => "not_acceptable",
        StatusCode::REQUEST_TIMEOUT | StatusCode::GATEWAY_TIMEOUT => "timeout",
        StatusCode::CONFLICT => "conflict",
        StatusCode::LENGTH_REQUIRED => "length_required",
        StatusCode::PAYLOAD_TOO_LARGE => "payload_too_large",
        StatusCode::URI_TOO_LONG => "uri_too_long",
        StatusCode::UNSUPPORTED_MEDIA_TYPE => "unsupported_media_type",
        StatusCode::UNPROCESSABLE_ENTITY => "unprocessable_entity",
        StatusCode::TOO_MANY_REQUESTS => "rate_limited",
        StatusCode::REQUEST_HEADER_FIELDS_TOO_LARGE => "headers_too_large",
        StatusCode::SERVICE_UNAVAILABLE => "unavailable",
        s if s.is_client_error() => "bad_request",
        _ => "internal",
    }
}

impl ApiError {
    pub fn bad_request(code: &'static str, message: impl Into<String>) -> Self {
        Self::BadRequest {
            code,
            message: message.into(),
        }
    }

    fn status_and_code(&self) -> (StatusCode, &'static str) {
        match self {
            Self::BadRequest { code, .. } => (StatusCode::BAD_REQUEST, code),
            Self::PayloadTooLarge { .. } => (StatusCode::PAYLOAD_TOO_LARGE, "payload_too_large"),
            Self::UnsupportedEncoding(_) => {
                (StatusCode::UNSUPPORTED_MEDIA_TYPE, "unsupported_encoding")
            }
            Self::Unauthorized => (StatusCode::UNAUTHORIZED, "unauthorized"),
            Self::Forbidden => (StatusCode::FORBIDDEN, "forbidden"),
            Self::NotFound(_) => (StatusCode::NOT_FOUND, "not_found"),
            Self::Conflict { code, .. } => (StatusCode::CONFLICT, code),
            Self::Unavailable { .. } => (StatusCode::SERVICE_UNAVAILABLE, "unavailable"),
            Self::TooManyRequests { .. } => (StatusCode::TOO_MANY_REQUESTS, "rate_limited"),
            Self::TooManySamples { .. } => (StatusCode::PAYLOAD_TOO_LARGE, "too_many_samples"),
            Self::Status { status, .. } => (*status, code_of(*status)),
            Self::Internal(_) => (StatusCode::INTERNAL_SERVER_ERROR, "internal"),
        }
    }
}

impl ApiError {
    /// An exhausted connection pool is overload, not a fault: 503, so clients back off.
    fn overload(self) -> Self {
        match self {
            Self::Internal(err) if tidemark_store::db::is_pool_exhausted(&err) => {
                Self::Unavailable {
                    message: "the server is overloaded; retry later".into(),
                    retry_after_secs: 1,
                }
            }
            other => other,
        }
    }
}

impl IntoResponse for ApiError {
    fn into_response(self) -> Response {
        let error = self.overload();
        let (status, code) = error.status_and_code();
        let message = match &error {
            Self::Internal(err) => {
                tracing::error!(error = format!("{err:#}"), "internal error");
                "internal error; see the server log for this request id".to_owned()
            }
            other => cut(&other.to_string(), MAX_MESSAGE_CHARS),
        };
        let mut response = (
            status,
            Json(json!({"error": {"code": code, "message": message}})),
        )
            .into_response();
        let headers = response.headers_mut();
        match error {
            Self::Unavailable {
                retry_after_secs, ..
            } => {
                headers.insert(header::RETRY_AFTER, HeaderValue::from(retry_after_secs));
            }
            Self::TooManyRequests {
                limit,
                retry_after_secs,
                ..
            } => {
                headers.insert(header::RETRY_AFTER, HeaderValue::from(retry_after_secs));
                headers.insert("ratelimit-limit", HeaderValue::from(limit));
                headers.insert("ratelimit-remaining", HeaderValue::from(0));
                headers.insert("ratelimit-reset", HeaderValue::from(retry_after_secs));
            }
            _ => {}
        }
        response
    }
}

/// Readiness of one dependency.
pub type ReadyCheck =
    Arc<dyn Fn() -> Pin<Box<dyn Future<Output = Result<(), String>> + Send>> + Send + Sync>;

/// Something `/readyz` reports without judging readiness by it (e.g. quarantined
/// messages: the pipeline goes on, but an operator should look).
pub type ReadyDetail =
    Arc<dyn Fn() -> Pin<Box<dyn Future<Output = serde_json::Value> + Send>> + Send + Sync>;

/// State of the ops routes.
#[derive(Clone)]
pub struct Ops {
    pub metrics: PrometheusHandle,
    pub metrics_token: Option<Secret>,
    /// `(name, check)`; `/readyz` is 200 only when all pass.
    pub checks: Vec<(&'static str, ReadyCheck)>,
    /// `(name, detail)`, shown under `details`.
    pub details: Vec<(&'static str, ReadyDetail)>,
}

/// `/metrics`, `/livez`, `/readyz`.
pub fn ops_router(ops: Ops) -> Router {
    Router::new()
        .route("/metrics", get(metrics_handler))
        .route("/livez", get(|| async { Json(json!({"status": "ok"})) }))
        .route("/readyz", get(readyz))
        .with_state(ops)
}

async fn metrics_handler(State(ops): State<Ops>, headers: axum::http::HeaderMap) -> Response {
    if let Some(token) = &ops.metrics_token {
        if !bearer(&headers).is_some_and(|given| crate::auth::same_token(given, token.expose())) {
            return ApiError::Unauthorized.into_response();
        }
    }
    (
        [(header::CONTENT_TYPE, "text/plain; version=0.0.4")],
        ops.metrics.render(),
    )
        .into_response()
}

async fn readyz(State(ops): State<Ops>) -> Response {
    let mut failing = serde_json::Map::new();
    let mut status = StatusCode::OK;
    for (name, check) in &ops.checks {
        let outcome = tokio::time::timeout(Duration::from_secs(2), check()).await;
        let result = match outcome {
            Ok(Ok(())) => "ok".to_owned(),
            Ok(Err(e)) => e,
            Err(_) => "timed out".to_owned(),
        };
        if result != "ok" {
            status = StatusCode::SERVICE_UNAVAILABLE;
        }
        failing.insert((*name).to_owned(), result.into());
    }
    let ready = status == StatusCode::OK;
    let mut body = json!({"ready": ready, "checks": failing});
    if !ops.details.is_empty() {
        let mut details = serde_json::Map::new();
        for (name, detail) in &ops.details {
            let value = tokio::time::timeout(Duration::from_secs(2), detail())
                .await
                .unwrap_or_else(|_| "timed out".into());
            details.insert((*name).to_owned(), value);
        }
        body["details"] = details.into();
    }
    (status, Json(body)).into_response()
}

/// The token of an `Authorization: Bearer <token>` header. The scheme's case does not
/// matter (RFC 7235: `bearer` and `BEARER` are `Bearer`).
fn bearer(headers: &axum::http::HeaderMap) -> Option<&str> {
    let value = headers.get(header::AUTHORIZATION)?.to_str().ok()?.trim();
    let (scheme, token) = value.split_once(' ')?;
    let token = token.trim();
    (scheme.eq_ignore_ascii_case("bearer") && !token.is_empty()).then_some(token)
}

/// `routes`, each behind `role`: the one way a route gets its role.
pub fn needs_role<S>(routes: Router<S>, keys: &Arc<KeyStore>, role: Role) -> Router<S>
where
    S: Clone + Send + Sync + 'static,
{
    let required = RequireRole {
        keys: keys.clone(),
        role,
    };
    routes.route_layer(middleware::from_fn_with_state(required, require_role))
}

/// Middleware state: which role a group of routes needs.
#[derive(Clone)]
pub struct RequireRole {
    pub keys: Arc<KeyStore>,
    pub role: Role,
}

/// Rejects requests without a key granting `role` (401 unknown, 403 wrong role), and,
/// without looking the key up, those of a client address that presented too many
/// unknown keys lately (429, see [`crate::auth::limit`]). The address comes from axum's
/// `ConnectInfo<SocketAddr>`; without it, unknown keys are not limited per address.
pub async fn require_role(
    State(req_role): State<RequireRole>,
    request: Request,
    next: Next,
) -> Result<Response, ApiError> {
    let token = bearer(request.headers()).ok_or(ApiError::Unauthorized)?;
    let client = request
        .extensions()
        .get::<axum::extract::ConnectInfo<std::net::SocketAddr>>()
        .map(|c| c.0.ip());
    match req_role.keys.authenticate(token, client).await? {
        Auth::Unknown => Err(ApiError::Unauthorized),
        Auth::Limited { retry_after, limit } => {
            let secs = (retry_after.as_secs_f64().ceil() as u64).max(1);
            Err(ApiError::TooManyRequests {
                message: format!("too many unknown API keys from this address; retry in {secs} s"),
                limit,
                retry_after_secs: secs,
            })
        }
        Auth::Known(role) if !role.grants(req_role.role) => Err(ApiError::Forbidden),
        Auth::Known(_) => Ok(next.run(request).await),
    }
}

/// Bytes of an error answer's own body read to word its message.
const REWRITTEN_BODY_LIMIT: usize = 256 * 1024;

/// Gives an error answer that lacks SPEC's JSON body that body, keeping its status and
/// headers (see the module doc).
async fn error_body(request: Request, next: Next) -> Response {
    let method = quote(request.method().as_str());
    let response = next.run(request).await;
    let status = response.status();
    let is_json = response
        .headers()
        .get(header::CONTENT_TYPE)
        .and_then(|v| v.to_str().ok())
        .is_some_and(|v| v.starts_with("application/json"));
    if !(status.is_client_error() || status.is_server_error()) || is_json {
        return response;
    }
    let (parts, body) = response.into_parts();
    let text = axum::body::to_bytes(body, REWRITTEN_BODY_LIMIT)
        .await
        .map(|b| String::from_utf8_lossy(&b).trim().to_owned())
        .unwrap_or_default();
    let message = match status {
        s if s.is_server_error() => {
            if !text.is_empty() {
                tracing::error!(status = s.as_u16(), error = %cut(&text, 1024), "error answer");
            }
            if s == StatusCode::SERVICE_UNAVAILABLE {
                "the server is unavailable; retry later".to_owned()
            } else {
                "internal error; see the server log for this request id".to_owned()
            }
        }
        _ if !text.is_empty() => quote_within(&text),
        StatusCode::NOT_FOUND => "no route matches this path".to_owned(),
        StatusCode::METHOD_NOT_ALLOWED => {
            let allowed = parts
                .headers
                .get(header::ALLOW)
                .and_then(|v| v.to_str().ok())
                .filter(|v| !v.is_empty());
            match allowed {
                Some(allowed) => format!("this route does not take {method}; it takes {allowed}"),
                None => format!("this route does not take {method}"),
            }
        }
        StatusCode::REQUEST_TIMEOUT => "the request took too long and was abandoned".to_owned(),
        s => s.canonical_reason().unwrap_or("bad request").to_lowercase(),
    };
    let mut answer = ApiError::Status { status, message }.into_response();
    let own: Vec<HeaderName> = answer.headers().keys().cloned().collect();
    for (name, value) in &parts.headers {
        if name != header::CONTENT_TYPE && name != header::CONTENT_LENGTH && !own.contains(name) {
            answer.headers_mut().append(name.clone(), value.clone());
        }
    }
    answer
}

/// Runs the request in a `request` span carrying its `x-request-id` (set by the layer
/// outside this one), so its log lines name the id its error bodies point to.
async fn request_span(request: Request, next: Next) -> Response {
    use tracing::Instrument;
    let id = request
        .headers()
        .get(REQUEST_ID)
        .and_then(|v| v.to_str().ok())
        .map(quote)
        .unwrap_or_default();
    let span = tracing::info_span!(
        "request",
        id = %id,
        method = %quote(request.method().as_str()),
        path = %quote(request.uri().path()),
    );
    next.run(request).instrument(span).await
}

async fn record_metrics(request: Request, next: Next) -> Response {
    let route = request
        .extensions()
        .get::<MatchedPath>()
        .map_or_else(|| "unmatched".to_owned(), |p| p.as_str().to_owned());
    let method = request.method().to_string();
    let start = Instant::now();
    let response = next.run(request).await;
    let status = response.status().as_u16().to_string();
    HTTP_REQUEST_DURATION
        .with([route.clone(), method.clone()])
        .record(start.elapsed().as_secs_f64());
    HTTP_REQUESTS.with([route, method, status]).increment(1);
    response
}

/// Adds the layers every router gets: metrics by matched route, request ids and a
/// tracing span carrying them, security headers, a request timeout, and SPEC's error body
/// on every error answer (the module doc says how).
pub fn with_common_layers(router: Router, request_timeout: Duration) -> Router {
    let headers = [
        (header::X_CONTENT_TYPE_OPTIONS, "nosniff"),
        (header::X_FRAME_OPTIONS, "DENY"),
        (header::REFERRER_POLICY, "no-referrer"),
        (header::CACHE_CONTROL, "no-store"),
    ];
    let mut router = router
        .route_layer(middleware::from_fn(record_metrics))
        .layer(TimeoutLayer::with_status_code(
            StatusCode::REQUEST_TIMEOUT,
            request_timeout,
        ))
        .layer(middleware::from_fn(error_body))
        .layer(middleware::from_fn(request_span));
    for (name, value) in headers {
        router = router.layer(SetResponseHeaderLayer::if_not_present(
            name,
            HeaderValue::from_static(value),
        ));
    }
    router
        .layer(PropagateRequestIdLayer::new(REQUEST_ID))
        .layer(SetRequestIdLayer::new(REQUEST_ID, MakeRequestUuid))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn errors_map_to_statuses_without_internal_detail() {
        let pool = ApiError::Internal(
            anyhow::Error::new(sqlx::Error::PoolTimedOut).context("reading health"),
        );
        let response = pool.into_response();
        assert_eq!(
            response.status(),
            StatusCode::SERVICE_UNAVAILABLE,
            "an exhausted pool is overload"
        );
        assert!(response.headers().contains_key(header::RETRY_AFTER));
        let internal =
            ApiError::Internal(anyhow::anyhow!("relation buckets does not exist")).into_response();
        assert_eq!(internal.status(), StatusCode::INTERNAL_SERVER_ERROR);
        let body = axum::body::to_bytes(internal.into_body(), 4096)
            .await
            .unwrap();
        let body = String::from_utf8_lossy(&body);
        assert!(
            body.contains("\"code\":\"internal\"") && !body.contains("relation"),
            "{body}"
        );
        assert_eq!(
            ApiError::Forbidden.into_response().status(),
            StatusCode::FORBIDDEN
        );
    }

    #[test]
    fn quote_keeps_a_short_prefix_on_a_char_boundary() {
        assert_eq!(quote("short"), "short");
        let exact = "é".repeat(QUOTE_CHARS);
        assert_eq!(quote(&exact), exact);
        let long = "é".repeat(QUOTE_CHARS + 1);
        assert_eq!(quote(&long), format!("{}…", "é".repeat(QUOTE_CHARS)));
    }

    #[test]
    fn quote_within_shortens_what_serde_quotes() {
        let name = format!("a`b, expected {}", "x".repeat(100_000));
        let message = format!(
            "unknown field `{name}`, expected one of `service`, `metric` at line 1 column 100020"
        );
        let short = quote_within(&message);
        assert!(short.len() < 300, "{short}");
        assert!(
            short.starts_with("unknown field `a`b, expected xxx"),
            "{short}"
        );
        assert!(
            short.ends_with("…`, expected one of `service`, `metric` at line 1 column 100020"),
            "{short}"
        );
        // serde_json's own message for a long string of the wrong type, with escapes.
        let body = format!("\"{}\"", "\\\"x".repeat(50_000));
        let err = serde_json::from_str::<f64>(&body).unwrap_err().to_string();
        assert!(err.len() > 100_000);
        let short = quote_within(&err);
        assert!(short.len() < 300, "{short}");
        assert!(short.starts_with("invalid type: string \"\\\"x"), "{short}");
        assert!(
            short.contains("…\", expected f64 at line 1 column "),
            "{short}"
        );
        // Any Debug-quoted input, and messages without quotes.
        let short = quote_within(&format!("tags: got {:?}", "k".repeat(10_000)));
        assert_eq!(short, format!("tags: got \"{}…\"", "k".repeat(QUOTE_CHARS)));
        assert_eq!(
            quote_within("trailing characters at line 1 column 9"),
            "trailing characters at line 1 column 9"
        );
        assert!(quote_within(&"y".repeat(10_000)).len() < 600);
    }

    #[test]
    fn bearer_scheme_is_case_insensitive() {
        let token = |value: &str| {
            let mut headers = axum::http::HeaderMap::new();
            headers.insert(header::AUTHORIZATION, value.parse().unwrap());
            bearer(&headers).map(str::to_owned)
        };
        for value in ["Bearer tm_x", "bearer tm_x", "BEARER  tm_x ", "bEaReR tm_x"] {
            assert_eq!(token(value).as_deref(), Some("tm_x"), "{value}");
        }
        for value in ["Basic tm_x", "Bearer", "Bearer ", "Bearertm_x", "tm_x"] {
            assert_eq!(token(value), None, "{value}");
        }
    }
}
