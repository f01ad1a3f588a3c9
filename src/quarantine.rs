//! `tidemark quarantine list|replay`: the command-line face of the quarantine table
//! (`tidemark_store::quarantine`) and of `tidemark_aggregator::quarantine`. `replay`
//! applies entries one by one, each in its own transaction, says what happened to each,
//! and writes the buckets it changed to the Redis hot copy.

use tidemark_aggregator::hot::HotWriter;
use tidemark_aggregator::quarantine::{self, Replayed};
use tidemark_aggregator::store::Written;
use tidemark_model::time::format_instant;
use tidemark_runtime::Config;
use tidemark_store::{db, hot};

pub async fn list(config: &Config, all: bool) -> anyhow::Result<()> {
    let pool = db::connect(&config.common.database_url, 1, false).await?;
    db::migrate(&pool).await?;
    let entries = tidemark_store::quarantine::list(&pool, all).await?;
    if entries.is_empty() {
        println!(
            "no quarantined messages{}",
            if all { "" } else { " wait for a replay" }
        );
        return Ok(());
    }
    println!("id\ttopic\tpartition\toffset\tbytes\tquarantined at\treplayed at\treason");
    for e in entries {
        println!(
            "{}\t{}\t{}\t{}\t{}\t{}\t{}\t{}",
            e.id,
            e.topic,
            e.partition,
            e.offset,
            e.bytes,
            format_instant(e.quarantined_at),
            e.replayed_at.map_or_else(|| "-".to_owned(), format_instant),
            e.reason
        );
    }
    Ok(())
}

/// Replays entry `id`, or every entry waiting when `id` is `None`. Fails when any entry
/// is still refused, so scripts notice.
pub async fn replay(config: &Config, id: Option<i64>) -> anyhow::Result<()> {
    let pool = db::connect(&config.common.database_url, 1, false).await?;
    db::migrate(&pool).await?;
    let ids = match id {
        Some(id) => vec![id],
        None => tidemark_store::quarantine::list(&pool, false)
            .await?
            .into_iter()
            .map(|e| e.id)
            .collect(),
    };
    let mut written = Vec::new();
    let mut refused = 0;
    for id in ids {
        match quarantine::replay(&pool, id).await? {
            Replayed::Applied { samples, buckets } => {
                println!(
                    "{id}: applied {samples} samples to {} buckets",
                    buckets.len()
                );
                written.extend(buckets);
            }
            Replayed::StillRefused(reason) => {
                refused += 1;
                println!("{id}: still refused, left in quarantine: {reason}");
            }
        }
    }
    if !written.is_empty() {
        match hot::Redis::connect(&config.common.redis_url).await {
            Ok(redis) => {
                let keys = hot::HotKeys::new(&config.common.topics.prefix);
                let hot: Vec<_> = written.iter().map(Written::row).collect();
                HotWriter::new(redis, keys, pool.clone())
                    .publish(&hot)
                    .await;
            }
            Err(e) => eprintln!(
                "warning: {e}; the Redis hot copy may show old values for up to two hours"
            ),
        }
    }
    anyhow::ensure!(
        refused == 0,
        "{refused} quarantined messages are still refused"
    );
    Ok(())
}
