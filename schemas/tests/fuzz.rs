//! Property tests (bounded: a few thousand cases each) of the samples topic's decoders:
//! the hand-written codec behind `with_sample_batch`/`decode_sample_batch` (schema v2)
//! and apache-avro (schema v1, and `Decoder`). Valid batches round-trip; arbitrary bytes
//! and mutated messages never panic and, for v2, both decoders give the same answer; a
//! length or count claiming more than the message holds (up to 2^63) is an error, not
//! an allocation failure.

use std::collections::BTreeMap;
use std::sync::LazyLock;

use apache_avro::writer::datum::GenericDatumWriter;
use apache_avro::Schema;
use proptest::prelude::*;
use serde::Serialize;
use tidemark_schemas::{
    decode_sample_batch, encode_sample_batch, schema_fingerprint, with_sample_batch, Chunk,
    Decoder, SampleBatch, SchemaError, WireSample, SAMPLES_SCHEMA, SAMPLES_SCHEMA_V1,
};

fn config() -> ProptestConfig {
    ProptestConfig {
        // PROPTEST_CASES runs more (or fewer) cases, e.g. for a longer local run.
        cases: std::env::var("PROPTEST_CASES")
            .ok()
            .and_then(|v| v.parse().ok())
            .unwrap_or(2_000),
        failure_persistence: None,
        ..ProptestConfig::default()
    }
}

/// A batch as a v1 producer wrote it (no `chunks`).
#[derive(Serialize)]
#[serde(rename = "SampleBatch")]
struct SampleBatchV1<'a> {
    batch_id: &'a str,
    produced_at: i64,
    samples: &'a [WireSample],
}

fn header(schema: &str) -> Vec<u8> {
    let mut out = vec![0xC3, 0x01];
    out.extend_from_slice(&schema_fingerprint(schema).unwrap().to_le_bytes());
    out
}

/// `batch` without its chunks, encoded by apache-avro with the v1 schema.
fn encode_v1(batch: &SampleBatch) -> Vec<u8> {
    let schema = Schema::parse_str(SAMPLES_SCHEMA_V1).unwrap();
    let writer = GenericDatumWriter::builder(&schema).build().unwrap();
    let mut out = header(SAMPLES_SCHEMA_V1);
    let v1 = SampleBatchV1 {
        batch_id: &batch.batch_id,
        produced_at: batch.produced_at,
        samples: &batch.samples,
    };
    writer.write_ser(&mut out, &v1).unwrap();
    out
}

/// `batch` with its doubles as bits, so batches holding NaNs compare.
fn comparable(batch: &SampleBatch) -> String {
    let mut batch = batch.clone();
    let bits: Vec<u64> = batch.samples.iter().map(|s| s.value.to_bits()).collect();
    for s in &mut batch.samples {
        s.value = 0.0;
    }
    format!("{batch:?} {bits:?}")
}

fn text() -> impl Strategy<Value = String> {
    prop_oneof![
        "[a-z0-9._-]{0,12}",
        any::<String>().prop_map(|s| s.chars().take(12).collect()),
    ]
}

fn sample() -> impl Strategy<Value = WireSample> {
    (
        text(),
        text(),
        any::<f64>(),
        any::<i64>(),
        any::<bool>(),
        any::<i64>(),
        proptest::collection::btree_map(text(), text(), 0..4),
    )
        .prop_map(
            |(service, metric, value, count, error, timestamp, tags)| WireSample {
                service,
                metric,
                value,
                count,
                error,
                timestamp,
                tags,
            },
        )
}

fn batch() -> impl Strategy<Value = SampleBatch> {
    let chunk = (text(), any::<i32>(), any::<i32>()).prop_map(|(id, first, count)| Chunk {
        id,
        first,
        count,
    });
    (
        text(),
        any::<i64>(),
        proptest::collection::vec(sample(), 0..6),
        proptest::collection::vec(chunk, 0..4),
    )
        .prop_map(|(batch_id, produced_at, samples, chunks)| SampleBatch {
            batch_id,
            produced_at,
            samples,
            chunks,
        })
}

/// Edits of a message past its header: overwrite or flip a byte, insert bytes, cut
/// the message, or splice in a varint claiming a huge length or count.
#[derive(Debug, Clone)]
enum Edit {
    Set(usize, u8),
    Flip(usize, u8),
    Insert(usize, Vec<u8>),
    Cut(usize),
    Claim(usize, i64),
}

fn edits() -> impl Strategy<Value = Vec<Edit>> {
    let huge = prop_oneof![
        (0..64u32).prop_map(|k| 1i64.wrapping_shl(k)),
        (0..64u32).prop_map(|k| 1i64.wrapping_shl(k).wrapping_neg()),
        any::<i64>(),
    ];
    let edit = prop_oneof![
        (any::<usize>(), any::<u8>()).prop_map(|(at, b)| Edit::Set(at, b)),
        (any::<usize>(), 0..8u8).prop_map(|(at, bit)| Edit::Flip(at, bit)),
        (
            any::<usize>(),
            proptest::collection::vec(any::<u8>(), 1..12)
        )
            .prop_map(|(at, b)| Edit::Insert(at, b)),
        any::<usize>().prop_map(Edit::Cut),
        (any::<usize>(), huge).prop_map(|(at, n)| Edit::Claim(at, n)),
    ];
    proptest::collection::vec(edit, 1..4)
}

fn zigzag(n: i64) -> Vec<u8> {
    let mut v = ((n << 1) ^ (n >> 63)) as u64;
    let mut out = Vec::new();
    while v >= 0x80 {
        out.push(v as u8 | 0x80);
        v >>= 7;
    }
    out.push(v as u8);
    out
}

fn apply(message: &mut Vec<u8>, edits: &[Edit]) {
    const HEADER: usize = 10;
    for edit in edits {
        let body = message.len() - HEADER;
        let at = |i: usize, room: usize| HEADER + i % (body + room).max(1);
        match edit {
            Edit::Set(i, b) if body > 0 => {
                let i = at(*i, 0);
                message[i] = *b;
            }
            Edit::Flip(i, bit) if body > 0 => {
                let i = at(*i, 0);
                message[i] ^= 1 << bit;
            }
            Edit::Insert(i, bytes) => {
                let i = at(*i, 1);
                message.splice(i..i, bytes.iter().copied());
            }
            Edit::Cut(i) => message.truncate(at(*i, 1)),
            Edit::Claim(i, n) => {
                let i = at(*i, 1);
                message.splice(i..i, zigzag(*n));
            }
            _ => {}
        }
    }
}

/// Every decoder, none of which may panic; for a v2 message the hand-written codec
/// and apache-avro must both refuse it or read the same batch.
fn decode_every_way(bytes: &[u8]) -> Result<(), TestCaseError> {
    let ours = decode_sample_batch(bytes);
    let borrowed = with_sample_batch(bytes, |view| view.to_batch());
    match (&ours, &borrowed) {
        (Ok(a), Ok(b)) => prop_assert_eq!(comparable(a), comparable(b)),
        (Err(_), Err(_)) => {}
        _ => return Err(TestCaseError::fail("owned and borrowed decodes differ")),
    }
    static APACHE: LazyLock<Decoder> = LazyLock::new(|| Decoder::new(SAMPLES_SCHEMA).unwrap());
    let theirs = APACHE.decode::<SampleBatch>(bytes);
    if bytes.get(2..10) == Some(&header(SAMPLES_SCHEMA)[2..]) {
        match (&ours, &theirs) {
            (Ok(a), Ok(b)) => prop_assert_eq!(comparable(a), comparable(b)),
            (Err(e), Err(_)) => prop_assert!(matches!(e, SchemaError::Decode(_)), "{e:?}"),
            (a, b) => {
                return Err(TestCaseError::fail(format!(
                    "decoders disagree on {bytes:?}: {a:?} vs {b:?}"
                )))
            }
        }
    }
    Ok(())
}

proptest! {
    #![proptest_config(config())]

    #[test]
    fn valid_batches_round_trip(batch in batch()) {
        let bytes = encode_sample_batch(&batch).unwrap();
        let decoded = decode_sample_batch(&bytes).unwrap();
        // The decoder yields tags as a map: sorted, each key once, as `batch` has them.
        prop_assert_eq!(comparable(&decoded), comparable(&batch));
        with_sample_batch(&bytes, |view| {
            assert_eq!(comparable(&view.to_batch()), comparable(&batch));
        })
        .unwrap();
        decode_every_way(&bytes)?;
        // The same samples written by a v1 producer read back with no chunks.
        let v1 = decode_sample_batch(&encode_v1(&batch)).unwrap();
        let expected = SampleBatch { chunks: Vec::new(), ..batch };
        prop_assert_eq!(comparable(&v1), comparable(&expected));
    }

    #[test]
    fn arbitrary_bytes_never_panic(
        which in 0..4u8,
        body in proptest::collection::vec(any::<u8>(), 0..160),
    ) {
        let mut bytes = match which {
            0 => header(SAMPLES_SCHEMA),
            1 => header(SAMPLES_SCHEMA_V1),
            2 => vec![0xC3, 0x01, 1, 2, 3, 4, 5, 6, 7, 8],
            _ => Vec::new(),
        };
        bytes.extend_from_slice(&body);
        decode_every_way(&bytes)?;
    }

    #[test]
    fn mutated_messages_never_panic(batch in batch(), v1 in any::<bool>(), edits in edits()) {
        let mut bytes = if v1 { encode_v1(&batch) } else { encode_sample_batch(&batch).unwrap() };
        apply(&mut bytes, &edits);
        decode_every_way(&bytes)?;
    }
}

/// A varint claiming 2^k (and -2^k) for every k, as each length and count of a v2 and
/// of a v1 message, backed by a few bytes: every decoder fails without panicking or
/// aborting on an allocation.
#[test]
fn claimed_lengths_and_counts_up_to_2_pow_63_fail() {
    let sample = |tags: &[u8]| {
        let mut s = vec![2, b's', 2, b'm'];
        s.extend_from_slice(&1.5f64.to_le_bytes());
        s.extend_from_slice(&[2, 0, 2]);
        s.extend_from_slice(tags);
        s
    };
    for k in 0..64u32 {
        for claim in [1i64.wrapping_shl(k), 1i64.wrapping_shl(k).wrapping_neg()] {
            if claim.unsigned_abs() <= 8 {
                continue;
            }
            let n = zigzag(claim);
            let size = zigzag(8);
            let block = |count: &[u8]| {
                let mut b = count.to_vec();
                if claim < 0 {
                    b.extend_from_slice(&size);
                }
                b
            };
            let mut datums: Vec<Vec<u8>> = Vec::new();
            // batch_id length.
            datums.push([&n[..], b"abc", &[0, 0, 0]].concat());
            // samples count; a sample's service length; its tag count; a tag key length.
            datums.push([&[0, 0][..], &block(&n), &sample(&[0]), &[0, 0]].concat());
            datums.push([&[0, 0, 2][..], &n, b"s", &[0, 0]].concat());
            datums.push(
                [
                    &[0, 0, 2][..],
                    &sample(&[&block(&n)[..], &[2, b'k', 2, b'v', 0]].concat()),
                    &[0, 0],
                ]
                .concat(),
            );
            datums.push(
                [
                    &[0, 0, 2][..],
                    &sample(&[&[2][..], &n, b"kv", &[0]].concat()),
                    &[0, 0],
                ]
                .concat(),
            );
            // chunks count; a chunk id length.
            datums.push([&[0, 0, 0][..], &block(&n), &[2, b'c', 0, 2, 0]].concat());
            datums.push([&[0, 0, 0, 2][..], &n, b"c", &[0, 2, 0]].concat());
            for datum in datums {
                for schema in [SAMPLES_SCHEMA, SAMPLES_SCHEMA_V1] {
                    let bytes = [header(schema), datum.clone()].concat();
                    let outcome = decode_sample_batch(&bytes);
                    assert!(
                        matches!(outcome, Err(SchemaError::Decode(_))),
                        "claim {claim} in {datum:?} ({}): {outcome:?}",
                        if schema == SAMPLES_SCHEMA { "v2" } else { "v1" }
                    );
                    decode_every_way(&bytes).unwrap();
                }
            }
        }
    }
}

#[test]
fn tags_keep_the_last_value_of_a_key() {
    // Tags are a map: a message repeating a key (which our encoder never writes) reads
    // as its last value, in both decoders.
    let mut datum = vec![0, 0, 2, 2, b's', 2, b'm'];
    datum.extend_from_slice(&1.0f64.to_le_bytes());
    datum.extend_from_slice(&[2, 0, 2, 4, 2, b'k', 2, b'1', 2, b'k', 2, b'2', 0, 0, 0]);
    let bytes = [header(SAMPLES_SCHEMA), datum].concat();
    let batch = decode_sample_batch(&bytes).unwrap();
    assert_eq!(
        batch.samples[0].tags,
        BTreeMap::from([("k".to_owned(), "2".to_owned())])
    );
    decode_every_way(&bytes).unwrap();
}
