//! `tidemark rules check FILE`: validates an alert rules file (`tidemark_rules`) and, for
//! a valid one, shows what each rule holds now and when that next changes. It reads the
//! file and connects to nothing: no database, broker or Redis.

use std::path::Path;

use chrono::{DateTime, Utc};
use tidemark_model::time::format_instant;
use tidemark_rules::{schedule::LOOKAHEAD, Rule};

/// Prints each rule of a valid file; for an invalid one prints every error and fails.
pub fn check(path: &Path) -> anyhow::Result<()> {
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
            "{} {} {} ({}) by {}",
            rule.stat.as_str(),
            rule.op.as_str(),
            in_force.threshold,
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
        "{}: {} {} {} ({}); now {current}; next change {next}",
        rule.name,
        rule.stat.as_str(),
        rule.op.as_str(),
        rule.threshold,
        rule.severity.as_str(),
    )
}
