//! Memory and timing of a series' [`RollingWindow`] at 10 s sub-windows: bytes per
//! series for spans of 5m and 1h filled at 1, 10 and 100 samples/s with latency-like
//! values, then nanoseconds per `add` (in order and late) and per `summary` of the
//! last 5 minutes. Prints figures, asserts nothing:
//!
//! ```text
//! cargo bench -p tidemark-model --bench window
//! ```

use std::hint::black_box;
use std::time::{Duration, Instant};

use rand::rngs::StdRng;
use rand::{Rng, SeedableRng};
use tidemark_model::RollingWindow;

const SUB: Duration = Duration::from_secs(10);
const SUB_MS: i64 = 10_000;
const FIVE_MIN_MS: i64 = 300_000;
/// 2026-09-21T14:13:20Z, a sub-window boundary, where evaluations happen.
const START_MS: i64 = 1_790_000_000_000;

fn standard_normal(rng: &mut StdRng) -> f64 {
    let u: f64 = 1.0 - rng.gen::<f64>();
    let v: f64 = rng.gen();
    (-2.0 * u.ln()).sqrt() * (std::f64::consts::TAU * v).cos()
}

/// Request latency in ms: lognormal around 40 ms, with 3 % slow requests around 400 ms.
fn latency(rng: &mut StdRng) -> f64 {
    let (median, sigma) = if rng.gen_bool(0.03) {
        (400.0, 0.8)
    } else {
        (40.0, 0.6)
    };
    median * (sigma * standard_normal(rng)).exp()
}

/// One sample every `1000 / per_s` ms of event time from `from_ms` for `for_ms`, each
/// `add`ed with `now` at its own time, 1 % of them errors.
fn fill(w: &mut RollingWindow, rng: &mut StdRng, per_s: i64, from_ms: i64, for_ms: i64) {
    let step = 1_000 / per_s;
    for i in 0..for_ms / step {
        let ts = from_ms + i * step;
        w.add(latency(rng), 1, rng.gen_bool(0.01), ts, ts);
    }
}

/// A window of `span` filled at `per_s` for its span plus a minute, `now` on a boundary.
fn filled(span: Duration, per_s: i64, rng: &mut StdRng) -> (RollingWindow, i64) {
    let mut w = RollingWindow::new(span, SUB);
    let for_ms = span.as_millis() as i64 + 60_000;
    fill(&mut w, rng, per_s, START_MS, for_ms);
    (w, START_MS + for_ms)
}

/// Median of `values` (sorted in place).
fn median(values: &mut [f64]) -> f64 {
    values.sort_by(f64::total_cmp);
    values[values.len() / 2]
}

/// Median over `rounds` of the nanoseconds per call of `f`, called `calls` times a round.
fn ns_per_call(rounds: usize, calls: u64, mut f: impl FnMut(u64)) -> f64 {
    let mut per_call: Vec<f64> = (0..rounds)
        .map(|_| {
            let start = Instant::now();
            for i in 0..calls {
                f(i);
            }
            start.elapsed().as_nanos() as f64 / calls as f64
        })
        .collect();
    median(&mut per_call)
}

fn main() {
    let mut rng = StdRng::seed_from_u64(0x71de_3d0e);
    println!("bytes per series (RollingWindow::approx_bytes), 10 s sub-windows:");
    for (name, span) in [("5m", 300), ("1h", 3_600)] {
        let span = Duration::from_secs(span);
        for per_s in [1, 10, 100] {
            let (w, _) = filled(span, per_s, &mut rng);
            let bytes = w.approx_bytes();
            let subs = span.as_millis() as i64 / SUB_MS + 1;
            println!(
                "  span {name}, {per_s:>3} samples/s: {bytes:>9} B ({:>6.1} KiB, {:>5} B per sub-window of {subs})",
                bytes as f64 / 1024.0,
                bytes as i64 / subs,
            );
        }
    }

    const ROUNDS: usize = 11;
    println!("ns per call, median of {ROUNDS} rounds:");
    for per_s in [1, 10, 100] {
        let (mut w, now) = filled(Duration::from_secs(3_600), per_s, &mut rng);
        let values: Vec<f64> = (0..4096).map(|_| latency(&mut rng)).collect();
        let value = |i: u64| values[i as usize % values.len()];
        let step = 1_000 / per_s as u64;
        // Continues the stream in order, at the same rate, `now` following.
        let mut next = now;
        let in_order = ns_per_call(ROUNDS, 100_000, |i| {
            let ts = next + (i * step) as i64;
            black_box(w.add(value(i), 1, false, ts, ts));
        });
        next += (ROUNDS as u64 * 100_000 * step) as i64;
        // Up to a minute late, into sub-windows that already exist.
        let late = ns_per_call(ROUNDS, 100_000, |i| {
            let ts = next - 1 - (i * 7_919 % 60_000) as i64;
            black_box(w.add(value(i), 1, false, ts, next));
        });
        let at = next.div_euclid(SUB_MS) * SUB_MS;
        let summary = ns_per_call(ROUNDS, 2_000, |_| {
            black_box(w.summary(black_box(at - FIVE_MIN_MS), at));
        });
        println!(
            "  span 1h, {per_s:>3} samples/s: add in order {in_order:6.1} ns, add ≤ 1 min late {late:6.1} ns, summary(5m) {summary:8.0} ns",
        );
    }
}
