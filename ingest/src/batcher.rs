//! Per-partition batching: samples are routed by series to a partition and encoded to
//! Avro on the submitter's task, then packed at most [`MAX_BATCH`] to a Kafka message
//! (flushed when full, or once no more samples are waiting and the linger has passed),
//! and a submitter learns the broker's verdict for every batch that holds its samples.

use std::sync::Arc;
use std::time::Duration;

use futures::stream::{FuturesUnordered, StreamExt};
use rdkafka::producer::FutureRecord;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Mutex;
use tidemark_model::series::partition_of;
use tidemark_model::Sample;
use tidemark_runtime::backpressure::Backpressure;
use tidemark_schemas::{encode_sample_batch_of_datums, write_sample_datum, Chunk, SampleRef};
use tokio::sync::{mpsc, Notify};
use tokio::task::JoinHandle;

use crate::producer::ProducerHandle;
use crate::telemetry;
use tokio::time::Instant;

/// Most samples in one Kafka message (SPEC §2).
pub const MAX_BATCH: usize = 100;

/// Parts waiting per partition before submitters are made to wait.
const QUEUE_DEPTH: usize = 1024;

/// Bytes set aside per sample before encoding, so that a partition's buffer rarely
/// grows: the datum of a sample with one short tag. A larger one grows it once or twice.
const DATUM_BYTES: usize = 64;

/// The broker's verdict on one batch; the error text is shared by its waiters.
type Outcome = Result<(), Arc<str>>;

/// What one submitter waits for: every batch holding one of its samples settled.
/// `pending` counts its parts not yet placed plus the batches they joined not yet
/// settled, so it reaches 0 only once everything is known; the last to settle wakes the
/// submitter (one wake-up per request, whatever the number of partitions).
struct Receipt {
    pending: AtomicUsize,
    failure: Mutex<Option<Arc<str>>>,
    done: Notify,
}

impl Receipt {
    fn new(parts: usize) -> Arc<Self> {
        Arc::new(Self {
            pending: AtomicUsize::new(parts),
            failure: Mutex::new(None),
            done: Notify::new(),
        })
    }

    fn join(&self) {
        self.pending.fetch_add(1, Ordering::AcqRel);
    }

    fn settle(&self, outcome: &Outcome) {
        if let Err(reason) = outcome {
            self.failure
                .lock()
                .expect("failure lock")
                .get_or_insert_with(|| reason.clone());
        }
        if self.pending.fetch_sub(1, Ordering::AcqRel) == 1 {
            self.done.notify_one();
        }
    }

    async fn wait(&self) -> Outcome {
        // `notify_one` keeps a permit when nobody waits yet, so no wake-up is lost.
        while self.pending.load(Ordering::Acquire) > 0 {
            self.done.notified().await;
        }
        match self.failure.lock().expect("failure lock").take() {
            Some(reason) => Err(reason),
            None => Ok(()),
        }
    }
}

/// Samples of one partition as Avro datums, back to back.
#[derive(Default)]
struct Encoded {
    datums: Vec<u8>,
    /// Per sample: where its datum ends, and its backpressure cost.
    spans: Vec<Span>,
}

#[derive(Clone, Copy)]
struct Span {
    end: usize,
    /// 0 without a backpressure.
    cost: u64,
}

impl Encoded {
    fn with_capacity(samples: usize) -> Self {
        Self {
            datums: Vec::with_capacity(samples * DATUM_BYTES),
            spans: Vec::with_capacity(samples),
        }
    }

    fn push(&mut self, s: &Sample<'_>, cost: u64) {
        write_sample_datum(
            &mut self.datums,
            &SampleRef {
                service: s.service,
                metric: s.metric,
                value: s.value,
                count: s.count as i64,
                error: s.error,
                timestamp: s.timestamp_ms,
                tags: &s.tags,
            },
        );
        self.spans.push(Span {
            end: self.datums.len(),
            cost,
        });
    }

    fn is_empty(&self) -> bool {
        self.spans.is_empty()
    }

    fn len(&self) -> usize {
        self.spans.len()
    }

    fn cost(&self) -> u64 {
        self.spans.iter().map(|s| s.cost).sum()
    }

    /// Each sample's datum with its backpressure cost.
    fn iter(&self) -> impl Iterator<Item = (&[u8], u64)> {
        let starts = std::iter::once(0).chain(self.spans.iter().map(|s| s.end));
        starts
            .zip(&self.spans)
            .map(|(start, s)| (&self.datums[start..s.end], s.cost))
    }

    /// Splits into runs of at most `max` samples.
    fn split(self, max: usize) -> Vec<Encoded> {
        if self.len() <= max {
            return vec![self];
        }
        let mut start = 0;
        self.spans
            .chunks(max)
            .map(|spans| {
                let end = spans.last().expect("chunks are not empty").end;
                let part = Encoded {
                    datums: self.datums[start..end].to_vec(),
                    spans: spans
                        .iter()
                        .map(|s| Span {
                            end: s.end - start,
                            ..*s
                        })
                        .collect(),
                };
                start = end;
                part
            })
            .collect()
    }
}

struct Part {
    samples: Encoded,
    /// Set for a chunk of an idempotent request: it travels whole in one message.
    chunk: Option<String>,
    receipt: Arc<Receipt>,
}

/// Why samples were not acknowledged.
#[derive(Debug, thiserror::Error)]
pub enum SubmitError {
    #[error("the broker did not acknowledge in time")]
    Timeout,
    #[error("the broker refused the batch: {0}")]
    Rejected(Arc<str>),
    #[error("ingest is shutting down")]
    Closed,
    #[error("the embedded broker holds as much unconsumed data as it safely can; the aggregator is behind")]
    BacklogFull,
}

/// The submitting side; cheap to share between request handlers.
pub struct Batcher {
    queues: Vec<mpsc::Sender<Part>>,
    ack_timeout: Duration,
    backpressure: Option<Arc<dyn Backpressure>>,
}

/// The partition tasks; they end once every [`Batcher`] is dropped and their batches
/// are delivered or failed.
pub struct BatcherTasks(Vec<JoinHandle<()>>);

impl BatcherTasks {
    pub async fn join(self) {
        for task in self.0 {
            let _ = task.await;
        }
    }
}

/// Settings of a batcher.
pub struct BatcherConfig {
    pub topic: String,
    pub partitions: i32,
    pub linger: Duration,
    pub ack_timeout: Duration,
    /// A bound on the broker's backlog, reserved before producing (`standalone` sets
    /// its embedded broker's); none by default.
    pub backpressure: Option<Arc<dyn Backpressure>>,
}

impl Batcher {
    pub fn start(producers: Arc<ProducerHandle>, config: BatcherConfig) -> (Self, BatcherTasks) {
        let mut queues = Vec::new();
        let mut tasks = Vec::new();
        for partition in 0..config.partitions {
            let (tx, rx) = mpsc::channel(QUEUE_DEPTH);
            queues.push(tx);
            let worker = PartitionWorker {
                producers: producers.clone(),
                topic: config.topic.clone(),
                partition,
                linger: config.linger,
                current: Vec::new(),
                current_count: 0,
                current_cost: 0,
                current_chunks: Vec::new(),
                current_receipts: Vec::new(),
                deadline: None,
                backpressure: config.backpressure.clone(),
            };
            tasks.push(tokio::spawn(worker.run(rx)));
        }
        let batcher = Self {
            queues,
            ack_timeout: config.ack_timeout,
            backpressure: config.backpressure,
        };
        (batcher, BatcherTasks(tasks))
    }

    pub fn partitions(&self) -> i32 {
        self.queues.len() as i32
    }

    /// Hands `samples` to their partitions and waits until the broker acknowledged every
    /// batch holding one of them (or the bounded wait ends). With `request` (the digest of
    /// an Idempotency-Key and its body), each partition's samples go as chunks of at most
    /// [`MAX_BATCH`] that a consumer recognises when a retry sends them again.
    pub async fn submit(
        &self,
        samples: &[Sample<'_>],
        request: Option<u128>,
    ) -> Result<usize, SubmitError> {
        let n = samples.len();
        let routes: Vec<(usize, u64)> = samples
            .iter()
            .map(|s| {
                let partition = partition_of(s.series_id(), self.partitions()) as usize;
                let cost = self
                    .backpressure
                    .as_ref()
                    .map_or(0, |b| b.sample_cost(s.service, s.metric, &s.tags));
                (partition, cost)
            })
            .collect();
        let mut room = vec![0usize; self.queues.len()];
        for &(p, _) in &routes {
            room[p] += 1;
        }
        let mut groups: Vec<Encoded> = room.into_iter().map(Encoded::with_capacity).collect();
        for (s, &(p, cost)) in samples.iter().zip(&routes) {
            groups[p].push(s, cost);
        }
        if let Some(backpressure) = &self.backpressure {
            reserve(backpressure.as_ref(), &groups)?;
        }
        let parts: Vec<(usize, Option<String>, Encoded)> = groups
            .into_iter()
            .enumerate()
            .filter(|(_, g)| !g.is_empty())
            .flat_map(|(p, group)| {
                parts(group, p as i32, request)
                    .into_iter()
                    .map(move |(chunk, samples)| (p, chunk, samples))
            })
            .collect();
        let receipt = Receipt::new(parts.len());
        let wait = async {
            for (p, chunk, samples) in parts {
                self.queues[p]
                    .send(Part {
                        samples,
                        chunk,
                        receipt: receipt.clone(),
                    })
                    .await
                    .map_err(|_| SubmitError::Closed)?;
            }
            receipt.wait().await.map_err(SubmitError::Rejected)?;
            Ok(n)
        };
        // The producer fails a batch after `ack_timeout` itself; the margin covers queueing.
        tokio::time::timeout(self.ack_timeout + Duration::from_secs(1), wait)
            .await
            .map_err(|_| SubmitError::Timeout)?
    }
}

/// A partition's samples as parts: one part, or for an idempotent request chunks of at
/// most [`MAX_BATCH`] whose ids depend only on the request, partition and position, so a
/// retry of the same request yields the same chunks.
fn parts(group: Encoded, partition: i32, request: Option<u128>) -> Vec<(Option<String>, Encoded)> {
    let Some(request) = request else {
        return vec![(None, group)];
    };
    group
        .split(MAX_BATCH)
        .into_iter()
        .enumerate()
        .map(|(index, chunk)| {
            let mut id = request.to_le_bytes().to_vec();
            id.extend_from_slice(&partition.to_le_bytes());
            id.extend_from_slice(&(index as u32).to_le_bytes());
            (
                Some(format!("{:032x}", xxhash_rust::xxh3::xxh3_128(&id))),
                chunk,
            )
        })
        .collect()
}

/// Reserves backlog room for every group, or none at all.
fn reserve(backpressure: &dyn Backpressure, groups: &[Encoded]) -> Result<(), SubmitError> {
    let costs: Vec<u64> = groups.iter().map(Encoded::cost).collect();
    if backpressure.try_reserve_all(&costs) {
        Ok(())
    } else {
        Err(SubmitError::BacklogFull)
    }
}

struct PartitionWorker {
    producers: Arc<ProducerHandle>,
    topic: String,
    partition: i32,
    linger: Duration,
    /// The datums of the batch being filled, how many, and their backpressure cost.
    current: Vec<u8>,
    current_count: usize,
    current_cost: u64,
    current_chunks: Vec<Chunk>,
    /// The submitters waiting on the batch being filled.
    current_receipts: Vec<Arc<Receipt>>,
    deadline: Option<Instant>,
    backpressure: Option<Arc<dyn Backpressure>>,
}

impl PartitionWorker {
    async fn run(mut self, mut rx: mpsc::Receiver<Part>) {
        let mut inflight = FuturesUnordered::new();
        loop {
            let deadline = self.deadline;
            // Biased: a partly filled batch goes out only when no more parts are waiting
            // (and its linger has passed), so under load batches fill, and when the load
            // pauses nobody waits on a timer. Deliveries come first: they answer requests.
            tokio::select! {
                biased;
                Some(()) = inflight.next(), if !inflight.is_empty() => {}
                part = rx.recv() => match part {
                    Some(part) => self.place(part, &mut inflight),
                    None => break,
                },
                () = sleep_until(deadline), if deadline.is_some() => self.flush(&mut inflight),
            }
        }
        self.flush(&mut inflight);
        while inflight.next().await.is_some() {}
    }

    fn place(&mut self, part: Part, inflight: &mut FuturesUnordered<Delivery>) {
        let mut in_current = false;
        if let Some(id) = part.chunk {
            // A chunk is never split: it starts a new message when it does not fit.
            if self.current_count + part.samples.len() > MAX_BATCH {
                self.flush(inflight);
            }
            self.current_chunks.push(Chunk {
                id,
                first: self.current_count as i32,
                count: part.samples.len() as i32,
            });
        }
        for (datum, cost) in part.samples.iter() {
            if self.current_count == 0 {
                self.deadline = Some(Instant::now() + self.linger);
            }
            if !in_current {
                part.receipt.join();
                self.current_receipts.push(part.receipt.clone());
                in_current = true;
            }
            self.current.extend_from_slice(datum);
            self.current_count += 1;
            self.current_cost += cost;
            if self.current_count == MAX_BATCH {
                self.flush(inflight);
                in_current = false;
            }
        }
        // Placed. The submitter may have given up (timeout); its samples still go out.
        part.receipt.settle(&Ok(()));
    }

    fn flush(&mut self, inflight: &mut FuturesUnordered<Delivery>) {
        self.deadline = None;
        if self.current_count == 0 {
            return;
        }
        let size = std::mem::take(&mut self.current_count);
        let cost = std::mem::take(&mut self.current_cost);
        let reserved = self.backpressure.clone().map(|b| {
            let message = b.message_cost();
            b.add(self.partition, message);
            (b, self.partition, cost + message)
        });
        let ack = BatchAck {
            receipts: std::mem::take(&mut self.current_receipts),
            reserved,
        };
        let payload = encode_sample_batch_of_datums(
            &uuid::Uuid::new_v4().to_string(),
            chrono::Utc::now().timestamp_millis(),
            size,
            &self.current,
            &std::mem::take(&mut self.current_chunks),
        );
        self.current.clear();
        let record: FutureRecord<'_, [u8], [u8]> = FutureRecord::to(&self.topic)
            .partition(self.partition)
            .payload(&payload);
        let producers = self.producers.clone();
        let sent = Instant::now();
        match self.producers.get().send_result(record) {
            Ok(delivery) => inflight.push(Box::pin(async move {
                match delivery.await {
                    Ok(Ok(_)) => {
                        telemetry::BROKER_ACK.record(sent.elapsed().as_secs_f64());
                        telemetry::BATCHES_PRODUCED.increment(1);
                        telemetry::SAMPLES_PRODUCED.increment(size as u64);
                        telemetry::BATCH_SAMPLES.record(size as f64);
                        ack.settle(Ok(()));
                    }
                    Ok(Err((e, _))) => {
                        producers.report(&e);
                        ack.fail(e.to_string());
                    }
                    Err(_) => ack.fail("producer closed".into()),
                }
            })),
            Err((e, _)) => {
                self.producers.report(&e);
                ack.fail(e.to_string());
            }
        }
    }
}

type Delivery = std::pin::Pin<Box<dyn std::future::Future<Output = ()> + Send>>;

/// The waiters of one batch, and the backlog it reserved.
struct BatchAck {
    receipts: Vec<Arc<Receipt>>,
    reserved: Option<(Arc<dyn Backpressure>, i32, u64)>,
}

impl BatchAck {
    /// Tells the batch's waiters the broker's verdict.
    fn settle(mut self, outcome: Outcome) {
        for receipt in std::mem::take(&mut self.receipts) {
            receipt.settle(&outcome);
        }
    }

    /// The batch is not in the broker: tell its waiters and free its backlog room.
    fn fail(mut self, reason: String) {
        telemetry::batch_not_acknowledged(&reason);
        if let Some((backlog, partition, bytes)) = self.reserved.take() {
            backlog.release(partition, bytes);
        }
        self.settle(Err(reason.into()));
    }
}

impl Drop for BatchAck {
    /// A batch dropped unsettled (the worker is gone) must not leave its waiters hanging.
    fn drop(&mut self) {
        let closed: Outcome = Err("ingest is shutting down".into());
        for receipt in self.receipts.drain(..) {
            receipt.settle(&closed);
        }
    }
}

async fn sleep_until(deadline: Option<Instant>) {
    match deadline {
        Some(d) => tokio::time::sleep_until(d).await,
        None => std::future::pending().await,
    }
}
