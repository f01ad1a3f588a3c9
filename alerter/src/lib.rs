//! The alerter role. For now it serves its ops endpoints (`/metrics`, `/livez`,
//! `/readyz`) on `TIDEMARK_ALERTER_ADDR`; the alert lifecycle (breaches → alerts →
//! notifications) is not built yet, see ARCHITECTURE.md.

use tidemark_runtime::http::{self, Ops};
use tidemark_runtime::serve::{self, ServeLimits};
use tidemark_runtime::Config;
use tokio_util::sync::CancellationToken;

pub struct Alerter {
    listener: tokio::net::TcpListener,
    limits: ServeLimits,
    ops: Ops,
}

impl Alerter {
    /// Binds `config.alerter.addr`; `limits` are the process's (shared by its listeners).
    pub async fn build(config: &Config, ops: Ops, limits: ServeLimits) -> anyhow::Result<Self> {
        let listener = serve::bind(config.alerter.addr, "the alerter").await?;
        Ok(Self {
            listener,
            limits,
            ops,
        })
    }

    pub fn local_addr(&self) -> std::net::SocketAddr {
        self.listener
            .local_addr()
            .expect("bound listener has an address")
    }

    pub async fn run(self, shutdown: CancellationToken) -> anyhow::Result<()> {
        tracing::info!(addr = %self.local_addr(), "alerter serving ops endpoints; alert lifecycle not built yet");
        let router = http::with_common_layers(
            http::ops_router(self.ops),
            std::time::Duration::from_secs(10),
        );
        serve::serve(self.listener, router, self.limits, shutdown).await
    }
}
