//! A property test of the whole pipeline on the external broker: samples drawn from
//! everything ingest accepts (any Unicode but U+0000 in tag values, the widest names,
//! sixteen tags, extreme finite values, counts up to `i64::MAX`, timestamps across the
//! accepted age) are pushed through ingest, the broker and the aggregator into Postgres
//! and Redis, and each acknowledged sample must be stored exactly. One pipeline serves
//! every case; each case writes its own service, so its buckets are checked apart.

use std::collections::BTreeMap;
use std::time::{Duration, Instant};

use proptest::prelude::*;
use proptest::strategy::ValueTree;
use proptest::test_runner::{Config, TestRunner};
use serde_json::{json, Value};

use crate::support::{stored_buckets, Pipeline, SeriesKey};

/// One accepted sample, as generated.
#[derive(Debug, Clone)]
struct Gen {
    metric: String,
    value: f64,
    count: i64,
    error: bool,
    age_ms: i64,
    tags: BTreeMap<String, String>,
}

fn name(extra: &'static str, max: usize) -> impl Strategy<Value = String> {
    let chars: Vec<char> = ('a'..='z')
        .chain('A'..='Z')
        .chain('0'..='9')
        .chain("._-".chars())
        .chain(extra.chars())
        .collect();
    prop::collection::vec(prop::sample::select(chars), 1..=max).prop_map(String::from_iter)
}

fn tag_value() -> impl Strategy<Value = String> {
    let ch = any::<char>().prop_filter("U+0000 is refused", |c| *c != '\0');
    prop_oneof![
        prop::collection::vec(ch.clone(), 0..8).prop_map(String::from_iter),
        prop::collection::vec(ch, 256..=256).prop_map(String::from_iter),
    ]
}

fn value() -> impl Strategy<Value = f64> {
    prop_oneof![
        -1e6..1e6f64,
        prop::num::f64::NORMAL | prop::num::f64::SUBNORMAL | prop::num::f64::ZERO,
        Just(f64::MAX),
        Just(f64::MIN),
        Just(f64::MIN_POSITIVE),
    ]
}

fn sample() -> impl Strategy<Value = Gen> {
    (
        // A few metrics per case, so samples share series and buckets.
        prop_oneof![Just("m".to_owned()), Just("n:x".to_owned()), name(":", 128)],
        value(),
        prop_oneof![
            Just(1i64),
            1..1000i64,
            Just(i64::MAX),
            (i64::MAX - 3)..=i64::MAX
        ],
        any::<bool>(),
        // Within the accepted 7 days, a margin off both ends.
        0..(7 * 86_400_000 - 600_000i64),
        prop::collection::btree_map(name("", 64), tag_value(), 0..=16),
    )
        .prop_map(|(metric, value, count, error, age_ms, tags)| Gen {
            metric,
            value,
            count,
            error,
            age_ms,
            tags,
        })
}

/// What the stores should hold for one series and hour.
#[derive(Debug, Default)]
struct Want {
    count: u64,
    errors: u64,
    sum: f64,
    min: f64,
    max: f64,
    /// The exact sum left what an f64 holds at some point.
    overflowed: bool,
}

/// The documented bucket arithmetic: counts saturate at `i64::MAX`, the bound Postgres's
/// `bigint` holds.
fn expected(service: &str, samples: &[(Gen, i64)]) -> BTreeMap<(SeriesKey, i64), Want> {
    let cap = i64::MAX as u64;
    let mut out: BTreeMap<(SeriesKey, i64), Want> = BTreeMap::new();
    for (g, ts) in samples {
        let key = SeriesKey {
            service: service.to_owned(),
            metric: g.metric.clone(),
            tags: g.tags.clone(),
        };
        let w = out
            .entry((key, tidemark_model::bucket::hour_start(*ts)))
            .or_insert(Want {
                min: f64::INFINITY,
                max: f64::NEG_INFINITY,
                ..Want::default()
            });
        let count = g.count as u64;
        w.count = w.count.saturating_add(count).min(cap);
        if g.error {
            w.errors = w.errors.saturating_add(count).min(cap);
        }
        w.sum += g.value * count as f64;
        w.overflowed |= !w.sum.is_finite();
        w.min = w.min.min(g.value);
        w.max = w.max.max(g.value);
    }
    out
}

/// Whether a stored sum matches the exact one: within rounding, the order of additions
/// being the aggregator's. A sum that went past what an f64 holds is stored held within
/// ±f64::MAX (`Bucket::add`), where the order of additions decides the value.
fn close(stored: f64, want: &Want) -> bool {
    if want.overflowed {
        return stored.is_finite();
    }
    stored == want.sum || (stored - want.sum).abs() <= 1e-9 * stored.abs().max(want.sum.abs())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn every_accepted_sample_is_stored_exactly() {
    let p = Pipeline::new(&[]).await;
    let _ingest = p.start("ingest").await;
    let _aggregator = p.start("aggregator").await;
    let client = reqwest::Client::new();
    let mut runner = TestRunner::new(Config {
        cases: 24,
        failure_persistence: None,
        ..Config::default()
    });
    let strategy = prop::collection::vec(sample(), 1..40);
    for case in 0..24 {
        let samples = strategy.new_tree(&mut runner).expect("a case").current();
        let service = format!("prop-{case}");
        let now = chrono::Utc::now().timestamp_millis();
        let stamped: Vec<(Gen, i64)> = samples
            .into_iter()
            .map(|g| {
                let ts = now - g.age_ms;
                (g, ts)
            })
            .collect();
        let body: Vec<Value> = stamped
            .iter()
            .map(|(g, ts)| {
                json!({"service": service, "metric": g.metric, "value": g.value,
                       "count": g.count, "error": g.error, "timestamp": ts, "tags": g.tags})
            })
            .collect();
        let response = client
            .post(format!("http://{}/v1/samples", p.ingest))
            .bearer_auth(&p.token)
            .json(&body)
            .send()
            .await
            .unwrap();
        let status = response.status();
        let text = response.text().await.unwrap();
        assert_eq!(
            status, 202,
            "case {case}: every generated sample is valid: {text}"
        );

        let want = expected(&service, &stamped);
        let deadline = Instant::now() + Duration::from_secs(60);
        loop {
            let stored: BTreeMap<_, _> = stored_buckets(&p.pool)
                .await
                .into_iter()
                .filter(|((k, _), _)| k.service == service)
                .collect();
            let complete = stored.len() == want.len()
                && want
                    .iter()
                    .all(|(k, w)| stored.get(k).is_some_and(|s| s.count == w.count));
            if complete {
                for (key, w) in &want {
                    let s = &stored[key];
                    assert_eq!(
                        (s.count, s.errors, s.min, s.max),
                        (w.count, w.errors, w.min, w.max),
                        "case {case}: {key:?}"
                    );
                    assert!(
                        close(s.sum, w),
                        "case {case}: {key:?} sum {} != {}",
                        s.sum,
                        w.sum
                    );
                    assert_eq!(
                        s.sketch_count, s.count,
                        "case {case}: the sketch holds every sample"
                    );
                }
                break;
            }
            assert!(
                Instant::now() < deadline,
                "case {case}: {} of {} series-hours stored in full after 60 s",
                want.iter()
                    .filter(|(k, w)| stored.get(*k).is_some_and(|s| s.count == w.count))
                    .count(),
                want.len()
            );
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
    }
}
