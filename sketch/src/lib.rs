//! Mergeable quantile sketch (DDSketch) with a 1% relative-accuracy guarantee.
//!
//! Every finite value lands in a logarithmic bin `ceil(ln|v| / ln(gamma))`
//! with gamma = (1 + α) / (1 − α); reporting a bin by its representative value
//! is then off by at most α relative to any value in it. Counts are integers,
//! so merging is exact: the merge of sketches of the parts equals the sketch
//! of the whole. Magnitudes at or below [`MIN_INDEXABLE`] share a zero bin,
//! and memory per sign is bounded (see [`MAX_BINS`]).

mod encoding;
mod store;

pub use encoding::DecodeError;
pub use store::MAX_BINS;

use store::Store;

/// Relative accuracy α: every reported quantile is within this relative error
/// of the exact value of that rank.
pub const RELATIVE_ACCURACY: f64 = 0.01;

/// Largest magnitude counted in the zero bin (reported as exactly `0.0`).
pub const MIN_INDEXABLE: f64 = 1e-9;

/// The largest total count a sketch reports: `i64::MAX`, what a signed 64-bit column
/// (Postgres `bigint`) holds, so a sketch's count always equals the count stored beside
/// it. Totals saturate here; bins saturate at `u64::MAX`. Once saturated, proportions
/// between bins are no longer exact, so quantiles are only roughly placed.
pub const MAX_COUNT: u64 = i64::MAX as u64;

/// Ratio between consecutive bin boundaries.
const GAMMA: f64 = (1.0 + RELATIVE_ACCURACY) / (1.0 - RELATIVE_ACCURACY);

/// A mergeable quantile sketch over finite `f64` values with integer weights.
#[derive(Debug, Clone, PartialEq, Default)]
pub struct Sketch {
    positive: Store,
    /// Negative values, binned by magnitude.
    negative: Store,
    zero: u64,
    count: u64,
}

/// The 0-based sorted index of the `q`-quantile of `n` observations by the
/// nearest-rank definition: the `⌈q·n⌉`-th smallest (the smallest for `q` = 0),
/// as HdrHistogram reports percentiles. With two observations, p50 is the first
/// and p95 the second; with twenty, p95 is the nineteenth. `q` is clamped to
/// `[0, 1]`; `n` must be at least 1.
pub fn nearest_rank(q: f64, n: u64) -> u64 {
    let x = q.clamp(0.0, 1.0) * n as f64;
    // q·n is inexact in binary (0.95 · 20 = 19.000000000000004): shave the
    // rounding error off before rounding up.
    let rank = (x - x * 4.0 * f64::EPSILON).ceil() as u64;
    rank.clamp(1, n) - 1
}

impl Sketch {
    /// Creates an empty sketch.
    pub fn new() -> Self {
        Self::default()
    }

    /// Adds `value` observed `count` times.
    ///
    /// `value` should be finite; NaN and infinities are ignored, as is
    /// `count == 0`. The total saturates at [`MAX_COUNT`], bins at `u64::MAX`.
    pub fn add(&mut self, value: f64, count: u64) {
        if !value.is_finite() || count == 0 {
            return;
        }
        if value > MIN_INDEXABLE {
            self.positive.add(bin_index(value), count);
        } else if value < -MIN_INDEXABLE {
            self.negative.add(bin_index(-value), count);
        } else {
            self.zero = self.zero.saturating_add(count);
        }
        self.count = self.count.saturating_add(count).min(MAX_COUNT);
    }

    /// Adds all observations of `other` into `self` (the total saturating at
    /// [`MAX_COUNT`]).
    pub fn merge(&mut self, other: &Sketch) {
        self.positive.merge(&other.positive);
        self.negative.merge(&other.negative);
        self.zero = self.zero.saturating_add(other.zero);
        self.count = self.count.saturating_add(other.count).min(MAX_COUNT);
    }

    /// Total weight of all added observations, at most [`MAX_COUNT`].
    pub fn count(&self) -> u64 {
        self.count
    }

    /// Whether nothing has been added.
    pub fn is_empty(&self) -> bool {
        self.count == 0
    }

    /// Estimates the `q`-quantile by the nearest-rank definition (see
    /// [`nearest_rank`]): "a fraction `q` of the observations were at most
    /// this", within [`RELATIVE_ACCURACY`] relative error.
    ///
    /// `q` is clamped to `[0, 1]`. Returns `None` when the sketch is empty or
    /// `q` is NaN.
    pub fn quantile(&self, q: f64) -> Option<f64> {
        if self.is_empty() || q.is_nan() {
            return None;
        }
        let rank = nearest_rank(q, self.count);
        let negative = self
            .negative
            .bins()
            .rev()
            .map(|(index, count)| (-representative(index), count));
        let zero = std::iter::once((0.0, self.zero));
        let positive = self
            .positive
            .bins()
            .map(|(index, count)| (representative(index), count));
        let mut seen = 0u64;
        negative
            .chain(zero)
            .chain(positive)
            .find(|&(_, count)| {
                seen = seen.saturating_add(count);
                seen > rank
            })
            .map(|(value, _)| value)
    }

    /// Bytes the sketch holds on the heap: the capacity of its bin stores, 8 bytes a
    /// bin from the smallest to the largest of each sign (at most [`MAX_BINS`] a sign).
    /// With `size_of::<Sketch>()` this is the memory the sketch takes.
    pub fn heap_bytes(&self) -> usize {
        self.positive.heap_bytes() + self.negative.heap_bytes()
    }

    /// Gives back the spare capacity of the bin stores (for a sketch kept long after it
    /// stops growing); the contents are unchanged.
    pub fn shrink_to_fit(&mut self) {
        self.positive.shrink_to_fit();
        self.negative.shrink_to_fit();
    }

    /// Encodes the sketch compactly; see [`Sketch::from_bytes`].
    pub fn to_bytes(&self) -> Vec<u8> {
        encoding::encode(self)
    }

    /// Decodes bytes produced by [`Sketch::to_bytes`].
    ///
    /// Never panics: malformed, truncated or non-canonical input is rejected
    /// with a [`DecodeError`], so a successful decode re-encodes to the very
    /// same bytes.
    pub fn from_bytes(bytes: &[u8]) -> Result<Sketch, DecodeError> {
        encoding::decode(bytes)
    }

    fn from_parts(positive: Store, negative: Store, zero: u64) -> Self {
        let count = positive
            .total()
            .saturating_add(negative.total())
            .saturating_add(zero)
            .min(MAX_COUNT);
        Self {
            positive,
            negative,
            zero,
            count,
        }
    }
}

/// Bin holding the positive magnitude `value` (> [`MIN_INDEXABLE`]): values in
/// `(gamma^(i-1), gamma^i]` map to `i`.
fn bin_index(value: f64) -> i32 {
    (value.ln() / GAMMA.ln()).ceil() as i32
}

/// Value reported for bin `index`, equidistant in relative terms from both
/// bin boundaries; clamped so that the top bin stays finite.
fn representative(index: i32) -> f64 {
    (2.0 * (f64::from(index) * GAMMA.ln()).exp() / (GAMMA + 1.0)).min(f64::MAX)
}

#[cfg(test)]
mod tests;
