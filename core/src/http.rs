//! HTTP plumbing shared by every role: the one place errors become responses, request
//! ids, security headers, per-route metrics, bearer-key auth, the ops routes (`/metrics`,
//! `/livez`, `/readyz`) and serving with graceful shutdown.

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
use tokio::net::TcpListener;
use tokio_util::sync::CancellationToken;
use tower_http::request_id::{MakeRequestUuid, PropagateRequestIdLayer, SetRequestIdLayer};
use tower_http::set_header::SetResponseHeaderLayer;
use tower_http::timeout::TimeoutLayer;

use crate::auth::{KeyStore, Role};
use crate::config::Secret;

pub const REQUEST_ID: HeaderName = HeaderName::from_static("x-request-id");

/// Every error a handler can return; `into_response` is the only mapping to HTTP.
#[derive(Debug, thiserror::Error)]
pub enum ApiError {
    #[error("{message}")]
    BadRequest { code: &'static str, message: String },
    #[error("request body larger than {limit} bytes")]
    PayloadTooLarge { limit: usize },
    #[error("unsupported content encoding {0:?}: use gzip, zstd or none")]
    UnsupportedEncoding(String),
    #[error("missing or unknown API key")]
    Unauthorized,
    #[error("this API key's role may not use this route")]
    Forbidden,
    #[error("{0}")]
    NotFound(String),
    #[error("{message}")]
    Unavailable {
        message: String,
        retry_after_secs: u64,
    },
    #[error(transparent)]
    Internal(#[from] anyhow::Error),
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
            Self::Unavailable { .. } => (StatusCode::SERVICE_UNAVAILABLE, "unavailable"),
            Self::Internal(_) => (StatusCode::INTERNAL_SERVER_ERROR, "internal"),
        }
    }
}

impl ApiError {
    /// An exhausted connection pool is overload, not a fault: 503, so clients back off.
    fn overload(self) -> Self {
        match self {
            Self::Internal(err)
                if matches!(
                    err.downcast_ref::<sqlx::Error>(),
                    Some(sqlx::Error::PoolTimedOut)
                ) =>
            {
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
            other => other.to_string(),
        };
        let mut response = (
            status,
            Json(json!({"error": {"code": code, "message": message}})),
        )
            .into_response();
        if let Self::Unavailable {
            retry_after_secs, ..
        } = error
        {
            response
                .headers_mut()
                .insert(header::RETRY_AFTER, HeaderValue::from(retry_after_secs));
        }
        response
    }
}

/// Readiness of one dependency.
pub type ReadyCheck =
    Arc<dyn Fn() -> Pin<Box<dyn Future<Output = Result<(), String>> + Send>> + Send + Sync>;

/// State of the ops routes.
#[derive(Clone)]
pub struct Ops {
    pub metrics: PrometheusHandle,
    pub metrics_token: Option<Secret>,
    /// `(name, check)`; `/readyz` is 200 only when all pass.
    pub checks: Vec<(&'static str, ReadyCheck)>,
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
        if bearer(&headers) != Some(token.expose()) {
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
    (status, Json(json!({"ready": ready, "checks": failing}))).into_response()
}

fn bearer(headers: &axum::http::HeaderMap) -> Option<&str> {
    headers
        .get(header::AUTHORIZATION)?
        .to_str()
        .ok()?
        .strip_prefix("Bearer ")
        .map(str::trim)
}

/// Middleware state: which role a group of routes needs.
#[derive(Clone)]
pub struct RequireRole {
    pub keys: Arc<KeyStore>,
    pub role: Role,
}

/// Rejects requests without a key granting `role` (401 unknown, 403 wrong role).
pub async fn require_role(
    State(req_role): State<RequireRole>,
    request: Request,
    next: Next,
) -> Result<Response, ApiError> {
    let token = bearer(request.headers()).ok_or(ApiError::Unauthorized)?;
    match req_role.keys.role_of(token).await? {
        None => Err(ApiError::Unauthorized),
        Some(role) if !role.grants(req_role.role) => Err(ApiError::Forbidden),
        Some(_) => Ok(next.run(request).await),
    }
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
    let labels = [("route", route), ("method", method), ("status", status)];
    metrics::counter!("tidemark_http_requests_total", &labels).increment(1);
    metrics::histogram!("tidemark_http_request_duration_seconds", &labels[..2])
        .record(start.elapsed().as_secs_f64());
    response
}

/// Adds the layers every router gets: metrics by matched route, request ids, security
/// headers and a request timeout.
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
        ));
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

/// Connections the kernel queues before they are accepted; tokio's default of 128
/// overflowed when thousands of clients connected at once (docs/performance.md).
const LISTEN_BACKLOG: u32 = 4096;

/// Binds `addr` (port 0 picks a free port); the caller learns the bound address.
pub async fn bind(addr: std::net::SocketAddr, what: &str) -> anyhow::Result<TcpListener> {
    let listen = || -> std::io::Result<TcpListener> {
        let socket = if addr.is_ipv4() {
            tokio::net::TcpSocket::new_v4()?
        } else {
            tokio::net::TcpSocket::new_v6()?
        };
        socket.set_reuseaddr(true)?;
        socket.bind(addr)?;
        socket.listen(LISTEN_BACKLOG)
    };
    listen().map_err(|e| anyhow::anyhow!("cannot listen on {addr} for {what}: {e}"))
}

/// Serves until `shutdown` is cancelled, then lets in-flight requests finish.
pub async fn serve(
    listener: TcpListener,
    router: Router,
    shutdown: CancellationToken,
) -> anyhow::Result<()> {
    axum::serve(listener, router)
        .with_graceful_shutdown(async move { shutdown.cancelled().await })
        .await?;
    Ok(())
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
}
