//! The validated sample, built only through [`Sample::parse`], which enforces SPEC §2
//! and names the offending field. It borrows its strings from the request it came in,
//! until ingest encodes it.

use std::time::Duration;

use crate::time::parse_instant;

/// One observation of `value`, seen `count` times, of a series `(service, metric, tags)`.
#[derive(Debug, Clone, PartialEq)]
pub struct Sample<'a> {
    pub service: &'a str,
    pub metric: &'a str,
    pub value: f64,
    pub count: u64,
    pub error: bool,
    /// Unix milliseconds.
    pub timestamp_ms: i64,
    /// Sorted by key, each key once, so a series has one canonical form.
    pub tags: Vec<(&'a str, &'a str)>,
    /// Derived from service, metric and tags once, by [`Sample::parse`].
    series_id: i64,
}

/// A timestamp as a client sends it.
#[derive(Debug, Clone, PartialEq)]
pub enum TimestampInput<'a> {
    UnixMillis(i64),
    /// RFC 3339, or Unix milliseconds written as a string.
    Text(&'a str),
}

/// Unvalidated fields of one sample, as decoded from a request.
#[derive(Debug, Default)]
pub struct SampleFields<'a> {
    pub service: Option<&'a str>,
    pub metric: Option<&'a str>,
    pub value: Option<f64>,
    pub count: Option<i64>,
    pub error: Option<bool>,
    pub timestamp: Option<TimestampInput<'a>>,
    pub tags: Option<Vec<(&'a str, &'a str)>>,
}

/// Bounds on acceptable timestamps relative to the time of receipt.
#[derive(Debug, Clone, Copy)]
pub struct TimeBounds {
    pub now_ms: i64,
    pub max_age: Duration,
    pub max_future: Duration,
}

/// Why a sample was refused: the field (e.g. `tags.region`) and a human reason.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct FieldError {
    pub field: String,
    pub message: String,
}

impl FieldError {
    fn new(field: impl Into<String>, message: impl Into<String>) -> Self {
        Self {
            field: field.into(),
            message: message.into(),
        }
    }
}

pub const MAX_NAME_LEN: usize = 128;
pub const MAX_TAGS: usize = 16;
pub const MAX_TAG_KEY_LEN: usize = 64;
pub const MAX_TAG_VALUE_LEN: usize = 256;

fn check_name<'a>(
    field: &str,
    value: Option<&'a str>,
    allowed: impl Fn(u8) -> bool,
    charset: &str,
) -> Result<&'a str, FieldError> {
    let value = value.ok_or_else(|| FieldError::new(field, "is required"))?;
    if value.is_empty() || value.len() > MAX_NAME_LEN {
        return Err(FieldError::new(
            field,
            format!("must be 1-{MAX_NAME_LEN} characters"),
        ));
    }
    if !value.bytes().all(allowed) {
        return Err(FieldError::new(
            field,
            format!("may contain only {charset}"),
        ));
    }
    Ok(value)
}

/// A service name (SPEC §2): 1–128 characters of `[A-Za-z0-9._-]`.
pub fn check_service(value: &str) -> Result<&str, FieldError> {
    check_name("service", Some(value), service_byte, "[A-Za-z0-9._-]")
}

/// A metric name (SPEC §2): 1–128 characters of `[A-Za-z0-9._:-]`.
pub fn check_metric(value: &str) -> Result<&str, FieldError> {
    check_name("metric", Some(value), metric_byte, "[A-Za-z0-9._:-]")
}

/// Whether `b` may appear in a service name or tag key. Every allowed character is
/// ASCII, so checking bytes checks characters: a byte of a multi-byte character fails.
fn service_byte(b: u8) -> bool {
    b.is_ascii_alphanumeric() || matches!(b, b'.' | b'_' | b'-')
}

fn metric_byte(b: u8) -> bool {
    service_byte(b) || b == b':'
}

fn parse_timestamp(
    input: Option<TimestampInput<'_>>,
    bounds: TimeBounds,
) -> Result<i64, FieldError> {
    let ts = match input {
        None => return Ok(bounds.now_ms),
        Some(TimestampInput::UnixMillis(ms)) => ms,
        Some(TimestampInput::Text(text)) => {
            parse_instant(text).map_err(|e| FieldError::new("timestamp", e))?
        }
    };
    let age = Duration::from_millis(bounds.now_ms.saturating_sub(ts).max(0) as u64);
    let ahead = Duration::from_millis(ts.saturating_sub(bounds.now_ms).max(0) as u64);
    if age > bounds.max_age {
        return Err(FieldError::new(
            "timestamp",
            format!("is older than the accepted {}s", bounds.max_age.as_secs()),
        ));
    }
    if ahead > bounds.max_future {
        return Err(FieldError::new(
            "timestamp",
            format!(
                "is more than {}s in the future",
                bounds.max_future.as_secs()
            ),
        ));
    }
    Ok(ts)
}

/// Validates the tags and sorts them by key; of a key given twice the last value counts.
fn parse_tags<'a>(
    tags: Option<Vec<(&'a str, &'a str)>>,
) -> Result<Vec<(&'a str, &'a str)>, FieldError> {
    let mut tags = tags.unwrap_or_default();
    check_tags(&tags)?;
    tidemark_schemas::normalize_tags(&mut tags);
    Ok(tags)
}

/// At most [`MAX_TAGS`] tags, each by [`check_tag`].
fn check_tags(tags: &[(&str, &str)]) -> Result<(), FieldError> {
    if tags.len() > MAX_TAGS {
        return Err(FieldError::new("tags", format!("at most {MAX_TAGS} tags")));
    }
    tags.iter().try_for_each(|&(k, v)| check_tag(k, v))
}

/// A finite value observed at least once.
fn check_value_and_count(value: f64, count: i64) -> Result<(), FieldError> {
    if !value.is_finite() {
        return Err(FieldError::new("value", "must be a finite number"));
    }
    if count < 1 {
        return Err(FieldError::new("count", "must be an integer >= 1"));
    }
    Ok(())
}

/// One tag: a key of the name characters, and a value that Postgres can store (any
/// Unicode but U+0000, which neither `text` nor `jsonb` holds).
pub fn check_tag(k: &str, v: &str) -> Result<(), FieldError> {
    if k.is_empty() || k.len() > MAX_TAG_KEY_LEN || !k.bytes().all(service_byte) {
        return Err(FieldError::new(
            format!("tags.{k}"),
            format!("tag keys must be 1-{MAX_TAG_KEY_LEN} characters of [A-Za-z0-9._-]"),
        ));
    }
    // A value of at most that many bytes has at most that many characters.
    if v.len() > MAX_TAG_VALUE_LEN && v.chars().count() > MAX_TAG_VALUE_LEN {
        return Err(FieldError::new(
            format!("tags.{k}"),
            format!("tag values must be at most {MAX_TAG_VALUE_LEN} characters"),
        ));
    }
    if v.contains('\0') {
        return Err(FieldError::new(
            format!("tags.{k}"),
            "tag values must not contain U+0000",
        ));
    }
    Ok(())
}

/// Instants the stores hold: from the Unix epoch to the end of year 9999 (Postgres
/// `timestamptz` and chrono reach further; the hour arithmetic stays far from overflow).
pub const STORABLE_MS: std::ops::RangeInclusive<i64> = 0..=253_402_300_799_999;

/// Checks the series of a sample read from the samples topic by the rules
/// [`Sample::parse`] enforces. The aggregator applies it (with [`check_wire_values`])
/// before folding, so a message written by anything but ingest (an older version, a raw
/// producer) cannot carry what the stores refuse; once per series it has not seen yet.
pub fn check_wire_series(
    service: &str,
    metric: &str,
    tags: &[(&str, &str)],
) -> Result<(), FieldError> {
    check_service(service)?;
    check_metric(metric)?;
    check_tags(tags)
}

/// Checks the value, count and timestamp of a sample read from the samples topic by the
/// rules [`Sample::parse`] enforces, except the age bounds (those held at receipt; a
/// replay may fold old samples): the timestamp is bounded by [`STORABLE_MS`] instead.
pub fn check_wire_values(value: f64, count: i64, timestamp: i64) -> Result<(), FieldError> {
    check_value_and_count(value, count)?;
    if !STORABLE_MS.contains(&timestamp) {
        return Err(FieldError::new(
            "timestamp",
            "is outside the storable range (1970 to 9999)",
        ));
    }
    Ok(())
}

impl<'a> Sample<'a> {
    /// Validates raw fields into a sample; the error names the first bad field.
    pub fn parse(fields: SampleFields<'a>, bounds: TimeBounds) -> Result<Self, FieldError> {
        let service = check_name("service", fields.service, service_byte, "[A-Za-z0-9._-]")?;
        let metric = check_name("metric", fields.metric, metric_byte, "[A-Za-z0-9._:-]")?;
        let value = fields
            .value
            .ok_or_else(|| FieldError::new("value", "is required"))?;
        let count = fields.count.unwrap_or(1);
        check_value_and_count(value, count)?;
        let timestamp_ms = parse_timestamp(fields.timestamp, bounds)?;
        let tags = parse_tags(fields.tags)?;
        Ok(Self {
            series_id: crate::series::series_id(service, metric, tags.iter().copied()),
            service,
            metric,
            value,
            count: count as u64,
            error: fields.error.unwrap_or(false),
            timestamp_ms,
            tags,
        })
    }

    /// The id of this sample's series (hashed once, at parse).
    pub fn series_id(&self) -> i64 {
        self.series_id
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const NOW: i64 = 1_790_000_000_000;

    fn bounds() -> TimeBounds {
        TimeBounds {
            now_ms: NOW,
            max_age: Duration::from_secs(7 * 86_400),
            max_future: Duration::from_secs(300),
        }
    }

    fn ok_fields() -> SampleFields<'static> {
        SampleFields {
            service: Some("checkout"),
            metric: Some("http.server.duration"),
            value: Some(12.5),
            ..Default::default()
        }
    }

    fn field_of(fields: SampleFields<'_>) -> String {
        Sample::parse(fields, bounds()).unwrap_err().field
    }

    #[test]
    fn defaults_apply() {
        let s = Sample::parse(ok_fields(), bounds()).unwrap();
        assert_eq!((s.count, s.error, s.timestamp_ms), (1, false, NOW));
        assert!(s.tags.is_empty());
    }

    #[test]
    fn each_bad_field_is_named() {
        assert_eq!(
            field_of(SampleFields {
                service: None,
                ..ok_fields()
            }),
            "service"
        );
        assert_eq!(
            field_of(SampleFields {
                service: Some(""),
                ..ok_fields()
            }),
            "service"
        );
        assert_eq!(
            field_of(SampleFields {
                service: Some("a b"),
                ..ok_fields()
            }),
            "service"
        );
        let long = "x".repeat(129);
        assert_eq!(
            field_of(SampleFields {
                metric: Some(&long),
                ..ok_fields()
            }),
            "metric"
        );
        assert_eq!(
            field_of(SampleFields {
                metric: Some("a/b"),
                ..ok_fields()
            }),
            "metric"
        );
        assert_eq!(
            field_of(SampleFields {
                value: None,
                ..ok_fields()
            }),
            "value"
        );
        assert_eq!(
            field_of(SampleFields {
                value: Some(f64::NAN),
                ..ok_fields()
            }),
            "value"
        );
        assert_eq!(
            field_of(SampleFields {
                count: Some(0),
                ..ok_fields()
            }),
            "count"
        );
        let old = TimestampInput::UnixMillis(NOW - 8 * 86_400_000);
        assert_eq!(
            field_of(SampleFields {
                timestamp: Some(old),
                ..ok_fields()
            }),
            "timestamp"
        );
        let ahead = TimestampInput::UnixMillis(NOW + 301_000);
        assert_eq!(
            field_of(SampleFields {
                timestamp: Some(ahead),
                ..ok_fields()
            }),
            "timestamp"
        );
        let garbage = TimestampInput::Text("yesterday");
        assert_eq!(
            field_of(SampleFields {
                timestamp: Some(garbage),
                ..ok_fields()
            }),
            "timestamp"
        );
        let many: Vec<(&str, &str)> = (0..17).map(|_| ("k", "v")).collect();
        assert_eq!(
            field_of(SampleFields {
                tags: Some(many),
                ..ok_fields()
            }),
            "tags"
        );
        assert_eq!(
            field_of(SampleFields {
                tags: Some(vec![("bad key", "v")]),
                ..ok_fields()
            }),
            "tags.bad key"
        );
        let long_value = "v".repeat(257);
        assert_eq!(
            field_of(SampleFields {
                tags: Some(vec![("k", &long_value)]),
                ..ok_fields()
            }),
            "tags.k"
        );
    }

    #[test]
    fn names_are_ascii_and_tag_values_count_characters() {
        for name in ["café", "ünits"] {
            assert_eq!(
                field_of(SampleFields {
                    service: Some(name),
                    ..ok_fields()
                }),
                "service"
            );
            assert_eq!(
                field_of(SampleFields {
                    metric: Some(name),
                    ..ok_fields()
                }),
                "metric"
            );
            assert_eq!(
                field_of(SampleFields {
                    tags: Some(vec![(name, "v")]),
                    ..ok_fields()
                }),
                format!("tags.{name}")
            );
        }
        // 256 two-byte characters are 512 bytes, and within the limit.
        let wide = "é".repeat(256);
        let fields = SampleFields {
            tags: Some(vec![("k", &wide)]),
            ..ok_fields()
        };
        assert!(Sample::parse(fields, bounds()).is_ok());
        let wider = "é".repeat(257);
        assert_eq!(
            field_of(SampleFields {
                tags: Some(vec![("k", &wider)]),
                ..ok_fields()
            }),
            "tags.k"
        );
    }

    #[test]
    fn a_nul_in_a_tag_value_is_refused_by_name() {
        let fields = SampleFields {
            tags: Some(vec![("k", "a\0b")]),
            ..ok_fields()
        };
        let err = Sample::parse(fields, bounds()).unwrap_err();
        assert_eq!(err.field, "tags.k");
        assert!(err.message.contains("U+0000"), "{}", err.message);
    }

    #[test]
    fn wire_samples_are_checked_by_the_same_rules() {
        let ok = tidemark_schemas::SampleView {
            service: "s",
            metric: "m",
            value: 1.0,
            count: 1,
            error: false,
            timestamp: NOW,
            tags: vec![("k", "é\u{1F600}")],
        };
        let check_wire = |s: &tidemark_schemas::SampleView<'_>| {
            check_wire_series(s.service, s.metric, &s.tags)?;
            check_wire_values(s.value, s.count, s.timestamp)
        };
        assert_eq!(check_wire(&ok), Ok(()));
        let bad = |f: fn(&mut tidemark_schemas::SampleView<'static>)| {
            let mut s = ok.clone();
            f(&mut s);
            check_wire(&s).unwrap_err().field
        };
        assert_eq!(bad(|s| s.tags = vec![("k", "\0")]), "tags.k");
        assert_eq!(bad(|s| s.tags = vec![("a b", "v")]), "tags.a b");
        assert_eq!(bad(|s| s.service = "a\0"), "service");
        assert_eq!(bad(|s| s.metric = ""), "metric");
        assert_eq!(bad(|s| s.value = f64::INFINITY), "value");
        assert_eq!(bad(|s| s.count = 0), "count");
        assert_eq!(bad(|s| s.timestamp = i64::MAX), "timestamp");
        assert_eq!(bad(|s| s.timestamp = -1), "timestamp");
        assert_eq!(bad(|s| s.tags = vec![("k", "v"); 17]), "tags");
    }

    #[test]
    fn tags_come_out_sorted_and_the_last_of_a_key_counts() {
        let s = Sample::parse(
            SampleFields {
                tags: Some(vec![("b", "1"), ("a", "2"), ("b", "3")]),
                ..ok_fields()
            },
            bounds(),
        )
        .unwrap();
        assert_eq!(s.tags, [("a", "2"), ("b", "3")]);
        let sorted = Sample::parse(
            SampleFields {
                tags: Some(vec![("a", "2"), ("b", "3")]),
                ..ok_fields()
            },
            bounds(),
        )
        .unwrap();
        assert_eq!(s.series_id(), sorted.series_id());
    }

    #[test]
    fn rfc3339_and_millis_agree() {
        let a = Sample::parse(
            SampleFields {
                timestamp: Some(TimestampInput::Text("2026-09-21T14:13:20Z")),
                ..ok_fields()
            },
            bounds(),
        )
        .unwrap();
        assert_eq!(a.timestamp_ms, NOW);
    }
}
