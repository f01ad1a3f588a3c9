//! The breaches topic: rule transitions from the aggregator to the alerter, one
//! `io.tidemark.Breach` record per message ([`BREACHES_SCHEMA`]), encoded and decoded
//! through apache-avro's serde support (a few messages per second, not a hot path).

use std::collections::BTreeMap;
use std::sync::LazyLock;

use apache_avro::Schema;
use serde::{Deserialize, Serialize};

use crate::{fingerprint_of, header, parse_schema, Decoder, SchemaError};

/// Avro schema (`.avsc` text) of the values of the breaches topic. Version 1.
pub const BREACHES_SCHEMA: &str = include_str!("../tidemark.breaches.avsc");

/// One transition of one rule over one series (Avro record `io.tidemark.Breach`).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Breach {
    pub rule: String,
    /// Identity of (rule, series), 16 lowercase hex digits.
    pub fingerprint: String,
    pub series: Series,
    pub state: BreachState,
    /// breached, escalated, recovered, missing_series or maintenance.
    pub reason: String,
    pub severity: Severity,
    pub value: Option<f64>,
    pub threshold: f64,
    pub op: String,
    pub stat: String,
    /// Length of the rolling window, in milliseconds.
    pub window: i64,
    /// Evaluation instant, in milliseconds since the Unix epoch.
    pub at: i64,
    /// When the episode began, in milliseconds since the Unix epoch.
    pub active_since: i64,
    /// Transitions of this fingerprint so far, this one included.
    pub seq: i64,
    pub schedule: Option<String>,
    pub labels: BTreeMap<String, String>,
    pub annotations: BTreeMap<String, String>,
}

/// The series a breach is about (Avro record `io.tidemark.Series`).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Series {
    pub service: String,
    pub metric: String,
    pub tags: BTreeMap<String, String>,
}

/// The state a breach moves its series to (Avro enum `io.tidemark.BreachState`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum BreachState {
    Ok,
    Pending,
    Firing,
}

/// Avro enum `io.tidemark.Severity`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Severity {
    Critical,
    Warning,
    Info,
}

impl BreachState {
    pub fn as_str(self) -> &'static str {
        match self {
            BreachState::Ok => "ok",
            BreachState::Pending => "pending",
            BreachState::Firing => "firing",
        }
    }
}

impl Severity {
    pub fn as_str(self) -> &'static str {
        match self {
            Severity::Critical => "critical",
            Severity::Warning => "warning",
            Severity::Info => "info",
        }
    }
}

static SCHEMA: LazyLock<(Schema, u64)> = LazyLock::new(|| {
    let schema = parse_schema(BREACHES_SCHEMA).expect("the embedded breaches schema is valid");
    let fingerprint = fingerprint_of(&schema);
    (schema, fingerprint)
});

static DECODER: LazyLock<Decoder> =
    LazyLock::new(|| Decoder::new(BREACHES_SCHEMA).expect("the embedded breaches schema is valid"));

/// Encodes `breach` as a single-object message of [`BREACHES_SCHEMA`].
pub fn encode_breach(breach: &Breach) -> Result<Vec<u8>, SchemaError> {
    let (schema, fingerprint) = &*SCHEMA;
    let value = apache_avro::to_value(breach)
        .and_then(|value| value.resolve(schema))
        .map_err(|e| SchemaError::Encode(e.to_string()))?;
    let datum = apache_avro::writer::datum::GenericDatumWriter::builder(schema)
        .build()
        .and_then(|writer| writer.write_value_to_vec(value))
        .map_err(|e| SchemaError::Encode(e.to_string()))?;
    let mut out = header(*fingerprint).to_vec();
    out.extend(datum);
    Ok(out)
}

/// Decodes a single-object message of [`BREACHES_SCHEMA`]. Never panics, whatever the bytes.
pub fn decode_breach(bytes: &[u8]) -> Result<Breach, SchemaError> {
    DECODER.decode(bytes)
}

#[cfg(test)]
mod tests {
    use super::*;

    pub fn breach() -> Breach {
        Breach {
            rule: "api-latency".into(),
            fingerprint: "00112233aabbccdd".into(),
            series: Series {
                service: "api".into(),
                metric: "http.latency_ms".into(),
                tags: BTreeMap::from([("region".into(), "eu".into())]),
            },
            state: BreachState::Firing,
            reason: "breached".into(),
            severity: Severity::Critical,
            value: Some(612.5),
            threshold: 500.0,
            op: ">".into(),
            stat: "p95".into(),
            window: 300_000,
            at: 1_790_000_000_000,
            active_since: 1_789_999_940_000,
            seq: 2,
            schedule: Some("\"saturday\"".into()),
            labels: BTreeMap::from([("team".into(), "web".into())]),
            annotations: BTreeMap::from([("summary".into(), "p95 612.5 > 500".into())]),
        }
    }

    #[test]
    fn a_breach_survives_encoding() {
        let mut b = breach();
        let bytes = encode_breach(&b).unwrap();
        assert_eq!(&bytes[..2], &[0xC3, 0x01]);
        assert_eq!(decode_breach(&bytes).unwrap(), b);
        b.value = None;
        b.schedule = None;
        b.state = BreachState::Ok;
        assert_eq!(decode_breach(&encode_breach(&b).unwrap()).unwrap(), b);
    }

    #[test]
    fn bad_bytes_are_an_error_not_a_panic() {
        let bytes = encode_breach(&breach()).unwrap();
        for cut in 0..bytes.len() {
            assert!(decode_breach(&bytes[..cut]).is_err(), "cut at {cut}");
        }
        let mut flipped = bytes.clone();
        flipped[3] ^= 0xff;
        assert!(matches!(
            decode_breach(&flipped),
            Err(SchemaError::UnknownFingerprint(_))
        ));
    }
}
