//! Time as Tidemark writes and reads it: instants (RFC 3339 or Unix milliseconds) and
//! human durations such as `500ms`, `5s`, `5m`, `1h`, `7d` (config values, rule windows).

use std::time::Duration;

/// Parses an instant given as RFC 3339 text or integer Unix milliseconds in text form
/// (sample timestamps, query ranges).
pub fn parse_instant(text: &str) -> Result<i64, String> {
    if let Ok(ms) = text.parse::<i64>() {
        return Ok(ms);
    }
    chrono::DateTime::parse_from_rfc3339(text)
        .map(|t| t.timestamp_millis())
        .map_err(|e| format!("is neither RFC 3339 nor Unix milliseconds: {e}"))
}

/// RFC 3339 (UTC, milliseconds) of Unix milliseconds, as every response shows instants.
pub fn format_instant(ms: i64) -> String {
    chrono::DateTime::from_timestamp_millis(ms)
        .map(|t| t.to_rfc3339_opts(chrono::SecondsFormat::Millis, true))
        .unwrap_or_else(|| ms.to_string())
}

/// The units of a duration, largest first, with their milliseconds.
const DURATION_UNITS: [(&str, u64); 5] = [
    ("d", 86_400_000),
    ("h", 3_600_000),
    ("m", 60_000),
    ("s", 1_000),
    ("ms", 1),
];

/// Parses `<integer><unit>` with unit `ms`, `s`, `m`, `h` or `d`.
pub fn parse_duration(text: &str) -> Result<Duration, String> {
    let text = text.trim();
    let split = text
        .find(|c: char| !c.is_ascii_digit())
        .ok_or_else(|| "missing unit: use ms, s, m, h or d, e.g. 5m".to_owned())?;
    let (digits, unit) = text.split_at(split);
    let n: u64 = digits
        .parse()
        .map_err(|_| "expected a whole number followed by ms, s, m, h or d".to_owned())?;
    let (_, ms_per_unit) = DURATION_UNITS
        .iter()
        .find(|(name, _)| *name == unit)
        .ok_or_else(|| format!("unknown unit {unit:?}: use ms, s, m, h or d"))?;
    n.checked_mul(*ms_per_unit)
        .map(Duration::from_millis)
        .ok_or_else(|| "duration too large".to_owned())
}

/// A duration as [`parse_duration`] reads it, in the largest unit that measures it
/// exactly (`300s` is `5m`, `90s` stays `90s`); zero is `0s`. Whole milliseconds only.
pub fn format_duration(d: Duration) -> String {
    let ms = u64::try_from(d.as_millis()).unwrap_or(u64::MAX);
    if ms == 0 {
        return "0s".to_owned();
    }
    let (unit, per) = DURATION_UNITS
        .iter()
        .find(|(_, per)| ms % per == 0)
        .expect("every duration is whole milliseconds");
    format!("{}{unit}", ms / per)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_units() {
        assert_eq!(parse_duration("500ms"), Ok(Duration::from_millis(500)));
        assert_eq!(parse_duration("5m"), Ok(Duration::from_secs(300)));
        assert_eq!(parse_duration("7d"), Ok(Duration::from_secs(604_800)));
    }

    #[test]
    fn formats_in_the_largest_exact_unit_and_reads_back() {
        for (ms, text) in [
            (0, "0s"),
            (1, "1ms"),
            (1_500, "1500ms"),
            (90_000, "90s"),
            (300_000, "5m"),
            (5_400_000, "90m"),
            (7_200_000, "2h"),
            (604_800_000, "7d"),
        ] {
            let d = Duration::from_millis(ms);
            assert_eq!(format_duration(d), text);
            assert_eq!(parse_duration(text), Ok(d));
        }
    }

    #[test]
    fn rejects_garbage() {
        assert!(parse_duration("5").is_err());
        assert!(parse_duration("m").is_err());
        assert!(parse_duration("5w").is_err());
        assert!(parse_duration("-5s").is_err());
        assert!(parse_duration("99999999999999999d").is_err());
    }
}
