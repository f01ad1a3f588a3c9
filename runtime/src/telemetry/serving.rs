//! The metrics of serving HTTP and checking API keys, which every role emits.

use metrics::Unit;

use super::vocabulary::{Counter, Histogram};

crate::define_metrics! {
    pub const HTTP_REQUESTS: Counter<3> = Counter::new(
        "tidemark_http_requests_total",
        &["route", "method", "status"],
        "HTTP requests answered, by matched route, method and status.",
    );
    pub const HTTP_REQUEST_DURATION: Histogram<2> = Histogram::new(
        "tidemark_http_request_duration_seconds",
        &["route", "method"],
        "Time to answer an HTTP request, by matched route and method.",
    )
    .unit(Unit::Seconds);
    pub const HTTP_CONNECTIONS_REFUSED: Counter = Counter::new(
        "tidemark_http_connections_refused_total",
        &[],
        "Connections answered 503 at once because the process holds as many as it may (TIDEMARK_MAX_CONNECTIONS).",
    );
    pub const AUTH_LIMITED: Counter = Counter::new(
        "tidemark_auth_limited_total",
        &[],
        "Requests refused without a key lookup because their client presented too many unknown tokens.",
    );
    pub const AUTH_UNKNOWN_KEYS: Counter = Counter::new(
        "tidemark_auth_unknown_keys_total",
        &[],
        "Bearer tokens presented that match no API key.",
    );
}
