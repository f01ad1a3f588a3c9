//! Tidemark's alert rules without I/O (SPEC §6): the rules file ([`file`]), its
//! validation into [`Rule`]s with errors naming the rule and field ([`validate`]), and the
//! schedules that set a rule's threshold and severity at an instant ([`schedule`]), the
//! evaluation of a rule over one series's window into alert transitions ([`eval`]), and
//! the annotation templates ([`template`]). Delivering alerts is not here.

pub mod eval;
pub mod file;
pub mod rule;
pub mod schedule;
pub mod template;
pub mod validate;

pub use rule::{Effect, Rule, Schedule};
pub use schedule::InForce;
pub use validate::Error;

/// Reads and validates a rules file: every rule, or every error found, in file order.
pub fn parse(text: &str) -> Result<Vec<Rule>, Vec<Error>> {
    let mut errors = Vec::new();
    let raw = file::read(text).map_err(|e| vec![e])?;
    let readable = raw
        .into_iter()
        .filter_map(|rule| rule.map_err(|e| errors.push(e)).ok())
        .collect();
    let rules = validate::rules(readable, &mut errors);
    if errors.is_empty() {
        Ok(rules)
    } else {
        Err(errors)
    }
}

#[cfg(test)]
mod test_support {
    /// A valid rule that tests extend or change, one YAML line at a time.
    pub const RULE: &str = "name: api-latency
service: api
metric: http.latency_ms
stat: p95
window: 5m
op: \">\"
threshold: 500
severity: warning";

    /// A rules file of the given rules, each a YAML mapping.
    pub fn file(rules: &[&str]) -> String {
        let mut text = String::from("rules:\n");
        for rule in rules {
            for (n, line) in rule.lines().enumerate() {
                text.push_str(if n == 0 { "  - " } else { "    " });
                text.push_str(line);
                text.push('\n');
            }
        }
        text.push_str("receivers: []\nroutes: []\n");
        text
    }

    /// The base rule with `extra` YAML lines added.
    pub fn rule(extra: &str) -> crate::Rule {
        let text = file(&[&format!("{RULE}\n{extra}")]);
        let mut rules = crate::parse(&text).unwrap_or_else(|e| panic!("{e:?}\n{text}"));
        rules.remove(0)
    }

    /// The errors of a file that must not parse, as printed.
    pub fn errors(text: &str) -> Vec<String> {
        match crate::parse(text) {
            Ok(_) => panic!("parsed:\n{text}"),
            Err(errors) => errors.iter().map(ToString::to_string).collect(),
        }
    }
}
