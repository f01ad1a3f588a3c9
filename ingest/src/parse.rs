//! Request bodies to validated samples: content decoding with a bound on the
//! decompressed size, JSON decoding that reports the path of a badly typed field, and
//! domain validation that names the index and field of the first bad samples.

mod fast;

use std::borrow::Cow;
use std::io::Read;

use serde::de::{self, Deserializer, Visitor};
use serde::Deserialize;
use tidemark_model::sample::{FieldError, SampleFields, TimeBounds, TimestampInput};
use tidemark_model::Sample;
use tidemark_runtime::http::{quote, quote_within, ApiError};

/// How many bad samples a 400 lists before summarising the rest.
const REPORTED_ERRORS: usize = 5;

/// Decodes `body` per its `Content-Encoding`, refusing output past `limit` bytes.
pub fn decode_body<'a>(
    encoding: Option<&str>,
    body: &'a [u8],
    limit: usize,
) -> Result<Cow<'a, [u8]>, ApiError> {
    let reader: Box<dyn Read + '_> = match encoding.map(str::trim) {
        None | Some("") | Some("identity") => {
            return if body.len() > limit {
                Err(ApiError::PayloadTooLarge { limit })
            } else {
                Ok(Cow::Borrowed(body))
            };
        }
        Some("gzip") => Box::new(flate2::read::GzDecoder::new(body)),
        Some("zstd") => Box::new(
            zstd::stream::read::Decoder::new(body)
                .map_err(|e| ApiError::bad_request("bad_encoding", format!("zstd body: {e}")))?,
        ),
        Some(other) => return Err(ApiError::UnsupportedEncoding(other.to_owned())),
    };
    let mut out = Vec::with_capacity(body.len() * 4);
    let read = reader
        .take(limit as u64 + 1)
        .read_to_end(&mut out)
        .map_err(|e| {
            ApiError::bad_request("bad_encoding", format!("cannot decompress body: {e}"))
        })?;
    if read > limit {
        return Err(ApiError::PayloadTooLarge { limit });
    }
    Ok(Cow::Owned(out))
}

#[derive(Deserialize, Default, Debug)]
#[serde(deny_unknown_fields)]
struct RawSample<'a> {
    #[serde(borrow, default)]
    service: Option<Text<'a>>,
    #[serde(borrow, default)]
    metric: Option<Text<'a>>,
    #[serde(default)]
    value: Option<f64>,
    #[serde(default)]
    count: Option<i64>,
    #[serde(default)]
    error: Option<bool>,
    #[serde(borrow, default)]
    timestamp: Option<RawTimestamp<'a>>,
    #[serde(borrow, default)]
    tags: Option<Tags<'a>>,
}

/// A JSON string, borrowed from the body unless it holds escapes. (serde's own `Cow`
/// support borrows only a `Cow` field itself, not one inside an `Option` or a map.)
#[derive(Debug)]
struct Text<'a>(Cow<'a, str>);

impl<'de: 'a, 'a> Deserialize<'de> for Text<'a> {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        struct V;
        impl<'de> Visitor<'de> for V {
            type Value = Text<'de>;
            fn expecting(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
                f.write_str("a string")
            }
            fn visit_borrowed_str<E: de::Error>(self, v: &'de str) -> Result<Self::Value, E> {
                Ok(Text(Cow::Borrowed(v)))
            }
            fn visit_str<E: de::Error>(self, v: &str) -> Result<Self::Value, E> {
                Ok(Text(Cow::Owned(v.to_owned())))
            }
        }
        d.deserialize_str(V)
    }
}

/// A JSON object of string values, in the order given (validation sorts it).
#[derive(Debug)]
struct Tags<'a>(Vec<(Text<'a>, Text<'a>)>);

impl<'de: 'a, 'a> Deserialize<'de> for Tags<'a> {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        struct V;
        impl<'de> Visitor<'de> for V {
            type Value = Tags<'de>;
            fn expecting(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
                f.write_str("an object of string values")
            }
            fn visit_map<A: de::MapAccess<'de>>(self, mut map: A) -> Result<Self::Value, A::Error> {
                let mut tags = Vec::with_capacity(map.size_hint().unwrap_or(0).min(16));
                while let Some(entry) = map.next_entry()? {
                    tags.push(entry);
                }
                Ok(Tags(tags))
            }
        }
        d.deserialize_map(V)
    }
}

#[derive(Debug)]
enum RawTimestamp<'a> {
    Millis(i64),
    Text(Cow<'a, str>),
}

impl<'de: 'a, 'a> Deserialize<'de> for RawTimestamp<'a> {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        struct V;
        impl<'de> Visitor<'de> for V {
            type Value = RawTimestamp<'de>;
            fn expecting(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
                f.write_str("an RFC 3339 string or integer Unix milliseconds")
            }
            fn visit_i64<E: de::Error>(self, v: i64) -> Result<Self::Value, E> {
                Ok(RawTimestamp::Millis(v))
            }
            fn visit_u64<E: de::Error>(self, v: u64) -> Result<Self::Value, E> {
                i64::try_from(v)
                    .map(RawTimestamp::Millis)
                    .map_err(|_| E::custom("timestamp out of range"))
            }
            fn visit_borrowed_str<E: de::Error>(self, v: &'de str) -> Result<Self::Value, E> {
                Ok(RawTimestamp::Text(Cow::Borrowed(v)))
            }
            fn visit_str<E: de::Error>(self, v: &str) -> Result<Self::Value, E> {
                Ok(RawTimestamp::Text(Cow::Owned(v.to_owned())))
            }
        }
        d.deserialize_any(V)
    }
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct Wrapped<'a> {
    #[serde(borrow)]
    samples: Vec<RawSample<'a>>,
}

impl RawSample<'_> {
    fn validate(&self, bounds: TimeBounds) -> Result<Sample<'_>, FieldError> {
        let timestamp = self.timestamp.as_ref().map(|t| match t {
            RawTimestamp::Millis(ms) => TimestampInput::UnixMillis(*ms),
            RawTimestamp::Text(text) => TimestampInput::Text(text),
        });
        let tags = self.tags.as_ref().map(|t| {
            t.0.iter()
                .map(|(k, v)| (k.0.as_ref(), v.0.as_ref()))
                .collect()
        });
        Sample::parse(
            SampleFields {
                service: self.service.as_ref().map(|s| s.0.as_ref()),
                metric: self.metric.as_ref().map(|s| s.0.as_ref()),
                value: self.value,
                count: self.count,
                error: self.error,
                timestamp,
                tags,
            },
            bounds,
        )
    }
}

/// A 400 naming the path of the field at fault; the client input the path and message
/// hold (map keys, unknown field names, bad string values) is shortened by [`quote`].
fn json_error(err: serde_path_to_error::Error<serde_json::Error>) -> ApiError {
    use serde_path_to_error::Segment;
    let mut path = String::new();
    for segment in err.path() {
        match segment {
            Segment::Seq { index } => path.push_str(&format!("[{index}]")),
            Segment::Map { key } | Segment::Enum { variant: key } => {
                if !path.is_empty() {
                    path.push('.');
                }
                path.push_str(&quote(key));
            }
            Segment::Unknown => {
                if !path.is_empty() {
                    path.push('.');
                }
                path.push('?');
            }
        }
    }
    let path = match path.as_str() {
        "" => "body".to_owned(),
        p if p.starts_with('[') => format!("samples{p}"),
        p => p.to_owned(),
    };
    let message = quote_within(&err.into_inner().to_string());
    ApiError::bad_request("invalid_json", format!("{path}: {message}"))
}

/// Decodes JSON; only when that fails is it decoded again with path tracking, to name
/// the field at fault (tracking costs on every request otherwise). Either way, anything
/// but whitespace after the JSON value is refused, naming its position.
fn decode<'a, T: Deserialize<'a>>(body: &'a [u8]) -> Result<T, ApiError> {
    serde_json::from_slice(body).or_else(|_| {
        let mut de = serde_json::Deserializer::from_slice(body);
        let value = serde_path_to_error::deserialize(&mut de).map_err(json_error)?;
        de.end().map_err(|e| {
            ApiError::bad_request(
                "invalid_json",
                format!("body: {}", quote_within(&e.to_string())),
            )
        })?;
        Ok(value)
    })
}

/// The samples of a request, decoded from JSON but not yet validated; they borrow from
/// the body.
pub struct RawSamples<'a>(Vec<RawSample<'a>>);

/// Decodes a JSON array of samples or `{"samples": [...]}`.
pub fn decode_samples(body: &[u8]) -> Result<RawSamples<'_>, ApiError> {
    match fast::samples(body) {
        Some(raw) => Ok(RawSamples(raw)),
        None => serde_samples(body).map(RawSamples),
    }
}

fn serde_samples(body: &[u8]) -> Result<Vec<RawSample<'_>>, ApiError> {
    let first = body.iter().find(|b| !b.is_ascii_whitespace());
    Ok(match first {
        Some(b'[') => decode::<Vec<RawSample<'_>>>(body)?,
        Some(b'{') => decode::<Wrapped<'_>>(body)?.samples,
        _ => {
            return Err(ApiError::bad_request(
                "invalid_json",
                "body: expected a JSON array of samples or {\"samples\": [...]}",
            ))
        }
    })
}

impl RawSamples<'_> {
    /// Validates every sample; all-or-nothing.
    pub fn validate(&self, bounds: TimeBounds) -> Result<Vec<Sample<'_>>, ApiError> {
        validate(&self.0, bounds)
    }
}

fn validate<'r>(raw: &'r [RawSample<'_>], bounds: TimeBounds) -> Result<Vec<Sample<'r>>, ApiError> {
    if raw.is_empty() {
        return Err(ApiError::bad_request(
            "invalid_sample",
            "samples: at least one sample is required",
        ));
    }
    let mut samples = Vec::with_capacity(raw.len());
    let mut errors = Vec::new();
    let mut bad = 0usize;
    for (i, r) in raw.iter().enumerate() {
        match r.validate(bounds) {
            Ok(s) => samples.push(s),
            Err(e) => {
                bad += 1;
                if errors.len() < REPORTED_ERRORS {
                    // A field such as `tags.<key>` holds client input.
                    let field = match e.field.split_once('.') {
                        Some((head, key)) => format!("{head}.{}", quote(key)),
                        None => quote(&e.field),
                    };
                    errors.push(format!("samples[{i}].{field}: {}", e.message));
                }
            }
        }
    }
    if bad == 0 {
        return Ok(samples);
    }
    let mut message = errors.join("; ");
    if bad > errors.len() {
        message.push_str(&format!(" (and {} more bad samples)", bad - errors.len()));
    }
    Err(ApiError::bad_request("invalid_sample", message))
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::io::Write;
    use std::time::Duration;

    const NOW: i64 = 1_790_000_000_000;

    fn bounds() -> TimeBounds {
        TimeBounds {
            now_ms: NOW,
            max_age: Duration::from_secs(7 * 86_400),
            max_future: Duration::from_secs(300),
        }
    }

    fn message(body: &str) -> String {
        let outcome = decode_samples(body.as_bytes()).and_then(|raw| {
            raw.validate(bounds())?;
            Ok(())
        });
        match outcome {
            Err(ApiError::BadRequest { message, .. }) => message,
            other => panic!("expected a 400, got {other:?}"),
        }
    }

    #[test]
    fn both_shapes_parse() {
        let a = decode_samples(
            br#"[{"service":"s","metric":"m","value":1.5,"tags":{"b":"2","a":"1"}}]"#,
        )
        .unwrap();
        let b = decode_samples(
            br#"{"samples":[{"service":"s","metric":"m","value":1.5,"tags":{"a":"1","b":"2"}}]}"#,
        )
        .unwrap();
        let a = a.validate(bounds()).unwrap();
        assert_eq!(a, b.validate(bounds()).unwrap());
        assert_eq!(a[0].timestamp_ms, NOW);
        assert_eq!(a[0].tags, [("a", "1"), ("b", "2")]);
    }

    #[test]
    fn escaped_strings_are_unescaped() {
        let raw = decode_samples(
            br#"[{"service":"s\u0031","metric":"m","value":1,"tags":{"k\u0031":"v\"x","a":"b"}}]"#,
        )
        .unwrap();
        let s = &raw.validate(bounds()).unwrap()[0];
        assert_eq!(s.service, "s1");
        assert_eq!(s.tags, [("a", "b"), ("k1", "v\"x")]);
    }

    #[test]
    fn timestamps_in_both_forms() {
        let raw = decode_samples(
            br#"[{"service":"s","metric":"m","value":1,"timestamp":1790000000000},{"service":"s","metric":"m","value":1,"timestamp":"2026-09-21T14:13:20Z"}]"#,
        )
        .unwrap();
        let s = raw.validate(bounds()).unwrap();
        assert_eq!(s[0].timestamp_ms, s[1].timestamp_ms);
    }

    #[test]
    fn type_errors_name_index_and_field() {
        assert!(message(
            r#"[{"service":"s","metric":"m","value":1},{"service":"s","metric":"m","value":"x"}]"#
        )
        .starts_with("samples[1].value:"));
        assert!(
            message(r#"{"samples":[{"service":"s","metric":"m","value":1,"count":1.5}]}"#)
                .starts_with("samples[0].count:")
        );
        assert!(
            message(r#"[{"service":"s","metric":"m","value":1,"timestamp":true}]"#)
                .starts_with("samples[0].timestamp:")
        );
        assert!(
            message(r#"[{"service":"s","metric":"m","value":1,"tags":{"a":1}}]"#)
                .starts_with("samples[0].tags")
        );
        assert!(message(r#"[{"service":"s","metric":"m","valeu":1}]"#)
            .contains("unknown field `valeu`"));
        assert!(message("nonsense").starts_with("body:"));
    }

    /// Trailing characters after the JSON value are refused whichever decoder reads
    /// the body (the fast path declines such a body; serde_json reads it twice).
    #[test]
    fn trailing_characters_are_refused_naming_their_position() {
        let sample = r#"{"service":"s","metric":"m","value":1}"#;
        for body in [
            format!("[{sample}] xyz"),
            format!("[{sample}],"),
            format!("[{sample}][]"),
            format!(r#"{{"samples":[{sample}]}} x"#),
            // Escapes send even a clean body to serde_json.
            r#"[{"service":"s\u0031","metric":"m","value":1}] xyz"#.to_owned(),
        ] {
            let m = message(&body);
            assert!(
                m.starts_with("body: trailing characters at line 1 column "),
                "{body}: {m}"
            );
        }
    }

    /// A 400 quotes at most a short prefix of whatever client input it names: unknown
    /// field names, mistyped string values, tag keys (in the path and in validation).
    #[test]
    fn error_messages_quote_only_a_prefix_of_the_input() {
        let huge = "a".repeat(1 << 20);
        let bodies = [
            format!(r#"[{{"service":"s","metric":"m","value":1,"{huge}":1}}]"#),
            format!(r#"[{{"service":"s","metric":"m","value":"{huge}"}}]"#),
            format!(r#"[{{"service":"s","metric":"m","value":1,"count":"{huge}\"x"}}]"#),
            format!(r#"[{{"service":"s","metric":"m","value":1,"tags":{{"{huge}":1}}}}]"#),
            format!(r#"[{{"service":"s","metric":"m","value":1,"tags":{{"{huge}!":"v"}}}}]"#),
            format!(r#"{{"samples":[],"{huge}":1}}"#),
        ];
        for body in bodies {
            let m = message(&body);
            assert!(m.len() < 400, "{} characters: {}", m.len(), &m[..400]);
            assert!(m.contains(&format!("{}…", "a".repeat(10))), "{m}");
        }
        let m = message(&format!(
            r#"[{{"service":"s","metric":"m","value":1,"timestamp":"{huge}"}}]"#
        ));
        assert!(m.len() < 400, "{m}");
        assert!(message(r#"[{"service":"s","metric":"m","valeu":1}]"#)
            .contains("unknown field `valeu`"));
    }

    #[test]
    fn domain_errors_list_first_bad_samples() {
        let m = message(
            r#"[{"service":"s","metric":"m","value":1},{"metric":"m","value":1},{"service":"s","metric":"m"}]"#,
        );
        assert_eq!(
            m,
            "samples[1].service: is required; samples[2].value: is required"
        );
        let many: Vec<String> = (0..8)
            .map(|_| r#"{"service":"s","metric":"m"}"#.to_owned())
            .collect();
        assert!(message(&format!("[{}]", many.join(","))).ends_with("(and 3 more bad samples)"));
        assert!(message("[]").contains("at least one"));
    }

    #[test]
    fn compressed_bodies_decode_within_limit() {
        let json = br#"[{"service":"s","metric":"m","value":1}]"#;
        let mut gz = flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::fast());
        gz.write_all(json).unwrap();
        let gz = gz.finish().unwrap();
        assert_eq!(decode_body(Some("gzip"), &gz, 1024).unwrap().as_ref(), json);
        let zs = zstd::encode_all(&json[..], 1).unwrap();
        assert_eq!(decode_body(Some("zstd"), &zs, 1024).unwrap().as_ref(), json);
        assert!(matches!(
            decode_body(Some("gzip"), &gz, 10),
            Err(ApiError::PayloadTooLarge { .. })
        ));
        let bomb = zstd::encode_all(&vec![b' '; 1 << 20][..], 3).unwrap();
        assert!(matches!(
            decode_body(Some("zstd"), &bomb, 4096),
            Err(ApiError::PayloadTooLarge { .. })
        ));
        assert!(matches!(
            decode_body(Some("br"), json, 1024),
            Err(ApiError::UnsupportedEncoding(_))
        ));
        assert!(matches!(
            decode_body(Some("gzip"), b"not gzip", 1024),
            Err(ApiError::BadRequest { .. })
        ));
    }
}
