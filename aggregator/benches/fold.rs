//! Timing of the aggregator's per-message work on a 100-sample batch: decoding alone,
//! and all of it (`PartitionState::apply_guarded`: decode, check every sample by
//! ingest's rules, fold, with a panic contained), so the difference is what checking and
//! folding cost. Prints medians and the ratio measured in the same run, rounds
//! interleaved:
//!
//! ```text
//! cargo bench -p tidemark-aggregator --bench fold
//! ```

use std::collections::BTreeMap;
use std::hint::black_box;
use std::time::Instant;

use tidemark_aggregator::state::{Fence, PartitionState, SeriesCache};
use tidemark_schemas::{encode_sample_batch, with_sample_batch, SampleBatch, WireSample};

/// 100 samples over 4 services, 4 metrics and 1–3 tags, as ingest publishes them.
fn message() -> Vec<u8> {
    let samples = (0..100)
        .map(|i| WireSample {
            service: ["checkout", "payments-api", "search", "auth"][i % 4].to_owned(),
            metric: [
                "http.server.duration",
                "db.query",
                "cache.hit",
                "queue.depth",
            ][i / 7 % 4]
                .to_owned(),
            value: 0.25 + i as f64 * 13.7,
            count: 1 + (i as i64 % 5),
            error: i % 11 == 0,
            timestamp: 1_790_000_000_000 + i as i64 * 37,
            tags: (0..=i % 3)
                .map(|t| {
                    (
                        ["region", "host", "route"][t].to_owned(),
                        format!("value-{}", i % 17),
                    )
                })
                .collect::<BTreeMap<_, _>>(),
        })
        .collect();
    encode_sample_batch(&SampleBatch {
        batch_id: "6f1c2a9e-3b7d-4c1e-9a55-0d2f8b7e4c31".to_owned(),
        produced_at: 1_790_000_004_000,
        samples,
        chunks: vec![],
    })
    .unwrap()
}

/// Median of `values` (sorted in place).
fn median(values: &mut [f64]) -> f64 {
    values.sort_by(f64::total_cmp);
    values[values.len() / 2]
}

/// Microseconds per message of `apply`, over `messages` messages folded into one state
/// (as between two flushes), the state starting fresh each round.
fn time_us(messages: i64, mut apply: impl FnMut(&mut PartitionState, i64)) -> f64 {
    let mut state = PartitionState::new(Fence::Absent, 0);
    let start = Instant::now();
    for offset in 0..messages {
        apply(&mut state, offset);
    }
    let us = start.elapsed().as_secs_f64() * 1e6 / messages as f64;
    black_box(state);
    us
}

fn main() {
    const ROUNDS: usize = 21;
    const MESSAGES: i64 = 2_000;
    let message = message();
    let mut series = SeriesCache::default();
    let (mut old, mut new, mut ratio) = (Vec::new(), Vec::new(), Vec::new());
    for _ in 0..ROUNDS {
        let o = time_us(MESSAGES, |_, _| {
            black_box(with_sample_batch(black_box(&message), |b| b.samples.len())).unwrap();
        });
        let n = time_us(MESSAGES, |st, offset| {
            black_box(st.apply_guarded(offset, black_box(&message), &mut series, None)).unwrap();
        });
        ratio.push(n / o);
        old.push(o);
        new.push(n);
    }
    println!("per 100-sample message, median of {ROUNDS} rounds of {MESSAGES} messages:");
    println!(
        "  decode                                  {:7.2} µs",
        median(&mut old)
    );
    println!(
        "  decode + check + fold, panic contained  {:7.2} µs",
        median(&mut new)
    );
    println!(
        "  all / decode                            {:7.3}",
        median(&mut ratio)
    );
}
