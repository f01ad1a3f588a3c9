//! The embedded broker's bound on the unconsumed bytes per partition: librdkafka's mock
//! cluster keeps only 5 MiB per partition and drops older data silently, so ingest must
//! refuse (503) before any partition's backlog gets near that. It is `standalone`'s
//! [`Backpressure`]: a sample costs an upper estimate of its encoded size, and each
//! message adds [`MESSAGE_OVERHEAD`], so many small messages count for what they take in
//! the broker's log.

use std::sync::atomic::{AtomicU64, Ordering};

use tidemark_runtime::backpressure::Backpressure;

/// An upper bound of what one message adds to the broker's log besides its samples:
/// a record batch header (61 bytes) and the record's own framing, when each message
/// travels alone, plus the `SampleBatch` envelope (single-object header, batch id,
/// `produced_at`, array framing, a chunk).
pub const MESSAGE_OVERHEAD: u64 = 192;

pub struct Backlog {
    limit: u64,
    pending: Vec<AtomicU64>,
}

/// An upper bound of one sample's Avro size: strings with their length prefix, the
/// fixed-size fields and the map framing.
pub fn sample_size<K: AsRef<str>, V: AsRef<str>>(
    service: &str,
    metric: &str,
    tags: impl IntoIterator<Item = (K, V)>,
) -> u64 {
    let strings = service.len()
        + metric.len()
        + tags
            .into_iter()
            .map(|(k, v)| k.as_ref().len() + v.as_ref().len() + 4)
            .sum::<usize>();
    (strings + 40) as u64
}

impl Backlog {
    pub fn new(partitions: i32, limit: u64) -> Self {
        Self {
            limit,
            pending: (0..partitions).map(|_| AtomicU64::new(0)).collect(),
        }
    }

    /// What the partition holds now; tests read it.
    #[cfg(test)]
    pub fn pending(&self, partition: i32) -> u64 {
        self.pending[partition as usize].load(Ordering::Acquire)
    }
}

impl Backpressure for Backlog {
    fn sample_cost(&self, service: &str, metric: &str, tags: &[(&str, &str)]) -> u64 {
        sample_size(service, metric, tags.iter().copied())
    }

    fn message_cost(&self) -> u64 {
        MESSAGE_OVERHEAD
    }

    /// Adds `bytes` to the partition's backlog unless that would pass the limit.
    fn try_reserve(&self, partition: i32, bytes: u64) -> bool {
        let slot = &self.pending[partition as usize];
        slot.fetch_update(Ordering::AcqRel, Ordering::Acquire, |pending| {
            (pending + bytes <= self.limit).then_some(pending + bytes)
        })
        .is_ok()
    }

    /// Adds `bytes` whatever the limit. The limit's margin below the broker's absorbs
    /// it, and later reservations see it.
    fn add(&self, partition: i32, bytes: u64) {
        self.pending[partition as usize].fetch_add(bytes, Ordering::AcqRel);
    }

    /// Takes `bytes` off the partition's backlog (consumed, or never produced).
    fn release(&self, partition: i32, bytes: u64) {
        let _ = self.pending[partition as usize].fetch_update(
            Ordering::AcqRel,
            Ordering::Acquire,
            |p| Some(p.saturating_sub(bytes)),
        );
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn reservations_stop_at_the_limit_and_resume_after_release() {
        let b = Backlog::new(2, 100);
        assert!(b.try_reserve(0, 60));
        assert!(!b.try_reserve(0, 41), "would pass the limit");
        assert!(b.try_reserve(1, 100), "partitions are bounded separately");
        assert!(b.try_reserve(0, 40));
        b.release(0, 50);
        assert_eq!(b.pending(0), 50);
        assert!(b.try_reserve(0, 50));
        b.release(1, 1000);
        assert_eq!(b.pending(1), 0, "never below zero");
        b.add(1, 90);
        assert!(
            !b.try_reserve(1, 11),
            "added overhead counts against later reservations"
        );
        assert_eq!(b.pending(1), 90);
    }

    #[test]
    fn a_request_is_reserved_on_all_its_partitions_or_none() {
        let b = Backlog::new(3, 100);
        b.add(2, 101);
        assert!(
            !b.try_reserve_all(&[30, 40, 0]),
            "a partition past the limit refuses even an empty share"
        );
        assert_eq!((b.pending(0), b.pending(1)), (0, 0), "released again");
        assert!(b.try_reserve_all(&[30, 40]));
        assert_eq!((b.pending(0), b.pending(1)), (30, 40));
    }
}
