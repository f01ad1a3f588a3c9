//! Timing of the samples codec on a 100-sample batch (in 4 chunks): the
//! hand-written encoder and decoder against the apache-avro serde paths they
//! replaced, and the borrowed decode the aggregator folds from.
//! Prints medians and new/old ratios measured in the same run:
//!
//! ```text
//! cargo bench -p tidemark-schemas --bench codec
//! ```

use std::collections::BTreeMap;
use std::hint::black_box;
use std::time::Instant;

use apache_avro::writer::datum::GenericDatumWriter;
use apache_avro::Schema;
use tidemark_schemas::{
    decode_sample_batch, encode_sample_batch, schema_fingerprint, with_sample_batch, Chunk,
    Decoder, SampleBatch, WireSample, SAMPLES_SCHEMA,
};

/// A batch as ingest publishes it: 100 samples of a few services and
/// metrics, with 1 to 3 tags each, from 4 chunks of idempotent requests.
fn batch() -> SampleBatch {
    let services = ["checkout", "payments-api", "search", "auth"];
    let metrics = [
        "http.server.latency_ms",
        "db.query_ms",
        "cache.hit",
        "queue.depth",
    ];
    let samples = (0..100)
        .map(|i| {
            let mut tags = BTreeMap::new();
            tags.insert("region".to_string(), "eu-west-1".to_string());
            if i % 3 >= 1 {
                tags.insert("host".to_string(), format!("web-{}", i % 17));
            }
            if i % 3 == 2 {
                tags.insert("route".to_string(), "/api/v1/orders/{id}".to_string());
            }
            WireSample {
                service: services[i % services.len()].to_string(),
                metric: metrics[i / 7 % metrics.len()].to_string(),
                value: 0.25 + i as f64 * 13.7,
                count: 1 + (i as i64 % 5),
                error: i % 11 == 0,
                timestamp: 1_718_000_000_000 + i as i64 * 37,
                tags,
            }
        })
        .collect();
    SampleBatch {
        batch_id: "6f1c2a9e-3b7d-4c1e-9a55-0d2f8b7e4c31".to_string(),
        produced_at: 1_718_000_004_000,
        samples,
        chunks: (0..4)
            .map(|i| Chunk {
                id: format!("{i:x}").repeat(64),
                first: i * 25,
                count: 25,
            })
            .collect(),
    }
}

/// Median of `values` (sorted in place).
fn median(values: &mut [f64]) -> f64 {
    values.sort_by(f64::total_cmp);
    values[values.len() / 2]
}

/// Microseconds per call of `f`, over `iters` calls.
fn time_us(iters: u32, mut f: impl FnMut()) -> f64 {
    let start = Instant::now();
    for _ in 0..iters {
        f();
    }
    start.elapsed().as_secs_f64() * 1e6 / f64::from(iters)
}

fn main() {
    const ROUNDS: usize = 21;
    const ITERS: u32 = 2_000;

    let batch = batch();
    let message = encode_sample_batch(&batch).unwrap();
    let capacity = message.capacity();

    // The previous paths: apache-avro's serde writer into a pre-sized
    // buffer, and its serde reader (`Decoder::decode`).
    let schema = Schema::parse_str(SAMPLES_SCHEMA).unwrap();
    let writer = GenericDatumWriter::builder(&schema).build().unwrap();
    let header = {
        let mut h = vec![0xC3, 0x01];
        h.extend_from_slice(&schema_fingerprint(SAMPLES_SCHEMA).unwrap().to_le_bytes());
        h
    };
    let old_encode = |batch: &SampleBatch| {
        let mut out = Vec::with_capacity(capacity);
        out.extend_from_slice(&header);
        writer.write_ser(&mut out, batch).unwrap();
        out
    };
    let decoder = Decoder::new(SAMPLES_SCHEMA).unwrap();
    assert_eq!(old_encode(&batch), message);
    assert_eq!(decoder.decode::<SampleBatch>(&message).unwrap(), batch);
    assert_eq!(decode_sample_batch(&message).unwrap(), batch);

    let mut enc_old = Vec::new();
    let mut enc_new = Vec::new();
    let mut dec_old = Vec::new();
    let mut dec_new = Vec::new();
    let mut borrowed = Vec::new();
    let mut clone = Vec::new();
    let mut enc_ratio = Vec::new();
    let mut dec_ratio = Vec::new();
    for _ in 0..ROUNDS {
        let eo = time_us(ITERS, || {
            black_box(old_encode(black_box(&batch)));
        });
        let en = time_us(ITERS, || {
            black_box(encode_sample_batch(black_box(&batch)).unwrap());
        });
        let d_o = time_us(ITERS, || {
            black_box(decoder.decode::<SampleBatch>(black_box(&message)).unwrap());
        });
        let dn = time_us(ITERS, || {
            black_box(decode_sample_batch(black_box(&message)).unwrap());
        });
        // What the aggregator uses: the batch with its strings borrowed.
        let db = time_us(ITERS, || {
            black_box(with_sample_batch(black_box(&message), |b| b.samples.len()).unwrap());
        });
        borrowed.push(db);
        // The allocations (and frees) any decoder of a `SampleBatch` makes.
        let cl = time_us(ITERS, || {
            black_box(black_box(&batch).clone());
        });
        enc_old.push(eo);
        clone.push(cl);
        enc_new.push(en);
        dec_old.push(d_o);
        dec_new.push(dn);
        enc_ratio.push(en / eo);
        dec_ratio.push(dn / d_o);
    }

    println!(
        "100-sample batch ({} bytes), median of {ROUNDS} rounds of {ITERS} calls:",
        message.len()
    );
    for (what, old, new, ratio) in [
        ("encode", &mut enc_old, &mut enc_new, &mut enc_ratio),
        ("decode", &mut dec_old, &mut dec_new, &mut dec_ratio),
    ] {
        println!(
            "  {what}: apache-avro {:8.2} µs, hand-written {:8.2} µs, new/old {:.3} (median of per-round ratios {:.3})",
            median(old),
            median(new),
            median(new) / median(old),
            median(ratio),
        );
    }
    println!(
        "  decode, borrowed (strings not copied): {:8.2} µs",
        median(&mut borrowed)
    );
    println!(
        "  clone of the batch (the allocations of any decoder): {:8.2} µs",
        median(&mut clone)
    );
}
