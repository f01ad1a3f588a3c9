//! In-memory accumulation between flushes, per partition: the bucket deltas folded from
//! consumed batches and the offsets they span. Pure logic; storage lives in `store`.

use std::collections::HashMap;
use std::sync::Arc;
use std::time::{Duration, Instant};

use tidemark_model::bucket::hour_start;
use tidemark_model::sample::FieldError;
use tidemark_model::series::series_id;
use tidemark_model::Bucket;
use tidemark_runtime::backpressure::Backpressure;
use tidemark_schemas::SampleBatchView;

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

/// Bucket deltas keyed by `(series_id, hour_ms)`.
pub type Deltas = HashMap<(i64, i64), (Arc<SeriesMeta>, Bucket)>;

/// One sample, reduced to what folding needs.
#[derive(Debug, Clone)]
pub struct Observation {
    pub meta: Arc<SeriesMeta>,
    pub value: f64,
    pub count: u64,
    pub error: bool,
    pub timestamp: i64,
}

impl Observation {
    fn fold_into(&self, deltas: &mut Deltas) {
        let key = (self.meta.id, hour_start(self.timestamp));
        let (_, bucket) = deltas
            .entry(key)
            .or_insert_with(|| (self.meta.clone(), Bucket::default()));
        bucket.add(self.value, self.count, self.error, self.timestamp);
    }
}

/// The samples of one idempotent request chunk, applied only if its id is new.
#[derive(Debug)]
pub struct PendingChunk {
    pub id: String,
    pub observations: Vec<Observation>,
}

/// How long offsets a partition jumped over are looked for before the jump is believed.
/// Kafka leaves gaps only in compacted or transactional topics, which the samples topic
/// is not. Brokers can still make one appear: tansu's in-memory engine reserves offsets
/// before the batch holding them is readable, and tansu serves a fetch only with batches
/// that start at or after the fetch offset, so resuming inside a batch skips its rest.
pub const GAP_GRACE: Duration = Duration::from_secs(2);

/// How many refetches a gap takes before it is believed; the last starts 2^14 offsets
/// before it, past the start of any batch (librdkafka puts at most 10,000 messages in one).
pub const GAP_REFETCHES: u32 = 16;

/// What to do with a message that lies past the next expected offset.
#[derive(Debug, PartialEq, Eq)]
pub enum OnGap {
    /// Fetch again from this offset, at or before the next expected one.
    Refetch(i64),
    /// The gap outlived `GAP_GRACE` and `GAP_REFETCHES`: consume the message, skipping
    /// the missing offsets.
    Accept,
}

/// A jump past `expected` being looked into since `since`.
#[derive(Debug, Clone, Copy)]
struct Gap {
    expected: i64,
    since: Instant,
    refetches: u32,
}

/// Why a message was set aside instead of applied.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum QuarantineKind {
    /// Not a `SampleBatch` of any registered schema.
    Undecodable,
    /// A sample breaks the rules ingest enforces (`tidemark_model::sample::check_wire_*`).
    Invalid,
    /// Postgres refused its data (found by isolating a failed flush).
    Refused,
    /// Folding it panicked (a defect of ours that this data found).
    Panicked,
}

impl QuarantineKind {
    /// The `reason` label of `tidemark_aggregator_quarantined_total`.
    pub fn label(self) -> &'static str {
        match self {
            Self::Undecodable => "undecodable",
            Self::Invalid => "invalid",
            Self::Refused => "refused",
            Self::Panicked => "panicked",
        }
    }
}

/// How much of a reason is kept.
const MAX_REASON_CHARS: usize = 500;

/// A message set aside, to be written to the quarantine table by the flush that
/// advances the offset past it.
#[derive(Debug, Clone)]
pub struct Quarantined {
    pub offset: i64,
    pub payload: Vec<u8>,
    pub kind: QuarantineKind,
    pub reason: String,
}

/// Accumulated, not yet flushed deltas of one partition.
#[derive(Debug)]
pub struct PartitionState {
    pub fence: Fence,
    /// The offset the accumulation started at: the fence's offset, or where a partition
    /// without a stored offset began.
    pub start: i64,
    /// The next offset to consume; everything before it is folded into `buckets` or
    /// held in `chunks`.
    pub next_offset: i64,
    /// Deltas of the samples sent without an Idempotency-Key.
    pub buckets: Deltas,
    /// Chunks of idempotent requests, in log order, not yet known to be new.
    pub chunks: Vec<PendingChunk>,
    pub samples: u64,
    /// The backpressure cost of the folded messages, released once they are committed;
    /// counted only when a backpressure is set (see `tidemark_runtime::backpressure`).
    pub cost: u64,
    /// Messages set aside since the fence, in log order.
    pub quarantined: Vec<Quarantined>,
    gap: Option<Gap>,
}

/// The backpressure cost of a message's samples.
fn samples_cost(batch: &SampleBatchView<'_>, b: &dyn Backpressure) -> u64 {
    batch
        .samples
        .iter()
        .map(|s| b.sample_cost(s.service, s.metric, &s.tags))
        .sum()
}

impl PartitionState {
    pub fn new(fence: Fence, next_offset: i64) -> Self {
        Self {
            fence,
            start: next_offset,
            next_offset,
            buckets: HashMap::new(),
            chunks: Vec::new(),
            samples: 0,
            cost: 0,
            quarantined: Vec::new(),
            gap: None,
        }
    }

    /// The state as it was at the fence: nothing consumed since, the gap kept.
    pub fn reset(&self) -> Self {
        Self {
            gap: self.gap,
            ..Self::new(self.fence.clone(), self.start)
        }
    }

    /// The state after its deltas were committed: empty, fenced at `next_offset`, still
    /// remembering a gap being waited out.
    pub fn committed(&self, cluster_id: &str) -> Self {
        Self {
            gap: self.gap,
            ..Self::new(
                Fence::Row(self.next_offset, cluster_id.to_owned()),
                self.next_offset,
            )
        }
    }

    /// Decides about a message at an offset past `next_offset`, seen at `now`. The first
    /// refetch starts at the expected offset (a batch not readable yet); later ones start
    /// ever earlier, to find the start of a batch holding it. Re-reading applied offsets
    /// is harmless: they are skipped.
    pub fn on_gap(&mut self, now: Instant) -> OnGap {
        let expected = self.next_offset;
        let gap = match self.gap {
            Some(g) if g.expected == expected => g,
            _ => Gap {
                expected,
                since: now,
                refetches: 0,
            },
        };
        if gap.refetches >= GAP_REFETCHES && now.duration_since(gap.since) >= GAP_GRACE {
            self.gap = None;
            return OnGap::Accept;
        }
        let back = match gap.refetches {
            0 => 0,
            n => 1i64 << (n - 1).min(40),
        };
        self.gap = Some(Gap {
            refetches: gap.refetches + 1,
            ..gap
        });
        OnGap::Refetch(expected - back)
    }

    /// Whether a flush should commit this partition: anything was consumed since the
    /// fence was read. (A partition holding messages to isolate one, their offsets
    /// consumed but their data not folded, is never given to a flush: see `partition`.)
    pub fn is_flushable(&self) -> bool {
        match &self.fence {
            Fence::Absent => true,
            Fence::Row(offset, _) => self.next_offset != *offset,
        }
    }

    /// Decodes and checks the message at `offset` and folds it, or sets it aside with
    /// the reason. Returns the number of samples folded. With a `backpressure`, counts
    /// the message's cost as ingest reserved it, whether it is folded or set aside: the
    /// message, and the samples it decodes to.
    pub fn apply(
        &mut self,
        offset: i64,
        payload: &[u8],
        series: &mut SeriesCache,
        backpressure: Option<&dyn Backpressure>,
    ) -> Result<usize, &Quarantined> {
        if let Some(b) = backpressure {
            self.cost += b.message_cost();
        }
        let outcome = tidemark_schemas::with_sample_batch(payload, |batch| {
            if let Some(b) = backpressure {
                self.cost += samples_cost(batch, b);
            }
            self.fold(offset, batch, series)?;
            Ok(batch.samples.len())
        });
        let (kind, reason) = match outcome {
            Ok(Ok(folded)) => return Ok(folded),
            Ok(Err(reason)) => (QuarantineKind::Invalid, reason),
            Err(e) => (QuarantineKind::Undecodable, e.to_string()),
        };
        Err(self.quarantine(offset, payload, kind, reason))
    }

    /// Sets aside the message at `offset` that Postgres refused or whose fold panicked,
    /// after a [`reset`](Self::reset) dropped what its application had counted: counts
    /// its cost again, as [`apply`](Self::apply) would, so that it is released.
    pub fn quarantine_applied(
        &mut self,
        offset: i64,
        payload: &[u8],
        kind: QuarantineKind,
        reason: String,
        backpressure: Option<&dyn Backpressure>,
    ) {
        if let Some(b) = backpressure {
            self.cost += b.message_cost()
                + tidemark_schemas::with_sample_batch(payload, |batch| samples_cost(batch, b))
                    .unwrap_or(0);
        }
        self.quarantine(offset, payload, kind, reason);
    }

    /// [`apply`](Self::apply), containing a panic: `Err` with its message, after which
    /// the state may hold part of the message and must be [`reset`](Self::reset).
    pub fn apply_guarded(
        &mut self,
        offset: i64,
        payload: &[u8],
        series: &mut SeriesCache,
        backpressure: Option<&dyn Backpressure>,
    ) -> Result<usize, String> {
        std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| {
            self.apply(offset, payload, series, backpressure)
                .unwrap_or(0)
        }))
        .map_err(|panic| {
            panic
                .downcast_ref::<&str>()
                .map(|s| (*s).to_owned())
                .or_else(|| panic.downcast_ref::<String>().cloned())
                .unwrap_or_else(|| "a panic without a message".to_owned())
        })
    }

    /// Sets the message at `offset` aside; the flush that commits the partition writes
    /// it to the quarantine table.
    pub fn quarantine(
        &mut self,
        offset: i64,
        payload: &[u8],
        kind: QuarantineKind,
        reason: String,
    ) -> &Quarantined {
        self.next_offset = offset + 1;
        // The reason may quote the message (a tag key), and is stored as text.
        let reason = reason
            .chars()
            .map(|c| {
                if c == '\0' {
                    char::REPLACEMENT_CHARACTER
                } else {
                    c
                }
            })
            .take(MAX_REASON_CHARS)
            .collect();
        self.quarantined.push(Quarantined {
            offset,
            payload: payload.to_vec(),
            kind,
            reason,
        });
        self.quarantined.last().expect("just pushed")
    }

    /// Folds the batch at `offset` into the deltas; samples of idempotent chunks are
    /// held until their chunk is known to be new.
    ///
    /// Every sample is checked first by ingest's rules (its series only when `series`
    /// has not seen it yet), so a message is folded whole or not at all; the error names
    /// the first bad sample and field.
    pub fn fold(
        &mut self,
        offset: i64,
        batch: &SampleBatchView<'_>,
        series: &mut SeriesCache,
    ) -> Result<(), String> {
        series.make_room(batch.samples.len());
        let ids = batch
            .samples
            .iter()
            .enumerate()
            .map(|(i, s)| {
                tidemark_model::sample::check_wire_values(s.value, s.count, s.timestamp)
                    .and_then(|()| series.resolve(s.service, s.metric, &s.tags))
                    .map_err(|e| format!("samples[{i}].{}: {}", e.field, e.message))
            })
            .collect::<Result<Vec<i64>, String>>()?;
        let mut chunk_of = vec![None; batch.samples.len()];
        for (c, chunk) in batch.chunks.iter().enumerate() {
            let first = chunk.first.max(0) as usize;
            let end = (first + chunk.count.max(0) as usize).min(chunk_of.len());
            for slot in chunk_of.iter_mut().take(end).skip(first) {
                *slot = Some(c);
            }
        }
        let base = self.chunks.len();
        self.chunks
            .extend(batch.chunks.iter().map(|c| PendingChunk {
                id: c.id.to_owned(),
                observations: Vec::new(),
            }));
        for ((s, chunk), id) in batch.samples.iter().zip(chunk_of).zip(ids) {
            let observation = Observation {
                meta: series.meta(id),
                value: s.value,
                count: s.count.max(1) as u64,
                error: s.error,
                timestamp: s.timestamp,
            };
            self.samples = self.samples.saturating_add(observation.count);
            match chunk {
                Some(c) => self.chunks[base + c].observations.push(observation),
                None => observation.fold_into(&mut self.buckets),
            }
        }
        self.next_offset = offset + 1;
        Ok(())
    }

    /// Chunk ids in log order, each once (a retry within this window is dropped here).
    pub fn chunk_ids(&self) -> Vec<&str> {
        let mut seen = std::collections::HashSet::new();
        self.chunks
            .iter()
            .map(|c| c.id.as_str())
            .filter(|id| seen.insert(*id))
            .collect()
    }

    /// The deltas of the first occurrence of each chunk whose id `is_new` accepts.
    pub fn chunk_deltas(&self, mut is_new: impl FnMut(&str) -> bool) -> Deltas {
        let mut deltas = Deltas::new();
        let mut taken = std::collections::HashSet::new();
        for chunk in &self.chunks {
            if taken.insert(chunk.id.as_str()) && is_new(&chunk.id) {
                for o in &chunk.observations {
                    o.fold_into(&mut deltas);
                }
            }
        }
        deltas
    }
}

/// Series identities seen by this process, so each is hashed into metadata once.
#[derive(Default)]
pub struct SeriesCache {
    by_id: HashMap<i64, Arc<SeriesMeta>>,
}

const SERIES_CACHE_LIMIT: usize = 1_000_000;

impl SeriesCache {
    /// Forgets every series when fewer than `n` more would fit, so the ids a message
    /// resolves stay cached until it is folded.
    fn make_room(&mut self, n: usize) {
        if self.by_id.len() + n > SERIES_CACHE_LIMIT {
            self.by_id.clear();
        }
    }

    /// The metadata of a series resolved before (see [`Self::resolve`]).
    fn meta(&self, id: i64) -> Arc<SeriesMeta> {
        self.by_id[&id].clone()
    }

    /// The id of a series, cached with its metadata; a series not cached yet is first
    /// checked by ingest's rules (`tags` sorted by key, each key once).
    fn resolve(
        &mut self,
        service: &str,
        metric: &str,
        tags: &[(&str, &str)],
    ) -> Result<i64, FieldError> {
        let id = series_id(service, metric, tags.iter().copied());
        if let std::collections::hash_map::Entry::Vacant(slot) = self.by_id.entry(id) {
            tidemark_model::sample::check_wire_series(service, metric, tags)?;
            slot.insert(Arc::new(SeriesMeta {
                id,
                service: service.to_owned(),
                metric: metric.to_owned(),
                tags_json: serde_json::to_string(
                    &tags
                        .iter()
                        .copied()
                        .collect::<std::collections::BTreeMap<_, _>>(),
                )
                .expect("string map serialises"),
            }));
        }
        Ok(id)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::collections::BTreeMap;
    use tidemark_model::bucket::HOUR_MS;
    use tidemark_schemas::{SampleBatch, WireSample};

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
        assert!(!st.is_flushable());
        let batch = SampleBatch {
            batch_id: "b".into(),
            produced_at: 0,
            samples: vec![
                sample("a", 1.0, 1, false, 5 * HOUR_MS + 1),
                sample("a", 3.0, 2, true, 5 * HOUR_MS + 2),
                sample("a", 7.0, 1, false, 4 * HOUR_MS + 9),
                sample("b", 2.0, 1, false, 5 * HOUR_MS),
            ],
            chunks: vec![],
        };
        st.fold(10, &batch.view(), &mut cache).unwrap();
        assert!(st.is_flushable());
        assert_eq!(st.next_offset, 11);
        assert_eq!(st.samples, 5);
        assert_eq!(st.buckets.len(), 3);
        let a = cache.resolve("a", "m", &[]).unwrap();
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
    }

    fn encoded(samples: Vec<WireSample>) -> Vec<u8> {
        tidemark_schemas::encode_sample_batch(&SampleBatch {
            batch_id: "b".into(),
            produced_at: 0,
            samples,
            chunks: vec![],
        })
        .unwrap()
    }

    #[test]
    fn a_bad_message_is_set_aside_whole_and_its_offset_passed() {
        let mut st = PartitionState::new(Fence::Row(3, "c".into()), 3);
        let mut cache = SeriesCache::default();
        let good = encoded(vec![sample("a", 1.0, 1, false, HOUR_MS)]);
        let mut nul = sample("a", 1.0, 1, false, HOUR_MS);
        nul.tags.insert("k".into(), "a\0b".into());
        let invalid = encoded(vec![sample("a", 2.0, 1, false, HOUR_MS), nul]);

        assert_eq!(st.apply(3, &good, &mut cache, None).unwrap(), 1);
        let q = st.apply(4, &invalid, &mut cache, None).unwrap_err().clone();
        assert_eq!((q.offset, q.kind), (4, QuarantineKind::Invalid));
        assert_eq!(
            q.reason,
            "samples[1].tags.k: tag values must not contain U+0000"
        );
        assert_eq!(q.payload, invalid, "kept whole for a replay");
        let q = st
            .apply(5, b"\xC3\x01garbage", &mut cache, None)
            .unwrap_err();
        assert_eq!(q.kind, QuarantineKind::Undecodable);

        assert_eq!(st.next_offset, 6);
        assert_eq!(st.samples, 1, "nothing of a set-aside message is folded");
        assert_eq!(st.quarantined.len(), 2);
        assert!(st.is_flushable());
        let reset = st.reset();
        assert_eq!((reset.next_offset, reset.samples), (3, 0));
        assert!(reset.quarantined.is_empty() && !reset.is_flushable());
    }

    /// Costs 10 per sample and 1 per message.
    struct Counting;

    impl Backpressure for Counting {
        fn sample_cost(&self, _: &str, _: &str, _: &[(&str, &str)]) -> u64 {
            10
        }
        fn message_cost(&self) -> u64 {
            1
        }
        fn try_reserve(&self, _: i32, _: u64) -> bool {
            unreachable!("the fold only counts")
        }
        fn add(&self, _: i32, _: u64) {
            unreachable!("the fold only counts")
        }
        fn release(&self, _: i32, _: u64) {
            unreachable!("the fold only counts")
        }
    }

    #[test]
    fn the_backpressure_cost_counts_each_message_and_its_samples() {
        let mut st = PartitionState::new(Fence::Row(0, "c".into()), 0);
        let mut cache = SeriesCache::default();
        let two = encoded(vec![
            sample("a", 1.0, 1, false, HOUR_MS),
            sample("b", 1.0, 1, false, HOUR_MS),
        ]);
        st.apply(0, &two, &mut cache, Some(&Counting)).unwrap();
        assert_eq!(st.cost, 21);
        st.apply(1, b"garbage", &mut cache, Some(&Counting))
            .unwrap_err();
        assert_eq!(
            st.cost, 22,
            "an undecodable message counts as a message only"
        );
        let invalid = encoded(vec![sample("a", f64::NAN, 1, false, HOUR_MS)]);
        st.apply(2, &invalid, &mut cache, Some(&Counting))
            .unwrap_err();
        assert_eq!(st.cost, 33, "a set-aside message releases its samples too");
        st.apply(3, &two, &mut cache, None).unwrap();
        assert_eq!(st.cost, 33, "nothing is counted without a backpressure");
        assert_eq!(st.committed("c").cost, 0);
        let mut reset = st.reset();
        reset.quarantine_applied(
            0,
            &two,
            QuarantineKind::Refused,
            "r".into(),
            Some(&Counting),
        );
        assert_eq!(
            reset.cost, 21,
            "a message isolated and set aside is counted once"
        );
    }

    #[test]
    fn chunk_samples_wait_and_only_first_occurrences_count() {
        use tidemark_schemas::Chunk;
        let mut st = PartitionState::new(Fence::Absent, 0);
        let mut cache = SeriesCache::default();
        let chunk = |id: &str, first, count| Chunk {
            id: id.into(),
            first,
            count,
        };
        let samples = |v: f64| {
            vec![
                sample("a", v, 1, false, HOUR_MS),
                sample("a", v, 1, false, HOUR_MS),
                sample("a", v, 1, false, HOUR_MS),
            ]
        };
        // Sample 0 is plain; samples 1..3 are chunk "x".
        st.fold(
            0,
            &SampleBatch {
                batch_id: "1".into(),
                produced_at: 0,
                samples: samples(1.0),
                chunks: vec![chunk("x", 1, 2)],
            }
            .view(),
            &mut cache,
        )
        .unwrap();
        // A retry of "x", plus a new chunk "y".
        st.fold(
            1,
            &SampleBatch {
                batch_id: "2".into(),
                produced_at: 0,
                samples: samples(5.0),
                chunks: vec![chunk("x", 0, 2), chunk("y", 2, 1)],
            }
            .view(),
            &mut cache,
        )
        .unwrap();
        let id = cache.resolve("a", "m", &[]).unwrap();
        assert_eq!(
            st.buckets[&(id, HOUR_MS)].1.count,
            1,
            "only the plain sample is folded at once"
        );
        assert_eq!(st.chunk_ids(), vec!["x", "y"]);
        assert_eq!(st.samples, 6);
        let all_new = st.chunk_deltas(|_| true);
        let b = &all_new[&(id, HOUR_MS)].1;
        assert_eq!(
            (b.count, b.sum),
            (3, 1.0 + 1.0 + 5.0),
            "first x (2 × 1.0) and y (5.0); the retried x is skipped"
        );
        let x_known = st.chunk_deltas(|id| id != "x");
        assert_eq!(
            x_known[&(id, HOUR_MS)].1.count,
            1,
            "x applied in an earlier flush: only y"
        );
    }

    #[test]
    fn a_gap_is_fetched_again_until_it_outlives_the_grace() {
        let t0 = Instant::now();
        let mut st = PartitionState::new(Fence::Row(50, "c".into()), 50);
        let refetches: Vec<OnGap> = (0..5).map(|_| st.on_gap(t0)).collect();
        assert_eq!(
            refetches,
            [50, 49, 48, 46, 42].map(OnGap::Refetch),
            "from the expected offset, then ever earlier"
        );
        let st = &mut st.committed("c");
        assert_eq!(
            st.on_gap(t0 + GAP_GRACE / 2),
            OnGap::Refetch(34),
            "a flush does not restart the search"
        );
        for _ in 6..GAP_REFETCHES {
            assert!(matches!(st.on_gap(t0 + GAP_GRACE), OnGap::Refetch(_)));
        }
        assert_eq!(
            st.on_gap(t0 + GAP_GRACE / 2),
            OnGap::Refetch(50 - (1 << (GAP_REFETCHES - 1))),
            "not before the grace"
        );
        assert_eq!(st.on_gap(t0 + GAP_GRACE), OnGap::Accept);
        assert_eq!(
            st.on_gap(t0 + GAP_GRACE),
            OnGap::Refetch(50),
            "the next gap is looked into afresh"
        );
    }

    #[test]
    fn a_gap_closed_in_time_is_forgotten() {
        let t0 = Instant::now();
        let mut cache = SeriesCache::default();
        let mut st = PartitionState::new(Fence::Row(5, "c".into()), 5);
        assert_eq!(st.on_gap(t0), OnGap::Refetch(5));
        assert_eq!(st.on_gap(t0), OnGap::Refetch(4));
        let batch = SampleBatch {
            batch_id: "b".into(),
            produced_at: 0,
            samples: vec![sample("a", 1.0, 1, false, HOUR_MS)],
            chunks: vec![],
        };
        st.fold(5, &batch.view(), &mut cache).unwrap();
        assert_eq!(
            st.on_gap(t0 + GAP_GRACE * 2),
            OnGap::Refetch(6),
            "a jump past offset 6 is a new gap"
        );
    }

    #[test]
    fn a_fresh_partition_is_flushable_until_it_has_a_row() {
        assert!(PartitionState::new(Fence::Absent, 0).is_flushable());
    }
}
