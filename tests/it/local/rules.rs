//! `tidemark rules check FILE` on the shipped example and on a broken copy: it needs no
//! configuration, database or broker, exits 0 for a valid file and 1 with every error
//! otherwise, each naming the rule and field.

use std::path::{Path, PathBuf};
use std::process::Command;

fn example() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("deploy/rules/example.yaml")
}

/// Runs the check with an empty environment: exit code, stdout, stderr.
fn check(file: &Path) -> (i32, String, String) {
    let out = Command::new(env!("CARGO_BIN_EXE_tidemark"))
        .args(["rules", "check"])
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

#[test]
fn the_example_rules_file_is_valid() {
    let (code, stdout, stderr) = check(&example());
    assert_eq!(code, 0, "{stderr}");
    let lines: Vec<&str> = stdout.lines().collect();
    assert_eq!(lines.len(), 2, "one line per rule: {stdout}");
    assert!(
        lines[0].starts_with("checkout-latency: p95 > 800 (warning); now "),
        "{stdout}"
    );
    assert!(lines[0].contains("; next change 20"), "{stdout}");
    assert!(
        lines[1].starts_with("ingest-errors: error_rate >= 0.05 (critical)"),
        "{stdout}"
    );
}

#[test]
fn a_broken_rules_file_names_each_rule_and_field() {
    let text = std::fs::read_to_string(example()).unwrap();
    let broken = text.replacen("window: 10m", "window: 10", 1).replacen(
        "timezone: America/New_York",
        "timezone: Mars/Base",
        1,
    );
    assert_ne!(broken, text);
    let dir = std::env::temp_dir().join(format!("tm-rules-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let file = dir.join("broken.yaml");
    std::fs::write(&file, broken).unwrap();
    let (code, stdout, stderr) = check(&file);
    std::fs::remove_dir_all(&dir).unwrap();
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
