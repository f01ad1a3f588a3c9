//! Compact, versioned binary encoding of a [`Sketch`].
//!
//! Layout (all integers are LEB128 varints):
//! `version:u8 (= 1) | zero_count | positive store | negative store`, where a
//! store is `bin_count`, then per non-zero bin in ascending index order
//! `index_delta count` — the first delta is the zigzag-encoded index itself,
//! later ones the (>= 1) gap to the previous index.
//!
//! Decoding accepts exactly the canonical encodings: minimal varints, indexes
//! that finite values can produce, strictly ascending bins with non-zero
//! counts spanning at most [`MAX_BINS`], and no trailing bytes.

use std::fmt;

use crate::store::{Store, MAX_BINS};
use crate::{bin_index, Sketch, MIN_INDEXABLE};

const FORMAT_VERSION: u8 = 1;

/// Why bytes could not be decoded into a [`Sketch`].
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct DecodeError(pub(crate) &'static str);

impl fmt::Display for DecodeError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "invalid sketch encoding: {}", self.0)
    }
}

impl std::error::Error for DecodeError {}

pub(crate) fn encode(sketch: &Sketch) -> Vec<u8> {
    let mut out = vec![FORMAT_VERSION];
    put_varint(&mut out, sketch.zero);
    encode_store(&mut out, &sketch.positive);
    encode_store(&mut out, &sketch.negative);
    out
}

pub(crate) fn decode(bytes: &[u8]) -> Result<Sketch, DecodeError> {
    let (&version, rest) = bytes.split_first().ok_or(DecodeError("empty input"))?;
    if version != FORMAT_VERSION {
        return Err(DecodeError("unsupported format version"));
    }
    let mut reader = Reader(rest);
    let zero = reader.varint()?;
    let positive = decode_store(&mut reader)?;
    let negative = decode_store(&mut reader)?;
    if !reader.0.is_empty() {
        return Err(DecodeError("trailing bytes"));
    }
    Ok(Sketch::from_parts(positive, negative, zero))
}

fn encode_store(out: &mut Vec<u8>, store: &Store) {
    put_varint(out, store.bins().count() as u64);
    let mut previous = None;
    for (index, count) in store.bins() {
        let delta = match previous {
            None => zigzag(index),
            Some(previous) => (index - previous) as u64,
        };
        put_varint(out, delta);
        put_varint(out, count);
        previous = Some(index);
    }
}

fn decode_store(reader: &mut Reader<'_>) -> Result<Store, DecodeError> {
    let bins = reader.varint()?;
    if bins > MAX_BINS as u64 {
        return Err(DecodeError("too many bins"));
    }
    let min_index = i64::from(bin_index(MIN_INDEXABLE));
    let max_index = i64::from(bin_index(f64::MAX));
    let mut decoded: Vec<(i64, u64)> = Vec::with_capacity(bins as usize);
    for _ in 0..bins {
        let delta = reader.varint()?;
        let index = match decoded.last() {
            None => unzigzag(delta),
            Some(_) if delta == 0 => return Err(DecodeError("bin indexes not ascending")),
            Some(&(previous, _)) => i64::try_from(delta)
                .ok()
                .and_then(|delta| previous.checked_add(delta))
                .ok_or(DecodeError("bin index out of range"))?,
        };
        if index < min_index || index > max_index {
            return Err(DecodeError("bin index out of range"));
        }
        let count = reader.varint()?;
        if count == 0 {
            return Err(DecodeError("empty bin"));
        }
        decoded.push((index, count));
    }
    let Some((&(first, _), &(last, _))) = decoded.first().zip(decoded.last()) else {
        return Ok(Store::default());
    };
    let span = (last - first + 1) as usize;
    if span > MAX_BINS {
        return Err(DecodeError("bins span too wide"));
    }
    let mut counts = vec![0; span];
    for (index, count) in decoded {
        counts[(index - first) as usize] = count;
    }
    Ok(Store::from_dense(first as i32, counts))
}

fn zigzag(value: i32) -> u64 {
    let value = i64::from(value);
    ((value << 1) ^ (value >> 63)) as u64
}

fn unzigzag(value: u64) -> i64 {
    (value >> 1) as i64 ^ -((value & 1) as i64)
}

fn put_varint(out: &mut Vec<u8>, mut value: u64) {
    while value >= 0x80 {
        out.push((value as u8) | 0x80);
        value >>= 7;
    }
    out.push(value as u8);
}

/// Cursor over the bytes still to decode.
struct Reader<'a>(&'a [u8]);

impl Reader<'_> {
    /// Reads a minimal LEB128 varint of at most 64 bits.
    fn varint(&mut self) -> Result<u64, DecodeError> {
        let mut value = 0u64;
        for (i, &byte) in self.0.iter().enumerate().take(10) {
            let payload = u64::from(byte & 0x7f);
            if i == 9 && payload > 1 {
                return Err(DecodeError("varint overflows 64 bits"));
            }
            value |= payload << (7 * i);
            if byte & 0x80 == 0 {
                if i > 0 && byte == 0 {
                    return Err(DecodeError("non-minimal varint"));
                }
                self.0 = &self.0[i + 1..];
                return Ok(value);
            }
        }
        Err(DecodeError(if self.0.len() >= 10 {
            "varint overflows 64 bits"
        } else {
            "truncated input"
        }))
    }
}
