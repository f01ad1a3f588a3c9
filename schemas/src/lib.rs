//! Avro schemas of Tidemark's Kafka topics, their Rust wire types, and the
//! Avro single-object encoding used for Kafka message values.
//!
//! A single-object message is the two marker bytes `0xC3 0x01`, the 8-byte
//! little-endian CRC-64-AVRO (Rabin) fingerprint of the writer schema's
//! Parsing Canonical Form, then the Avro binary encoding of the datum. The
//! fingerprint lets a reader pick the writer schema among the ones it knows
//! and resolve the datum to its own (reader) schema, so producers and
//! consumers can be upgraded independently as long as the schemas stay
//! compatible.
//!
//! Messages of the samples topic are encoded, and decoded when written with
//! the current [`SAMPLES_SCHEMA`] (v2), by a hand-written codec specific to
//! that schema (tested byte for byte against apache-avro); messages written
//! with the previous [`SAMPLES_SCHEMA_V1`] (without `chunks`) are resolved to
//! the current schema by apache-avro.
//!
//! This is the only crate of the workspace that depends on `apache-avro`.

mod breach;
mod codec;
mod fingerprint;

pub use breach::{
    decode_breach, encode_breach, Breach, BreachState, Series, Severity, BREACHES_SCHEMA,
};

use std::collections::{BTreeMap, HashMap};
use std::sync::LazyLock;

use apache_avro::schema::{Names, ResolvedSchema};
use apache_avro::schema_compatibility::SchemaCompatibility;
use apache_avro::{GenericSingleObjectReader, Schema};
use serde::de::DeserializeOwned;
use serde::{Deserialize, Serialize};

/// Avro schema (`.avsc` text) of the values of the samples topic: one
/// `io.tidemark.SampleBatch` record per message. Version 2: v1 plus the
/// batch's `chunks` (default empty).
pub const SAMPLES_SCHEMA: &str = include_str!("../tidemark.samples.avsc");

/// Version 1 of [`SAMPLES_SCHEMA`] (without `chunks`), which older producers
/// wrote and which [`decode_sample_batch`] still reads.
pub const SAMPLES_SCHEMA_V1: &str = include_str!("../history/tidemark.samples.v1.avsc");

/// The two marker bytes that start every single-object message.
const MAGIC: [u8; 2] = [0xC3, 0x01];

/// Length of a single-object header: marker bytes plus 8-byte fingerprint.
const HEADER_LEN: usize = 10;

/// A batch of samples, as carried by one message of the samples topic
/// (Avro record `io.tidemark.SampleBatch`).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct SampleBatch {
    /// UUID of the batch (hyphenated text form), assigned by ingest.
    pub batch_id: String,
    /// When the message was produced, in milliseconds since the Unix epoch.
    pub produced_at: i64,
    /// The samples, in the order they were received.
    pub samples: Vec<WireSample>,
    /// Runs of `samples` sent with an Idempotency-Key (absent before schema v2).
    #[serde(default)]
    pub chunks: Vec<Chunk>,
}

/// A run of a batch's samples that is one chunk of an idempotent request for the
/// batch's partition (Avro record `io.tidemark.Chunk`). The first occurrence of an `id`
/// in a partition's log is applied; later ones are retries and are skipped.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Chunk {
    /// Hex digest of (idempotency key, request body, partition, chunk index).
    pub id: String,
    /// Index in `samples` of the chunk's first sample.
    pub first: i32,
    /// How many consecutive samples the chunk holds.
    pub count: i32,
}

/// One sample on the wire (Avro record `io.tidemark.Sample`).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
// apache-avro's deserializer checks the struct name against the record name.
#[serde(rename = "Sample")]
pub struct WireSample {
    /// Service that emitted the sample.
    pub service: String,
    /// Name of the metric.
    pub metric: String,
    /// Observed value (the sum of the observations for a pre-aggregated sample).
    pub value: f64,
    /// Number of observations the sample stands for.
    pub count: i64,
    /// Whether the observed operation failed.
    pub error: bool,
    /// When the observation was made, in milliseconds since the Unix epoch.
    pub timestamp: i64,
    /// Free-form string labels.
    pub tags: BTreeMap<String, String>,
}

/// A [`SampleBatch`] that borrows its strings from the message it was read from
/// (see [`with_sample_batch`]).
#[derive(Debug, Clone, PartialEq)]
pub struct SampleBatchView<'a> {
    pub batch_id: &'a str,
    pub produced_at: i64,
    pub samples: Vec<SampleView<'a>>,
    pub chunks: Vec<ChunkView<'a>>,
}

/// A [`Chunk`], borrowed.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ChunkView<'a> {
    pub id: &'a str,
    pub first: i32,
    pub count: i32,
}

/// A [`WireSample`], borrowed.
#[derive(Debug, Clone, PartialEq)]
pub struct SampleView<'a> {
    pub service: &'a str,
    pub metric: &'a str,
    pub value: f64,
    pub count: i64,
    pub error: bool,
    pub timestamp: i64,
    /// Sorted by key, each key once, as a map iterates.
    pub tags: Vec<(&'a str, &'a str)>,
}

impl SampleBatch {
    /// The batch, borrowed.
    pub fn view(&self) -> SampleBatchView<'_> {
        SampleBatchView {
            batch_id: &self.batch_id,
            produced_at: self.produced_at,
            samples: self
                .samples
                .iter()
                .map(|s| SampleView {
                    service: &s.service,
                    metric: &s.metric,
                    value: s.value,
                    count: s.count,
                    error: s.error,
                    timestamp: s.timestamp,
                    tags: s
                        .tags
                        .iter()
                        .map(|(k, v)| (k.as_str(), v.as_str()))
                        .collect(),
                })
                .collect(),
            chunks: self
                .chunks
                .iter()
                .map(|c| ChunkView {
                    id: &c.id,
                    first: c.first,
                    count: c.count,
                })
                .collect(),
        }
    }
}

impl SampleBatchView<'_> {
    /// The batch with its strings copied.
    pub fn to_batch(&self) -> SampleBatch {
        SampleBatch {
            batch_id: self.batch_id.to_owned(),
            produced_at: self.produced_at,
            samples: self
                .samples
                .iter()
                .map(|s| WireSample {
                    service: s.service.to_owned(),
                    metric: s.metric.to_owned(),
                    value: s.value,
                    count: s.count,
                    error: s.error,
                    timestamp: s.timestamp,
                    tags: s
                        .tags
                        .iter()
                        .map(|&(k, v)| (k.to_owned(), v.to_owned()))
                        .collect(),
                })
                .collect(),
            chunks: self
                .chunks
                .iter()
                .map(|c| Chunk {
                    id: c.id.to_owned(),
                    first: c.first,
                    count: c.count,
                })
                .collect(),
        }
    }
}

/// Orders tags as a map of them would: sorted by key, and of a key given more than
/// once only the last value.
pub fn normalize_tags(tags: &mut Vec<(&str, &str)>) {
    if tags.is_sorted_by(|a, b| a.0 < b.0) {
        return;
    }
    // A stable sort of the reversed list puts the last value of a key first.
    tags.reverse();
    tags.sort_by_key(|t| t.0);
    tags.dedup_by_key(|t| t.0);
}

/// A sample's fields, borrowed, for encoding its datum ahead of its batch (see
/// [`write_sample_datum`]).
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct SampleRef<'a> {
    pub service: &'a str,
    pub metric: &'a str,
    pub value: f64,
    pub count: i64,
    pub error: bool,
    pub timestamp: i64,
    /// Sorted by key, each key once.
    pub tags: &'a [(&'a str, &'a str)],
}

/// Errors of schema parsing, encoding and decoding.
#[derive(Debug, thiserror::Error)]
pub enum SchemaError {
    /// The bytes do not start with a single-object header (too short, or wrong
    /// marker bytes).
    #[error("not an avro single-object message: {0}")]
    NotSingleObject(&'static str),
    /// The message was written with a schema whose fingerprint the decoder
    /// does not know.
    #[error("unknown writer schema fingerprint {0:016x}")]
    UnknownFingerprint(u64),
    /// The datum does not decode with the writer schema, or does not resolve
    /// to the reader schema or to the requested Rust type.
    #[error("cannot decode avro datum: {0}")]
    Decode(String),
    /// The value does not match the writer schema.
    #[error("cannot encode avro datum: {0}")]
    Encode(String),
    /// The schema text is not a valid Avro schema.
    #[error("invalid avro schema: {0}")]
    InvalidSchema(String),
    /// Data written with the writer schema cannot be read with the reader schema.
    #[error("writer schema is not compatible with the reader schema: {0}")]
    IncompatibleSchema(String),
}

/// Returns the fingerprint that single-object messages written with
/// `schema` (`.avsc` text) carry: the CRC-64-AVRO (Rabin) fingerprint of the
/// schema's Parsing Canonical Form.
pub fn schema_fingerprint(schema: &str) -> Result<u64, SchemaError> {
    Ok(fingerprint_of(&parse_schema(schema)?))
}

/// Returns the Parsing Canonical Form of `schema` (`.avsc` text), the text
/// whose fingerprint identifies the schema in message headers.
pub fn parsing_canonical_form(schema: &str) -> Result<String, SchemaError> {
    Ok(fingerprint::parsing_canonical_form(&parse_schema(schema)?))
}

fn parse_schema(schema: &str) -> Result<Schema, SchemaError> {
    Schema::parse_str(schema).map_err(|e| SchemaError::InvalidSchema(e.to_string()))
}

fn fingerprint_of(schema: &Schema) -> u64 {
    fingerprint::rabin_fingerprint(fingerprint::parsing_canonical_form(schema).as_bytes())
}

fn header(fingerprint: u64) -> [u8; HEADER_LEN] {
    let mut header = [0; HEADER_LEN];
    header[..2].copy_from_slice(&MAGIC);
    header[2..].copy_from_slice(&fingerprint.to_le_bytes());
    header
}

/// A reader that knows a set of writer schemas by fingerprint and resolves
/// them to one reader schema.
pub struct Decoder {
    reader: Schema,
    /// The named types of the reader schema, to resolve references in it.
    reader_names: Names,
    reader_fingerprint: u64,
    /// Readers of the known writer schemas (including the reader schema
    /// itself), by fingerprint.
    writers: HashMap<u64, GenericSingleObjectReader>,
}

impl Decoder {
    /// Creates a decoder resolving to `reader_schema` (`.avsc` text). Messages
    /// written with the reader schema itself are known from the start.
    pub fn new(reader_schema: &str) -> Result<Self, SchemaError> {
        let schema = parse_schema(reader_schema)?;
        let reader_fingerprint = fingerprint_of(&schema);
        let mut writers = HashMap::new();
        writers.insert(
            reader_fingerprint,
            single_object_reader(schema.clone(), reader_fingerprint)?,
        );
        let reader_names = ResolvedSchema::new(&schema)
            .map_err(|e| SchemaError::InvalidSchema(e.to_string()))?
            .get_names()
            .iter()
            .map(|(name, schema)| (name.clone(), (*schema).clone()))
            .collect();
        Ok(Self {
            reader: schema,
            reader_names,
            reader_fingerprint,
            writers,
        })
    }

    /// Registers another known writer schema (e.g. a newer compatible
    /// version of the reader schema). Fails if data written with it cannot be
    /// resolved to the reader schema. A schema whose fingerprint is already
    /// known is encoded identically, so registering it changes nothing.
    pub fn with_writer_schema(mut self, writer_schema: &str) -> Result<Self, SchemaError> {
        let schema = parse_schema(writer_schema)?;
        let fingerprint = fingerprint_of(&schema);
        if self.writers.contains_key(&fingerprint) {
            return Ok(self);
        }
        SchemaCompatibility::can_read(&schema, &self.reader)
            .map_err(|e| SchemaError::IncompatibleSchema(e.to_string()))?;
        self.writers
            .insert(fingerprint, single_object_reader(schema, fingerprint)?);
        Ok(self)
    }

    /// Decodes a single-object message into `T`, resolving the datum from
    /// its writer schema to the reader schema. The whole of `bytes` must be
    /// one message. Never panics, whatever the bytes.
    pub fn decode<T: DeserializeOwned>(&self, bytes: &[u8]) -> Result<T, SchemaError> {
        let (fingerprint, _) = read_header(bytes)?;
        let writer = self
            .writers
            .get(&fingerprint)
            .ok_or(SchemaError::UnknownFingerprint(fingerprint))?;
        // The single-object reader checks the header again and consumes the
        // message from `rest`.
        let mut rest = bytes;
        let decoded = if fingerprint == self.reader_fingerprint {
            // Same schema: deserialize straight from the bytes.
            writer.read_deser(&mut rest)
        } else {
            writer
                .read_value(&mut rest)
                .and_then(|value| value.resolve_with_names(&self.reader, &self.reader_names))
                .and_then(|value| apache_avro::from_value(&value))
        };
        let value = decoded.map_err(|e| SchemaError::Decode(e.to_string()))?;
        if !rest.is_empty() {
            return Err(SchemaError::Decode(format!(
                "{} trailing bytes after the datum",
                rest.len()
            )));
        }
        Ok(value)
    }
}

/// Returns a reader of single-object messages written with `schema`.
fn single_object_reader(
    schema: Schema,
    fingerprint: u64,
) -> Result<GenericSingleObjectReader, SchemaError> {
    GenericSingleObjectReader::builder()
        .schema(schema)
        .header(header(fingerprint).to_vec())
        .build()
        .map_err(|e| SchemaError::InvalidSchema(e.to_string()))
}

/// Checks the single-object header of `bytes` and returns its fingerprint and
/// the datum that follows it.
fn read_header(bytes: &[u8]) -> Result<(u64, &[u8]), SchemaError> {
    let Some((header, datum)) = bytes.split_first_chunk::<HEADER_LEN>() else {
        return Err(SchemaError::NotSingleObject(
            "shorter than the 10-byte header",
        ));
    };
    if header[..2] != MAGIC {
        return Err(SchemaError::NotSingleObject("bad marker bytes"));
    }
    let mut fingerprint = [0; 8];
    fingerprint.copy_from_slice(&header[2..]);
    Ok((u64::from_le_bytes(fingerprint), datum))
}

/// Fingerprint of [`SAMPLES_SCHEMA`] (checked by tests). The hand-written
/// codec of the `codec` module implements exactly this schema: a message
/// carrying this fingerprint is decoded by it.
const SAMPLES_FINGERPRINT: u64 = 0x8461_bfcb_c527_c9ca;

/// Decoder of the samples topic for writer schemas other than the current
/// one: [`SAMPLES_SCHEMA_V1`], whose messages get empty `chunks` (the
/// embedded schemas are checked by tests).
static SAMPLES_DECODER: LazyLock<Decoder> = LazyLock::new(|| {
    Decoder::new(SAMPLES_SCHEMA)
        .and_then(|decoder| decoder.with_writer_schema(SAMPLES_SCHEMA_V1))
        .expect("embedded samples schemas are valid and v1 resolves to v2")
});

/// Encodes `batch` as a single-object message of [`SAMPLES_SCHEMA`].
///
/// Every `SampleBatch` is a valid datum of the schema, so this does not
/// fail; the `Result` leaves room for schemas with constraints.
pub fn encode_sample_batch(batch: &SampleBatch) -> Result<Vec<u8>, SchemaError> {
    let mut out = Vec::with_capacity(codec::encoded_len_estimate(batch));
    out.extend_from_slice(&header(SAMPLES_FINGERPRINT));
    codec::write_sample_batch(&mut out, batch);
    Ok(out)
}

/// Appends the Avro datum of one sample (an item of a batch's `samples`) to `out`.
pub fn write_sample_datum(out: &mut Vec<u8>, sample: &SampleRef<'_>) {
    codec::write_sample_ref(out, sample);
}

/// Encodes, as [`encode_sample_batch`] does, a batch whose `count` samples are already
/// datums written by [`write_sample_datum`], one after another in `samples`.
pub fn encode_sample_batch_of_datums(
    batch_id: &str,
    produced_at: i64,
    count: usize,
    samples: &[u8],
    chunks: &[Chunk],
) -> Vec<u8> {
    let mut out =
        Vec::with_capacity(HEADER_LEN + batch_id.len() + samples.len() + 32 + chunks.len() * 48);
    out.extend_from_slice(&header(SAMPLES_FINGERPRINT));
    codec::write_sample_batch_of_datums(&mut out, batch_id, produced_at, count, samples, chunks);
    out
}

/// Decodes a single-object message written with [`SAMPLES_SCHEMA`] (by the
/// hand-written codec), or with [`SAMPLES_SCHEMA_V1`] (resolved by
/// apache-avro, with empty `chunks`). The whole of `bytes` must be one
/// message. Never panics, whatever the bytes.
pub fn decode_sample_batch(bytes: &[u8]) -> Result<SampleBatch, SchemaError> {
    with_sample_batch(bytes, |batch| batch.to_batch())
}

/// Decodes as [`decode_sample_batch`] does and hands `f` the batch borrowed: a
/// message of the current schema is read without copying its strings.
pub fn with_sample_batch<R>(
    bytes: &[u8],
    f: impl FnOnce(&SampleBatchView<'_>) -> R,
) -> Result<R, SchemaError> {
    match read_header(bytes)? {
        (SAMPLES_FINGERPRINT, datum) => Ok(f(&codec::read_sample_batch(datum)?)),
        _ => {
            let batch: SampleBatch = SAMPLES_DECODER.decode(bytes)?;
            Ok(f(&batch.view()))
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn header_rejects_short_and_bad_magic() {
        assert!(matches!(
            read_header(&[0xC3, 0x01, 0, 0]),
            Err(SchemaError::NotSingleObject(_))
        ));
        assert!(matches!(
            read_header(&[0xC3, 0x02, 0, 0, 0, 0, 0, 0, 0, 0]),
            Err(SchemaError::NotSingleObject(_))
        ));
        let mut h = header(0x0102_0304_0506_0708).to_vec();
        assert_eq!(h, [0xC3, 0x01, 8, 7, 6, 5, 4, 3, 2, 1]);
        assert_eq!(read_header(&h).unwrap(), (0x0102_0304_0506_0708, &[][..]));
        h.push(42);
        assert_eq!(read_header(&h).unwrap(), (0x0102_0304_0506_0708, &[42][..]));
    }

    #[test]
    fn samples_fingerprint_is_the_embedded_schema_s() {
        assert_eq!(
            schema_fingerprint(SAMPLES_SCHEMA).unwrap(),
            SAMPLES_FINGERPRINT
        );
        assert_eq!(SAMPLES_DECODER.reader_fingerprint, SAMPLES_FINGERPRINT);
    }

    #[test]
    fn samples_decoder_knows_v1_and_v2_only() {
        let v1 = schema_fingerprint(SAMPLES_SCHEMA_V1).unwrap();
        assert_ne!(v1, SAMPLES_FINGERPRINT);
        let mut known: Vec<u64> = SAMPLES_DECODER.writers.keys().copied().collect();
        known.sort_unstable();
        let mut expected = vec![v1, SAMPLES_FINGERPRINT];
        expected.sort_unstable();
        assert_eq!(known, expected);
    }
}
