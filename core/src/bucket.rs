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

#[derive(Debug, Clone, PartialEq)]
pub struct Bucket {
    pub count: u64,
    pub error_count: u64,
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

impl Bucket {
    /// Folds in `value` observed `count` times at `ts_ms`.
    pub fn add(&mut self, value: f64, count: u64, error: bool, ts_ms: i64) {
        self.count += count;
        if error {
            self.error_count += count;
        }
        self.sum += value * count as f64;
        self.min = self.min.min(value);
        self.max = self.max.max(value);
        self.last_at_ms = self.last_at_ms.max(ts_ms);
        self.sketch.add(value, count);
    }

    pub fn merge(&mut self, other: &Bucket) {
        self.count += other.count;
        self.error_count += other.error_count;
        self.sum += other.sum;
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
    fn bytes_round_trip_and_reject_garbage() {
        let mut b = Bucket::default();
        b.add(1.5, 2, true, 42);
        b.add(900.0, 1, false, 43);
        assert_eq!(Bucket::from_bytes(&b.to_bytes()).unwrap(), b);
        assert!(Bucket::from_bytes(&[1, 2, 3]).is_err());
    }
}
