//! Tidemark's alert rules without I/O (SPEC §6): the rules file ([`file`]), its
//! validation into [`Rule`]s with errors naming the rule and field ([`validate`]), and the
//! schedules that set a rule's threshold and severity at an instant ([`schedule`]), the
//! evaluation of a rule over one series's window into alert transitions ([`eval`]), the
//! annotation templates ([`template`]), the inhibit rules ([`inhibit`]), the series a partition's rules watch with their
//! windows ([`watch`]) and the breach that announces a transition ([`breach`]), and unit
//! tests of rules over samples at given instants ([`rules_test`]). Publishing breaches and
//! delivering alerts are not here.

pub mod breach;
pub mod eval;
pub mod file;
pub mod inhibit;
pub mod labels;
pub mod rule;
pub mod rules_test;
pub mod schedule;
pub mod silence;
pub mod template;
pub mod validate;
pub mod watch;

pub use inhibit::InhibitRule;
pub use rule::{Effect, Rule, Schedule};
pub use schedule::InForce;
pub use validate::Error;

/// What a valid rules file holds that this crate interprets.
#[derive(Debug, Clone, Default)]
pub struct RulesFile {
    pub rules: Vec<Rule>,
    /// The file's explicit inhibit rules; [`inhibit::BUILT_IN`] apply besides them.
    pub inhibit: Vec<InhibitRule>,
}

/// Reads and validates a rules file: its rules and inhibit rules, or every error found,
/// in file order.
pub fn parse_file(text: &str) -> Result<RulesFile, Vec<Error>> {
    let mut errors = Vec::new();
    let raw = file::read(text).map_err(|e| vec![e])?;
    let rules = readable(raw.rules, &mut errors);
    let rules = validate::rules(rules, &mut errors);
    let inhibit = readable(raw.inhibit, &mut errors);
    let inhibit = validate::inhibit(inhibit, &mut errors);
    if errors.is_empty() {
        Ok(RulesFile { rules, inhibit })
    } else {
        Err(errors)
    }
}

/// The entries serde could read, after recording why the others could not.
fn readable<T>(entries: Vec<Result<T, Error>>, errors: &mut Vec<Error>) -> Vec<T> {
    entries
        .into_iter()
        .filter_map(|entry| entry.map_err(|e| errors.push(e)).ok())
        .collect()
}

/// Reads and validates a rules file: every rule, or every error found, in file order.
pub fn parse(text: &str) -> Result<Vec<Rule>, Vec<Error>> {
    parse_file(text).map(|file| file.rules)
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
