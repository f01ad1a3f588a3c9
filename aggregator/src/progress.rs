//! What an aggregator has applied lately, per partition it owns: the next offset to
//! apply and when a flush last advanced it. The consume loop writes it; `/readyz` reads
//! it to tell an aggregator that owns partitions but applies nothing while the log has
//! data (a stall) from one whose partitions are merely quiet.

use std::collections::BTreeMap;
use std::sync::Mutex;
use std::time::{Duration, Instant};

/// How long an owned partition may go without applying anything while its log holds
/// more before `/readyz` calls it stalled.
pub const STALLED_AFTER: Duration = Duration::from_secs(30);

#[derive(Debug, Clone, Copy)]
struct Partition {
    next_offset: i64,
    advanced_at: Instant,
}

#[derive(Debug, Default)]
pub struct Progress {
    partitions: Mutex<BTreeMap<i32, Partition>>,
}

impl Progress {
    /// The partitions owned now, each with its next offset to apply. A partition owned
    /// already keeps when it last advanced.
    pub fn own(&self, owned: impl IntoIterator<Item = (i32, i64)>, now: Instant) {
        let mut partitions = self.partitions.lock().expect("progress lock");
        let old = std::mem::take(&mut *partitions);
        for (partition, next_offset) in owned {
            let advanced_at = old.get(&partition).map_or(now, |p| p.advanced_at);
            partitions.insert(
                partition,
                Partition {
                    next_offset,
                    advanced_at,
                },
            );
        }
    }

    /// A flush committed `partition` up to `next_offset`.
    pub fn advanced(&self, partition: i32, next_offset: i64, now: Instant) {
        if let Some(p) = self
            .partitions
            .lock()
            .expect("progress lock")
            .get_mut(&partition)
        {
            if next_offset > p.next_offset {
                *p = Partition {
                    next_offset,
                    advanced_at: now,
                };
            }
        }
    }

    /// `(partition, next offset to apply, time since it last advanced)` of each owned
    /// partition.
    pub fn snapshot(&self, now: Instant) -> Vec<(i32, i64, Duration)> {
        self.partitions
            .lock()
            .expect("progress lock")
            .iter()
            .map(|(p, s)| (*p, s.next_offset, now.duration_since(s.advanced_at)))
            .collect()
    }
}

/// The stalled partitions among `snapshot`: those that applied nothing for
/// [`STALLED_AFTER`] although messages wait. `high_watermark` (a broker round trip) is
/// asked only for partitions idle that long.
pub fn stalled(
    snapshot: &[(i32, i64, Duration)],
    high_watermark: impl Fn(i32) -> Option<i64>,
) -> Vec<String> {
    snapshot
        .iter()
        .filter(|&&(_, _, idle)| idle >= STALLED_AFTER)
        .filter_map(|&(partition, next, idle)| {
            let waiting = high_watermark(partition)? - next;
            (waiting > 0).then(|| {
                format!(
                    "partition {partition}: {waiting} messages wait, nothing applied for {}s",
                    idle.as_secs()
                )
            })
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_partition_is_stalled_only_with_messages_waiting_past_the_bound() {
        let t0 = Instant::now();
        let progress = Progress::default();
        progress.own([(0, 10), (1, 5)], t0);
        let later = t0 + STALLED_AFTER;
        progress.advanced(1, 7, later);
        progress.advanced(2, 100, later); // not owned: ignored
        let snapshot = progress.snapshot(later);
        assert_eq!(snapshot.len(), 2);
        let high = |p| Some(if p == 0 { 12 } else { 9 });
        assert_eq!(
            stalled(&snapshot, high),
            vec!["partition 0: 2 messages wait, nothing applied for 30s"],
            "partition 1 advanced just now"
        );
        assert!(
            stalled(&snapshot, |_| Some(10)).is_empty(),
            "nothing waits on partition 0; 1 advanced"
        );
        assert!(
            stalled(&progress.snapshot(t0), high).is_empty(),
            "not yet past the bound"
        );

        progress.own([(1, 7)], later);
        assert_eq!(
            progress.snapshot(later)[0].0,
            1,
            "a lost partition is forgotten"
        );
        assert_eq!(
            progress.snapshot(later)[0].2,
            Duration::ZERO,
            "a kept one keeps its time"
        );
    }
}
