//! For tests of other crates (feature `test-support`): the assertion every error answer
//! must pass.

use axum::http::HeaderMap;
use serde_json::Value;

use crate::http::REQUEST_ID;

/// SPEC's error body with `code` and a short, non-empty message, and the headers every
/// answer carries.
pub fn assert_spec_error(what: &str, headers: &HeaderMap, body: &Value, code: &str) {
    assert_eq!(body["error"]["code"], code, "{what}: {body}");
    let message = body["error"]["message"].as_str().unwrap_or_default();
    assert!(!message.is_empty(), "{what}: {body}");
    assert!(
        message.chars().count() <= 300 && message.len() < 400,
        "{what}: message of {} characters",
        message.chars().count()
    );
    for (name, value) in [
        ("x-content-type-options", "nosniff"),
        ("x-frame-options", "DENY"),
        ("referrer-policy", "no-referrer"),
        ("cache-control", "no-store"),
        ("content-type", "application/json"),
    ] {
        assert_eq!(
            headers.get(name).map(|v| v.to_str().unwrap()),
            Some(value),
            "{what}: {name}"
        );
    }
    assert!(headers.contains_key(REQUEST_ID), "{what}: no request id");
}
