//! Unit tests of the sketch: accuracy against exact quantiles, exact merges,
//! encoding round trips and decoder robustness.

use rand::rngs::StdRng;
use rand::{Rng, SeedableRng};

use super::*;

const QUANTILES: [f64; 7] = [0.0, 0.01, 0.5, 0.9, 0.95, 0.99, 1.0];
const TOLERANCE: f64 = RELATIVE_ACCURACY + 1e-12;

fn rng() -> StdRng {
    StdRng::seed_from_u64(0x71de_6a4c)
}

fn sketch_of(values: &[f64]) -> Sketch {
    let mut sketch = Sketch::new();
    for &v in values {
        sketch.add(v, 1);
    }
    sketch
}

fn relative_error(estimate: f64, exact: f64) -> f64 {
    if exact == 0.0 {
        estimate.abs()
    } else {
        ((estimate - exact) / exact).abs()
    }
}

/// The exact nearest-rank `q`-quantile of `sorted`.
fn exact(sorted: &[f64], q: f64) -> f64 {
    sorted[nearest_rank(q, sorted.len() as u64) as usize]
}

/// Checks every quantile of [`QUANTILES`] against the exact nearest-rank value.
fn assert_accurate(values: &[f64]) {
    let sketch = sketch_of(values);
    let mut sorted = values.to_vec();
    sorted.sort_by(f64::total_cmp);
    assert_eq!(sketch.count(), sorted.len() as u64);
    for q in QUANTILES {
        let exact = exact(&sorted, q);
        let estimate = sketch.quantile(q).unwrap();
        let error = relative_error(estimate, exact);
        assert!(
            error <= TOLERANCE,
            "q={q}: estimate {estimate} vs exact {exact}, relative error {error}"
        );
    }
}

fn standard_normal(rng: &mut StdRng) -> f64 {
    let u: f64 = 1.0 - rng.gen::<f64>();
    let v: f64 = rng.gen();
    (-2.0 * u.ln()).sqrt() * (std::f64::consts::TAU * v).cos()
}

fn latency_like(rng: &mut StdRng, n: usize) -> Vec<f64> {
    (0..n)
        .map(|_| 1e-3 * 10f64.powf(4.0 * rng.gen::<f64>()))
        .collect()
}

#[test]
fn empty_sketch_has_no_quantile() {
    let sketch = Sketch::new();
    assert!(sketch.is_empty());
    assert_eq!(sketch.count(), 0);
    for q in QUANTILES {
        assert_eq!(sketch.quantile(q), None);
    }
}

#[test]
fn accurate_on_uniform_data() {
    let mut rng = rng();
    let values: Vec<f64> = (0..20_000)
        .map(|_| 1.0 + 999.0 * rng.gen::<f64>())
        .collect();
    assert_accurate(&values);
}

#[test]
fn accurate_on_lognormal_data() {
    let mut rng = rng();
    let values: Vec<f64> = (0..20_000)
        .map(|_| (2.0 * standard_normal(&mut rng)).exp())
        .collect();
    assert_accurate(&values);
}

#[test]
fn accurate_on_exponential_data() {
    let mut rng = rng();
    let values: Vec<f64> = (0..20_000)
        .map(|_| -(1.0 - rng.gen::<f64>()).ln() * 50.0 + 1e-6)
        .collect();
    assert_accurate(&values);
}

#[test]
fn accurate_on_heavy_tailed_data() {
    let mut rng = rng();
    let pareto: Vec<f64> = (0..20_000)
        .map(|_| (1.0 - rng.gen::<f64>()).powf(-1.5))
        .collect();
    assert_accurate(&pareto);
    let cauchy: Vec<f64> = (0..20_000)
        .map(|_| (std::f64::consts::PI * (rng.gen::<f64>() - 0.5)).tan())
        .collect();
    assert!(cauchy.iter().any(|&v| v < 0.0) && cauchy.iter().any(|&v| v > 0.0));
    assert_accurate(&cauchy);
}

#[test]
fn nearest_rank_is_the_ceiling_of_q_n() {
    // (q, n) -> 1-based rank, by hand.
    for (q, n, rank) in [
        (0.0, 1, 1),
        (0.99, 1, 1),
        (0.5, 2, 1),
        (0.95, 2, 2),
        (0.99, 2, 2),
        (0.95, 20, 19),
        (0.9, 10, 9),
        (0.99, 10, 10),
        (0.5, 10, 5),
        (0.99, 672, 666),
        (0.95, 100_000, 95_000),
        (1.0, 7, 7),
        (0.0, 7, 1),
    ] {
        assert_eq!(nearest_rank(q, n) + 1, rank, "q={q} n={n}");
    }
}

#[test]
fn two_samples_report_the_slow_one_as_p95() {
    // The health view once said p95 = p99 = 12.55 ms for 12.5 and 230 ms.
    let sketch = sketch_of(&[12.5, 230.0]);
    assert!(relative_error(sketch.quantile(0.5).unwrap(), 12.5) <= TOLERANCE);
    for q in [0.95, 0.99] {
        assert!(relative_error(sketch.quantile(q).unwrap(), 230.0) <= TOLERANCE);
    }
}

#[test]
fn accurate_at_the_sizes_people_read() {
    let mut rng = rng();
    for n in [1, 2, 10, 672, 100_000] {
        assert_accurate(&latency_like(&mut rng, n));
        // Bimodal: fast cache hits and slow misses.
        let bimodal: Vec<f64> = (0..n)
            .map(|i| {
                if i % 10 == 0 {
                    800.0 + i as f64 % 97.0
                } else {
                    2.0 + i as f64 % 3.0
                }
            })
            .collect();
        assert_accurate(&bimodal);
    }
}

#[test]
fn accurate_on_few_values() {
    assert_accurate(&[42.0]);
    assert_accurate(&[3.0, 1.0]);
    assert_accurate(&[5.0, 5.0, 5.0, 1e6, 1e-3]);
}

#[test]
fn negative_and_zero_values() {
    let values = [-5.0, -1.0, -1.0, 0.0, 0.0, 0.0, 2.0, 3.0, -250.0];
    assert_accurate(&values);
    let sketch = sketch_of(&values);
    assert_eq!(sketch.quantile(0.5), Some(0.0));
    assert!(sketch.quantile(0.0).unwrap() < -247.0);

    let mut tiny = Sketch::new();
    tiny.add(1e-12, 2);
    tiny.add(-MIN_INDEXABLE, 1);
    tiny.add(0.0, 1);
    assert_eq!(tiny.count(), 4);
    assert_eq!(tiny.quantile(0.0), Some(0.0));
    assert_eq!(tiny.quantile(1.0), Some(0.0));

    let mut rng = rng();
    let mixed: Vec<f64> = (0..10_000)
        .map(|i| match i % 5 {
            0 => 0.0,
            1 | 2 => -(2.0 * standard_normal(&mut rng)).exp(),
            _ => 1.0 + 1e4 * rng.gen::<f64>(),
        })
        .collect();
    assert_accurate(&mixed);
}

#[test]
fn weighted_add_equals_repeated_adds() {
    let mut rng = rng();
    let mut weighted = Sketch::new();
    let mut repeated = Sketch::new();
    for _ in 0..500 {
        let value = 1e3 * standard_normal(&mut rng);
        let count = rng.gen_range(1..20u64);
        weighted.add(value, count);
        for _ in 0..count {
            repeated.add(value, 1);
        }
    }
    assert_eq!(weighted, repeated);
    for q in QUANTILES {
        assert_eq!(weighted.quantile(q), repeated.quantile(q));
    }
}

#[test]
fn merge_of_parts_equals_whole() {
    let mut rng = rng();
    let values: Vec<f64> = (0..30_000)
        .map(|i| match i % 3 {
            0 => (3.0 * standard_normal(&mut rng)).exp(),
            1 => -(1.0 - rng.gen::<f64>()).powf(-2.0),
            _ => 0.0,
        })
        .collect();
    let whole = sketch_of(&values);
    let (a, rest) = values.split_at(7_000);
    let (b, c) = rest.split_at(15_000);
    let (a, b, c) = (sketch_of(a), sketch_of(b), sketch_of(c));

    let mut left = a.clone();
    left.merge(&b);
    left.merge(&c);
    let mut bc = b.clone();
    bc.merge(&c);
    let mut right = a.clone();
    right.merge(&bc);
    let mut reversed = c.clone();
    reversed.merge(&b);
    reversed.merge(&a);

    assert_eq!(left, whole);
    assert_eq!(right, whole);
    assert_eq!(reversed, whole);
}

#[test]
fn merge_with_empty_is_identity() {
    let sketch = sketch_of(&[-3.0, 0.0, 7.5]);
    let mut merged = sketch.clone();
    merged.merge(&Sketch::new());
    assert_eq!(merged, sketch);
    let mut from_empty = Sketch::new();
    from_empty.merge(&sketch);
    assert_eq!(from_empty, sketch);
}

#[test]
fn wide_ranges_stay_bounded_and_merge_exactly() {
    let mut sketch = Sketch::new();
    sketch.add(2e-9, 1);
    sketch.add(1e300, 1);
    sketch.add(-2e-9, 1);
    sketch.add(-1e300, 1);
    assert_eq!(sketch.count(), 4);
    let floor = representative(bin_index(1e300) - (MAX_BINS as i32 - 1));
    assert!(floor > 1e264 && floor < 1e265);
    assert_eq!(sketch.quantile(0.4), Some(-floor));
    assert_eq!(sketch.quantile(0.7), Some(floor));
    assert!(relative_error(sketch.quantile(1.0).unwrap(), 1e300) <= TOLERANCE);
    assert!(relative_error(sketch.quantile(0.0).unwrap(), -1e300) <= TOLERANCE);

    let mut rng = rng();
    let values: Vec<f64> = (0..5_000)
        .map(|_| {
            let magnitude = 10f64.powf(rng.gen_range(-8.0..300.0));
            if rng.gen() {
                magnitude
            } else {
                -magnitude
            }
        })
        .collect();
    let whole = sketch_of(&values);
    let (a, b) = values.split_at(2_345);
    let mut merged = sketch_of(b);
    merged.merge(&sketch_of(a));
    assert_eq!(merged, whole);
    assert_eq!(Sketch::from_bytes(&whole.to_bytes()), Ok(whole.clone()));
    let mut sorted = values.clone();
    sorted.sort_by(f64::total_cmp);
    for q in [0.0, 0.001, 0.999, 1.0] {
        let exact = exact(&sorted, q);
        assert!(relative_error(whole.quantile(q).unwrap(), exact) <= TOLERANCE);
    }
}

#[test]
fn extreme_values_stay_finite_and_accurate() {
    assert_accurate(&[f64::MAX, -f64::MAX, 1e300, -1e290, f64::MAX / 3.0]);
    assert_accurate(&[1.000_001e-9, -1.000_001e-9, 1e-5, 1e20, 0.0]);
    let sketch = sketch_of(&[f64::MAX, -f64::MAX, f64::MIN_POSITIVE]);
    assert_eq!(sketch.quantile(0.5), Some(0.0));
    assert_eq!(Sketch::from_bytes(&sketch.to_bytes()), Ok(sketch));
}

#[test]
fn ignores_non_finite_values_and_zero_counts() {
    let mut sketch = Sketch::new();
    sketch.add(f64::NAN, 3);
    sketch.add(f64::INFINITY, 1);
    sketch.add(f64::NEG_INFINITY, 1);
    sketch.add(1.0, 0);
    assert_eq!(sketch, Sketch::new());
}

#[test]
fn quantile_clamps_q_and_rejects_nan() {
    let sketch = sketch_of(&[1.0, 2.0, 3.0]);
    assert_eq!(sketch.quantile(-1.0), sketch.quantile(0.0));
    assert_eq!(sketch.quantile(7.0), sketch.quantile(1.0));
    assert_eq!(sketch.quantile(f64::NAN), None);
}

#[test]
fn counts_saturate_instead_of_overflowing() {
    let mut sketch = Sketch::new();
    sketch.add(1.0, u64::MAX);
    sketch.add(-1.0, u64::MAX);
    sketch.add(0.0, u64::MAX);
    assert_eq!(sketch.count(), MAX_COUNT);
    let mut merged = sketch.clone();
    merged.merge(&sketch);
    assert_eq!(merged.count(), MAX_COUNT);
    assert!(merged.quantile(1.0).is_some());
    assert_eq!(Sketch::from_bytes(&merged.to_bytes()), Ok(merged));
    // The total saturates at what a signed 64-bit column holds, added or merged.
    let mut big = Sketch::new();
    for _ in 0..3 {
        big.add(2.0, i64::MAX as u64);
    }
    assert_eq!(big.count(), MAX_COUNT);
    let mut two = Sketch::new();
    two.add(2.0, MAX_COUNT);
    two.merge(&two.clone());
    assert_eq!(two.count(), MAX_COUNT);
    assert_eq!(
        Sketch::from_bytes(&two.to_bytes()).unwrap().count(),
        MAX_COUNT
    );
}

#[test]
fn encoding_round_trips() {
    let mut rng = rng();
    let mut samples = vec![
        Sketch::new(),
        sketch_of(&[0.0]),
        sketch_of(&[-1.5]),
        sketch_of(&[1e-9 * 1.5, 1e12, -7.0, 0.0]),
    ];
    let mut weighted = Sketch::new();
    for _ in 0..1_000 {
        weighted.add(
            100.0 * standard_normal(&mut rng),
            rng.gen_range(1..1_000_000),
        );
    }
    samples.push(weighted);
    samples.push(sketch_of(&latency_like(&mut rng, 10_000)));
    for sketch in samples {
        let bytes = sketch.to_bytes();
        assert_eq!(bytes[0], 1);
        assert_eq!(Sketch::from_bytes(&bytes), Ok(sketch));
    }
}

#[test]
fn encoding_is_compact() {
    let sketch = sketch_of(&latency_like(&mut rng(), 10_000));
    let len = sketch.to_bytes().len();
    assert!(len <= 1_200, "10k latencies encode in {len} bytes");
    assert_eq!(Sketch::new().to_bytes().len(), 4);
}

#[test]
fn truncated_encodings_are_rejected() {
    let mut rng = rng();
    let mut sketch = sketch_of(&latency_like(&mut rng, 500));
    sketch.add(0.0, 3);
    sketch.add(-2.0, 300);
    let bytes = sketch.to_bytes();
    for len in 0..bytes.len() {
        assert!(Sketch::from_bytes(&bytes[..len]).is_err(), "prefix {len}");
    }
    let mut extended = bytes;
    extended.push(0);
    assert_eq!(
        Sketch::from_bytes(&extended),
        Err(DecodeError("trailing bytes"))
    );
}

/// Decodes `bytes`, which must not panic; any accepted input is canonical.
fn assert_decode_is_sound(bytes: &[u8]) {
    if let Ok(sketch) = Sketch::from_bytes(bytes) {
        assert_eq!(sketch.to_bytes(), bytes);
        for q in QUANTILES {
            assert!(sketch.quantile(q).is_some_and(f64::is_finite));
        }
    }
}

#[test]
fn random_bytes_never_panic() {
    let mut rng = rng();
    for _ in 0..100_000 {
        let len = rng.gen_range(0..48);
        let mut bytes: Vec<u8> = (0..len).map(|_| rng.gen()).collect();
        if let Some(first) = bytes.first_mut() {
            if rng.gen_bool(0.7) {
                *first = 1;
            }
        }
        assert_decode_is_sound(&bytes);
    }
}

#[test]
fn mutated_encodings_never_panic() {
    let mut rng = rng();
    let mut sketch = sketch_of(&latency_like(&mut rng, 300));
    sketch.add(-0.25, 9);
    sketch.add(0.0, 1);
    let bytes = sketch.to_bytes();
    for _ in 0..20_000 {
        let mut mutated = bytes.clone();
        for _ in 0..rng.gen_range(1..4) {
            let at = rng.gen_range(0..mutated.len());
            match rng.gen_range(0..3) {
                0 => mutated[at] = rng.gen(),
                1 => mutated[at] ^= 1 << rng.gen_range(0..8),
                _ => mutated.truncate(at.max(1)),
            }
        }
        assert_decode_is_sound(&mutated);
    }
}

#[test]
fn malformed_encodings_are_rejected() {
    let max_varint = [0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0x01];
    let cases: Vec<(Vec<u8>, &str)> = vec![
        (vec![], "empty input"),
        (vec![2, 0, 0, 0], "unsupported format version"),
        (vec![1, 0x80], "truncated input"),
        (vec![1, 0x80, 0x00, 0, 0], "non-minimal varint"),
        (
            [&[1u8][..], &[0xff; 10], &[0, 0]].concat(),
            "varint overflows 64 bits",
        ),
        ([&[1u8, 0][..], &max_varint[..]].concat(), "too many bins"),
        (vec![1, 0, 0x81, 0x20, 0, 0], "too many bins"),
        (vec![1, 0, 2, 0, 1, 0, 1, 0], "bin indexes not ascending"),
        (vec![1, 0, 1, 0, 0, 0], "empty bin"),
        (
            vec![1, 0, 1, 0x80, 0xf1, 0x04, 1, 0],
            "bin index out of range",
        ),
        (vec![1, 0, 1, 0x9f, 0x1f, 1, 0], "bin index out of range"),
        (
            [&[1u8, 0, 2, 0, 1][..], &max_varint[..], &[1, 0]].concat(),
            "bin index out of range",
        ),
        (vec![1, 0, 2, 0, 1, 0x80, 0x40, 1, 0], "bins span too wide"),
        (vec![1, 0, 0, 0, 0], "trailing bytes"),
    ];
    for (bytes, message) in cases {
        assert_eq!(
            Sketch::from_bytes(&bytes),
            Err(DecodeError(message)),
            "{bytes:?}"
        );
    }
    assert_eq!(Sketch::from_bytes(&[1, 0, 0, 0]), Ok(Sketch::new()));
}

#[test]
fn decode_error_message_is_lowercase() {
    let message = Sketch::from_bytes(&[]).unwrap_err().to_string();
    assert_eq!(message, "invalid sketch encoding: empty input");
    let error: Box<dyn std::error::Error> = Box::new(Sketch::from_bytes(&[9]).unwrap_err());
    assert_eq!(
        error.to_string(),
        "invalid sketch encoding: unsupported format version"
    );
}
