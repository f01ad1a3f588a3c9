//! An hourly bucket of one series: exact count, error count, sum, min, max, the time of
//! the latest sample, and a mergeable quantile sketch. Buckets fold samples and merge
//! with each other; merging is how hours combine into days and how a flush combines
//! with what Postgres already holds.

use tidemark_sketch::Sketch;

pub const HOUR_MS: i64 = 3_600_000;

/// The start (Unix ms) of the UTC hour holding `ts_ms`.
pub fn hour_start(ts_ms: i64) -> i64 {
    ts_ms.div_euclid(HOUR_MS) * HOUR_MS
}

/// The largest `count` (and `error_count`) a bucket holds: what a Postgres `bigint`
/// stores. Bucket arithmetic saturates here rather than wrapping or panicking (a panic
/// would halt aggregation, a wrapped count would be stored as a small or negative one).
/// The sketch's total saturates at the same bound, so `sketch.count() == count`.
pub const MAX_COUNT: u64 = tidemark_sketch::MAX_COUNT;

/// Statistics of one series over one hour (or, merged, over several).
///
/// Bounds, kept by [`Bucket::add`] and [`Bucket::merge`] whatever they are given:
/// - `count` and `error_count` saturate at [`MAX_COUNT`] (`i64::MAX`), and
///   `error_count <= count` and `sketch.count() == count` hold throughout (see
///   [`Sketch::add`]); a saturated bucket's quantiles are only roughly placed.
/// - `sum` stays finite: it saturates at `±f64::MAX`, where it stops being exact (it is
///   already rounded long before that; `avg` is then a bound, not a mean). A sum that
///   saturated one way and then received the opposite extreme is not restored.
/// - `min` and `max` are exact and finite once anything was added (`+inf`/`-inf` while
///   empty); non-finite values are ignored entirely, as the sketch ignores them.
#[derive(Debug, Clone, PartialEq)]
pub struct Bucket {
    pub count: u64,
    pub error_count: u64,
    /// Sum of `value × count`, saturating at `±f64::MAX`.
    pub sum: f64,
    pub min: f64,
    pub max: f64,
    /// Unix ms of the newest sample folded in.
    pub last_at_ms: i64,
    pub sketch: Sketch,
}

impl Default for Bucket {
    fn default() -> Self {
        Self {
            count: 0,
            error_count: 0,
            sum: 0.0,
            min: f64::INFINITY,
            max: f64::NEG_INFINITY,
            last_at_ms: i64::MIN,
            sketch: Sketch::new(),
        }
    }
}

/// `a + b`, saturating at [`MAX_COUNT`].
fn add_count(a: u64, b: u64) -> u64 {
    a.saturating_add(b).min(MAX_COUNT)
}

/// `a + b` kept within `±f64::MAX` (a NaN operand stays NaN; finite ones never make one).
fn add_sum(a: f64, b: f64) -> f64 {
    (a + b).clamp(-f64::MAX, f64::MAX)
}

impl Bucket {
    /// Folds in `value` observed `count` times at `ts_ms`. Counts saturate at
    /// [`MAX_COUNT`] and the sum at `±f64::MAX`. `count == 0` adds nothing, and neither
    /// does a non-finite `value` (which [`Sample::parse`](crate::sample::Sample::parse)
    /// never lets through).
    pub fn add(&mut self, value: f64, count: u64, error: bool, ts_ms: i64) {
        if !value.is_finite() || count == 0 {
            return;
        }
        self.count = add_count(self.count, count);
        if error {
            self.error_count = add_count(self.error_count, count);
        }
        // `count as f64` rounds above 2^53, and the product may overflow to ±inf,
        // which `add_sum` brings back to ±f64::MAX.
        self.sum = add_sum(self.sum, value * count as f64);
        self.min = self.min.min(value);
        self.max = self.max.max(value);
        self.last_at_ms = self.last_at_ms.max(ts_ms);
        self.sketch.add(value, count);
    }

    /// Adds `other`'s observations, with the bounds of [`Bucket::add`]. Merging is
    /// commutative and associative on every field but `sum`, whose floating-point
    /// additions are commutative but round (and saturate) in the order they happen.
    pub fn merge(&mut self, other: &Bucket) {
        self.count = add_count(self.count, other.count);
        self.error_count = add_count(self.error_count, other.error_count);
        self.sum = add_sum(self.sum, other.sum);
        self.min = self.min.min(other.min);
        self.max = self.max.max(other.max);
        self.last_at_ms = self.last_at_ms.max(other.last_at_ms);
        self.sketch.merge(&other.sketch);
    }

    pub fn is_empty(&self) -> bool {
        self.count == 0
    }

    pub fn avg(&self) -> Option<f64> {
        (self.count > 0).then(|| self.sum / self.count as f64)
    }

    pub fn error_rate(&self) -> Option<f64> {
        (self.count > 0).then(|| self.error_count as f64 / self.count as f64)
    }

    /// The q-quantile, clamped to the exact `[min, max]` the bucket has seen.
    pub fn quantile(&self, q: f64) -> Option<f64> {
        self.sketch.quantile(q).map(|v| v.clamp(self.min, self.max))
    }

    /// Compact binary form for the Redis hot copy: fixed fields then the sketch.
    pub fn to_bytes(&self) -> Vec<u8> {
        let sketch = self.sketch.to_bytes();
        let mut out = Vec::with_capacity(48 + sketch.len());
        out.extend_from_slice(&self.count.to_le_bytes());
        out.extend_from_slice(&self.error_count.to_le_bytes());
        out.extend_from_slice(&self.sum.to_le_bytes());
        out.extend_from_slice(&self.min.to_le_bytes());
        out.extend_from_slice(&self.max.to_le_bytes());
        out.extend_from_slice(&self.last_at_ms.to_le_bytes());
        out.extend_from_slice(&sketch);
        out
    }

    pub fn from_bytes(bytes: &[u8]) -> Result<Self, String> {
        if bytes.len() < 48 {
            return Err("bucket record too short".into());
        }
        let word = |i: usize| -> [u8; 8] { bytes[i * 8..i * 8 + 8].try_into().expect("8 bytes") };
        Ok(Self {
            count: u64::from_le_bytes(word(0)),
            error_count: u64::from_le_bytes(word(1)),
            sum: f64::from_le_bytes(word(2)),
            min: f64::from_le_bytes(word(3)),
            max: f64::from_le_bytes(word(4)),
            last_at_ms: i64::from_le_bytes(word(5)),
            sketch: Sketch::from_bytes(&bytes[48..]).map_err(|e| e.to_string())?,
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn hour_start_floors_in_utc() {
        assert_eq!(hour_start(0), 0);
        assert_eq!(hour_start(HOUR_MS - 1), 0);
        assert_eq!(hour_start(HOUR_MS), HOUR_MS);
        assert_eq!(hour_start(-1), -HOUR_MS);
    }

    #[test]
    fn folding_is_exact() {
        let mut b = Bucket::default();
        b.add(10.0, 1, false, 5);
        b.add(30.0, 3, true, 9);
        b.add(2.0, 1, false, 7);
        assert_eq!((b.count, b.error_count), (5, 3));
        assert_eq!(b.sum, 10.0 + 90.0 + 2.0);
        assert_eq!((b.min, b.max, b.last_at_ms), (2.0, 30.0, 9));
        assert_eq!(b.sketch.count(), 5);
        assert_eq!(b.avg(), Some(102.0 / 5.0));
        assert_eq!(b.error_rate(), Some(0.6));
    }

    #[test]
    fn merge_equals_folding_everything() {
        let (mut a, mut b, mut whole) = (Bucket::default(), Bucket::default(), Bucket::default());
        for i in 0..1000 {
            let v = f64::from(i % 97) + 0.5;
            let target = if i % 3 == 0 { &mut a } else { &mut b };
            target.add(v, 1 + (i % 4) as u64, i % 11 == 0, i64::from(i));
            whole.add(v, 1 + (i % 4) as u64, i % 11 == 0, i64::from(i));
        }
        a.merge(&b);
        assert_eq!(a.count, whole.count);
        assert_eq!(a.error_count, whole.error_count);
        assert_eq!(
            (a.min, a.max, a.last_at_ms),
            (whole.min, whole.max, whole.last_at_ms)
        );
        assert_eq!(a.sketch, whole.sketch);
        assert!((a.sum - whole.sum).abs() < 1e-9);
    }

    #[test]
    fn empty_bucket_has_no_statistics() {
        let b = Bucket::default();
        assert!(b.is_empty());
        assert_eq!(
            (b.avg(), b.error_rate(), b.quantile(0.5)),
            (None, None, None)
        );
    }

    #[test]
    fn huge_counts_saturate_at_what_postgres_stores() {
        // Issue 14: three samples of count i64::MAX wrapped (and panicked in debug).
        let mut b = Bucket::default();
        for _ in 0..3 {
            b.add(1.0, i64::MAX as u64, true, 0);
        }
        assert_eq!((b.count, b.error_count), (MAX_COUNT, MAX_COUNT));
        assert_eq!(i64::try_from(b.count), Ok(i64::MAX), "stored as bigint");
        assert_eq!(
            b.sketch.count(),
            MAX_COUNT,
            "the sketch saturates at the same bound"
        );
        let mut merged = b.clone();
        merged.merge(&b);
        merged.add(1.0, u64::MAX, false, 0);
        assert_eq!((merged.count, merged.error_count), (MAX_COUNT, MAX_COUNT));
        assert!(merged.sum.is_finite() && merged.avg().unwrap().is_finite());
    }

    #[test]
    fn sums_saturate_and_extremes_make_no_nan() {
        let mut b = Bucket::default();
        b.add(f64::MAX, 3, false, 0);
        assert_eq!(b.sum, f64::MAX);
        b.add(-f64::MAX, u64::MAX, false, 0);
        assert!(b.sum.is_finite());
        b.add(f64::NAN, 1, false, 0);
        b.add(f64::INFINITY, 1, false, 0);
        assert_eq!(b.count, MAX_COUNT);
        assert_eq!((b.min, b.max), (-f64::MAX, f64::MAX));
        let p50 = b.quantile(0.5).unwrap();
        assert!(p50.is_finite() && (b.min..=b.max).contains(&p50));
    }

    #[test]
    fn bytes_round_trip_and_reject_garbage() {
        let mut b = Bucket::default();
        b.add(1.5, 2, true, 42);
        b.add(900.0, 1, false, 43);
        assert_eq!(Bucket::from_bytes(&b.to_bytes()).unwrap(), b);
        assert!(Bucket::from_bytes(&[1, 2, 3]).is_err());
    }

    mod properties {
        use super::*;
        use proptest::prelude::*;

        /// `(value, count, error, ts_ms)` as [`Bucket::add`] takes them.
        type Obs = (f64, u64, bool, i64);

        /// Values anywhere in the finite range, with the extremes over-represented.
        fn extreme_value() -> impl Strategy<Value = f64> {
            prop_oneof![
                Just(f64::MAX),
                Just(-f64::MAX),
                Just(f64::MIN_POSITIVE),
                Just(5e-324),
                Just(-5e-324),
                Just(0.0),
                Just(-0.0),
                -1e6..1e6,
                proptest::num::f64::NORMAL
                    | proptest::num::f64::SUBNORMAL
                    | proptest::num::f64::ZERO,
            ]
        }

        fn extreme_count() -> impl Strategy<Value = u64> {
            prop_oneof![
                Just(0),
                1..=10u64,
                Just(MAX_COUNT),
                Just(MAX_COUNT / 2 + 1),
                Just(u64::MAX),
                any::<u64>(),
            ]
        }

        fn extreme_obs() -> impl Strategy<Value = Obs> {
            (
                extreme_value(),
                extreme_count(),
                any::<bool>(),
                any::<i64>(),
            )
        }

        /// Whole values and small counts: every sum is an integer below 2^53, so
        /// floating-point addition is exact and may be compared exactly.
        fn exact_obs() -> impl Strategy<Value = Obs> {
            (
                (-1_000_000i32..1_000_000).prop_map(f64::from),
                1..=1000u64,
                any::<bool>(),
                0..1_000_000i64,
            )
        }

        fn bucket_of(obs: &[Obs]) -> Bucket {
            let mut b = Bucket::default();
            for &(v, c, e, t) in obs {
                b.add(v, c, e, t);
            }
            b
        }

        fn merged(a: &Bucket, b: &Bucket) -> Bucket {
            let mut m = a.clone();
            m.merge(b);
            m
        }

        /// Every field but `sum` (compared by the caller, exactly or for finiteness).
        fn assert_same_but_sum(x: &Bucket, y: &Bucket) -> Result<(), TestCaseError> {
            prop_assert_eq!(x.count, y.count);
            prop_assert_eq!(x.error_count, y.error_count);
            prop_assert_eq!(x.min, y.min);
            prop_assert_eq!(x.max, y.max);
            prop_assert_eq!(x.last_at_ms, y.last_at_ms);
            prop_assert_eq!(&x.sketch, &y.sketch);
            Ok(())
        }

        /// The bounds every bucket keeps, however it was built.
        fn assert_bounded(b: &Bucket) -> Result<(), TestCaseError> {
            prop_assert!(b.count <= MAX_COUNT && b.error_count <= b.count);
            prop_assert_eq!(b.sketch.count(), b.count);
            prop_assert!(b.sum.is_finite(), "sum {}", b.sum);
            prop_assert!(!b.min.is_nan() && !b.max.is_nan());
            if b.count > 0 {
                prop_assert!(b.min.is_finite() && b.max.is_finite());
                prop_assert!(b.min <= b.max, "min {} > max {}", b.min, b.max);
                prop_assert!(b.avg().is_some_and(f64::is_finite));
                for q in [0.0, 0.5, 0.99, 1.0] {
                    let v = b.quantile(q).unwrap();
                    prop_assert!(b.min <= v && v <= b.max, "q{} = {}", q, v);
                }
            }
            Ok(())
        }

        fn config() -> ProptestConfig {
            ProptestConfig {
                cases: 256,
                failure_persistence: None,
                ..ProptestConfig::default()
            }
        }

        proptest! {
            #![proptest_config(config())]

            #[test]
            fn counts_saturate_and_never_wrap(
                a in prop::collection::vec(extreme_obs(), 0..8),
                b in prop::collection::vec(extreme_obs(), 0..8),
            ) {
                let whole: Vec<Obs> = a.iter().chain(&b).copied().collect();
                let weight = |obs: &[Obs], errors: bool| -> u64 {
                    let exact: u128 = obs
                        .iter()
                        .filter(|o| o.0.is_finite() && (!errors || o.2))
                        .map(|o| u128::from(o.1))
                        .sum();
                    exact.min(u128::from(MAX_COUNT)) as u64
                };
                for bucket in [bucket_of(&whole), merged(&bucket_of(&a), &bucket_of(&b))] {
                    prop_assert_eq!(bucket.count, weight(&whole, false));
                    prop_assert_eq!(bucket.error_count, weight(&whole, true));
                    assert_bounded(&bucket)?;
                }
            }

            #[test]
            fn merge_commutes_on_every_field(
                a in prop::collection::vec(extreme_obs(), 0..6),
                b in prop::collection::vec(extreme_obs(), 0..6),
            ) {
                let (a, b) = (bucket_of(&a), bucket_of(&b));
                // IEEE addition commutes, so even the saturated sum is the same.
                prop_assert_eq!(merged(&a, &b), merged(&b, &a));
            }

            #[test]
            fn merge_associates_and_stays_bounded_at_the_extremes(
                a in prop::collection::vec(extreme_obs(), 0..5),
                b in prop::collection::vec(extreme_obs(), 0..5),
                c in prop::collection::vec(extreme_obs(), 0..5),
            ) {
                let (a, b, c) = (bucket_of(&a), bucket_of(&b), bucket_of(&c));
                let left = merged(&merged(&a, &b), &c);
                let right = merged(&a, &merged(&b, &c));
                assert_same_but_sum(&left, &right)?;
                assert_bounded(&left)?;
                assert_bounded(&right)?;
            }

            #[test]
            fn merge_associates_exactly_where_sums_are_exact(
                a in prop::collection::vec(exact_obs(), 0..8),
                b in prop::collection::vec(exact_obs(), 0..8),
                c in prop::collection::vec(exact_obs(), 0..8),
            ) {
                let (a, b, c) = (bucket_of(&a), bucket_of(&b), bucket_of(&c));
                prop_assert_eq!(merged(&merged(&a, &b), &c), merged(&a, &merged(&b, &c)));
            }

            #[test]
            fn add_then_merge_equals_merge_then_add(
                a in prop::collection::vec(extreme_obs(), 0..6),
                b in prop::collection::vec(extreme_obs(), 0..6),
                x in extreme_obs(),
                exact_a in prop::collection::vec(exact_obs(), 0..6),
                exact_b in prop::collection::vec(exact_obs(), 0..6),
                exact_x in exact_obs(),
            ) {
                let then = |a: &[Obs], b: &[Obs], x: Obs| {
                    let (a, b) = (bucket_of(a), bucket_of(b));
                    let mut add_first = a.clone();
                    add_first.add(x.0, x.1, x.2, x.3);
                    add_first.merge(&b);
                    let mut merge_first = merged(&a, &b);
                    merge_first.add(x.0, x.1, x.2, x.3);
                    (add_first, merge_first)
                };
                let (add_first, merge_first) = then(&a, &b, x);
                assert_same_but_sum(&add_first, &merge_first)?;
                assert_bounded(&add_first)?;
                assert_bounded(&merge_first)?;
                let (add_first, merge_first) = then(&exact_a, &exact_b, exact_x);
                prop_assert_eq!(add_first, merge_first);
            }

            #[test]
            fn folding_in_parts_equals_folding_whole(
                obs in prop::collection::vec(exact_obs(), 0..16),
                split in 0usize..16,
            ) {
                let split = split.min(obs.len());
                let (head, tail) = obs.split_at(split);
                prop_assert_eq!(merged(&bucket_of(head), &bucket_of(tail)), bucket_of(&obs));
            }
        }
    }
}
