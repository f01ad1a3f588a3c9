//! Integration tests of the samples schema (v2) and its single-object
//! encoding: round trips, header layout, fingerprints, schema evolution
//! (reading v1 messages, and newer writer and reader schemas) and robustness
//! against malformed input.

use std::collections::BTreeMap;

use apache_avro::types::Value;
use apache_avro::writer::datum::GenericDatumWriter;
use apache_avro::Schema;
use serde::{Deserialize, Serialize};
use tidemark_schemas::{
    decode_sample_batch, encode_sample_batch, parsing_canonical_form, schema_fingerprint,
    with_sample_batch, Chunk, Decoder, SampleBatch, SchemaError, WireSample, SAMPLES_SCHEMA,
    SAMPLES_SCHEMA_V1,
};

/// Fingerprint of [`SAMPLES_SCHEMA_V1`], carried by the messages of older
/// producers.
const V1_FINGERPRINT: u64 = 0x4931_6f5d_e45a_ea03;

/// Fingerprint of [`SAMPLES_SCHEMA`] (v2).
const V2_FINGERPRINT: u64 = 0x8461_bfcb_c527_c9ca;

/// Fingerprint of [`NEWER_SAMPLES_SCHEMA`].
const NEWER_FINGERPRINT: u64 = 0x68bc_9a89_f382_64b2;

/// The samples schema (v2) as a newer producer could write it: a new field
/// with a default on each record.
const NEWER_SAMPLES_SCHEMA: &str = r#"{
  "type": "record", "name": "SampleBatch", "namespace": "io.tidemark",
  "fields": [
    {"name": "batch_id", "type": "string"},
    {"name": "produced_at", "type": {"type": "long", "logicalType": "timestamp-millis"}},
    {"name": "samples", "type": {"type": "array", "items": {
      "type": "record", "name": "Sample",
      "fields": [
        {"name": "service", "type": "string"},
        {"name": "metric", "type": "string"},
        {"name": "value", "type": "double"},
        {"name": "count", "type": "long"},
        {"name": "error", "type": "boolean"},
        {"name": "timestamp", "type": {"type": "long", "logicalType": "timestamp-millis"}},
        {"name": "tags", "type": {"type": "map", "values": "string"}},
        {"name": "unit", "type": "string", "default": ""}
      ]}}},
    {"name": "chunks", "type": {"type": "array", "items": {
      "type": "record", "name": "Chunk",
      "fields": [
        {"name": "id", "type": "string"},
        {"name": "first", "type": "int"},
        {"name": "count", "type": "int"},
        {"name": "attempt", "type": "int", "default": 0}
      ]}}, "default": []},
    {"name": "producer", "type": "string", "default": "unknown"}
  ]
}"#;

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(rename = "SampleBatch")]
struct NewerSampleBatch {
    batch_id: String,
    produced_at: i64,
    samples: Vec<NewerSample>,
    chunks: Vec<NewerChunk>,
    producer: String,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(rename = "Chunk")]
struct NewerChunk {
    id: String,
    first: i32,
    count: i32,
    attempt: i32,
}

/// A batch as a v1 producer wrote it (no `chunks`).
#[derive(Debug, Clone, PartialEq, Serialize)]
#[serde(rename = "SampleBatch")]
struct SampleBatchV1 {
    batch_id: String,
    produced_at: i64,
    samples: Vec<WireSample>,
}

/// `batch` without its chunks, as a v1 producer would have written it.
fn v1_batch(batch: &SampleBatch) -> SampleBatchV1 {
    SampleBatchV1 {
        batch_id: batch.batch_id.clone(),
        produced_at: batch.produced_at,
        samples: batch.samples.clone(),
    }
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(rename = "Sample")]
struct NewerSample {
    service: String,
    metric: String,
    value: f64,
    count: i64,
    error: bool,
    timestamp: i64,
    tags: BTreeMap<String, String>,
    unit: String,
}

fn tags(pairs: &[(&str, &str)]) -> BTreeMap<String, String> {
    pairs
        .iter()
        .map(|(k, v)| (k.to_string(), v.to_string()))
        .collect()
}

fn sample_batch() -> SampleBatch {
    SampleBatch {
        batch_id: "6f1c2a9e-3b7d-4c1e-9a55-0d2f8b7e4c31".to_string(),
        produced_at: 1_718_000_000_123,
        samples: vec![
            WireSample {
                service: "checkout".to_string(),
                metric: "latency_ms".to_string(),
                value: 12.5,
                count: 1,
                error: false,
                timestamp: 1_718_000_000_000,
                tags: tags(&[("region", "eu-west-1"), ("host", "web-7")]),
            },
            WireSample {
                service: String::new(),
                metric: "ünïcödé ✓ \u{1F600}".to_string(),
                value: f64::MAX,
                count: i64::MAX,
                error: true,
                timestamp: i64::MIN,
                tags: BTreeMap::new(),
            },
            WireSample {
                service: "s".repeat(1000),
                metric: "m".to_string(),
                value: -0.0,
                count: i64::MIN,
                error: false,
                timestamp: 0,
                tags: tags(&[("", ""), ("k\u{0}\"\\", "v\n")]),
            },
            WireSample {
                service: "edge".to_string(),
                metric: "tiny".to_string(),
                value: f64::MIN_POSITIVE,
                count: 0,
                error: true,
                timestamp: -1,
                tags: tags(&[("inf", "yes")]),
            },
            WireSample {
                service: "edge".to_string(),
                metric: "inf".to_string(),
                value: f64::NEG_INFINITY,
                count: -1,
                error: false,
                timestamp: 1,
                tags: BTreeMap::new(),
            },
        ],
        chunks: vec![
            Chunk {
                id: "3f2a".repeat(16),
                first: 0,
                count: 2,
            },
            Chunk {
                id: "9c01".repeat(16),
                first: 3,
                count: 2,
            },
        ],
    }
}

/// xorshift64* pseudo-random generator, deterministic per seed.
struct XorShift(u64);

impl XorShift {
    fn next(&mut self) -> u64 {
        self.0 ^= self.0 >> 12;
        self.0 ^= self.0 << 25;
        self.0 ^= self.0 >> 27;
        self.0.wrapping_mul(0x2545_F491_4F6C_DD1D)
    }

    fn below(&mut self, n: usize) -> usize {
        (self.next() % n as u64) as usize
    }

    fn bytes(&mut self, len: usize) -> Vec<u8> {
        (0..len).map(|_| self.next() as u8).collect()
    }
}

/// Encodes `value` as a single-object message of `schema_text` with
/// apache-avro directly (as another producer would).
fn encode_with(schema_text: &str, value: &impl Serialize) -> Vec<u8> {
    let schema = Schema::parse_str(schema_text).unwrap();
    let writer = GenericDatumWriter::builder(&schema).build().unwrap();
    let mut out = vec![0xC3, 0x01];
    out.extend_from_slice(&schema_fingerprint(schema_text).unwrap().to_le_bytes());
    writer.write_ser(&mut out, value).unwrap();
    out
}

/// CRC-64-AVRO, bit by bit, straight from the Avro specification (an
/// implementation independent of the crate's table-driven one).
fn reference_rabin(bytes: &[u8]) -> u64 {
    const EMPTY: u64 = 0xc15d_213a_a4d7_a795;
    let mut fp = EMPTY;
    for &b in bytes {
        fp ^= u64::from(b);
        for _ in 0..8 {
            fp = (fp >> 1) ^ (EMPTY & (fp & 1).wrapping_neg());
        }
    }
    fp
}

#[test]
fn round_trip_with_tags_and_edge_values() {
    let batch = sample_batch();
    let bytes = encode_sample_batch(&batch).unwrap();
    assert_eq!(decode_sample_batch(&bytes).unwrap(), batch);

    let empty = SampleBatch {
        batch_id: String::new(),
        produced_at: 0,
        samples: Vec::new(),
        chunks: Vec::new(),
    };
    let bytes = encode_sample_batch(&empty).unwrap();
    assert_eq!(decode_sample_batch(&bytes).unwrap(), empty);
}

#[test]
fn round_trip_keeps_nan() {
    let mut batch = sample_batch();
    batch.samples[0].value = f64::NAN;
    let decoded = decode_sample_batch(&encode_sample_batch(&batch).unwrap()).unwrap();
    assert!(decoded.samples[0].value.is_nan());
    assert_eq!(decoded.samples[1..], batch.samples[1..]);
}

#[test]
fn header_is_marker_and_little_endian_fingerprint() {
    let bytes = encode_sample_batch(&sample_batch()).unwrap();
    assert_eq!(bytes[..2], [0xC3, 0x01]);
    assert_eq!(bytes[2..10], V2_FINGERPRINT.to_le_bytes());
}

/// The canonical form of the v1 samples schema up to (and without) the end
/// of its field list.
const V1_CANONICAL_FIELDS: &str = concat!(
    r#"{"name":"io.tidemark.SampleBatch","type":"record","fields":["#,
    r#"{"name":"batch_id","type":"string"},"#,
    r#"{"name":"produced_at","type":"long"},"#,
    r#"{"name":"samples","type":{"type":"array","items":"#,
    r#"{"name":"io.tidemark.Sample","type":"record","fields":["#,
    r#"{"name":"service","type":"string"},"#,
    r#"{"name":"metric","type":"string"},"#,
    r#"{"name":"value","type":"double"},"#,
    r#"{"name":"count","type":"long"},"#,
    r#"{"name":"error","type":"boolean"},"#,
    r#"{"name":"timestamp","type":"long"},"#,
    r#"{"name":"tags","type":{"type":"map","values":"string"}}]}}}"#,
);

#[test]
fn fingerprint_is_rabin_of_the_spec_canonical_form() {
    // Pinned: changing them changes the fingerprint of every message on the
    // topic. Logical types reduce to "long"; docs and defaults are stripped.
    // The v1 values are the ones Java's `SchemaNormalization.toParsingForm`
    // and `parsingFingerprint64` compute for its .avsc file; the v2 ones
    // were checked against the CRC-64-AVRO of Python's `avro` package.
    let canonical = parsing_canonical_form(SAMPLES_SCHEMA).unwrap();
    assert_eq!(
        canonical,
        [
            V1_CANONICAL_FIELDS,
            r#",{"name":"chunks","type":{"type":"array","items":"#,
            r#"{"name":"io.tidemark.Chunk","type":"record","fields":["#,
            r#"{"name":"id","type":"string"},"#,
            r#"{"name":"first","type":"int"},"#,
            r#"{"name":"count","type":"int"}]}}}]}"#,
        ]
        .concat()
    );
    let fingerprint = schema_fingerprint(SAMPLES_SCHEMA).unwrap();
    assert_eq!(fingerprint, reference_rabin(canonical.as_bytes()));
    assert_eq!(fingerprint, V2_FINGERPRINT);

    let canonical_v1 = parsing_canonical_form(SAMPLES_SCHEMA_V1).unwrap();
    assert_eq!(canonical_v1, [V1_CANONICAL_FIELDS, "]}"].concat());
    let fingerprint_v1 = schema_fingerprint(SAMPLES_SCHEMA_V1).unwrap();
    assert_eq!(fingerprint_v1, reference_rabin(canonical_v1.as_bytes()));
    assert_eq!(fingerprint_v1, V1_FINGERPRINT);
}

/// v1 and v2 messages are told apart by their fingerprints, both pinned.
#[test]
fn v1_and_v2_fingerprints_differ_and_are_pinned() {
    assert_ne!(V1_FINGERPRINT, V2_FINGERPRINT);
    assert_eq!(
        schema_fingerprint(SAMPLES_SCHEMA_V1).unwrap(),
        V1_FINGERPRINT
    );
    assert_eq!(schema_fingerprint(SAMPLES_SCHEMA).unwrap(), V2_FINGERPRINT);
    let v1 = encode_with(SAMPLES_SCHEMA_V1, &v1_batch(&sample_batch()));
    assert_eq!(v1[2..10], V1_FINGERPRINT.to_le_bytes());
    let v2 = encode_sample_batch(&sample_batch()).unwrap();
    assert_eq!(v2[2..10], V2_FINGERPRINT.to_le_bytes());
}

#[test]
fn embedded_schemas_document_every_field() {
    let mut batches = Vec::new();
    for text in [SAMPLES_SCHEMA_V1, SAMPLES_SCHEMA] {
        let Schema::Record(batch) = Schema::parse_str(text).unwrap() else {
            panic!("SampleBatch is not a record");
        };
        let Schema::Array(samples) = &batch.fields[2].schema else {
            panic!("samples is not an array");
        };
        let Schema::Record(sample) = &*samples.items else {
            panic!("samples items are not records");
        };
        assert_eq!(batch.name.fullname(None), "io.tidemark.SampleBatch");
        assert_eq!(sample.name.fullname(None), "io.tidemark.Sample");
        for field in batch.fields.iter().chain(&sample.fields) {
            assert!(field.doc.is_some(), "field {} has no doc", field.name);
        }
        assert!(matches!(batch.fields[1].schema, Schema::TimestampMillis));
        assert!(matches!(sample.fields[5].schema, Schema::TimestampMillis));
        batches.push(batch);
    }
    let [v1, v2] = &batches[..] else {
        unreachable!()
    };
    // v2 is v1 plus a last field `chunks`, an array of `Chunk` records that
    // defaults to empty (so that v1 messages resolve to v2).
    assert_eq!(v1.fields.len(), 3);
    assert_eq!(v2.fields.len(), 4);
    let chunks = &v2.fields[3];
    assert_eq!(chunks.name, "chunks");
    assert_eq!(
        chunks.default.as_ref().map(ToString::to_string).as_deref(),
        Some("[]")
    );
    let Schema::Array(items) = &chunks.schema else {
        panic!("chunks is not an array");
    };
    let Schema::Record(chunk) = &*items.items else {
        panic!("chunks items are not records");
    };
    assert_eq!(chunk.name.fullname(None), "io.tidemark.Chunk");
    assert!(chunks.doc.is_some());
    for field in &chunk.fields {
        assert!(field.doc.is_some(), "field {} has no doc", field.name);
    }
    assert!(matches!(chunk.fields[0].schema, Schema::String));
    assert!(matches!(chunk.fields[1].schema, Schema::Int));
    assert!(matches!(chunk.fields[2].schema, Schema::Int));
}

/// The datum of `batch` as apache-avro's generic `Value` writer encodes it.
fn reference_datum(batch: &SampleBatch) -> Vec<u8> {
    let samples = batch
        .samples
        .iter()
        .map(|s| {
            Value::Record(vec![
                ("service".into(), Value::String(s.service.clone())),
                ("metric".into(), Value::String(s.metric.clone())),
                ("value".into(), Value::Double(s.value)),
                ("count".into(), Value::Long(s.count)),
                ("error".into(), Value::Boolean(s.error)),
                ("timestamp".into(), Value::TimestampMillis(s.timestamp)),
                (
                    "tags".into(),
                    Value::Map(
                        s.tags
                            .iter()
                            .map(|(k, v)| (k.clone(), Value::String(v.clone())))
                            .collect(),
                    ),
                ),
            ])
        })
        .collect();
    let chunks = batch
        .chunks
        .iter()
        .map(|c| {
            Value::Record(vec![
                ("id".into(), Value::String(c.id.clone())),
                ("first".into(), Value::Int(c.first)),
                ("count".into(), Value::Int(c.count)),
            ])
        })
        .collect();
    let value = Value::Record(vec![
        ("batch_id".into(), Value::String(batch.batch_id.clone())),
        (
            "produced_at".into(),
            Value::TimestampMillis(batch.produced_at),
        ),
        ("samples".into(), Value::Array(samples)),
        ("chunks".into(), Value::Array(chunks)),
    ]);
    let schema = Schema::parse_str(SAMPLES_SCHEMA).unwrap();
    let writer = GenericDatumWriter::builder(&schema).build().unwrap();
    let mut datum = Vec::new();
    writer.write_value_ref(&mut datum, &value).unwrap();
    datum
}

/// A batch of edge values: empty and unicode strings, extreme longs and
/// ints, signed zeros, infinities and NaNs of several bit patterns, empty and
/// large tag maps, and chunks (the codec does not check that they fit the
/// samples).
fn edge_batch() -> SampleBatch {
    let nans = [
        f64::NAN.to_bits(),
        (-f64::NAN).to_bits(),
        0x7FF0_0000_0000_0001, // signalling NaN
        0xFFF8_0000_DEAD_BEEF, // negative quiet NaN with a payload
        0x7FFF_FFFF_FFFF_FFFF,
    ];
    let specials = [
        0.0,
        -0.0,
        f64::INFINITY,
        f64::NEG_INFINITY,
        f64::MIN,
        f64::MAX,
        f64::MIN_POSITIVE,
        f64::from_bits(1), // smallest subnormal
        -f64::from_bits(1),
        f64::EPSILON,
    ];
    let longs = [0, 1, -1, 63, -64, 64, -65, i64::MAX, i64::MIN, i64::MIN + 1];
    let big_tags: BTreeMap<String, String> = (0..16)
        .map(|i| {
            (
                format!("tag-{i:02}"),
                char::from(b'a' + i).to_string().repeat(256),
            )
        })
        .collect();
    let mut samples = Vec::new();
    for (i, value) in nans
        .iter()
        .map(|&bits| f64::from_bits(bits))
        .chain(specials)
        .enumerate()
    {
        samples.push(WireSample {
            service: ["", "svc", "ünïcödé", "\u{1F600}\u{0}\u{10FFFF}"][i % 4].to_string(),
            metric: "m".repeat(i * 13),
            value,
            count: longs[i % longs.len()],
            error: i % 3 == 0,
            timestamp: longs[(i + 3) % longs.len()],
            tags: match i % 4 {
                0 => BTreeMap::new(),
                1 => tags(&[("", "")]),
                2 => big_tags.clone(),
                _ => tags(&[("région", "eu-west-1 ✓"), ("host", ""), ("", "x")]),
            },
        });
    }
    let ints = [0, 1, -1, 63, -64, 64, -65, i32::MAX, i32::MIN, i32::MIN + 1];
    let chunks = (0..ints.len())
        .map(|i| Chunk {
            id: ["", "0f", "ünïcödé", "\u{1F600}\u{0}"][i % 4].repeat(i),
            first: ints[i],
            count: ints[(i + 3) % ints.len()],
        })
        .collect();
    SampleBatch {
        batch_id: "\u{1F600}".to_string(),
        produced_at: i64::MIN,
        samples,
        chunks,
    }
}

/// An empty batch: empty id, no samples, no chunks.
fn empty_batch() -> SampleBatch {
    SampleBatch {
        batch_id: String::new(),
        produced_at: i64::MAX,
        samples: Vec::new(),
        chunks: Vec::new(),
    }
}

/// `batch` with its `f64`s replaced by their bit patterns, to compare
/// batches holding NaNs exactly.
type Comparable = (
    String,
    i64,
    Vec<(String, String, u64, i64, bool, i64, Vec<(String, String)>)>,
    Vec<Chunk>,
);

fn comparable(batch: &SampleBatch) -> Comparable {
    let samples = batch
        .samples
        .iter()
        .map(|s| {
            (
                s.service.clone(),
                s.metric.clone(),
                s.value.to_bits(),
                s.count,
                s.error,
                s.timestamp,
                s.tags.clone().into_iter().collect(),
            )
        })
        .collect();
    (
        batch.batch_id.clone(),
        batch.produced_at,
        samples,
        batch.chunks.clone(),
    )
}

fn assert_same(left: &SampleBatch, right: &SampleBatch) {
    assert_eq!(comparable(left), comparable(right));
}

/// A random string of up to `max` characters, mixing 1- to 4-byte UTF-8.
fn random_string(rng: &mut XorShift, max: usize) -> String {
    const CHARS: [char; 8] = ['a', 'z', '-', '\0', 'é', '✓', '\u{1F600}', '\u{10FFFF}'];
    let len = rng.below(max + 1);
    (0..len).map(|_| CHARS[rng.below(CHARS.len())]).collect()
}

/// A random long, of any varint length.
fn random_long(rng: &mut XorShift) -> i64 {
    let bits = rng.below(65);
    let n = if bits == 64 {
        rng.next()
    } else {
        rng.next() & ((1 << bits) - 1)
    } as i64;
    if rng.below(2) == 0 {
        n
    } else {
        n.wrapping_neg()
    }
}

/// A random int, of any varint length.
fn random_int(rng: &mut XorShift) -> i32 {
    let bits = rng.below(33);
    let n = if bits == 32 {
        rng.next() as u32
    } else {
        rng.next() as u32 & ((1 << bits) - 1)
    } as i32;
    if rng.below(2) == 0 {
        n
    } else {
        n.wrapping_neg()
    }
}

/// A random valid batch of up to `max_samples` samples and 3 chunks.
fn random_batch(rng: &mut XorShift, max_samples: usize) -> SampleBatch {
    let samples = (0..rng.below(max_samples + 1))
        .map(|_| WireSample {
            service: random_string(rng, 12),
            metric: random_string(rng, 20),
            // Any bit pattern: normal, subnormal, infinite, NaN.
            value: f64::from_bits(rng.next()),
            count: random_long(rng),
            error: rng.below(2) == 1,
            timestamp: random_long(rng),
            tags: (0..rng.below(5))
                .map(|_| (random_string(rng, 8), random_string(rng, 70)))
                .collect(),
        })
        .collect();
    let chunks = (0..rng.below(4))
        .map(|_| Chunk {
            id: random_string(rng, 64),
            first: random_int(rng),
            count: random_int(rng),
        })
        .collect();
    SampleBatch {
        batch_id: random_string(rng, 40),
        produced_at: random_long(rng),
        samples,
        chunks,
    }
}

/// The message of `batch` as the previous, serde-based encoder wrote it:
/// apache-avro's `GenericDatumWriter::write_ser`.
fn serde_encoded(batch: &SampleBatch) -> Vec<u8> {
    encode_with(SAMPLES_SCHEMA, batch)
}

/// Decodes with apache-avro only (`Decoder::decode` deserializes with
/// apache-avro's serde support, whatever the writer schema).
fn apache_decode(bytes: &[u8]) -> Result<SampleBatch, SchemaError> {
    Decoder::new(SAMPLES_SCHEMA).unwrap().decode(bytes)
}

/// The hand-written encoder writes the same datum as apache-avro's generic
/// `Value` writer.
#[test]
fn encoding_matches_apache_avro_value_writer() {
    // `Value::Map` is a `HashMap`, written in arbitrary order: the bytes are
    // comparable when every map has at most one entry.
    for mut batch in [sample_batch(), edge_batch(), empty_batch()] {
        for s in &mut batch.samples {
            while s.tags.len() > 1 {
                s.tags.pop_first();
            }
        }
        let ours = encode_sample_batch(&batch).unwrap();
        assert_eq!(ours[10..], reference_datum(&batch));
    }

    // With several tags: same length, and the reference datum decodes (with
    // both decoders) to the same batch.
    for batch in [sample_batch(), edge_batch()] {
        let ours = encode_sample_batch(&batch).unwrap();
        let reference = reference_datum(&batch);
        assert_eq!(ours.len(), 10 + reference.len());
        let mut message = ours[..10].to_vec();
        message.extend_from_slice(&reference);
        assert_same(&decode_sample_batch(&message).unwrap(), &batch);
        assert_same(&apache_decode(&message).unwrap(), &batch);
    }
}

/// The hand-written encoder writes exactly what the previous serde-based
/// encoder (apache-avro's `write_ser`) wrote, maps included: both write a
/// `BTreeMap` in key order, as one block.
#[test]
fn encoding_matches_apache_avro_serde_writer() {
    let mut rng = XorShift(0x2545_F491_4F6C_DD1D);
    let fixed = [sample_batch(), edge_batch(), empty_batch()];
    let random = (0..500).map(|_| random_batch(&mut rng, 12));
    for batch in fixed.into_iter().chain(random) {
        assert_eq!(encode_sample_batch(&batch).unwrap(), serde_encoded(&batch));
    }
}

/// Ingest encodes each sample's datum on the request's task and a batch from those
/// datums: byte for byte what apache-avro writes for the whole batch.
#[test]
fn batches_of_pre_encoded_datums_match_apache_avro() {
    let mut rng = XorShift(0x5851_F42D_4C95_7F2D);
    let fixed = [sample_batch(), edge_batch(), empty_batch()];
    let random = (0..500).map(|_| random_batch(&mut rng, 12));
    for batch in fixed.into_iter().chain(random) {
        let mut datums = Vec::new();
        for s in &batch.samples {
            let tags: Vec<(&str, &str)> = s
                .tags
                .iter()
                .map(|(k, v)| (k.as_str(), v.as_str()))
                .collect();
            tidemark_schemas::write_sample_datum(
                &mut datums,
                &tidemark_schemas::SampleRef {
                    service: &s.service,
                    metric: &s.metric,
                    value: s.value,
                    count: s.count,
                    error: s.error,
                    timestamp: s.timestamp,
                    tags: &tags,
                },
            );
        }
        let bytes = tidemark_schemas::encode_sample_batch_of_datums(
            &batch.batch_id,
            batch.produced_at,
            batch.samples.len(),
            &datums,
            &batch.chunks,
        );
        assert_eq!(bytes, serde_encoded(&batch));
    }
}

#[test]
fn edge_values_round_trip_bit_exact() {
    for batch in [edge_batch(), empty_batch()] {
        let bytes = encode_sample_batch(&batch).unwrap();
        assert_same(&decode_sample_batch(&bytes).unwrap(), &batch);
        assert_same(&apache_decode(&bytes).unwrap(), &batch);
    }
}

/// Differential test of the hand-written decoder: on valid messages it
/// returns what apache-avro returns.
#[test]
fn hand_decoder_matches_apache_avro_on_random_batches() {
    let mut rng = XorShift(0x9E6C_63D0_676A_9A99);
    let decoder = Decoder::new(SAMPLES_SCHEMA).unwrap();
    for _ in 0..1_000 {
        let batch = random_batch(&mut rng, 12);
        let bytes = encode_sample_batch(&batch).unwrap();
        let ours = decode_sample_batch(&bytes).unwrap();
        assert_same(&ours, &batch);
        assert_same(&ours, &decoder.decode(&bytes).unwrap());
    }
}

/// Asserts that the hand-written decoder and apache-avro both reject
/// `bytes` or decode it to the same batch; returns whether it decoded.
fn assert_decoders_agree(decoder: &Decoder, bytes: &[u8]) -> bool {
    match (
        decode_sample_batch(bytes),
        decoder.decode::<SampleBatch>(bytes),
    ) {
        (Ok(ours), Ok(theirs)) => {
            assert_same(&ours, &theirs);
            true
        }
        (Err(ours), Err(_)) => {
            assert!(
                matches!(ours, SchemaError::Decode(_)),
                "{ours:?} for {bytes:?}"
            );
            false
        }
        (ours, theirs) => panic!("decoders disagree on {bytes:?}: {ours:?} vs {theirs:?}"),
    }
}

/// Differential test of the hand-written decoder on invalid or unusual
/// input: mutated and random datums after a valid header.
#[test]
fn hand_decoder_agrees_with_apache_avro_on_mutated_messages() {
    let mut rng = XorShift(0x5851_F42D_4C95_7F2D);
    let decoder = Decoder::new(SAMPLES_SCHEMA).unwrap();
    let mut originals = vec![
        encode_sample_batch(&sample_batch()).unwrap(),
        encode_sample_batch(&edge_batch()).unwrap(),
    ];
    originals.extend((0..30).map(|_| encode_sample_batch(&random_batch(&mut rng, 4)).unwrap()));
    // Batches of chunks only, so that more mutations hit chunks.
    originals.extend((0..10).map(|_| encode_sample_batch(&random_batch(&mut rng, 0)).unwrap()));
    let mut decoded = 0;
    for i in 0..30_000 {
        let mut bytes = originals[i % originals.len()].clone();
        for _ in 0..1 + rng.below(3) {
            if bytes.len() <= 10 {
                break;
            }
            // Keep the header so that mutations reach the datum.
            let at = 10 + rng.below(bytes.len() - 10);
            match rng.below(6) {
                0 => bytes[at] = rng.next() as u8,
                1 => bytes[at] ^= 1 << rng.below(8),
                2 => bytes.truncate(at),
                3 => {
                    bytes.remove(at);
                }
                4 => bytes.insert(at, rng.next() as u8),
                // Small values: lengths, counts, booleans and varint ends.
                _ => bytes[at] = rng.below(4) as u8,
            }
        }
        decoded += usize::from(assert_decoders_agree(&decoder, &bytes));
    }
    // Mutations of string contents and doubles mostly stay valid.
    assert!(decoded > 2_000, "only {decoded} mutated messages decoded");

    let header = &originals[0][..10];
    for _ in 0..10_000 {
        let mut bytes = header.to_vec();
        let len = rng.below(64);
        bytes.extend(rng.bytes(len));
        assert_decoders_agree(&decoder, &bytes);
    }
}

/// Appends `n` as an Avro long.
fn put_long(out: &mut Vec<u8>, n: i64) {
    let mut z = ((n << 1) ^ (n >> 63)) as u64;
    while z >= 0x80 {
        out.push(z as u8 | 0x80);
        z >>= 7;
    }
    out.push(z as u8);
}

fn put_string(out: &mut Vec<u8>, s: &str) {
    put_long(out, s.len() as i64);
    out.extend_from_slice(s.as_bytes());
}

/// A message of the current schema with the given datum.
fn message(datum: &[u8]) -> Vec<u8> {
    let mut bytes = vec![0xC3, 0x01];
    bytes.extend_from_slice(&V2_FINGERPRINT.to_le_bytes());
    bytes.extend_from_slice(datum);
    bytes
}

/// Appends a sample with the given tags datum (block headers and entries).
fn put_sample(out: &mut Vec<u8>, tags: &[u8]) {
    put_string(out, "svc");
    put_string(out, "m");
    out.extend_from_slice(&1.5f64.to_le_bytes());
    put_long(out, 2);
    out.push(1);
    put_long(out, 3);
    out.extend_from_slice(tags);
}

/// Appends a chunk; `first` and `count` are written as longs, which are
/// valid ints only when they fit 32 bits.
fn put_chunk(out: &mut Vec<u8>, id: &str, first: i64, count: i64) {
    put_string(out, id);
    put_long(out, first);
    put_long(out, count);
}

fn chunk(id: &str, first: i32, count: i32) -> Chunk {
    Chunk {
        id: id.into(),
        first,
        count,
    }
}

/// Encodings other writers may produce (several blocks, negative block
/// counts with a byte size, non-minimal varints, duplicate keys) decode as
/// apache-avro decodes them.
#[test]
fn unusual_valid_encodings_decode_like_apache_avro() {
    let decoder = Decoder::new(SAMPLES_SCHEMA).unwrap();
    let expected_sample = |tags: BTreeMap<String, String>| WireSample {
        service: "svc".into(),
        metric: "m".into(),
        value: 1.5,
        count: 2,
        error: true,
        timestamp: 3,
        tags,
    };

    // Samples in three blocks: 1 item, -2 items (with a byte size), 1 item;
    // tags in two blocks, the second with a negative count and a duplicate key;
    // chunks in three blocks as the samples, with extreme and negative ints
    // (valid Avro ints; what they mean is for consumers to check).
    let mut tags_datum = Vec::new();
    put_long(&mut tags_datum, 1);
    put_string(&mut tags_datum, "a");
    put_string(&mut tags_datum, "1");
    put_long(&mut tags_datum, -2);
    put_long(&mut tags_datum, 8);
    put_string(&mut tags_datum, "b");
    put_string(&mut tags_datum, "2");
    put_string(&mut tags_datum, "a");
    put_string(&mut tags_datum, "3");
    tags_datum.push(0);
    let mut datum = Vec::new();
    put_string(&mut datum, "id");
    put_long(&mut datum, 7);
    put_long(&mut datum, 1);
    put_sample(&mut datum, &tags_datum);
    put_long(&mut datum, -2);
    put_long(&mut datum, 999); // the byte size is not checked
    put_sample(&mut datum, &[0]);
    put_sample(&mut datum, &[0]);
    put_long(&mut datum, 1);
    put_sample(&mut datum, &[0]);
    datum.push(0);
    put_long(&mut datum, 1);
    put_chunk(&mut datum, "a", 0, 1);
    put_long(&mut datum, -2);
    put_long(&mut datum, 7); // the byte size is not checked
    put_chunk(&mut datum, "b", i32::MAX.into(), -5);
    put_chunk(&mut datum, "", i32::MIN.into(), 0);
    put_long(&mut datum, 1);
    put_chunk(&mut datum, "a", 1, 1); // ids are not checked for duplicates
    datum.push(0);
    let bytes = message(&datum);
    let expected = SampleBatch {
        batch_id: "id".into(),
        produced_at: 7,
        samples: vec![
            expected_sample(tags(&[("a", "3"), ("b", "2")])),
            expected_sample(BTreeMap::new()),
            expected_sample(BTreeMap::new()),
            expected_sample(BTreeMap::new()),
        ],
        chunks: vec![
            chunk("a", 0, 1),
            chunk("b", i32::MAX, -5),
            chunk("", i32::MIN, 0),
            chunk("a", 1, 1),
        ],
    };
    assert_eq!(decode_sample_batch(&bytes).unwrap(), expected);
    assert!(assert_decoders_agree(&decoder, &bytes));

    // Non-minimal varints (0 as 0x80 0x80 0x00, 1 as 0x82 0x00, a 10-byte
    // -1, also as an int), and a 10-byte varint whose 10th byte has bits
    // beyond the 64th (ignored by both: 0x7F counts as 0x01).
    let mut datum = vec![0x80, 0x80, 0x00]; // batch_id: length 0
                                            // produced_at: 2^64 - 2 zig-zagged, i.e. i64::MAX
    datum.extend_from_slice(&[0xFE, 0xFF, 0xFF, 0xFF, 0xFF, 0xFF, 0xFF, 0xFF, 0xFF, 0x7F]);
    datum.extend_from_slice(&[0x82, 0x00]); // one sample
    put_string(&mut datum, "svc");
    put_string(&mut datum, "m");
    datum.extend_from_slice(&1.5f64.to_le_bytes());
    // count: -1
    datum.extend_from_slice(&[0x81, 0x80, 0x80, 0x80, 0x80, 0x80, 0x80, 0x80, 0x80, 0x00]);
    datum.push(0); // error
    datum.extend_from_slice(&[0x80, 0x00]); // timestamp: 0
    datum.extend_from_slice(&[0x80, 0x00]); // no tags
    datum.extend_from_slice(&[0x80, 0x80, 0x00]); // end of samples
    datum.extend_from_slice(&[0x82, 0x00]); // one chunk
    datum.extend_from_slice(&[0x82, 0x80, 0x00]); // id: length 1
    datum.push(b'x');
    // first: -1 in 10 bytes
    datum.extend_from_slice(&[0x81, 0x80, 0x80, 0x80, 0x80, 0x80, 0x80, 0x80, 0x80, 0x00]);
    datum.extend_from_slice(&[0xFE, 0xFF, 0xFF, 0xFF, 0x0F]); // count: i32::MAX
    datum.extend_from_slice(&[0x80, 0x00]); // end of chunks
    let bytes = message(&datum);
    assert_eq!(
        decode_sample_batch(&bytes).unwrap(),
        SampleBatch {
            batch_id: String::new(),
            produced_at: i64::MAX,
            samples: vec![WireSample {
                count: -1,
                error: false,
                timestamp: 0,
                ..expected_sample(BTreeMap::new())
            }],
            chunks: vec![chunk("x", -1, i32::MAX)],
        }
    );
    assert!(assert_decoders_agree(&decoder, &bytes));
}

/// Hostile lengths, counts and ints fail fast, without allocating what they
/// claim.
#[test]
fn hostile_lengths_and_counts_are_rejected() {
    let decoder = Decoder::new(SAMPLES_SCHEMA).unwrap();
    let mut cases: Vec<Vec<u8>> = Vec::new();
    // batch_id of huge, negative, or past-the-end length.
    for len in [i64::MAX, i64::MIN, -1, 1 << 40, 5] {
        let mut datum = Vec::new();
        put_long(&mut datum, len);
        datum.extend_from_slice(b"abc");
        cases.push(datum);
    }
    // Huge sample, tag and chunk counts, positive and negative.
    for count in [i64::MAX, i64::MIN, -(1 << 50), 1 << 50] {
        let mut datum = vec![0, 0];
        put_long(&mut datum, count);
        if count < 0 {
            put_long(&mut datum, 1);
        }
        put_sample(&mut datum, &[]);
        cases.push(datum.clone());
        let mut tags = Vec::new();
        put_long(&mut tags, count);
        if count < 0 {
            put_long(&mut tags, 1);
        }
        put_string(&mut tags, "k");
        put_string(&mut tags, "v");
        let mut datum = vec![0, 0, 2];
        put_sample(&mut datum, &tags);
        cases.push(datum);
        let mut datum = vec![0, 0, 0];
        put_long(&mut datum, count);
        if count < 0 {
            put_long(&mut datum, 3);
        }
        put_chunk(&mut datum, "c", 0, 1);
        cases.push(datum);
    }
    // Chunk ints beyond the 32-bit range, as `first` and as `count`.
    let beyond = [
        i64::from(i32::MAX) + 1,
        i64::from(i32::MIN) - 1,
        1 << 40,
        i64::MAX,
        i64::MIN,
    ];
    for n in beyond {
        for (first, count) in [(n, 1), (0, n)] {
            let mut datum = vec![0, 0, 0, 2];
            put_chunk(&mut datum, "c", first, count);
            datum.push(0);
            cases.push(datum);
        }
    }
    // Chunk ids of negative or past-the-end length, or not UTF-8.
    for id in [&[0x01][..], &[0x0A, b'a'], &[0x02, 0xFF]] {
        let mut datum = vec![0, 0, 0, 2];
        datum.extend_from_slice(id);
        datum.extend_from_slice(&[0, 0, 0]);
        cases.push(datum);
    }
    // Truncated chunk arrays: every strict prefix of a datum with chunks
    // (the shortest lacks the chunks array altogether).
    let mut datum = vec![0, 0, 0];
    put_long(&mut datum, -2);
    put_long(&mut datum, 20);
    put_chunk(&mut datum, "abc", 300, -300);
    put_chunk(&mut datum, "", i32::MAX.into(), i32::MIN.into());
    datum.push(0);
    assert!(decode_sample_batch(&message(&datum)).is_ok());
    cases.extend((3..datum.len()).map(|len| datum[..len].to_vec()));
    // A varint of 11 bytes.
    let mut datum = vec![0];
    datum.extend_from_slice(&[0x80; 10]);
    datum.push(0);
    cases.push(datum);
    // Invalid UTF-8 (a lone continuation byte, an overlong encoding, a
    // surrogate).
    for bad in [&b"\x80"[..], b"\xC0\xAF", b"\xED\xA0\x80"] {
        let mut datum = Vec::new();
        put_long(&mut datum, bad.len() as i64);
        datum.extend_from_slice(bad);
        datum.extend_from_slice(&[0, 0, 0]);
        cases.push(datum);
    }
    // A boolean byte other than 0 and 1.
    let mut datum = vec![0, 0, 2];
    put_sample(&mut datum, &[0]);
    let error_at = datum.len() - 3; // the error byte, before timestamp and tags
    datum[error_at] = 2;
    datum.extend_from_slice(&[0, 0]); // end of samples, no chunks
    cases.push(datum);
    // Trailing bytes.
    cases.push(vec![0, 0, 0, 0, 0]);

    for datum in cases {
        let bytes = message(&datum);
        assert!(
            matches!(decode_sample_batch(&bytes), Err(SchemaError::Decode(_))),
            "{datum:?}"
        );
        // (The claimed string lengths are tiny or beyond apache-avro's
        // 512 MiB limit, so it does not allocate them either.)
        assert!(!assert_decoders_agree(&decoder, &bytes), "{datum:?}");
    }
}

/// Messages of v1 producers (apache-avro's writer with the v1 schema and its
/// fingerprint) decode, resolved to v2, into batches with the same samples
/// and empty chunks.
#[test]
fn v1_messages_decode_with_empty_chunks() {
    let batch = sample_batch();
    let bytes = encode_with(SAMPLES_SCHEMA_V1, &v1_batch(&batch));
    assert_eq!(bytes[2..10], V1_FINGERPRINT.to_le_bytes());
    let decoded = decode_sample_batch(&bytes).unwrap();
    assert!(decoded.chunks.is_empty());
    assert_eq!(decoded.samples, batch.samples);
    assert_eq!(
        decoded,
        SampleBatch {
            chunks: Vec::new(),
            ..batch
        }
    );

    // A decoder knows v1 only once registered, and then decodes it alike.
    let fresh = Decoder::new(SAMPLES_SCHEMA).unwrap();
    let registered = Decoder::new(SAMPLES_SCHEMA)
        .unwrap()
        .with_writer_schema(SAMPLES_SCHEMA_V1)
        .unwrap();
    let mut rng = XorShift(0x94D0_49BB_1331_11EB);
    let fixed = [sample_batch(), edge_batch(), empty_batch()];
    let random = (0..300).map(|_| random_batch(&mut rng, 12));
    for batch in fixed.into_iter().chain(random) {
        let bytes = encode_with(SAMPLES_SCHEMA_V1, &v1_batch(&batch));
        let expected = SampleBatch {
            chunks: Vec::new(),
            ..batch
        };
        assert_same(&decode_sample_batch(&bytes).unwrap(), &expected);
        assert_same(&registered.decode(&bytes).unwrap(), &expected);
        assert!(matches!(
            fresh.decode::<SampleBatch>(&bytes),
            Err(SchemaError::UnknownFingerprint(V1_FINGERPRINT))
        ));
        // The fingerprint matters: a v1 datum under the v2 fingerprint lacks
        // the chunks array.
        let mut as_v2 = bytes;
        as_v2[2..10].copy_from_slice(&V2_FINGERPRINT.to_le_bytes());
        assert!(matches!(
            decode_sample_batch(&as_v2),
            Err(SchemaError::Decode(_))
        ));
    }
}

/// The borrowed decode sees what the owned one returns, for messages of both schema
/// versions.
#[test]
fn borrowed_decode_matches_owned() {
    let mut rng = XorShift(0x2545_F491_4F6C_DD1D);
    let fixed = [sample_batch(), edge_batch(), empty_batch()];
    let random = (0..300).map(|_| random_batch(&mut rng, 12));
    for batch in fixed.into_iter().chain(random) {
        let v2 = encode_sample_batch(&batch).unwrap();
        let v1 = encode_with(SAMPLES_SCHEMA_V1, &v1_batch(&batch));
        for bytes in [v2, v1] {
            let owned = decode_sample_batch(&bytes).unwrap();
            let borrowed = with_sample_batch(&bytes, |view| view.to_batch()).unwrap();
            assert_same(&borrowed, &owned);
            assert_same(&owned.view().to_batch(), &owned);
        }
    }
    assert!(with_sample_batch(&[0xC3, 0x01], |_| ()).is_err());
}

fn newer_batch() -> NewerSampleBatch {
    let batch = sample_batch();
    NewerSampleBatch {
        batch_id: batch.batch_id,
        produced_at: batch.produced_at,
        samples: batch
            .samples
            .into_iter()
            .map(|s| NewerSample {
                service: s.service,
                metric: s.metric,
                value: s.value,
                count: s.count,
                error: s.error,
                timestamp: s.timestamp,
                tags: s.tags,
                unit: "ms".to_string(),
            })
            .collect(),
        chunks: batch
            .chunks
            .into_iter()
            .map(|c| NewerChunk {
                id: c.id,
                first: c.first,
                count: c.count,
                attempt: 2,
            })
            .collect(),
        producer: "ingest-2".to_string(),
    }
}

#[test]
fn newer_writer_schema_is_decoded_once_registered() {
    let bytes = encode_with(NEWER_SAMPLES_SCHEMA, &newer_batch());
    let newer_fingerprint = schema_fingerprint(NEWER_SAMPLES_SCHEMA).unwrap();
    // Pinned (checked against the CRC-64-AVRO of Python's `avro` package);
    // the reference algorithm agrees on the canonical form.
    assert_eq!(newer_fingerprint, NEWER_FINGERPRINT);
    let canonical = parsing_canonical_form(NEWER_SAMPLES_SCHEMA).unwrap();
    assert_eq!(newer_fingerprint, reference_rabin(canonical.as_bytes()));
    assert_eq!(bytes[2..10], newer_fingerprint.to_le_bytes());

    // Not registered: the process-wide decoder and a fresh one refuse it.
    match decode_sample_batch(&bytes) {
        Err(SchemaError::UnknownFingerprint(fp)) => assert_eq!(fp, newer_fingerprint),
        other => panic!("expected UnknownFingerprint, got {other:?}"),
    }
    let decoder = Decoder::new(SAMPLES_SCHEMA).unwrap();
    let err = decoder.decode::<SampleBatch>(&bytes).unwrap_err();
    assert!(matches!(err, SchemaError::UnknownFingerprint(fp) if fp == newer_fingerprint));
    assert_eq!(
        err.to_string(),
        format!("unknown writer schema fingerprint {newer_fingerprint:016x}")
    );

    // Registered: resolved to the current schema, new fields (of the batch,
    // of samples and of chunks) dropped.
    let decoder = decoder.with_writer_schema(NEWER_SAMPLES_SCHEMA).unwrap();
    assert_eq!(
        decoder.decode::<SampleBatch>(&bytes).unwrap(),
        sample_batch()
    );
    // Messages of the reader schema itself still decode.
    let current = encode_sample_batch(&sample_batch()).unwrap();
    assert_eq!(
        decoder.decode::<SampleBatch>(&current).unwrap(),
        sample_batch()
    );
}

#[test]
fn newer_reader_fills_defaults_of_older_messages() {
    let decoder = Decoder::new(NEWER_SAMPLES_SCHEMA)
        .unwrap()
        .with_writer_schema(SAMPLES_SCHEMA)
        .unwrap()
        .with_writer_schema(SAMPLES_SCHEMA_V1)
        .unwrap();
    let mut expected = newer_batch();
    expected.producer = "unknown".to_string();
    for s in &mut expected.samples {
        s.unit = String::new();
    }
    for c in &mut expected.chunks {
        c.attempt = 0;
    }
    // A v2 message.
    let bytes = encode_sample_batch(&sample_batch()).unwrap();
    let decoded: NewerSampleBatch = decoder.decode(&bytes).unwrap();
    assert_eq!(decoded, expected);
    // A v1 message: no chunks either.
    let bytes = encode_with(SAMPLES_SCHEMA_V1, &v1_batch(&sample_batch()));
    let decoded: NewerSampleBatch = decoder.decode(&bytes).unwrap();
    expected.chunks.clear();
    assert_eq!(decoded, expected);
}

#[test]
fn incompatible_or_invalid_writer_schemas_are_rejected() {
    // The current schema cannot read a writer without `tags` (it has no
    // default), nor one where `count` became a string, nor one where a
    // chunk's `first` became a long.
    let without_tags = SAMPLES_SCHEMA.replace(r#""name": "tags""#, r#""name": "tags_renamed""#);
    let count_as_string = SAMPLES_SCHEMA.replace(
        r#""name": "count",
              "type": "long""#,
        r#""name": "count",
              "type": "string""#,
    );
    let first_as_long = SAMPLES_SCHEMA.replace(
        r#""name": "first",
              "type": "int""#,
        r#""name": "first",
              "type": "long""#,
    );
    for incompatible in [without_tags, count_as_string, first_as_long] {
        assert_ne!(incompatible, SAMPLES_SCHEMA);
        assert!(matches!(
            Decoder::new(SAMPLES_SCHEMA)
                .unwrap()
                .with_writer_schema(&incompatible),
            Err(SchemaError::IncompatibleSchema(_))
        ));
    }
    for invalid in ["", "{", r#"{"type": "record"}"#, r#""nope""#] {
        assert!(matches!(
            Decoder::new(invalid),
            Err(SchemaError::InvalidSchema(_))
        ));
        assert!(matches!(
            schema_fingerprint(invalid),
            Err(SchemaError::InvalidSchema(_))
        ));
    }
}

#[test]
fn malformed_headers_are_rejected() {
    let bytes = encode_sample_batch(&sample_batch()).unwrap();
    for len in 0..10 {
        assert!(matches!(
            decode_sample_batch(&bytes[..len]),
            Err(SchemaError::NotSingleObject(_))
        ));
    }
    let mut wrong_magic = bytes.clone();
    wrong_magic[1] = 0x00;
    assert!(matches!(
        decode_sample_batch(&wrong_magic),
        Err(SchemaError::NotSingleObject(_))
    ));
    let mut wrong_fingerprint = bytes.clone();
    wrong_fingerprint[9] ^= 0x80;
    assert!(matches!(
        decode_sample_batch(&wrong_fingerprint),
        Err(SchemaError::UnknownFingerprint(_))
    ));
}

#[test]
fn truncated_and_padded_messages_are_rejected() {
    for bytes in [
        encode_sample_batch(&sample_batch()).unwrap(),
        encode_with(SAMPLES_SCHEMA_V1, &v1_batch(&sample_batch())),
    ] {
        for len in 10..bytes.len() {
            assert!(
                decode_sample_batch(&bytes[..len]).is_err(),
                "truncated to {len} bytes"
            );
        }
        let mut padded = bytes.clone();
        padded.push(0);
        assert!(matches!(
            decode_sample_batch(&padded),
            Err(SchemaError::Decode(_))
        ));
    }
}

#[test]
fn random_bytes_never_panic() {
    let mut rng = XorShift(0x9E37_79B9_7F4A_7C15);
    let fingerprints = [V2_FINGERPRINT, NEWER_FINGERPRINT, V1_FINGERPRINT];
    let decoder = Decoder::new(SAMPLES_SCHEMA)
        .unwrap()
        .with_writer_schema(NEWER_SAMPLES_SCHEMA)
        .unwrap()
        .with_writer_schema(SAMPLES_SCHEMA_V1)
        .unwrap();
    for i in 0..30_000 {
        let len = rng.below(96);
        let mut bytes = rng.bytes(len);
        // Most inputs get a valid header so that the datum decoder (both the
        // direct and the resolving path) sees the random body.
        if i % 4 != 0 && bytes.len() >= 10 {
            bytes[..2].copy_from_slice(&[0xC3, 0x01]);
            bytes[2..10].copy_from_slice(&fingerprints[i % 3].to_le_bytes());
        }
        // Any outcome but a panic is fine; a random body almost never decodes.
        let _ = decoder.decode::<SampleBatch>(&bytes);
        let _ = decode_sample_batch(&bytes);
    }
}

#[test]
fn mutated_messages_never_panic() {
    let mut rng = XorShift(0xD1B5_4A32_D192_ED03);
    let decoder = Decoder::new(SAMPLES_SCHEMA)
        .unwrap()
        .with_writer_schema(NEWER_SAMPLES_SCHEMA)
        .unwrap()
        .with_writer_schema(SAMPLES_SCHEMA_V1)
        .unwrap();
    let originals = [
        encode_sample_batch(&sample_batch()).unwrap(),
        encode_with(NEWER_SAMPLES_SCHEMA, &newer_batch()),
        encode_with(SAMPLES_SCHEMA_V1, &v1_batch(&sample_batch())),
    ];
    for i in 0..30_000 {
        let mut bytes = originals[i % 3].clone();
        for _ in 0..1 + rng.below(4) {
            if bytes.len() <= 10 {
                break;
            }
            // Keep the header so that mutations reach the datum.
            let at = 10 + rng.below(bytes.len() - 10);
            match rng.below(3) {
                0 => bytes[at] = rng.next() as u8,
                1 => bytes[at] ^= 1 << rng.below(8),
                _ => bytes.truncate(at),
            }
        }
        let _ = decoder.decode::<SampleBatch>(&bytes);
        let _ = decode_sample_batch(&bytes);
    }
}
