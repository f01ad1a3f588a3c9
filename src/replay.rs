//! `tidemark replay --from TIME [--to TIME]`: the command-line face of
//! `tidemark_aggregator::replay`, with a progress bar and a final summary.

use indicatif::{ProgressBar, ProgressStyle};
use tidemark_aggregator::replay::{self, Progress};
use tidemark_model::time::{format_instant, parse_instant};
use tidemark_runtime::Config;
use tidemark_store::{db, hot};

struct Bar(ProgressBar);

impl Progress for Bar {
    fn start(&self, total_messages: u64) {
        self.0.set_length(total_messages);
    }
    fn advance(&self, messages: u64) {
        self.0.inc(messages);
    }
}

pub async fn run(config: &Config, from: &str, to: Option<&str>) -> anyhow::Result<()> {
    let from_ms = parse_instant(from).map_err(|e| anyhow::anyhow!("--from {from:?} {e}"))?;
    let to_ms = match to {
        Some(t) => parse_instant(t).map_err(|e| anyhow::anyhow!("--to {t:?} {e}"))?,
        None => chrono::Utc::now().timestamp_millis(),
    };
    anyhow::ensure!(from_ms < to_ms, "--from must be before --to");
    let brokers = config.require_brokers()?;
    let pool = db::connect(&config.common.database_url, 2, false).await?;
    db::migrate(&pool).await?;
    let (from_h, to_h) = replay::hour_range(from_ms, to_ms);
    println!(
        "rebuilding hours {} .. {} from {}",
        format_instant(from_h),
        format_instant(to_h),
        config.common.topics.samples
    );
    let bar = ProgressBar::new(0).with_style(
        ProgressStyle::with_template("{bar:40} {pos}/{len} messages ({per_sec}, eta {eta})")
            .expect("static template"),
    );
    let summary = replay::replay(
        &pool,
        brokers,
        &config.common.topics.samples,
        from_ms,
        to_ms,
        config.ingest.max_sample_future,
        &Bar(bar.clone()),
    )
    .await?;
    bar.finish_and_clear();
    // The hot copy may hold the old values: make readers use Postgres until an
    // aggregator refills it.
    let keys = hot::HotKeys::new(&config.common.topics.prefix);
    let invalidated = match hot::Redis::connect(&config.common.redis_url).await {
        Ok(redis) => hot::publish::invalidate(&redis, &keys).await,
        Err(e) => Err(e),
    };
    if let Err(e) = invalidated {
        eprintln!("warning: {e}; the Redis hot copy may show old values for up to two hours");
    }
    println!(
        "replayed {} messages from {} partitions: {} samples in {} buckets over {} hours",
        summary.messages,
        summary.partitions,
        summary.samples_in_range,
        summary.buckets,
        summary.hours
    );
    Ok(())
}
