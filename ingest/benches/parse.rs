//! Timing of request decoding on a 100-sample body shaped like the benchmark's: the
//! fast path against serde_json, which decodes the same body when its first sample
//! holds an escape (the fast path gives up on it at once). Then validation, which
//! follows either, and gunzip of the same body for `Content-Encoding: gzip`. Prints medians and the ratio measured in the same run:
//!
//! ```text
//! cargo bench -p tidemark-ingest --bench parse
//! ```

use std::hint::black_box;
use std::time::{Duration, Instant};

use std::io::Write;
use tidemark_model::sample::TimeBounds;

use tidemark_ingest::parse::{decode_body, decode_samples};

const NOW: i64 = 1_790_000_000_000;

fn body(escape_first: bool) -> Vec<u8> {
    let metrics = [
        "http.server.duration",
        "http.server.request.size",
        "db.pool.usage",
    ];
    let samples: Vec<String> = (0..100)
        .map(|i| {
            let service = if escape_first && i == 0 {
                r"svc\u002d00".to_owned()
            } else {
                format!("svc-{:02}", i / 60)
            };
            format!(
                r#"{{"service":"{service}","metric":"{}","value":{}.{:02},"timestamp":{},"tags":{{"endpoint":"/api/e{:02}"}}}}"#,
                metrics[i % 3],
                (i * 7919) % 500,
                i % 100,
                NOW - 60_000 + i as i64,
                (i % 60) / 3
            )
        })
        .collect();
    format!("[{}]", samples.join(",")).into_bytes()
}

/// Median time of `f` over 41 rounds of `iters` calls.
fn median(iters: u32, mut f: impl FnMut()) -> Duration {
    let mut rounds: Vec<Duration> = (0..41)
        .map(|_| {
            let start = Instant::now();
            for _ in 0..iters {
                f();
            }
            start.elapsed() / iters
        })
        .collect();
    rounds.sort();
    rounds[rounds.len() / 2]
}

fn main() {
    let fast_body = body(false);
    let serde_body = body(true);
    let bounds = TimeBounds {
        now_ms: NOW,
        max_age: Duration::from_secs(86_400),
        max_future: Duration::from_secs(300),
    };
    let decode = |b: &[u8]| drop(black_box(decode_samples(black_box(b)).expect("valid body")));
    let fast = median(2_000, || {
        decode(&fast_body);
    });
    let serde = median(2_000, || {
        decode(&serde_body);
    });
    let mut gz = flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::new(6));
    gz.write_all(&fast_body).expect("in memory");
    let gz = gz.finish().expect("in memory");
    let gunzip = median(2_000, || {
        drop(black_box(
            decode_body(Some("gzip"), black_box(&gz), 1 << 20).expect("valid gzip"),
        ));
    });
    let raw = decode_samples(&fast_body).expect("valid body");
    let validate = median(2_000, || {
        black_box(raw.validate(bounds).expect("valid samples"));
    });
    println!(
        "100-sample body of {} bytes, median per body:",
        fast_body.len()
    );
    println!("  decode, fast path   {:>9.2} µs", fast.as_secs_f64() * 1e6);
    println!(
        "  decode, serde_json  {:>9.2} µs",
        serde.as_secs_f64() * 1e6
    );
    println!(
        "  validate            {:>9.2} µs",
        validate.as_secs_f64() * 1e6
    );
    println!(
        "  gunzip of {} bytes {:>9.2} µs",
        gz.len(),
        gunzip.as_secs_f64() * 1e6
    );
    println!(
        "  fast / serde_json   {:>9.2}",
        fast.as_secs_f64() / serde.as_secs_f64()
    );
}
