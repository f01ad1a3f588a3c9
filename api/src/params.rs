//! Checks of request parameters, made before any of them reaches SQL or Redis: names by
//! the character rules of samples (SPEC §2), so a query can only ask for what a sample
//! could have created, and instants within what Postgres, chrono and RFC 3339 hold.
//! Every refusal is a `400` whose message starts with the parameter's name and never
//! echoes the value (it may hold anything, U+0000 included).

use std::collections::BTreeMap;

use tidemark_model::sample::{self, FieldError, MAX_TAGS, STORABLE_MS};
use tidemark_model::time::{format_instant, parse_instant};
use tidemark_runtime::http::ApiError;

fn bad(code: &'static str, message: String) -> ApiError {
    ApiError::bad_request(code, message)
}

/// The refusal of `param`, in the words of the sample rule it breaks (which never
/// quote the value).
fn refused(code: &'static str, param: &str, e: FieldError) -> ApiError {
    bad(code, format!("{param}: {}", e.message))
}

/// The id of a path (`/v1/alerts/{id}`, `/v1/silences/{id}`): a positive integer.
pub fn path_id(text: &str) -> Result<i64, ApiError> {
    text.parse::<i64>()
        .ok()
        .filter(|id| *id > 0)
        .ok_or_else(|| ApiError::bad_request("invalid_path", "id: must be a positive integer"))
}

/// A service name, by the rule of samples.
pub fn service<'a>(code: &'static str, param: &str, value: &'a str) -> Result<&'a str, ApiError> {
    sample::check_service(value).map_err(|e| refused(code, param, e))
}

/// A metric name, by the rule of samples.
pub fn metric<'a>(code: &'static str, param: &str, value: &'a str) -> Result<&'a str, ApiError> {
    sample::check_metric(value).map_err(|e| refused(code, param, e))
}

/// A tag filter `k=v,k2=v2`: at most 16 pairs, each by the rule of sample tags; a key
/// given twice keeps its last value, as in samples.
pub fn tags(text: Option<&str>) -> Result<BTreeMap<String, String>, ApiError> {
    let mut out = BTreeMap::new();
    let pairs = text
        .unwrap_or_default()
        .split(',')
        .filter(|p| !p.is_empty());
    for (i, pair) in pairs.enumerate() {
        if i == MAX_TAGS {
            return Err(bad(
                "invalid_query",
                format!("tags: at most {MAX_TAGS} key=value pairs"),
            ));
        }
        let (k, v) = pair.split_once('=').ok_or_else(|| {
            bad(
                "invalid_query",
                "tags: expected key=value pairs separated by commas".to_owned(),
            )
        })?;
        sample::check_tag(k, v).map_err(|e| refused("invalid_query", "tags", e))?;
        out.insert(k.to_owned(), v.to_owned());
    }
    Ok(out)
}

/// An instant given as RFC 3339 or Unix milliseconds, within
/// [`STORABLE_MS`]; `default` when absent or empty.
pub fn instant(value: Option<&str>, param: &str, default: i64) -> Result<i64, ApiError> {
    let ms = match value {
        None | Some("") => default,
        Some(text) => {
            parse_instant(text).map_err(|e| bad("invalid_query", format!("{param}: {e}")))?
        }
    };
    if !STORABLE_MS.contains(&ms) {
        return Err(bad(
            "invalid_query",
            format!(
                "{param}: must be between {} and {}",
                format_instant(*STORABLE_MS.start()),
                format_instant(*STORABLE_MS.end())
            ),
        ));
    }
    Ok(ms)
}

#[cfg(test)]
mod tests {
    use super::*;
    use tidemark_model::sample::{Sample, SampleFields, TimeBounds};

    /// Whether ingest would accept a sample with these names.
    fn sample_accepts(service: &str, metric: &str, tag_key: &str) -> bool {
        let fields = SampleFields {
            service: Some(service),
            metric: Some(metric),
            value: Some(1.0),
            tags: Some(vec![(tag_key, "v")]),
            ..Default::default()
        };
        let bounds = TimeBounds {
            now_ms: 0,
            max_age: std::time::Duration::ZERO,
            max_future: std::time::Duration::ZERO,
        };
        Sample::parse(fields, bounds).is_ok()
    }

    #[test]
    fn names_are_checked_exactly_as_samples_are() {
        let long = "x".repeat(128);
        let longer = "x".repeat(129);
        let key_long = "k".repeat(64);
        let key_longer = "k".repeat(65);
        let names = [
            "checkout",
            "a.b_c-1",
            "a:b",
            "",
            "a b",
            "a\0",
            "\0",
            "café",
            "a/b",
            "a|b",
            "a,b",
            "a=b",
            &long,
            &longer,
            &key_long,
            &key_longer,
        ];
        for name in names {
            let tags = format!("{name}=v");
            assert_eq!(
                service("c", "service", name).is_ok(),
                sample_accepts(name, "m", "k"),
                "service {name:?}"
            );
            assert_eq!(
                metric("c", "metric", name).is_ok(),
                sample_accepts("s", name, "k"),
                "metric {name:?}"
            );
            // `,` and `=` separate pairs in a filter, so they cannot be in its keys.
            if !name.contains([',', '=']) && !name.is_empty() {
                assert_eq!(
                    super::tags(Some(&tags)).is_ok(),
                    sample_accepts("s", "m", name),
                    "tag key {name:?}"
                );
            }
        }
    }

    #[test]
    fn refusals_name_the_parameter_and_never_echo_it() {
        let err = service("invalid_path", "service", "a\0b").unwrap_err();
        assert!(matches!(
            err,
            ApiError::BadRequest {
                code: "invalid_path",
                ..
            }
        ));
        let message = err.to_string();
        assert!(
            message.starts_with("service: ") && !message.contains("a\0b"),
            "{message}"
        );
        let message = instant(Some("-9223372036854775808"), "from", 0)
            .unwrap_err()
            .to_string();
        assert_eq!(
            message,
            "from: must be between 1970-01-01T00:00:00.000Z and 9999-12-31T23:59:59.999Z"
        );
        assert_eq!(instant(None, "to", 5).unwrap(), 5);
        assert_eq!(instant(Some("1970-01-01T00:00:00Z"), "to", 5).unwrap(), 0);
    }

    #[test]
    fn path_ids_are_positive_integers() {
        assert_eq!(path_id("42").unwrap(), 42);
        for bad in ["0", "-3", "x", "9223372036854775808", ""] {
            let message = path_id(bad).unwrap_err().to_string();
            assert!(message.starts_with("id: "), "{bad}: {message}");
        }
    }
}
