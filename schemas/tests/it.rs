//! Integration tests of the samples schema and its single-object encoding:
//! round trips, header layout, fingerprints, schema evolution and robustness
//! against malformed input.

use std::collections::BTreeMap;

use apache_avro::types::Value;
use apache_avro::writer::datum::GenericDatumWriter;
use apache_avro::Schema;
use serde::{Deserialize, Serialize};
use tidemark_schemas::{
    decode_sample_batch, encode_sample_batch, parsing_canonical_form, schema_fingerprint, Decoder,
    SampleBatch, SchemaError, WireSample, SAMPLES_SCHEMA,
};

/// The samples schema as a newer producer could write it: a new field with a
/// default on each record.
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
    {"name": "producer", "type": "string", "default": "unknown"}
  ]
}"#;

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(rename = "SampleBatch")]
struct NewerSampleBatch {
    batch_id: String,
    produced_at: i64,
    samples: Vec<NewerSample>,
    producer: String,
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
    let fingerprint = schema_fingerprint(SAMPLES_SCHEMA).unwrap();
    assert_eq!(bytes[..2], [0xC3, 0x01]);
    assert_eq!(bytes[2..10], fingerprint.to_le_bytes());
}

#[test]
fn fingerprint_is_rabin_of_the_spec_canonical_form() {
    let canonical = parsing_canonical_form(SAMPLES_SCHEMA).unwrap();
    // Pinned: changing it changes the fingerprint of every message on the
    // topic. Logical types reduce to "long"; docs are stripped. Both values
    // are the ones Java's `SchemaNormalization.toParsingForm` and
    // `parsingFingerprint64` compute for the .avsc file.
    assert_eq!(
        canonical,
        concat!(
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
            r#"{"name":"tags","type":{"type":"map","values":"string"}}]}}}]}"#,
        )
    );
    let fingerprint = schema_fingerprint(SAMPLES_SCHEMA).unwrap();
    assert_eq!(fingerprint, reference_rabin(canonical.as_bytes()));
    assert_eq!(fingerprint, 0x4931_6f5d_e45a_ea03);
}

#[test]
fn embedded_schema_documents_every_field() {
    let Schema::Record(batch) = Schema::parse_str(SAMPLES_SCHEMA).unwrap() else {
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
    let value = Value::Record(vec![
        ("batch_id".into(), Value::String(batch.batch_id.clone())),
        (
            "produced_at".into(),
            Value::TimestampMillis(batch.produced_at),
        ),
        ("samples".into(), Value::Array(samples)),
    ]);
    let schema = Schema::parse_str(SAMPLES_SCHEMA).unwrap();
    let writer = GenericDatumWriter::builder(&schema).build().unwrap();
    let mut datum = Vec::new();
    writer.write_value_ref(&mut datum, &value).unwrap();
    datum
}

/// A batch of edge values: empty and unicode strings, extreme longs, signed
/// zeros, infinities and NaNs of several bit patterns, empty and large tag
/// maps.
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
    SampleBatch {
        batch_id: "\u{1F600}".to_string(),
        produced_at: i64::MIN,
        samples,
    }
}

/// An empty batch: empty id, no samples.
fn empty_batch() -> SampleBatch {
    SampleBatch {
        batch_id: String::new(),
        produced_at: i64::MAX,
        samples: Vec::new(),
    }
}

/// `batch` with its `f64`s replaced by their bit patterns, to compare
/// batches holding NaNs exactly.
type Comparable = (
    String,
    i64,
    Vec<(String, String, u64, i64, bool, i64, Vec<(String, String)>)>,
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
    (batch.batch_id.clone(), batch.produced_at, samples)
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

/// A random valid batch of up to `max_samples` samples.
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
    SampleBatch {
        batch_id: random_string(rng, 40),
        produced_at: random_long(rng),
        samples,
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
    bytes.extend_from_slice(&schema_fingerprint(SAMPLES_SCHEMA).unwrap().to_le_bytes());
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
    // tags in two blocks, the second with a negative count and a duplicate key.
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
    };
    assert_eq!(decode_sample_batch(&bytes).unwrap(), expected);
    assert!(assert_decoders_agree(&decoder, &bytes));

    // Non-minimal varints (0 as 0x80 0x80 0x00, 1 as 0x82 0x00, a 10-byte
    // -1), and a 10-byte varint whose 10th byte has bits beyond the 64th
    // (ignored by both: 0x7F counts as 0x01).
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
        }
    );
    assert!(assert_decoders_agree(&decoder, &bytes));
}

/// Hostile lengths and counts fail fast, without allocating what they claim.
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
    // Huge sample counts, positive and negative, and huge tag counts.
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
    }
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
        datum.extend_from_slice(&[0, 0]);
        cases.push(datum);
    }
    // A boolean byte other than 0 and 1.
    let mut datum = vec![0, 0, 2];
    put_sample(&mut datum, &[0, 0]);
    let error_at = datum.len() - 4; // the error byte, before timestamp and tags
    datum[error_at] = 2;
    cases.push(datum);
    // Trailing bytes.
    cases.push(vec![0, 0, 0, 0]);

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
        producer: "ingest-2".to_string(),
    }
}

#[test]
fn newer_writer_schema_is_decoded_once_registered() {
    let bytes = encode_with(NEWER_SAMPLES_SCHEMA, &newer_batch());
    let newer_fingerprint = schema_fingerprint(NEWER_SAMPLES_SCHEMA).unwrap();
    // As computed by Java's `SchemaNormalization.parsingFingerprint64`.
    assert_eq!(newer_fingerprint, 0x1dc8_99a5_d5ca_b640);
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

    // Registered: resolved to the current schema, new fields dropped.
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
        .unwrap();
    let bytes = encode_sample_batch(&sample_batch()).unwrap();
    let decoded: NewerSampleBatch = decoder.decode(&bytes).unwrap();
    let mut expected = newer_batch();
    expected.producer = "unknown".to_string();
    for s in &mut expected.samples {
        s.unit = String::new();
    }
    assert_eq!(decoded, expected);
}

#[test]
fn incompatible_or_invalid_writer_schemas_are_rejected() {
    // The current schema cannot read a writer without `tags` (it has no
    // default), nor one where `count` became a string.
    let without_tags = SAMPLES_SCHEMA.replace(
        r#"{
              "name": "tags","#,
        r#"{
              "name": "tags_renamed","#,
    );
    assert_ne!(without_tags, SAMPLES_SCHEMA);
    let decoder = Decoder::new(SAMPLES_SCHEMA).unwrap();
    assert!(matches!(
        decoder.with_writer_schema(&without_tags),
        Err(SchemaError::IncompatibleSchema(_))
    ));
    let count_as_string = SAMPLES_SCHEMA.replace(
        r#"{"name": "count", "type": "long""#,
        r#"{"name": "count", "type": "string""#,
    );
    assert_ne!(count_as_string, SAMPLES_SCHEMA);
    assert!(matches!(
        Decoder::new(SAMPLES_SCHEMA)
            .unwrap()
            .with_writer_schema(&count_as_string),
        Err(SchemaError::IncompatibleSchema(_))
    ));
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
    let bytes = encode_sample_batch(&sample_batch()).unwrap();
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

#[test]
fn random_bytes_never_panic() {
    let mut rng = XorShift(0x9E37_79B9_7F4A_7C15);
    let current = schema_fingerprint(SAMPLES_SCHEMA).unwrap();
    let newer = schema_fingerprint(NEWER_SAMPLES_SCHEMA).unwrap();
    let decoder = Decoder::new(SAMPLES_SCHEMA)
        .unwrap()
        .with_writer_schema(NEWER_SAMPLES_SCHEMA)
        .unwrap();
    for i in 0..20_000 {
        let len = rng.below(96);
        let mut bytes = rng.bytes(len);
        // Most inputs get a valid header so that the datum decoder (both the
        // direct and the resolving path) sees the random body.
        if i % 4 != 0 && bytes.len() >= 10 {
            let fingerprint = if i % 2 == 0 { current } else { newer };
            bytes[..2].copy_from_slice(&[0xC3, 0x01]);
            bytes[2..10].copy_from_slice(&fingerprint.to_le_bytes());
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
        .unwrap();
    let originals = [
        encode_sample_batch(&sample_batch()).unwrap(),
        encode_with(NEWER_SAMPLES_SCHEMA, &newer_batch()),
    ];
    for i in 0..20_000 {
        let mut bytes = originals[i % 2].clone();
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
