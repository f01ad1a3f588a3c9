//! `tidemark rules check FILE`: validates an alert rules file (`tidemark_rules`) and, for
//! a valid one, shows what each rule holds now and when that next changes.
//! `tidemark rules test FILE...`: runs the unit tests of rules that each test file holds
//! (`tidemark_rules::rules_test`) over the rules files it names. Both read files and
//! connect to nothing: no configuration, database, broker or Redis.

use std::path::{Path, PathBuf};
use std::process::ExitCode;

use chrono::{DateTime, Utc};
use tidemark_model::time::{format_duration, format_instant};
use tidemark_rules::rules_test::{self, Outcome, TestFile};
use tidemark_rules::{schedule::LOOKAHEAD, Rule};

use crate::RulesCommand;

/// Runs a `tidemark rules` command to its exit code.
pub fn run(command: RulesCommand) -> ExitCode {
    match command {
        RulesCommand::Check { file } => match check(&file) {
            Ok(()) => ExitCode::SUCCESS,
            Err(e) => {
                eprintln!("error: {e:#}");
                ExitCode::FAILURE
            }
        },
        RulesCommand::Test { files } => test(&files),
    }
}

/// Prints each rule of a valid file; for an invalid one prints every error and fails.
fn check(path: &Path) -> anyhow::Result<()> {
    let text = std::fs::read_to_string(path)
        .map_err(|e| anyhow::anyhow!("cannot read {}: {e}", path.display()))?;
    match tidemark_rules::parse(&text) {
        Ok(rules) => {
            let now = Utc::now();
            for rule in &rules {
                println!("{}", describe(rule, now));
            }
            Ok(())
        }
        Err(errors) => {
            for e in &errors {
                eprintln!("{e}");
            }
            anyhow::bail!("{}: {} error(s)", path.display(), errors.len())
        }
    }
}

/// One line: the rule's own condition, what is in force at `now`, and the next change.
fn describe(rule: &Rule, now: DateTime<Utc>) -> String {
    let in_force = rule.in_force(now);
    let label = |i: usize| rule.schedules[i].label(i);
    let current = match in_force.schedule {
        Some(i) if in_force.muted => format!("muted by {}", label(i)),
        Some(i) => format!(
            "{} ({}) by {}",
            condition(rule, in_force.threshold),
            in_force.severity.as_str(),
            label(i)
        ),
        None => "its own values".to_owned(),
    };
    let next = rule.next_change(now).map_or_else(
        || format!("none within {} days", LOOKAHEAD.num_days()),
        |t| format_instant(t.timestamp_millis()),
    );
    format!(
        "{}: {} ({}); now {current}; next change {next}",
        rule.name,
        condition(rule, rule.threshold),
        rule.severity.as_str(),
    )
}

/// What the rule compares with `threshold`, e.g. `p95 > 800`; for an absent rule the
/// silence it fires on, e.g. `absent 2m` (no sample for 2 minutes).
fn condition(rule: &Rule, threshold: f64) -> String {
    match rule.absent {
        Some(absent) => format!("absent {}", format_duration(absent)),
        None => format!("{} {} {threshold}", rule.stat.as_str(), rule.op.as_str()),
    }
}

/// How a test file went, worst last: its exit code.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
enum Verdict {
    Passed = 0,
    Failed = 1,
    Invalid = 2,
}

/// Runs the tests of every file: per test `ok` or what differed on stdout, the errors of
/// a file that cannot be read or is invalid on stderr (each naming the file), and a count.
fn test(files: &[PathBuf]) -> ExitCode {
    let mut worst = Verdict::Passed;
    let (mut passed, mut failed, mut invalid) = (0, 0, 0);
    for path in files {
        let outcomes = load(path).and_then(|(file, rules)| {
            rules_test::run(&file, &rules)
                .map_err(|errors| errors.iter().map(|e| at(path, e)).collect())
        });
        let verdict = match outcomes {
            Ok(outcomes) => {
                for outcome in &outcomes {
                    println!("{}", report(path, outcome));
                }
                let failing = outcomes.iter().filter(|o| !o.passed()).count();
                passed += outcomes.len() - failing;
                failed += failing;
                if failing == 0 {
                    Verdict::Passed
                } else {
                    Verdict::Failed
                }
            }
            Err(errors) => {
                for e in &errors {
                    eprintln!("{e}");
                }
                eprintln!("error: {}: {} error(s)", path.display(), errors.len());
                invalid += 1;
                Verdict::Invalid
            }
        };
        worst = worst.max(verdict);
    }
    let invalid = match invalid {
        0 => String::new(),
        n => format!(", {n} file(s) invalid"),
    };
    println!("{passed} passed, {failed} failed{invalid}");
    ExitCode::from(worst as u8)
}

/// A test file and the rules of the rules files it names (relative to it), or every
/// error found, each naming its file.
fn load(path: &Path) -> Result<(TestFile, Vec<Rule>), Vec<String>> {
    let text = std::fs::read_to_string(path)
        .map_err(|e| vec![format!("{}: cannot read: {e}", path.display())])?;
    let file = rules_test::parse(&text)
        .map_err(|errors| errors.iter().map(|e| at(path, e)).collect::<Vec<_>>())?;
    let dir = path.parent().unwrap_or(Path::new(""));
    let mut rules = Vec::new();
    let mut errors = Vec::new();
    for (i, name) in file.rule_files.iter().enumerate() {
        let rules_path = dir.join(name);
        match std::fs::read_to_string(&rules_path) {
            Err(e) => errors.push(format!(
                "{}: rule_files[{i}]: cannot read {}: {e}",
                path.display(),
                rules_path.display()
            )),
            Ok(text) => match tidemark_rules::parse(&text) {
                Ok(found) => rules.extend(found),
                Err(found) => errors.extend(found.iter().map(|e| at(&rules_path, e))),
            },
        }
    }
    if errors.is_empty() {
        Ok((file, rules))
    } else {
        Err(errors)
    }
}

/// An error of the file at `path`, as printed.
fn at(path: &Path, error: &impl std::fmt::Display) -> String {
    format!("{}: {error}", path.display())
}

/// One test's line, `ok` or `FAILED` with each expectation that did not hold below it.
fn report(path: &Path, outcome: &Outcome) -> String {
    let mut text = format!("{}: {}: ", path.display(), outcome.test);
    if outcome.passed() {
        text.push_str("ok");
        return text;
    }
    text.push_str("FAILED");
    for failure in &outcome.failures {
        for line in failure.to_string().lines() {
            text.push_str("\n  ");
            text.push_str(line);
        }
    }
    text
}
