//! A rolling window of one series: fine sub-windows (e.g. 10 s), each a [`Bucket`],
//! merged on demand into the [`Bucket`] of any recent range (rule evaluation over `1m`,
//! `5m`, up to the span; the live 5-minute health views).
//!
//! **Alignment.** Sub-windows are `[k·sub, (k+1)·sub)` in event time (Unix ms, UTC), so
//! 10 s sub-windows line up with minutes and hours. [`RollingWindow::summary`] works at
//! that granularity: a sub-window is in `[from, to)` when its *start* is, so the samples
//! summarised are those with event time in `[⌈from⌉, ⌈to⌉)`, both rounded up to a
//! sub-window boundary. The evaluator asks for `[at − window, at)` with `at` on a
//! boundary and `window` a multiple of `sub`, where the summary is exact.
//!
//! **Late samples** land by event time in their own sub-window, however late they
//! arrive, as long as that sub-window has not ended by `now − span`; a summary of a
//! range that holds them changes accordingly (the next evaluation sees them). Older
//! samples are dropped ([`RollingWindow::add`] says so): they are in the hourly buckets
//! anyway.
//!
//! **Samples ahead of `now`** (valid up to the ingest bound, 5 minutes by SPEC) are kept
//! in their sub-window too, and count once a summary's range reaches them. Pruning is
//! relative to `now` only, so they are never pruned early.
//!
//! **Memory bound.** Only sub-windows holding samples exist (a sorted deque), and every
//! [`RollingWindow::add`] forgets those that ended by `now − span`. A series thus holds
//! at most `⌈span/sub⌉ + 1 + ⌈ahead/sub⌉` sub-windows, `ahead` being how far samples run
//! ahead of `now` (`span/sub + 1` = 31 for 5m and 361 for 1h at 10 s, plus at most 30
//! for 5 minutes ahead). A sub-window takes `size_of::<SubWindow>()` (136 bytes on 64-bit
//! targets) plus its sketch's bins: 8 bytes a bin from the smallest to the largest value
//! of each sign, one bin per 2 % of magnitude (≈ 230 bins, 1.8 KiB, for values spanning
//! 10 ms to 1 s; at most 2 × 4096 bins). A sub-window's sketch gives back its spare
//! capacity when a newer sub-window starts (a late sample may grow it again).
//! [`RollingWindow::approx_bytes`] counts all of it, capacities included. Measured
//! (`benches/window.rs`, latency-like values): 1.0–2.5 KiB a sub-window at 1–100
//! samples/s, so 31–76 KiB a series for 5m and 0.38–0.9 MiB for 1h. A series that
//! stops receiving samples is forgotten by [`RollingWindow::prune`], which the owner
//! calls on its sweep.

use std::collections::VecDeque;
use std::mem::size_of;
use std::time::Duration;

use crate::bucket::Bucket;

/// The samples of one sub-window `[start_ms, start_ms + sub)`.
#[derive(Debug, Clone)]
struct SubWindow {
    start_ms: i64,
    bucket: Bucket,
}

/// Sub-windows of one series that hold samples, oldest first.
#[derive(Debug, Clone)]
pub struct RollingWindow {
    /// `span` rounded up to a multiple of `sub_ms`.
    span_ms: i64,
    sub_ms: i64,
    subs: VecDeque<SubWindow>,
}

/// Whole milliseconds of `d`, saturating at `i64::MAX`.
fn millis(d: Duration) -> i64 {
    i64::try_from(d.as_millis()).unwrap_or(i64::MAX)
}

impl RollingWindow {
    /// Keeps sub-windows of `sub` covering at least `span` back from the newest instant
    /// asked for (`span` is rounded up to a multiple of `sub`).
    ///
    /// # Panics
    /// If `sub` is shorter than a millisecond.
    pub fn new(span: Duration, sub: Duration) -> Self {
        let sub_ms = millis(sub);
        assert!(
            sub_ms > 0,
            "sub-windows must last at least 1 ms, not {sub:?}"
        );
        let span_ms = millis(span);
        let subs_in_span = span_ms / sub_ms + i64::from(span_ms % sub_ms != 0);
        let span_ms = subs_in_span.saturating_mul(sub_ms);
        Self {
            span_ms,
            sub_ms,
            subs: VecDeque::new(),
        }
    }

    /// How far back the window keeps sub-windows.
    pub fn span(&self) -> Duration {
        Duration::from_millis(self.span_ms.max(0) as u64)
    }

    /// Keeps at least `span` from now on (rounded up as in [`Self::new`]); a longer span
    /// holds only what is still here, a shorter one forgets at the next `add` or `prune`.
    pub fn set_span(&mut self, span: Duration) {
        self.span_ms = Self::new(span, Duration::from_millis(self.sub_ms as u64)).span_ms;
    }

    /// Adds a sample by its event time `ts_ms`, and forgets the sub-windows that ended
    /// by `now_ms − span`. A sample whose own sub-window ended by then is dropped and the
    /// call returns false (it is in the hourly buckets anyway). A sample that adds
    /// nothing to a bucket (`count == 0`, a non-finite value) creates no sub-window.
    pub fn add(&mut self, value: f64, count: u64, error: bool, ts_ms: i64, now_ms: i64) -> bool {
        let horizon = now_ms.saturating_sub(self.span_ms);
        self.prune(horizon);
        let start_ms = self.start_of(ts_ms);
        if self.end_of(start_ms) <= horizon {
            return false;
        }
        if count == 0 || !value.is_finite() {
            return true;
        }
        let at = self.subs.partition_point(|s| s.start_ms < start_ms);
        if self.subs.get(at).is_none_or(|s| s.start_ms != start_ms) {
            if at == self.subs.len() {
                // The stream moved on: the newest sub-window so far is all but complete.
                if let Some(newest) = self.subs.back_mut() {
                    newest.bucket.sketch.shrink_to_fit();
                }
            }
            let bucket = Bucket::default();
            self.subs.insert(at, SubWindow { start_ms, bucket });
        }
        self.subs[at].bucket.add(value, count, error, ts_ms);
        true
    }

    /// The merge of the sub-windows whose start is in `[from_ms, to_ms)`: the samples
    /// with event time in `[from_ms, to_ms)` when both are on sub-window boundaries (see
    /// the module doc). Empty (`Bucket::default()`) when there are none.
    pub fn summary(&self, from_ms: i64, to_ms: i64) -> Bucket {
        let lo = self.subs.partition_point(|s| s.start_ms < from_ms);
        let hi = self.subs.partition_point(|s| s.start_ms < to_ms).max(lo);
        let mut out = Bucket::default();
        for sub in self.subs.range(lo..hi) {
            out.merge(&sub.bucket);
        }
        out
    }

    /// Forgets sub-windows that ended by `before_ms` (every sample in them is earlier).
    pub fn prune(&mut self, before_ms: i64) {
        while self
            .subs
            .front()
            .is_some_and(|s| self.end_of(s.start_ms) <= before_ms)
        {
            self.subs.pop_front();
        }
    }

    /// Whether no sample is held (a series whose window is empty can be dropped).
    pub fn is_empty(&self) -> bool {
        self.subs.is_empty()
    }

    /// Bytes held, inline and on the heap (capacities, not lengths): the figure the
    /// memory bound in the module doc describes.
    pub fn approx_bytes(&self) -> usize {
        let sketches: usize = self.subs.iter().map(|s| s.bucket.sketch.heap_bytes()).sum();
        size_of::<Self>() + self.subs.capacity() * size_of::<SubWindow>() + sketches
    }

    /// Start of the sub-window holding `ts_ms` (saturating at the ends of `i64`).
    fn start_of(&self, ts_ms: i64) -> i64 {
        ts_ms.div_euclid(self.sub_ms).saturating_mul(self.sub_ms)
    }

    fn end_of(&self, start_ms: i64) -> i64 {
        start_ms.saturating_add(self.sub_ms)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;
    use tidemark_sketch::nearest_rank;

    const SEC: i64 = 1_000;
    const MIN: i64 = 60 * SEC;

    fn window(span_ms: i64, sub_ms: i64) -> RollingWindow {
        let ms = |v: i64| Duration::from_millis(v as u64);
        RollingWindow::new(ms(span_ms), ms(sub_ms))
    }

    fn starts(w: &RollingWindow) -> Vec<i64> {
        w.subs.iter().map(|s| s.start_ms).collect()
    }

    #[test]
    fn an_empty_window_summarises_to_an_empty_bucket() {
        let mut w = window(5 * MIN, 10 * SEC);
        assert!(w.is_empty());
        assert_eq!(w.summary(i64::MIN, i64::MAX), Bucket::default());
        assert!(
            w.add(7.0, 0, false, 0, 0),
            "in the span, though it adds nothing"
        );
        assert!(w.add(f64::NAN, 1, false, 0, 0));
        assert!(w.is_empty(), "nothing to add makes no sub-window");
        w.add(7.0, 1, false, 0, 0);
        let empty = w.summary(10 * SEC, 20 * SEC);
        assert!(empty.is_empty());
        assert_eq!(empty.quantile(0.99), None);
        w.prune(10 * SEC);
        assert!(w.is_empty());
    }

    #[test]
    fn late_samples_land_in_their_own_sub_window() {
        let mut w = window(5 * MIN, 10 * SEC);
        let now = 100 * MIN;
        assert!(w.add(1.0, 1, false, now - SEC, now));
        assert!(w.add(5.0, 2, true, now - 4 * MIN - 5 * SEC, now));
        assert_eq!(starts(&w), [now - 4 * MIN - 10 * SEC, now - 10 * SEC]);
        let late = w.summary(now - 4 * MIN - 10 * SEC, now - 4 * MIN);
        assert_eq!((late.count, late.error_count, late.sum), (2, 2, 10.0));
        assert_eq!(late.last_at_ms, now - 4 * MIN - 5 * SEC);
        assert_eq!(w.summary(now - 5 * MIN, now).count, 3);
        assert_eq!(w.summary(now - MIN, now).count, 1);
    }

    #[test]
    fn samples_older_than_the_span_are_dropped() {
        let mut w = window(5 * MIN, 10 * SEC);
        let now = 100 * MIN;
        assert!(w.add(1.0, 1, false, now - 5 * MIN, now), "the oldest kept");
        assert!(!w.add(1.0, 1, false, now - 5 * MIN - 1, now));
        assert!(!w.add(1.0, 1, false, now - 3 * 60 * MIN, now));
        assert_eq!(starts(&w), [now - 5 * MIN]);
        // With `now` inside a sub-window, the sub-window holding `now − span` is kept
        // whole: its samples are dropped only once all of it is older than the span.
        let now = now + 4 * SEC;
        assert!(w.add(2.0, 1, false, now - 5 * MIN - 3 * SEC, now));
        assert!(!w.add(2.0, 1, false, now - 5 * MIN - 5 * SEC, now));
        assert_eq!(w.summary(now - 5 * MIN - 4 * SEC, now).count, 2);
    }

    #[test]
    fn samples_ahead_of_now_wait_in_their_sub_window() {
        let mut w = window(MIN, 10 * SEC);
        let now = 100 * MIN;
        assert!(w.add(3.0, 1, false, now + 4 * MIN + 1, now));
        assert!(w.add(1.0, 1, false, now - SEC, now));
        assert_eq!(
            w.summary(now - MIN, now).count,
            1,
            "not yet in [now − 1m, now)"
        );
        assert!(w.add(1.0, 1, false, now + 2 * MIN - SEC, now + 2 * MIN));
        let kept = [now + 2 * MIN - 10 * SEC, now + 4 * MIN];
        assert_eq!(starts(&w), kept, "pruned relative to now only");
        let later = now + 5 * MIN;
        let at_its_time = w.summary(later - MIN, later);
        assert_eq!((at_its_time.count, at_its_time.max), (1, 3.0));
    }

    #[test]
    fn prune_forgets_sub_windows_that_ended_before() {
        let mut w = window(MIN, 10 * SEC);
        for ts in [0, 9_999, 10_000, 25_000] {
            w.add(1.0, 1, false, ts, 30 * SEC);
        }
        assert_eq!(starts(&w), [0, 10_000, 20_000]);
        w.prune(9_999);
        assert_eq!(starts(&w), [0, 10_000, 20_000], "[0, 10 s) has not ended");
        w.prune(10_000);
        assert_eq!(starts(&w), [10_000, 20_000]);
        w.prune(25_000);
        assert_eq!(starts(&w), [20_000]);
        assert_eq!(w.summary(0, i64::MAX).count, 1);
        w.prune(30_000);
        assert!(w.is_empty());
    }

    #[test]
    fn a_span_is_rounded_up_to_whole_sub_windows() {
        let mut w = window(25 * SEC, 10 * SEC);
        let now = 100 * SEC;
        assert!(
            w.add(1.0, 1, false, now - 30 * SEC, now),
            "30 s kept of a 25 s span"
        );
        assert!(!w.add(1.0, 1, false, now - 30 * SEC - 1, now));
    }

    #[test]
    fn summaries_out_of_order_or_outside_are_empty() {
        let mut w = window(MIN, 10 * SEC);
        w.add(1.0, 1, false, 15 * SEC, 20 * SEC);
        assert!(w.summary(20 * SEC, 10 * SEC).is_empty(), "to before from");
        assert!(
            w.summary(11 * SEC, 20 * SEC).is_empty(),
            "[10 s, 20 s) starts before"
        );
        assert!(w.summary(20 * SEC, 30 * SEC).is_empty());
        assert_eq!(w.summary(10 * SEC, 11 * SEC).count, 1);
    }

    #[test]
    fn extreme_instants_saturate_without_panicking() {
        let mut w = window(MIN, 10 * SEC);
        assert!(!w.add(1.0, 1, false, i64::MIN, 0));
        assert!(w.add(2.0, 1, false, i64::MAX, 0));
        assert!(w.add(3.0, 1, false, i64::MIN, i64::MIN));
        assert!(
            !w.add(3.0, 1, false, 0, i64::MAX),
            "pruned all but the newest"
        );
        assert_eq!(w.summary(i64::MIN, i64::MAX).max, 2.0);
        let mut huge = RollingWindow::new(Duration::MAX, Duration::from_secs(10));
        assert!(huge.add(1.0, 1, false, i64::MIN + 1, 0));
        assert!(!huge.add(1.0, 1, false, i64::MIN + 1, i64::MAX));
    }

    #[test]
    fn an_hour_at_ten_second_sub_windows_stays_bounded() {
        let mut w = window(60 * MIN, 10 * SEC);
        let start = 1_790_000_000_000;
        let mut peak_bytes = 0;
        for s in 0..2 * 3600 {
            let ts = start + s * SEC;
            let latency = 5.0 + (s % 300) as f64;
            assert!(w.add(latency, 1, s % 50 == 0, ts, ts));
            assert!(w.subs.len() <= 361, "{} sub-windows", w.subs.len());
            peak_bytes = peak_bytes.max(w.approx_bytes());
        }
        let now = start + 2 * 3600 * SEC;
        let hour = w.summary(now - 60 * MIN, now);
        assert_eq!((hour.count, hour.error_count), (3600, 72));
        assert_eq!((hour.min, hour.max), (5.0, 304.0));
        // The last add was at `now − 1 s`: the sub-window holding `now − 1h − 1 s`
        // had not ended by then, so it is kept until pruned.
        assert_eq!(w.summary(i64::MIN, now - 60 * MIN).count, 10);
        w.prune(now - 60 * MIN);
        assert!(w.summary(i64::MIN, now - 60 * MIN).is_empty());
        assert_eq!(w.subs.len(), 360);
        // A deque of at most 512 slots; a sub-window's values v..v+9 (v ≥ 5) span at
        // most 52 bins of 2 %, held in at most twice that capacity.
        let bound = size_of::<RollingWindow>() + 512 * size_of::<SubWindow>() + 361 * 2 * 52 * 8;
        assert!(peak_bytes <= bound, "{peak_bytes} > {bound} bytes");
    }

    #[test]
    fn bytes_count_the_sketch_bins() {
        let mut narrow = window(MIN, 10 * SEC);
        let mut wide = window(MIN, 10 * SEC);
        narrow.add(1.0, 1, false, 0, 0);
        narrow.add(1.001, 1, false, 0, 0);
        wide.add(1.0, 1, false, 0, 0);
        wide.add(1e6, 1, false, 0, 0);
        // 1 to 1e6 spans ln(1e6)/ln(1.01/0.99) ≈ 691 bins of 8 bytes.
        assert!(wide.approx_bytes() >= narrow.approx_bytes() + 680 * 8);
    }

    #[test]
    fn a_sub_window_gives_back_spare_capacity_when_the_next_starts() {
        let mut w = window(MIN, 10 * SEC);
        for i in 0..100 {
            w.add(1.03f64.powi(i), 1, false, 0, 0);
        }
        let (before, summary) = (w.subs[0].bucket.sketch.heap_bytes(), w.summary(0, 1));
        w.add(1.0, 1, false, 10 * SEC, 10 * SEC);
        let after = w.subs[0].bucket.sketch.heap_bytes();
        assert!(after < before, "{after} bytes, {before} before");
        assert!(after >= 146 * 8, "1.03^99 spans 146 bins");
        assert_eq!(w.summary(0, 1), summary);
    }

    /// `(value, count, error, ts_ms)` as [`RollingWindow::add`] takes them.
    type Obs = (f64, u64, bool, i64);

    #[derive(Debug, Clone)]
    enum Op {
        /// Advances `now` by `.0` ms (whole seconds, so that `now` stays on boundaries
        /// of whole-second sub-windows) and adds a sample `.1` ms away from it.
        Add(i64, i64, f64, u64, bool),
        /// Prunes at `now` minus `.0` ms.
        Prune(i64),
    }

    /// The naive model: every kept sample, by the rules of the module doc.
    struct Reference {
        span_ms: i64,
        sub_ms: i64,
        held: Vec<Obs>,
    }

    impl Reference {
        fn start(&self, ts: i64) -> i64 {
            ts.div_euclid(self.sub_ms) * self.sub_ms
        }

        fn prune(&mut self, before: i64) {
            let (sub, held) = (self.sub_ms, std::mem::take(&mut self.held));
            self.held = held
                .into_iter()
                .filter(|o| self.start(o.3) + sub > before)
                .collect();
        }

        fn add(&mut self, obs: Obs, now: i64) -> bool {
            self.prune(now - self.span_ms);
            if self.start(obs.3) + self.sub_ms <= now - self.span_ms {
                return false;
            }
            self.held.push(obs);
            true
        }

        fn within(&self, from: i64, to: i64) -> Vec<Obs> {
            let range = from..to;
            self.held
                .iter()
                .filter(|o| range.contains(&self.start(o.3)))
                .copied()
                .collect()
        }
    }

    /// Milliseconds in `range`, half of them whole seconds, so that instants often fall
    /// on sub-window boundaries.
    fn ms(range: std::ops::Range<i64>) -> impl Strategy<Value = i64> {
        let seconds = range.start / SEC..range.end / SEC;
        prop_oneof![range, seconds.prop_map(|s| s * SEC)]
    }

    fn op() -> impl Strategy<Value = Op> {
        prop_oneof![
            8 => (
                (0..20i64).prop_map(|s| s * SEC),
                ms(-8 * MIN..5 * MIN),
                (-1000i32..1000).prop_map(f64::from),
                1..20u64,
                any::<bool>(),
            )
                .prop_map(|(dt, off, v, c, e)| Op::Add(dt, off, v, c, e)),
            1 => ms(0..8 * MIN).prop_map(Op::Prune),
        ]
    }

    fn config(cases: u32) -> ProptestConfig {
        ProptestConfig {
            cases,
            failure_persistence: None,
            ..ProptestConfig::default()
        }
    }

    proptest! {
        #![proptest_config(config(256))]

        #[test]
        fn summaries_equal_the_naive_reference(
            span_ms in ms(0..7 * MIN),
            sub_ms in ms(1..30 * SEC).prop_map(|ms| ms.max(1)),
            ops in prop::collection::vec(op(), 0..120),
            queries in prop::collection::vec((-9 * MIN..6 * MIN, 0..10 * MIN, any::<bool>()), 1..8),
        ) {
            let mut w = window(span_ms, sub_ms);
            let span_ms = span_ms.div_euclid(sub_ms) * sub_ms
                + if span_ms % sub_ms == 0 { 0 } else { sub_ms };
            let mut reference = Reference { span_ms, sub_ms, held: Vec::new() };
            let mut now = 1_790_000_000_000;
            for op in ops {
                match op {
                    Op::Add(dt, off, v, c, e) => {
                        now += dt;
                        let obs = (v, c, e, now + off);
                        prop_assert_eq!(w.add(v, c, e, now + off, now), reference.add(obs, now));
                    }
                    Op::Prune(back) => {
                        w.prune(now - back);
                        reference.prune(now - back);
                    }
                }
            }
            prop_assert_eq!(w.is_empty(), reference.held.is_empty());
            let held = starts(&w);
            prop_assert!(held.windows(2).all(|p| p[0] < p[1]), "sorted, one per start");
            let up_to_now = held.iter().filter(|&&s| s <= now).count() as i64;
            prop_assert!(up_to_now <= span_ms / sub_ms + 1);
            let all = [(i64::MIN, i64::MAX)];
            // Half the queries on sub-window boundaries, as the evaluator asks.
            let align = |t: i64, on_boundary: bool| {
                if on_boundary { t.div_euclid(sub_ms) * sub_ms } else { t }
            };
            let queries = queries.iter().map(|&(from, len, on_boundary)| {
                (align(now + from, on_boundary), align(now + from + len, on_boundary))
            });
            for (from, to) in all.into_iter().chain(queries) {
                let got = w.summary(from, to);
                let want = reference.within(from, to);
                prop_assert_eq!(got.count, want.iter().map(|o| o.1).sum::<u64>());
                let errors = want.iter().filter(|o| o.2).map(|o| o.1).sum::<u64>();
                prop_assert_eq!(got.error_count, errors);
                // Whole values and small counts: every sum is exact in any order.
                prop_assert_eq!(got.sum, want.iter().map(|o| o.0 * o.1 as f64).sum::<f64>());
                let min = want.iter().map(|o| o.0).fold(f64::INFINITY, f64::min);
                let max = want.iter().map(|o| o.0).fold(f64::NEG_INFINITY, f64::max);
                prop_assert_eq!((got.min, got.max), (min, max));
                let last = want.iter().map(|o| o.3).max().unwrap_or(i64::MIN);
                prop_assert_eq!(got.last_at_ms, last);
                let mut folded = Bucket::default();
                for &(v, c, e, t) in &want {
                    folded.add(v, c, e, t);
                }
                prop_assert_eq!(&got.sketch, &folded.sketch);
            }
        }
    }

    proptest! {
        #![proptest_config(config(64))]

        #[test]
        fn merged_quantiles_are_within_one_percent_of_nearest_rank(
            samples in prop::collection::vec(
                ((-3.0f64..9.0).prop_map(f64::exp), 1..4u64, 0..20 * MIN),
                1..600,
            ),
            from in 0..20 * MIN,
            len in 10 * SEC..20 * MIN,
        ) {
            let mut w = window(60 * MIN, 10 * SEC);
            let now = 20 * MIN;
            for &(v, c, ts) in &samples {
                prop_assert!(w.add(v, c, false, ts, now));
            }
            let (from, to) = (from / (10 * SEC) * 10 * SEC, from + len);
            let to = to.div_euclid(10 * SEC) * 10 * SEC;
            let mut exact: Vec<(f64, u64)> = samples
                .iter()
                .filter(|s| (from..to).contains(&s.2))
                .map(|s| (s.0, s.1))
                .collect();
            exact.sort_by(|a, b| a.0.total_cmp(&b.0));
            let n: u64 = exact.iter().map(|e| e.1).sum();
            let summary = w.summary(from, to);
            prop_assert_eq!(summary.count, n);
            for q in [0.0, 0.01, 0.5, 0.9, 0.95, 0.99, 1.0] {
                let Some(estimate) = summary.quantile(q) else {
                    prop_assert_eq!(n, 0);
                    continue;
                };
                let rank = nearest_rank(q, n);
                let mut seen = 0;
                let (exact, _) = *exact
                    .iter()
                    .find(|e| {
                        seen += e.1;
                        seen > rank
                    })
                    .unwrap();
                let error = ((estimate - exact) / exact).abs();
                prop_assert!(error <= 0.01 + 1e-12, "q{}: {} vs exact {}", q, estimate, exact);
            }
        }
    }
}
