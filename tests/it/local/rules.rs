//! `tidemark rules check FILE` and `tidemark rules test FILE...` on the shipped example
//! and on broken copies: they need no configuration, database or broker. `check` exits 0
//! for a valid file and 1 with every error otherwise, each naming the rule and field;
//! `test` exits 0 when every test passes, 1 when one fails (naming the test and the
//! instant), 2 when a file is invalid (naming the file, test and field).

use std::path::{Path, PathBuf};
use std::process::Command;

fn example(name: &str) -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("deploy/rules")
        .join(name)
}

/// Runs `tidemark rules <command> <file>` with an empty environment: exit code, stdout,
/// stderr.
fn rules(command: &str, file: &Path) -> (i32, String, String) {
    let out = Command::new(env!("CARGO_BIN_EXE_tidemark"))
        .args(["rules", command])
        .arg(file)
        .env_clear()
        .output()
        .expect("run tidemark");
    (
        out.status.code().unwrap_or(-1),
        String::from_utf8_lossy(&out.stdout).into_owned(),
        String::from_utf8_lossy(&out.stderr).into_owned(),
    )
}

/// A directory of its own for one test, with copies of the example files, `edit`ed.
struct Copy(PathBuf);

impl Copy {
    fn of_examples(test: &str, edit: impl Fn(&str, String) -> String) -> Self {
        let dir = std::env::temp_dir().join(format!("tm-rules-{}-{test}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        for name in ["example.yaml", "example.test.yaml"] {
            let text = std::fs::read_to_string(example(name)).unwrap();
            std::fs::write(dir.join(name), edit(name, text)).unwrap();
        }
        Self(dir)
    }

    fn file(&self, name: &str) -> PathBuf {
        self.0.join(name)
    }
}

impl Drop for Copy {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.0);
    }
}

/// `text` with `from` replaced once, which must be there.
fn replaced(text: String, from: &str, to: &str) -> String {
    assert!(text.contains(from), "{from}");
    text.replacen(from, to, 1)
}

#[test]
fn the_example_rules_file_is_valid() {
    let (code, stdout, stderr) = rules("check", &example("example.yaml"));
    assert_eq!(code, 0, "{stderr}");
    let lines: Vec<&str> = stdout.lines().collect();
    assert_eq!(lines.len(), 3, "one line per rule: {stdout}");
    assert!(
        lines[0].starts_with("checkout-latency: p95 > 800 (warning); now "),
        "{stdout}"
    );
    assert!(lines[0].contains("; next change 20"), "{stdout}");
    assert!(
        lines[1].starts_with("ingest-errors: error_rate >= 0.05 (critical)"),
        "{stdout}"
    );
    assert!(
        lines[2].starts_with("heartbeat: absent 2m (critical); now its own values"),
        "{stdout}"
    );
}

#[test]
fn a_broken_rules_file_names_each_rule_and_field() {
    let copy = Copy::of_examples("check", |name, text| match name {
        "example.yaml" => replaced(
            replaced(text, "window: 10m", "window: 10"),
            "timezone: America/New_York",
            "timezone: Mars/Base",
        ),
        _ => text,
    });
    let (code, stdout, stderr) = rules("check", &copy.file("example.yaml"));
    assert_eq!(code, 1, "{stdout}{stderr}");
    assert!(stdout.is_empty(), "{stdout}");
    assert!(
        stderr.contains(r#"rules[1] "ingest-errors": window: missing unit"#),
        "{stderr}"
    );
    assert!(
        stderr.contains(
            r#"rules[1] "ingest-errors": schedules[0].timezone: unknown time zone "Mars/Base""#
        ),
        "{stderr}"
    );
}

#[test]
fn the_example_rules_pass_their_tests() {
    let (code, stdout, stderr) = rules("test", &example("example.test.yaml"));
    assert_eq!(code, 0, "{stdout}{stderr}");
    let lines: Vec<&str> = stdout.lines().collect();
    assert!(lines.len() >= 6, "{stdout}");
    let (summary, tests) = lines.split_last().unwrap();
    for line in tests {
        assert!(line.ends_with(": ok"), "{stdout}");
    }
    assert_eq!(*summary, format!("{} passed, 0 failed", tests.len()));
}

#[test]
fn a_broken_expectation_fails_naming_the_test_and_the_instant() {
    let copy = Copy::of_examples("test-fails", |name, text| match name {
        "example.test.yaml" => replaced(
            text,
            "threshold: 500, resolve_threshold: 450",
            "threshold: 400, resolve_threshold: 450",
        ),
        _ => text,
    });
    let (code, stdout, stderr) = rules("test", &copy.file("example.test.yaml"));
    assert_eq!(code, 1, "{stdout}{stderr}");
    assert!(
        stdout.contains(&format!(
            "{}: tests[1] \"on Saturday 600 ms is critical, on Friday it is fine\": FAILED
  expect[1] at 2026-10-24 10:14:00 +02:00:
    in_force \"checkout-latency\": threshold: expected 400, got 500\n",
            copy.file("example.test.yaml").display()
        )),
        "{stdout}"
    );
    assert!(
        stdout.contains(": tests[0] \"a weekday's slow checkout"),
        "the others still run: {stdout}"
    );
    assert!(stdout.ends_with(" passed, 1 failed\n"), "{stdout}");
}

#[test]
fn an_invalid_test_file_names_the_file_test_and_field() {
    let copy = Copy::of_examples("test-invalid", |name, text| match name {
        "example.test.yaml" => replaced(text, "every: 5s", "every: 5"),
        "example.yaml" => replaced(text, "window: 10m", "window: 10"),
        _ => text,
    });
    let tests = copy.file("example.test.yaml");
    let (code, _, stderr) = rules("test", &tests);
    assert_eq!(code, 2, "{stderr}");
    assert!(
        stderr.contains(&format!(
            "{}: tests[0] \"a weekday's slow checkout pends for 2m, fires as a warning, and recovers\": input[0].every: missing unit",
            tests.display()
        )),
        "{stderr}"
    );
    // Once the test file is valid, the rules file's errors name it.
    std::fs::write(
        &tests,
        std::fs::read_to_string(example("example.test.yaml")).unwrap(),
    )
    .unwrap();
    let (code, _, stderr) = rules("test", &tests);
    assert_eq!(code, 2, "{stderr}");
    assert!(
        stderr.contains(&format!(
            "{}: rules[1] \"ingest-errors\": window: missing unit",
            copy.file("example.yaml").display()
        )),
        "{stderr}"
    );
}
