//! A bound on the unconsumed bytes per partition, for the embedded broker of
//! `standalone`: librdkafka's mock cluster keeps only 5 MiB per partition and drops older
//! data silently, so ingest must refuse (503) before any partition's backlog gets near
//! that. Ingest reserves an upper estimate of each sample's encoded size before producing
//! it; the aggregator releases the same estimate once the sample is committed to Postgres.
//! Each message adds [`MESSAGE_OVERHEAD`] on both sides, so many small messages count
//! for what they take in the broker's log.

use std::sync::atomic::{AtomicU64, Ordering};

/// Well under the mock's 5 MiB per partition.
pub const EMBEDDED_LIMIT_BYTES: u64 = 4 * 1024 * 1024;

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

    /// Adds `bytes` to the partition's backlog unless that would pass the limit.
    pub fn try_reserve(&self, partition: i32, bytes: u64) -> bool {
        let slot = &self.pending[partition as usize];
        slot.fetch_update(Ordering::AcqRel, Ordering::Acquire, |pending| {
            (pending + bytes <= self.limit).then_some(pending + bytes)
        })
        .is_ok()
    }

    /// Adds `bytes` whatever the limit: a message's overhead, known only once the
    /// samples it carries were admitted. The limit's margin below the broker's absorbs
    /// it, and later reservations see it.
    pub fn add(&self, partition: i32, bytes: u64) {
        self.pending[partition as usize].fetch_add(bytes, Ordering::AcqRel);
    }

    /// Takes `bytes` off the partition's backlog (consumed, or never produced).
    pub fn release(&self, partition: i32, bytes: u64) {
        let _ = self.pending[partition as usize].fetch_update(
            Ordering::AcqRel,
            Ordering::Acquire,
            |p| Some(p.saturating_sub(bytes)),
        );
    }

    pub fn pending(&self, partition: i32) -> u64 {
        self.pending[partition as usize].load(Ordering::Acquire)
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
}
