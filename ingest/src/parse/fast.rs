//! A fast path for the usual request body: an array (or `{"samples": [...]}`) of flat
//! sample objects whose strings hold no escapes. It reads straight into [`RawSample`]s
//! and declines (`None`) anything else: escapes, unknown or repeated fields, numbers it
//! cannot take exactly as serde_json would, malformed JSON. The caller then decodes
//! the body with serde_json, which yields the same samples or the error that names the
//! field. The differential test below holds the two to the same answers.

use std::borrow::Cow;

use super::{RawSample, RawTimestamp, Tags, Text};

/// The body's samples, or `None` when serde_json must decide.
pub(super) fn samples(body: &[u8]) -> Option<Vec<RawSample<'_>>> {
    // Checked once here, the text is sliced only next to ASCII quotes and delimiters,
    // which are always character boundaries.
    let text = std::str::from_utf8(body).ok()?;
    let mut c = Cursor {
        s: text,
        b: body,
        i: 0,
    };
    let samples = match c.peek()? {
        b'[' => c.array()?,
        b'{' => {
            c.i += 1;
            if c.string()? != "samples" {
                return None;
            }
            c.eat(b':')?;
            let samples = c.array()?;
            c.eat(b'}')?;
            samples
        }
        _ => return None,
    };
    c.skip_ws();
    (c.i == body.len()).then_some(samples)
}

struct Cursor<'a> {
    s: &'a str,
    /// `s` as bytes.
    b: &'a [u8],
    i: usize,
}

/// Fields of a sample, as bits of the set already seen.
const FIELDS: [&str; 7] = [
    "service",
    "metric",
    "value",
    "count",
    "error",
    "timestamp",
    "tags",
];

impl<'a> Cursor<'a> {
    fn skip_ws(&mut self) {
        while let Some(b' ' | b'\n' | b'\r' | b'\t') = self.b.get(self.i) {
            self.i += 1;
        }
    }

    /// The next byte after whitespace, not consumed.
    fn peek(&mut self) -> Option<u8> {
        self.skip_ws();
        self.b.get(self.i).copied()
    }

    fn eat(&mut self, byte: u8) -> Option<()> {
        (self.peek()? == byte).then(|| self.i += 1)
    }

    /// Consumes `word` if it comes next.
    fn literal(&mut self, word: &[u8]) -> bool {
        self.skip_ws();
        let found = self.b[self.i..].starts_with(word);
        if found {
            self.i += word.len();
        }
        found
    }

    /// `open`, then items separated by commas (each read by `item`), then `close`.
    fn list(
        &mut self,
        open: u8,
        close: u8,
        mut item: impl FnMut(&mut Self) -> Option<()>,
    ) -> Option<()> {
        self.eat(open)?;
        if self.peek()? == close {
            self.i += 1;
            return Some(());
        }
        loop {
            item(self)?;
            match self.peek()? {
                b',' => self.i += 1,
                b if b == close => {
                    self.i += 1;
                    return Some(());
                }
                _ => return None,
            }
        }
    }

    fn array(&mut self) -> Option<Vec<RawSample<'a>>> {
        // A sample takes at least a few dozen bytes; this is room for the usual ones.
        let mut out = Vec::with_capacity(self.b.len() / 96 + 1);
        self.list(b'[', b']', |c| {
            out.push(c.sample()?);
            Some(())
        })?;
        Some(out)
    }

    fn sample(&mut self) -> Option<RawSample<'a>> {
        let mut s = RawSample::default();
        let mut seen = 0u8;
        self.list(b'{', b'}', |c| {
            let key = c.string()?;
            let field = FIELDS.iter().position(|f| *f == key)?;
            if seen & (1 << field) != 0 {
                return None;
            }
            seen |= 1 << field;
            c.eat(b':')?;
            if !c.literal(b"null") {
                match field {
                    0 => s.service = Some(c.text()?),
                    1 => s.metric = Some(c.text()?),
                    2 => s.value = Some(c.float()?),
                    3 => s.count = Some(c.integer()?),
                    4 => s.error = Some(c.boolean()?),
                    5 => s.timestamp = Some(c.timestamp()?),
                    _ => s.tags = Some(c.tags()?),
                }
            }
            Some(())
        })?;
        Some(s)
    }

    /// A string without escapes or control characters.
    fn string(&mut self) -> Option<&'a str> {
        self.eat(b'"')?;
        let start = self.i;
        let len = self.b[start..]
            .iter()
            .position(|&c| c == b'"' || c == b'\\' || c < 0x20)?;
        if self.b[start + len] != b'"' {
            return None;
        }
        self.i += len + 1;
        Some(&self.s[start..start + len])
    }

    fn text(&mut self) -> Option<Text<'a>> {
        self.string().map(|s| Text(Cow::Borrowed(s)))
    }

    fn boolean(&mut self) -> Option<bool> {
        if self.literal(b"true") {
            Some(true)
        } else if self.literal(b"false") {
            Some(false)
        } else {
            None
        }
    }

    /// A JSON number's text: its sign, digit count and whether it has a fraction or an
    /// exponent.
    fn number(&mut self) -> Option<Number<'a>> {
        self.skip_ws();
        let start = self.i;
        if self.b.get(self.i) == Some(&b'-') {
            self.i += 1;
        }
        let int_start = self.i;
        self.digits();
        let int_digits = self.i - int_start;
        if int_digits == 0 || (int_digits > 1 && self.b[int_start] == b'0') {
            return None;
        }
        let mut digits = int_digits;
        let mut plain = true;
        if self.b.get(self.i) == Some(&b'.') {
            self.i += 1;
            let frac = self.digits();
            if frac == 0 {
                return None;
            }
            digits += frac;
            plain = false;
        }
        if let Some(b'e' | b'E') = self.b.get(self.i) {
            // Exponents take serde_json's inexact path; let it decide.
            return None;
        }
        Some(Number {
            text: &self.s[start..self.i],
            digits,
            plain,
        })
    }

    fn digits(&mut self) -> usize {
        let start = self.i;
        while self.b.get(self.i).is_some_and(u8::is_ascii_digit) {
            self.i += 1;
        }
        self.i - start
    }

    /// An integer that fits an i64 whatever its 18 digits. serde_json reads `-0` as a
    /// float, so that is declined.
    fn integer(&mut self) -> Option<i64> {
        let n = self.number()?;
        (n.plain && n.digits <= 18 && n.text != "-0")
            .then(|| n.text.parse().ok())
            .flatten()
    }

    /// A number of at most 15 digits without exponent: it and the power of ten that
    /// scales it are exact in an f64, so serde_json's result is the correctly rounded
    /// one, which is also what `str::parse` gives.
    fn float(&mut self) -> Option<f64> {
        let n = self.number()?;
        (n.digits <= 15).then(|| n.text.parse().ok()).flatten()
    }

    fn timestamp(&mut self) -> Option<RawTimestamp<'a>> {
        if self.peek()? == b'"' {
            Some(RawTimestamp::Text(Cow::Borrowed(self.string()?)))
        } else {
            self.integer().map(RawTimestamp::Millis)
        }
    }

    fn tags(&mut self) -> Option<Tags<'a>> {
        let mut tags = Vec::new();
        self.list(b'{', b'}', |c| {
            let key = c.text()?;
            c.eat(b':')?;
            tags.push((key, c.text()?));
            Some(())
        })?;
        Some(Tags(tags))
    }
}

struct Number<'a> {
    text: &'a str,
    digits: usize,
    /// No fraction.
    plain: bool,
}

#[cfg(test)]
mod tests {
    use super::*;
    use rand::rngs::StdRng;
    use rand::{Rng, SeedableRng};

    fn serde(body: &[u8]) -> Option<Vec<RawSample<'_>>> {
        super::super::serde_samples(body).ok()
    }

    #[test]
    fn takes_the_usual_shapes() {
        let bodies: [&[u8]; 4] = [
            br#"[{"service":"svc-01","metric":"http.server.duration","value":12.25,"timestamp":1790000000000,"tags":{"endpoint":"/api/e01"}}]"#,
            br#"{"samples": [ {"service": "s", "metric": "m", "value": 1, "count": 3, "error": true, "timestamp": "2026-09-21T14:13:20Z"} ]}"#,
            b"[\n  {\"service\": \"s\", \"metric\": \"m\", \"value\": -0.5, \"tags\": {}, \"error\": null}\n]\n",
            b"[]",
        ];
        for body in bodies {
            let fast = samples(body)
                .unwrap_or_else(|| panic!("declined {:?}", String::from_utf8_lossy(body)));
            assert_eq!(format!("{fast:?}"), format!("{:?}", serde(body).unwrap()));
        }
    }

    #[test]
    fn declines_what_serde_must_judge() {
        let bodies: [&[u8]; 14] = [
            br#"[{"service":"s\u0031"}]"#,
            br#"[{"service":"s","service":"t"}]"#,
            br#"[{"valeu":1}]"#,
            br#"[{"value":1e3}]"#,
            br#"[{"value":1.0000000000000001}]"#,
            br#"[{"count":1.5}]"#,
            br#"[{"count":-0}]"#,
            br#"[{"count":12345678901234567890}]"#,
            br#"[{"value":01}]"#,
            br#"[{"tags":{"a":1}}]"#,
            br#"[{},]"#,
            br#"[{}] x"#,
            br#"{"samples":[],"more":1}"#,
            b"[{\"service\":\"a\x01\"}]",
        ];
        for body in bodies {
            assert!(
                samples(body).is_none(),
                "took {:?}",
                String::from_utf8_lossy(body)
            );
        }
    }

    /// Random bodies near the usual shape, with the edge cases mixed in: whatever the
    /// fast path takes, serde_json reads the same way. (serde_json reads
    /// 974244.7372584027762 one unit in the last place away from `str::parse`.)
    #[test]
    fn agrees_with_serde() {
        let mut rng = StdRng::seed_from_u64(7);
        let mut taken = 0;
        for _ in 0..20_000 {
            let body = random_body(&mut rng);
            if let Some(fast) = samples(body.as_bytes()) {
                taken += 1;
                let slow = serde(body.as_bytes())
                    .unwrap_or_else(|| panic!("fast path took what serde refuses: {body}"));
                assert_eq!(format!("{fast:?}"), format!("{slow:?}"), "{body}");
            }
        }
        assert!(taken > 2_000, "the fast path took only {taken} bodies");
    }

    fn random_body(rng: &mut StdRng) -> String {
        let n = rng.gen_range(0..4);
        let samples: Vec<String> = (0..n).map(|_| random_sample(rng)).collect();
        let ws = |rng: &mut StdRng| [" ", "", "\n", "\t", "\x0c"][rng.gen_range(0..5)];
        let array = format!("[{}{}]", samples.join(&format!(",{}", ws(rng))), ws(rng));
        match rng.gen_range(0..4) {
            0 => format!(r#"{{"samples":{array}}}"#),
            1 => format!("{array}{}", ["", " ", "x", ","][rng.gen_range(0..4)]),
            _ => array,
        }
    }

    fn random_sample(rng: &mut StdRng) -> String {
        let strings = [
            "\"svc\"",
            "\"a\\\"b\"",
            "\"é\"",
            "\"\"",
            "null",
            "1",
            "\"m.x\"",
        ];
        let numbers = [
            "0",
            "-0",
            "1",
            "-1",
            "12.5",
            "-0.0",
            "0.1",
            "1e2",
            "1.5E-3",
            "01",
            "1.",
            "123456789012345",
            "1234567890123456",
            "123456789012345678",
            "1234567890123456789",
            "-9223372036854775808",
            "0.30000000000000004",
            "974244.7372584027762",
            "true",
            "null",
            "\"2026-09-21T14:13:20Z\"",
            "-",
        ];
        let tags = [
            r#"{}"#,
            r#"{"a":"1","b":"2"}"#,
            r#"{"a":"1","a":"2"}"#,
            r#"{"a":1}"#,
            "null",
            "[]",
        ];
        let pick = |rng: &mut StdRng, xs: &[&str]| xs[rng.gen_range(0..xs.len())].to_owned();
        let mut fields: Vec<String> = Vec::new();
        // Every field, an unknown one, and `value` again (a repeated field).
        for name in FIELDS.into_iter().chain(["other", "value"]) {
            if rng.gen_bool(0.6) {
                let value = match name {
                    "service" | "metric" => pick(rng, &strings),
                    "tags" => pick(rng, &tags),
                    "error" => pick(rng, &["true", "false", "null", "1"]),
                    _ => pick(rng, &numbers),
                };
                let name = if rng.gen_bool(0.97) || name == "other" {
                    name.to_owned()
                } else {
                    format!("{name}x")
                };
                if name != "other" || rng.gen_bool(0.1) {
                    fields.push(format!(
                        "\"{name}\"{}:{value}",
                        [" ", ""][rng.gen_range(0..2)]
                    ));
                }
            }
        }
        format!("{{{}}}", fields.join(","))
    }

    /// Property tests (bounded: a few thousand cases each, a few seconds in all): on
    /// arbitrary bytes, on soups of JSON tokens and on mutated sample bodies, neither
    /// decoder panics, nor does validation, and whatever the fast path takes serde_json
    /// reads the same way.
    mod fuzz {
        use super::super::super::{decode_samples, serde_samples};
        use super::samples;
        use proptest::prelude::*;
        use std::time::Duration;
        use tidemark_model::sample::TimeBounds;

        fn config() -> ProptestConfig {
            ProptestConfig {
                // PROPTEST_CASES runs more (or fewer) cases, e.g. for a longer local run.
                cases: std::env::var("PROPTEST_CASES")
                    .ok()
                    .and_then(|v| v.parse().ok())
                    .unwrap_or(3_000),
                failure_persistence: None,
                ..ProptestConfig::default()
            }
        }

        fn check(body: &[u8]) -> Result<(), TestCaseError> {
            let fast = samples(body);
            let slow = serde_samples(body).ok();
            if let Some(fast) = &fast {
                let Some(slow) = &slow else {
                    return Err(TestCaseError::fail(format!(
                        "the fast path took what serde_json refuses: {:?}",
                        String::from_utf8_lossy(body)
                    )));
                };
                prop_assert_eq!(format!("{fast:?}"), format!("{slow:?}"));
            }
            if let Ok(raw) = decode_samples(body) {
                let bounds = TimeBounds {
                    now_ms: 1_790_000_000_000,
                    max_age: Duration::from_secs(7 * 86_400),
                    max_future: Duration::from_secs(300),
                };
                let _ = raw.validate(bounds);
            }
            Ok(())
        }

        /// A JSON number as a client might write it, near the fast path's edges.
        fn number() -> impl Strategy<Value = String> {
            prop_oneof![
                any::<f64>().prop_map(|v| v.to_string()),
                any::<f64>().prop_map(|v| format!("{v:e}")),
                any::<i64>().prop_map(|v| v.to_string()),
                any::<u64>().prop_map(|v| v.to_string()),
                "-?(0|[1-9][0-9]{0,19})(\\.[0-9]{1,19})?([eE][+-]?[0-9]{1,3})?",
                "-?0[0-9]{1,3}|-|\\.5|1\\.|1e|--1|\\+1|0x1F",
            ]
        }

        /// A JSON string: plain, with escapes, or not quite a string.
        fn string() -> impl Strategy<Value = String> {
            prop_oneof![
                "[A-Za-z0-9._:-]{0,12}".prop_map(|s| format!("\"{s}\"")),
                any::<String>().prop_map(|s| serde_json::to_string(&s).unwrap()),
                "\"[^\"]{0,6}(\\\\[\"\\\\/bfnrtu0x]|\\\\u[0-9a-fA-F]{4}|[\\x00-\\x1f])?[^\"]{0,6}\"",
                "\"2026-09-21T14:13:20(\\.[0-9]{1,9})?(Z|[+-][0-9]{2}:[0-9]{2})\"",
            ]
        }

        fn value() -> impl Strategy<Value = String> {
            prop_oneof![
                4 => number(),
                4 => string(),
                1 => Just("null".to_owned()),
                1 => Just("true".to_owned()),
                1 => Just("false".to_owned()),
                1 => proptest::collection::vec((string(), string()), 0..4).prop_map(|tags| {
                    let pairs: Vec<String> =
                        tags.iter().map(|(k, v)| format!("{k}:{v}")).collect();
                    format!("{{{}}}", pairs.join(","))
                }),
                1 => Just("[]".to_owned()),
            ]
        }

        /// A value of the type the field takes, mostly.
        fn typed_value(name: &str) -> BoxedStrategy<String> {
            let plain = "[A-Za-z0-9._:/-]{1,12}".prop_map(|s| format!("\"{s}\""));
            match name {
                "service" | "metric" => prop_oneof![9 => plain, 1 => string()].boxed(),
                "value" => prop_oneof![
                    3 => "-?(0|[1-9][0-9]{0,8})(\\.[0-9]{1,8})?",
                    1 => number(),
                ]
                .boxed(),
                "count" | "timestamp" => prop_oneof![
                    4 => "-?(0|[1-9][0-9]{0,17})",
                    2 => "1790000[0-9]{6}",
                    1 => number(),
                    1 => string(),
                ]
                .boxed(),
                "error" => prop_oneof![
                    4 => Just("true".to_owned()),
                    4 => Just("false".to_owned()),
                    1 => value(),
                ]
                .boxed(),
                "tags" => proptest::collection::vec((plain.clone(), plain), 0..4)
                    .prop_map(|tags| {
                        let pairs: Vec<String> =
                            tags.iter().map(|(k, v)| format!("{k}:{v}")).collect();
                        format!("{{{}}}", pairs.join(","))
                    })
                    .boxed(),
                _ => value().boxed(),
            }
        }

        /// A value the fast path takes for the field.
        fn clean_value(name: &str) -> BoxedStrategy<String> {
            let plain = "[A-Za-z0-9._:/-]{1,12}".prop_map(|s| format!("\"{s}\""));
            match name {
                "service" | "metric" => plain.boxed(),
                "value" => "-?(0|[1-9][0-9]{0,8})(\\.[0-9]{1,6})?".boxed(),
                "count" => "[1-9][0-9]{0,5}".boxed(),
                "error" => proptest::bool::ANY.prop_map(|b| b.to_string()).boxed(),
                "timestamp" => prop_oneof![
                    "1790000[0-9]{6}",
                    "\"2026-09-2[0-9]T14:13:20(\\.[0-9]{3})?Z\"",
                ]
                .boxed(),
                _ => proptest::collection::vec((plain.clone(), plain), 0..4)
                    .prop_map(|tags| {
                        let pairs: Vec<String> =
                            tags.iter().map(|(k, v)| format!("{k}:{v}")).collect();
                        format!("{{{}}}", pairs.join(","))
                    })
                    .boxed(),
            }
        }

        fn field(name: String, clean: bool) -> impl Strategy<Value = String> {
            let value = if clean {
                clean_value(&name)
            } else {
                prop_oneof![
                    12 => typed_value(&name),
                    1 => value(),
                    1 => Just("null".to_owned()),
                ]
                .boxed()
            };
            ("[ \t\n\r]{0,2}", value)
                .prop_map(move |(ws, value)| format!("\"{name}\"{ws}:{ws}{value}"))
        }

        /// A sample object: some of the fields in any order; unless `clean`, with values
        /// of any type and now and then an unknown, escaped or repeated field.
        fn sample(clean: bool) -> impl Strategy<Value = String> {
            let names =
                proptest::sample::subsequence(&super::super::FIELDS[..], 0..=7).prop_shuffle();
            let extra = prop_oneof![
                if clean { 1 } else { 12 } => Just(None),
                if clean { 0 } else { 1 } => "[a-z]{0,9}".prop_map(Some),
                if clean { 0 } else { 1 } => Just(Some("servic\\u0065".to_owned())),
                if clean { 0 } else { 1 } => proptest::sample::select(&super::super::FIELDS[..])
                    .prop_map(|f| Some(f.to_owned())),
            ];
            (names, extra, any::<usize>())
                .prop_flat_map(move |(names, extra, at)| {
                    let mut names: Vec<String> = names.iter().map(|n| n.to_string()).collect();
                    if let Some(extra) = extra {
                        names.insert(at % (names.len() + 1), extra);
                    }
                    names
                        .into_iter()
                        .map(|name| field(name, clean))
                        .collect::<Vec<_>>()
                })
                .prop_map(|fields| format!("{{{}}}", fields.join(",")))
        }

        /// A body of the usual shape (array or wrapped): half of them with clean
        /// samples, the others from arbitrary fields.
        fn body() -> impl Strategy<Value = String> {
            let array = proptest::bool::ANY
                .prop_flat_map(|clean| proptest::collection::vec(sample(clean), 0..4))
                .prop_map(|samples| format!("[{}]", samples.join(",")));
            (array, 0..4u8, "[ \t\n]{0,2}|x|,|\\]|\\}").prop_map(|(array, shape, tail)| match shape
            {
                0 => format!("{{\"samples\":{array}}}"),
                1 => format!("{array}{tail}"),
                _ => array,
            })
        }

        /// An edit of a body: overwrite, insert or delete a byte, or cut the body.
        fn mutations() -> impl Strategy<Value = Vec<(usize, u8, u8)>> {
            let byte = prop_oneof![
                any::<u8>(),
                proptest::sample::select(&b"[]{},:\"\\ 0-.eE"[..]),
            ];
            proptest::collection::vec((any::<usize>(), 0..4u8, byte), 1..4)
        }

        fn mutate(body: &mut Vec<u8>, edits: &[(usize, u8, u8)]) {
            for &(at, op, byte) in edits {
                let at = at % (body.len() + 1);
                match op {
                    0 if at < body.len() => body[at] = byte,
                    1 => body.insert(at, byte),
                    2 if at < body.len() => {
                        body.remove(at);
                    }
                    _ => body.truncate(at),
                }
            }
        }

        proptest! {
            #![proptest_config(config())]

            #[test]
            fn arbitrary_bytes(body in proptest::collection::vec(any::<u8>(), 0..256)) {
                check(&body)?;
            }

            #[test]
            fn token_soup(tokens in proptest::collection::vec(prop_oneof![
                proptest::sample::select(&["[", "]", "{", "}", ",", ":", " ", "null",
                    "\"samples\"", "\"service\"", "\"value\"", "\"tags\"",
                    "\"timestamp\"", "\"count\"", "\"error\"", "\"metric\""][..])
                    .prop_map(str::to_owned),
                number(),
                string(),
            ], 0..40)) {
                check(tokens.concat().as_bytes())?;
            }

            #[test]
            fn usual_shapes(body in body()) {
                check(body.as_bytes())?;
            }

            #[test]
            fn mutated_shapes(body in body(), edits in mutations()) {
                let mut body = body.into_bytes();
                mutate(&mut body, &edits);
                check(&body)?;
            }
        }
    }
}
