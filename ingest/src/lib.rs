//! The ingest role: `POST /v1/samples` validates samples, batches them per partition
//! and answers `202` only once the broker acknowledged every batch holding them.

pub mod batcher;
pub mod cardinality;
pub mod parse;
pub mod producer;
pub mod telemetry;
#[cfg(feature = "test-support")]
pub mod test_support;

use std::sync::Arc;
use std::time::Duration;

use axum::body::Bytes;
use axum::extract::State;
use axum::http::{header, HeaderMap, StatusCode};
use axum::response::IntoResponse;
use axum::routing::post;
use axum::{Json, Router};
use serde_json::json;
use tidemark_model::sample::TimeBounds;
use tidemark_runtime::auth::{KeyStore, Role};
use tidemark_runtime::http::{self, needs_role, ApiError, Ops};
use tidemark_runtime::serve::{self, ServeLimits};
use tidemark_runtime::Config;
use tokio_util::sync::CancellationToken;

pub use batcher::{Batcher, BatcherConfig, BatcherTasks, MAX_BATCH};
pub use cardinality::Cardinality;
pub use producer::ProducerHandle;

/// What the sample routes need.
#[derive(Clone)]
pub struct IngestState {
    pub batcher: Arc<Batcher>,
    pub cardinality: Arc<Cardinality>,
    pub inflight: Arc<Inflight>,
    pub max_body_bytes: usize,
    pub max_decompressed_bytes: usize,
    pub max_sample_age: Duration,
    pub max_sample_future: Duration,
    pub retry_after_secs: u64,
}

/// The samples ingest may hold awaiting the broker (`TIDEMARK_MAX_INFLIGHT_SAMPLES`),
/// which bounds its memory when the broker is slow or down.
pub struct Inflight {
    permits: tokio::sync::Semaphore,
    max: usize,
}

impl Inflight {
    pub fn new(max: usize) -> Self {
        Self {
            permits: tokio::sync::Semaphore::new(max),
            max,
        }
    }

    /// Room for `n` samples until the permit is dropped: `413` for a request that could
    /// never fit (a `503` would be retried in vain), `503` while too many wait.
    fn hold(
        &self,
        n: usize,
        retry_after_secs: u64,
    ) -> Result<tokio::sync::SemaphorePermit<'_>, ApiError> {
        if n > self.max {
            return Err(ApiError::TooManySamples { limit: self.max });
        }
        self.permits.try_acquire_many(n as u32).map_err(|_| {
            telemetry::OVERLOADED.increment(1);
            ApiError::Unavailable {
                message: "ingest holds as many samples awaiting the broker as it may; retry later"
                    .into(),
                retry_after_secs,
            }
        })
    }
}

/// The data routes, behind the `ingest` role.
pub fn router(state: IngestState, keys: Arc<KeyStore>) -> Router {
    let body_limit = state.max_body_bytes;
    let data = Router::new()
        .route("/v1/samples", post(push_samples))
        .with_state(state);
    needs_role(data, &keys, Role::Ingest)
        // Bound what axum buffers; the handler maps the overflow to 413 itself.
        .layer(axum::extract::DefaultBodyLimit::max(body_limit))
}

async fn push_samples(
    State(state): State<IngestState>,
    headers: HeaderMap,
    body: Result<Bytes, axum::extract::rejection::BytesRejection>,
) -> Result<impl IntoResponse, ApiError> {
    let body = body.map_err(|e| {
        if e.status() == StatusCode::PAYLOAD_TOO_LARGE {
            ApiError::PayloadTooLarge {
                limit: state.max_body_bytes,
            }
        } else {
            ApiError::bad_request("bad_body", e.body_text())
        }
    })?;
    let encoding = headers
        .get(header::CONTENT_ENCODING)
        .and_then(|v| v.to_str().ok());
    let json = parse::decode_body(encoding, &body, state.max_decompressed_bytes)?;
    let bounds = TimeBounds {
        now_ms: chrono::Utc::now().timestamp_millis(),
        max_age: state.max_sample_age,
        max_future: state.max_sample_future,
    };
    let request = idempotency_key(&headers)?.map(|key| {
        let mut h = xxhash_rust::xxh3::Xxh3::new();
        h.update(key.as_bytes());
        h.update(&[0]);
        h.update(&json);
        h.digest128()
    });
    let raw = parse::decode_samples(&json)?;
    let samples = raw.validate(bounds)?;
    let _permits = state.inflight.hold(samples.len(), state.retry_after_secs)?;
    if let Some((index, reason)) = state.cardinality.check(&samples).await {
        return Err(ApiError::bad_request(
            "series_limit",
            format!("samples[{index}].series: {reason}"),
        ));
    }
    let n = state
        .batcher
        .submit(&samples, request)
        .await
        .map_err(|e| ApiError::Unavailable {
            message: format!("samples not accepted: {e}; retry later"),
            retry_after_secs: state.retry_after_secs,
        })?;
    telemetry::SAMPLES_ACCEPTED.increment(n as u64);
    Ok((StatusCode::ACCEPTED, Json(json!({"accepted": n}))))
}

/// The `Idempotency-Key` header: 1–255 visible ASCII characters. A retry with the same
/// key and the same body is acknowledged again but counted once (see ARCHITECTURE.md).
fn idempotency_key(headers: &HeaderMap) -> Result<Option<&str>, ApiError> {
    let Some(value) = headers.get("idempotency-key") else {
        return Ok(None);
    };
    value
        .to_str()
        .ok()
        .filter(|k| (1..=255).contains(&k.len()) && k.bytes().all(|b| b.is_ascii_graphic()))
        .map(Some)
        .ok_or_else(|| {
            ApiError::bad_request(
                "invalid_header",
                "Idempotency-Key: must be 1-255 visible ASCII characters",
            )
        })
}

/// A bound, not yet serving ingest.
pub struct Ingest {
    listener: tokio::net::TcpListener,
    router: Router,
    limits: ServeLimits,
    tasks: BatcherTasks,
    producers: Arc<ProducerHandle>,
}

/// Connections the role needs, opened by the caller (so `standalone` can share them).
pub struct IngestDeps {
    pub brokers: String,
    pub keys: Arc<KeyStore>,
    pub redis: tidemark_store::hot::Redis,
    pub ops: Ops,
    /// A bound on the broker's backlog (`standalone` sets its embedded broker's).
    pub backpressure: Option<Arc<dyn tidemark_runtime::backpressure::Backpressure>>,
    /// The process's serving limits, shared by its listeners.
    pub limits: ServeLimits,
}

impl Ingest {
    /// Creates the producer and batcher and binds `config.ingest.addr`.
    pub async fn build(config: &Config, deps: IngestDeps) -> anyhow::Result<Self> {
        let producers = Arc::new(ProducerHandle::new(
            tidemark_runtime::kafka::producer_config(&deps.brokers, config.ingest.ack_timeout),
        )?);
        let brokers = deps.brokers.clone();
        let topic = config.common.topics.samples.clone();
        let partitions = tokio::task::spawn_blocking(move || {
            tidemark_runtime::kafka::partition_count(&brokers, &topic, Duration::from_secs(10))
        })
        .await??;
        let (batcher, tasks) = Batcher::start(
            producers.clone(),
            BatcherConfig {
                topic: config.common.topics.samples.clone(),
                partitions,
                linger: config.ingest.linger,
                ack_timeout: config.ingest.ack_timeout,
                backpressure: deps.backpressure,
            },
        );
        let state = IngestState {
            batcher: Arc::new(batcher),
            cardinality: Arc::new(Cardinality::new(
                config.ingest.max_series_per_service,
                &config.common.topics.prefix,
                deps.redis,
            )),
            inflight: Arc::new(Inflight::new(config.ingest.max_inflight_samples as usize)),
            max_body_bytes: config.ingest.max_body_bytes,
            max_decompressed_bytes: config.ingest.max_decompressed_bytes,
            max_sample_age: config.ingest.max_sample_age,
            max_sample_future: config.ingest.max_sample_future,
            retry_after_secs: 1,
        };
        let router = http::with_common_layers(
            router(state, deps.keys).merge(http::ops_router(deps.ops)),
            config.ingest.ack_timeout + Duration::from_secs(5),
        );
        let listener = serve::bind(config.ingest.addr, "ingest").await?;
        Ok(Self {
            listener,
            router,
            limits: deps.limits,
            tasks,
            producers,
        })
    }

    pub fn local_addr(&self) -> std::net::SocketAddr {
        self.listener
            .local_addr()
            .expect("bound listener has an address")
    }

    /// Serves until `shutdown`; then finishes in-flight requests and delivers their batches.
    pub async fn run(self, shutdown: CancellationToken) -> anyhow::Result<()> {
        tracing::info!(addr = %self.local_addr(), "ingest listening");
        serve::serve(self.listener, self.router, self.limits, shutdown).await?;
        self.tasks.join().await;
        let producer = self.producers.get();
        tokio::task::spawn_blocking(move || {
            rdkafka::producer::Producer::flush(&producer, Duration::from_secs(10))
        })
        .await??;
        tracing::info!("ingest drained");
        Ok(())
    }
}
