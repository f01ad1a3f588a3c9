//! Hand-written Avro binary codec of [`SampleBatch`], specific to
//! [`SAMPLES_SCHEMA`](crate::SAMPLES_SCHEMA): the hot paths of ingest
//! (encode) and the aggregator (decode), without apache-avro's schema walk.
//!
//! The datum is, field by field in schema order: longs and ints as zig-zag
//! varints, strings as a length (long) then UTF-8 bytes, doubles as 8
//! little-endian bytes, booleans as one byte (0 or 1), and arrays and maps as
//! blocks (an item count, the items, ..., then a 0 count); a map item is a
//! string key then its value. The batch's `samples` array is followed by its
//! `chunks` array (schema v2).
//!
//! The writer emits each non-empty array or map as a single block and an
//! empty one as just the 0 terminator, which is what apache-avro's writers
//! produce, byte for byte (checked by tests).
//!
//! The reader accepts everything the Avro specification allows for this
//! schema (several blocks, negative block counts followed by a block byte
//! size, non-minimal varints) and rejects, without panicking and without
//! allocating more than a small multiple of the input size: truncated data,
//! varints longer than 10 bytes, ints outside the 32-bit range, negative
//! string lengths, lengths beyond the end of the input, invalid UTF-8, boolean
//! bytes other than 0 and 1, and trailing bytes. As apache-avro (and Java) do,
//! bits of a 10-byte varint beyond the 64th are ignored; as apache-avro does,
//! an int is read as a long (up to 10 bytes) and then checked to fit 32 bits.

use crate::{
    normalize_tags, Chunk, ChunkView, SampleBatch, SampleBatchView, SampleRef, SampleView,
    SchemaError, WireSample, HEADER_LEN,
};

/// Maximum length of a varint encoding a 64-bit value.
const MAX_VARINT_LEN: usize = 10;

/// Maximum length of a (minimal) varint encoding a 32-bit value.
const MAX_INT_VARINT_LEN: usize = 5;

/// Fewest bytes a `Sample` datum takes: two empty strings (1 byte each),
/// the double (8), count (1), error (1), timestamp (1) and an empty tags
/// map (1). Bounds how many samples a block count may reserve room for.
const MIN_SAMPLE_LEN: usize = 14;

/// Fewest bytes a `Chunk` datum takes: an empty id (1 byte) and two ints (1
/// each). Bounds how many chunks a block count may reserve room for.
const MIN_CHUNK_LEN: usize = 3;

/// An upper estimate of the encoded length of `batch` (header included), so
/// that encoding allocates once.
pub(crate) fn encoded_len_estimate(batch: &SampleBatch) -> usize {
    // A long, or the length of a string or of an array/map block, takes at
    // most 10 bytes as a zig-zag varint; an int at most 5.
    const VARINT: usize = MAX_VARINT_LEN;
    const INT: usize = MAX_INT_VARINT_LEN;
    let string = |s: &String| VARINT + s.len();
    // A non-empty array or map is one block (count, items) and an end marker.
    let block = 2 * VARINT;
    let sample = |s: &WireSample| {
        string(&s.service)
            + string(&s.metric)
            + 8 // value
            + VARINT // count
            + 1 // error
            + VARINT // timestamp
            + block
            + s.tags.iter().map(|(k, v)| string(k) + string(v)).sum::<usize>()
    };
    let chunk = |c: &Chunk| string(&c.id) + INT + INT;
    HEADER_LEN
        + string(&batch.batch_id)
        + VARINT
        + block
        + batch.samples.iter().map(sample).sum::<usize>()
        + block
        + batch.chunks.iter().map(chunk).sum::<usize>()
}

/// Appends the Avro binary datum of `batch` to `out`.
pub(crate) fn write_sample_batch(out: &mut Vec<u8>, batch: &SampleBatch) {
    write_batch_with(
        out,
        &batch.batch_id,
        batch.produced_at,
        batch.samples.len(),
        |out| {
            for s in &batch.samples {
                write_sample_head(
                    out,
                    &s.service,
                    &s.metric,
                    s.value,
                    s.count,
                    s.error,
                    s.timestamp,
                );
                write_tags(out, s.tags.iter().map(|(k, v)| (k.as_str(), v.as_str())));
            }
        },
        &batch.chunks,
    );
}

/// Appends the Avro binary datum of a batch whose `count` samples are already
/// encoded, one datum after another, in `samples`.
pub(crate) fn write_sample_batch_of_datums(
    out: &mut Vec<u8>,
    batch_id: &str,
    produced_at: i64,
    count: usize,
    samples: &[u8],
    chunks: &[Chunk],
) {
    write_batch_with(
        out,
        batch_id,
        produced_at,
        count,
        |out| out.extend_from_slice(samples),
        chunks,
    );
}

fn write_batch_with(
    out: &mut Vec<u8>,
    batch_id: &str,
    produced_at: i64,
    count: usize,
    write_samples: impl FnOnce(&mut Vec<u8>),
    chunks: &[Chunk],
) {
    write_string(out, batch_id);
    write_long(out, produced_at);
    if count > 0 {
        write_len(out, count);
        write_samples(out);
    }
    out.push(0);
    if !chunks.is_empty() {
        write_len(out, chunks.len());
        for chunk in chunks {
            write_string(out, &chunk.id);
            write_int(out, chunk.first);
            write_int(out, chunk.count);
        }
    }
    out.push(0);
}

/// Appends the datum of one sample; `tags` must be sorted by key, each key once.
pub(crate) fn write_sample_ref(out: &mut Vec<u8>, s: &SampleRef<'_>) {
    write_sample_head(
        out,
        s.service,
        s.metric,
        s.value,
        s.count,
        s.error,
        s.timestamp,
    );
    write_tags(out, s.tags.iter().copied());
}

/// The fields of a sample datum before its tags.
fn write_sample_head(
    out: &mut Vec<u8>,
    service: &str,
    metric: &str,
    value: f64,
    count: i64,
    error: bool,
    timestamp: i64,
) {
    write_string(out, service);
    write_string(out, metric);
    out.extend_from_slice(&value.to_le_bytes());
    write_long(out, count);
    out.push(u8::from(error));
    write_long(out, timestamp);
}

fn write_tags<'t>(out: &mut Vec<u8>, tags: impl ExactSizeIterator<Item = (&'t str, &'t str)>) {
    if tags.len() > 0 {
        write_len(out, tags.len());
        for (key, value) in tags {
            write_string(out, key);
            write_string(out, value);
        }
    }
    out.push(0);
}

fn write_string(out: &mut Vec<u8>, s: &str) {
    write_len(out, s.len());
    out.extend_from_slice(s.as_bytes());
}

/// Writes a length (of a string, or the item count of a block) as a long.
fn write_len(out: &mut Vec<u8>, len: usize) {
    // A length is at most `isize::MAX`, so it fits a (non-negative) long,
    // whose zig-zag form is twice the value.
    write_varint(out, (len as u64) << 1);
}

fn write_long(out: &mut Vec<u8>, n: i64) {
    write_varint(out, ((n << 1) ^ (n >> 63)) as u64);
}

/// Writes an int: its zig-zag varint is the same as that of the equal long.
fn write_int(out: &mut Vec<u8>, n: i32) {
    write_long(out, i64::from(n));
}

/// Writes `v` as a varint: 7 bits a byte, least significant first, the high
/// bit set on every byte but the last.
#[inline]
fn write_varint(out: &mut Vec<u8>, mut v: u64) {
    if v < 0x80 {
        out.push(v as u8);
        return;
    }
    // Byte by byte: a copy of a short, variable-length buffer costs a call to memcpy.
    while v >= 0x80 {
        out.push(v as u8 | 0x80);
        v >>= 7;
    }
    out.push(v as u8);
}

/// Decodes the Avro binary datum of a [`SampleBatch`], borrowing its strings;
/// `datum` must be exactly one datum (the message after its header).
pub(crate) fn read_sample_batch(datum: &[u8]) -> Result<SampleBatchView<'_>, SchemaError> {
    let mut reader = Reader {
        rest: datum,
        len: datum.len(),
    };
    let batch = reader.sample_batch()?;
    if !reader.rest.is_empty() {
        return Err(SchemaError::Decode(format!(
            "{} trailing bytes after the datum",
            reader.rest.len()
        )));
    }
    Ok(batch)
}

/// A cursor over a datum.
struct Reader<'a> {
    /// The bytes not read yet.
    rest: &'a [u8],
    /// Length of the whole datum, to report error offsets.
    len: usize,
}

impl<'a> Reader<'a> {
    fn sample_batch(&mut self) -> Result<SampleBatchView<'a>, SchemaError> {
        let batch_id = self.string()?;
        let produced_at = self.long()?;
        let mut samples = Vec::new();
        while let Some(count) = self.block_count()? {
            // Every sample takes at least MIN_SAMPLE_LEN bytes, so a count
            // beyond what the input can hold fails below once the input is
            // exhausted; room is reserved only for what it can hold.
            let fits = (self.rest.len() / MIN_SAMPLE_LEN) as u64;
            samples.reserve(count.min(fits) as usize);
            for _ in 0..count {
                samples.push(self.sample()?);
            }
        }
        let mut chunks = Vec::new();
        while let Some(count) = self.block_count()? {
            // As for samples, with MIN_CHUNK_LEN bytes a chunk.
            let fits = (self.rest.len() / MIN_CHUNK_LEN) as u64;
            chunks.reserve(count.min(fits) as usize);
            for _ in 0..count {
                chunks.push(self.chunk()?);
            }
        }
        Ok(SampleBatchView {
            batch_id,
            produced_at,
            samples,
            chunks,
        })
    }

    fn chunk(&mut self) -> Result<ChunkView<'a>, SchemaError> {
        let id = self.string()?;
        let first = self.int()?;
        let count = self.int()?;
        Ok(ChunkView { id, first, count })
    }

    fn sample(&mut self) -> Result<SampleView<'a>, SchemaError> {
        let service = self.string()?;
        let metric = self.string()?;
        let value = self.double()?;
        let count = self.long()?;
        let error = self.boolean()?;
        let timestamp = self.long()?;
        let mut tags = Vec::new();
        while let Some(count) = self.block_count()? {
            // Every entry takes at least 2 bytes: the loop ends with the input.
            for _ in 0..count {
                let key = self.string()?;
                let value = self.string()?;
                tags.push((key, value));
            }
        }
        // As apache-avro's deserializer does, the last of duplicate keys wins.
        normalize_tags(&mut tags);
        Ok(SampleView {
            service,
            metric,
            value,
            count,
            error,
            timestamp,
            tags,
        })
    }

    /// Reads the header of an array or map block: `None` for the end
    /// marker, else the number of items of the block.
    fn block_count(&mut self) -> Result<Option<u64>, SchemaError> {
        let count = self.long()?;
        if count < 0 {
            // A negative count is followed by the size of the block in bytes,
            // which only serves to skip the block.
            self.long()?;
        }
        Ok((count != 0).then_some(count.unsigned_abs()))
    }

    fn string(&mut self) -> Result<&'a str, SchemaError> {
        let len = self.long()?;
        let len = usize::try_from(len)
            .map_err(|_| self.error(format_args!("negative string length {len}")))?;
        let Some((bytes, rest)) = self.rest.split_at_checked(len) else {
            return Err(self.error(format_args!(
                "string length {len} exceeds the {} remaining bytes",
                self.rest.len()
            )));
        };
        let s = std::str::from_utf8(bytes)
            .map_err(|e| self.error(format_args!("string is not UTF-8: {e}")))?;
        self.rest = rest;
        Ok(s)
    }

    fn double(&mut self) -> Result<f64, SchemaError> {
        let Some((bytes, rest)) = self.rest.split_first_chunk::<8>() else {
            return Err(self.truncated());
        };
        self.rest = rest;
        Ok(f64::from_le_bytes(*bytes))
    }

    fn boolean(&mut self) -> Result<bool, SchemaError> {
        match self.rest.split_first() {
            Some((&b, rest)) if b <= 1 => {
                self.rest = rest;
                Ok(b == 1)
            }
            Some((&b, _)) => Err(self.error(format_args!("invalid boolean byte {b}"))),
            None => Err(self.truncated()),
        }
    }

    fn long(&mut self) -> Result<i64, SchemaError> {
        let z = self.varint()?;
        Ok((z >> 1) as i64 ^ -((z & 1) as i64))
    }

    /// Reads an int: a long (as apache-avro reads it, up to 10 bytes) that
    /// must fit 32 bits.
    fn int(&mut self) -> Result<i32, SchemaError> {
        let n = self.long()?;
        i32::try_from(n).map_err(|_| self.error(format_args!("int {n} out of the 32-bit range")))
    }

    #[inline]
    fn varint(&mut self) -> Result<u64, SchemaError> {
        if let Some((&b, rest)) = self.rest.split_first() {
            if b < 0x80 {
                self.rest = rest;
                return Ok(u64::from(b));
            }
        }
        let mut value = 0;
        for (i, &b) in self.rest.iter().take(MAX_VARINT_LEN).enumerate() {
            // Bits beyond the 64th (of a 10th byte above 1) are dropped.
            value |= u64::from(b & 0x7f) << (7 * i);
            if b < 0x80 {
                self.rest = &self.rest[i + 1..];
                return Ok(value);
            }
        }
        Err(if self.rest.len() >= MAX_VARINT_LEN {
            self.error("varint longer than 10 bytes")
        } else {
            self.truncated()
        })
    }

    fn truncated(&self) -> SchemaError {
        self.error("truncated datum")
    }

    /// An error about the data at the current position (an offset in the
    /// whole message, header included).
    fn error(&self, what: impl std::fmt::Display) -> SchemaError {
        let at = HEADER_LEN + self.len - self.rest.len();
        SchemaError::Decode(format!("{what} at byte {at}"))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn varint_bytes(v: u64) -> Vec<u8> {
        let mut out = Vec::new();
        write_varint(&mut out, v);
        out
    }

    fn read_long(bytes: &[u8]) -> Result<(i64, usize), SchemaError> {
        let mut reader = Reader {
            rest: bytes,
            len: bytes.len(),
        };
        let n = reader.long()?;
        Ok((n, bytes.len() - reader.rest.len()))
    }

    #[test]
    fn varints_round_trip_at_every_length() {
        let mut values = vec![0, 1, -1, 63, -64, 64, -65, i64::MAX, i64::MIN];
        for shift in 0..64 {
            let p = 1i64 << shift;
            values.extend([p, p.wrapping_sub(1), p.wrapping_neg()]);
        }
        for n in values {
            let mut out = Vec::new();
            write_long(&mut out, n);
            let z = ((n << 1) ^ (n >> 63)) as u64;
            let expected_len = (64 - z.leading_zeros() as usize).div_ceil(7).max(1);
            assert_eq!(out.len(), expected_len, "{n}");
            assert_eq!(read_long(&out).unwrap(), (n, out.len()), "{n}");
        }
        assert_eq!(varint_bytes(u64::MAX).len(), 10);
        assert_eq!(varint_bytes(300), [0xAC, 0x02]);
    }

    #[test]
    fn varint_edge_cases() {
        // Non-minimal encodings are accepted.
        assert_eq!(read_long(&[0x80, 0x80, 0x00]).unwrap(), (0, 3));
        // A 10th byte's bits beyond the 64th are ignored (as apache-avro).
        let mut max = vec![0xFF; 9];
        max.push(0x01);
        assert_eq!(read_long(&max).unwrap(), (i64::MIN, 10));
        max[9] = 0x7F;
        assert_eq!(read_long(&max).unwrap(), (i64::MIN, 10));
        // An 11th byte is an error, and so is the end of the input.
        max[9] = 0x81;
        max.push(0x00);
        assert!(read_long(&max).is_err());
        assert!(read_long(&max[..9]).is_err());
        assert!(read_long(&[]).is_err());
    }

    fn read_int(bytes: &[u8]) -> Result<(i32, usize), SchemaError> {
        let mut reader = Reader {
            rest: bytes,
            len: bytes.len(),
        };
        let n = reader.int()?;
        Ok((n, bytes.len() - reader.rest.len()))
    }

    #[test]
    fn ints_round_trip_and_must_fit_32_bits() {
        for n in [0, 1, -1, 63, -64, 64, -65, i32::MAX, i32::MIN] {
            let mut out = Vec::new();
            write_int(&mut out, n);
            assert!(out.len() <= MAX_INT_VARINT_LEN, "{n}");
            assert_eq!(read_int(&out).unwrap(), (n, out.len()), "{n}");
        }
        let mut max = Vec::new();
        write_int(&mut max, i32::MAX);
        assert_eq!(max, [0xFE, 0xFF, 0xFF, 0xFF, 0x0F]);
        // Non-minimal encodings of up to 10 bytes are accepted, as for longs.
        assert_eq!(
            read_int(&[0x80, 0x80, 0x80, 0x80, 0x80, 0x00]).unwrap(),
            (0, 6)
        );
        for n in [
            i64::from(i32::MAX) + 1,
            i64::from(i32::MIN) - 1,
            i64::MAX,
            i64::MIN,
        ] {
            let mut out = Vec::new();
            write_long(&mut out, n);
            let err = read_int(&out).unwrap_err();
            assert!(err.to_string().contains("out of the 32-bit range"), "{err}");
        }
    }

    #[test]
    fn estimate_is_an_upper_bound() {
        let batch = SampleBatch {
            batch_id: "b".repeat(36),
            produced_at: i64::MIN,
            samples: (0..100)
                .map(|i| WireSample {
                    service: "svc".into(),
                    metric: format!("metric-{i}"),
                    value: f64::MAX,
                    count: i64::MAX,
                    error: true,
                    timestamp: i64::MIN,
                    tags: [("k".to_string(), "v".repeat(i))].into(),
                })
                .collect(),
            chunks: (0..100)
                .map(|i| Chunk {
                    id: "c".repeat(i),
                    first: i32::MIN,
                    count: i32::MAX,
                })
                .collect(),
        };
        let encoded = crate::encode_sample_batch(&batch).unwrap();
        assert!(encoded.len() <= encoded_len_estimate(&batch));
        assert!(encoded.capacity() == encoded_len_estimate(&batch));
    }

    #[test]
    fn huge_counts_reserve_only_what_the_input_can_hold() {
        // batch_id "", produced_at 0, then a block of i64::MAX samples (and
        // one of i64::MIN, i.e. a negative count with a byte size) backed by
        // a few bytes: an error, not an allocation failure. The same for
        // chunks, after an empty samples array.
        for prefix in [&[0, 0][..], &[0, 0, 0]] {
            for count in [i64::MAX, i64::MIN] {
                let mut datum = prefix.to_vec();
                write_long(&mut datum, count);
                if count < 0 {
                    write_long(&mut datum, 1 << 40);
                }
                datum.extend_from_slice(&[0; 40]);
                assert!(matches!(
                    read_sample_batch(&datum),
                    Err(SchemaError::Decode(_))
                ));
            }
        }
    }

    #[test]
    fn errors_report_what_and_where() {
        let err = read_sample_batch(&[0x03]).unwrap_err();
        assert_eq!(
            err.to_string(),
            "cannot decode avro datum: negative string length -2 at byte 11"
        );
        let err = read_sample_batch(&[0x02, 0xFF, 0x00]).unwrap_err();
        assert!(err.to_string().contains("not UTF-8"), "{err}");
        let err = read_sample_batch(&[0x00, 0x00, 0x00, 0x00, 0x00]).unwrap_err();
        assert_eq!(
            err.to_string(),
            "cannot decode avro datum: 1 trailing bytes after the datum"
        );
        // One chunk whose `first` is 2^31: the error is after the int.
        let err = read_sample_batch(&[
            0x00, 0x00, 0x00, 0x02, 0x00, 0x80, 0x80, 0x80, 0x80, 0x10, 0x00,
        ])
        .unwrap_err();
        assert_eq!(
            err.to_string(),
            "cannot decode avro datum: int 2147483648 out of the 32-bit range at byte 20"
        );
        // No chunks array after the samples: truncated.
        let err = read_sample_batch(&[0x00, 0x00, 0x00]).unwrap_err();
        assert_eq!(
            err.to_string(),
            "cannot decode avro datum: truncated datum at byte 13"
        );
    }
}
