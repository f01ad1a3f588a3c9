//! In-memory accumulation between flushes, per partition: the bucket deltas folded from
//! consumed batches and the offsets they span. Pure logic; storage lives in `store`.

use std::collections::HashMap;
use std::sync::Arc;

use tidemark_core::backlog::sample_size;
use tidemark_core::bucket::hour_start;
use tidemark_core::series::series_id;
use tidemark_core::Bucket;
use tidemark_schemas::SampleBatch;

/// What identifies a series, kept once per series.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SeriesMeta {
    pub id: i64,
    pub service: String,
    pub metric: String,
    pub tags_json: String,
}

/// The stored offset row a partition's accumulation started from: the fence a flush
/// must still find in Postgres to be allowed to commit.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Fence {
    /// No row yet for this partition.
    Absent,
    /// The row as read: `(next_offset, cluster_id)`.
    Row(i64, String),
}

/// Accumulated, not yet flushed deltas of one partition.
#[derive(Debug)]
pub struct PartitionState {
    pub fence: Fence,
    /// The next offset to consume; everything before it is folded into `buckets`.
    pub next_offset: i64,
    pub buckets: HashMap<(i64, i64), (Arc<SeriesMeta>, Bucket)>,
    pub samples: u64,
    /// Estimated encoded size of the folded samples (see `tidemark_core::backlog`).
    pub bytes: u64,
}

impl PartitionState {
    pub fn new(fence: Fence, next_offset: i64) -> Self {
        Self {
            fence,
            next_offset,
            buckets: HashMap::new(),
            samples: 0,
            bytes: 0,
        }
    }

    /// Whether anything was consumed since the fence was read.
    pub fn is_dirty(&self) -> bool {
        match &self.fence {
            Fence::Absent => true,
            Fence::Row(offset, _) => self.next_offset != *offset,
        }
    }

    /// Folds the batch at `offset` into the deltas.
    pub fn fold(&mut self, offset: i64, batch: &SampleBatch, series: &mut SeriesCache) {
        for s in &batch.samples {
            let meta = series.get(&s.service, &s.metric, &s.tags);
            let key = (meta.id, hour_start(s.timestamp));
            let (_, bucket) = self
                .buckets
                .entry(key)
                .or_insert_with(|| (meta, Bucket::default()));
            bucket.add(s.value, s.count.max(1) as u64, s.error, s.timestamp);
            self.samples += s.count.max(1) as u64;
            self.bytes += sample_size(&s.service, &s.metric, &s.tags);
        }
        self.next_offset = offset + 1;
    }

    /// Marks the offset as consumed without data (an undecodable message).
    pub fn skip(&mut self, offset: i64) {
        self.next_offset = offset + 1;
    }
}

/// Series identities seen by this process, so each is hashed into metadata once.
#[derive(Default)]
pub struct SeriesCache {
    by_id: HashMap<i64, Arc<SeriesMeta>>,
}

const SERIES_CACHE_LIMIT: usize = 1_000_000;

impl SeriesCache {
    pub fn get(
        &mut self,
        service: &str,
        metric: &str,
        tags: &std::collections::BTreeMap<String, String>,
    ) -> Arc<SeriesMeta> {
        let id = series_id(service, metric, tags);
        if self.by_id.len() >= SERIES_CACHE_LIMIT {
            self.by_id.clear();
        }
        self.by_id
            .entry(id)
            .or_insert_with(|| {
                Arc::new(SeriesMeta {
                    id,
                    service: service.to_owned(),
                    metric: metric.to_owned(),
                    tags_json: serde_json::to_string(tags).expect("string map serialises"),
                })
            })
            .clone()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::collections::BTreeMap;
    use tidemark_core::bucket::HOUR_MS;
    use tidemark_schemas::WireSample;

    fn sample(service: &str, value: f64, count: i64, error: bool, ts: i64) -> WireSample {
        WireSample {
            service: service.into(),
            metric: "m".into(),
            value,
            count,
            error,
            timestamp: ts,
            tags: BTreeMap::new(),
        }
    }

    #[test]
    fn folds_samples_into_their_series_and_hour() {
        let mut st = PartitionState::new(Fence::Row(10, "c".into()), 10);
        let mut cache = SeriesCache::default();
        assert!(!st.is_dirty());
        let batch = SampleBatch {
            batch_id: "b".into(),
            produced_at: 0,
            samples: vec![
                sample("a", 1.0, 1, false, 5 * HOUR_MS + 1),
                sample("a", 3.0, 2, true, 5 * HOUR_MS + 2),
                sample("a", 7.0, 1, false, 4 * HOUR_MS + 9),
                sample("b", 2.0, 1, false, 5 * HOUR_MS),
            ],
        };
        st.fold(10, &batch, &mut cache);
        assert!(st.is_dirty());
        assert_eq!(st.next_offset, 11);
        assert_eq!(st.samples, 5);
        assert_eq!(st.buckets.len(), 3);
        let a = cache.get("a", "m", &BTreeMap::new()).id;
        let (_, hour5) = &st.buckets[&(a, 5 * HOUR_MS)];
        assert_eq!(
            (
                hour5.count,
                hour5.error_count,
                hour5.sum,
                hour5.min,
                hour5.max
            ),
            (3, 2, 7.0, 1.0, 3.0)
        );
        let (_, hour4) = &st.buckets[&(a, 4 * HOUR_MS)];
        assert_eq!(
            (hour4.count, hour4.sum, hour4.last_at_ms),
            (1, 7.0, 4 * HOUR_MS + 9)
        );
        st.skip(11);
        assert_eq!(st.next_offset, 12);
    }

    #[test]
    fn a_fresh_partition_is_dirty_until_it_has_a_row() {
        assert!(PartitionState::new(Fence::Absent, 0).is_dirty());
    }
}
