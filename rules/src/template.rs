//! Annotation templates (`summary`, `runbook_url`): text with placeholders filled in
//! per transition, e.g. `p95 of {{ service }} is {{ value }} ms (threshold {{ threshold }})`.
//!
//! Placeholders, with or without spaces inside the braces: `{{ value }}` (the statistic;
//! empty when the window had none), `{{ threshold }}` (the one in force), `{{ service }}`
//! (of the series, also under a `service: *` rule), `{{ metric }}`, `{{ severity }}` (in
//! force), `{{ schedule }}` (the schedule in force, by name or place such as
//! `schedules[1]`, or `default`) and `{{ tags.KEY }}` (the series's tag, empty when it
//! has none). Numbers print with at most six significant digits and no trailing zeros
//! (`512.5`, `0.05`, `1200`). `{{` always opens a placeholder; an unknown placeholder or
//! an unclosed `{{` is a validation error of the rules file.

use std::collections::BTreeMap;

use tidemark_model::sample::check_tag;

use crate::rule::{Rule, Severity};
use crate::schedule::InForce;

/// What the placeholders of one transition stand for.
#[derive(Debug, Clone, PartialEq)]
pub struct Context<'a> {
    pub value: Option<f64>,
    pub threshold: f64,
    pub service: &'a str,
    pub metric: &'a str,
    pub severity: Severity,
    /// The schedule in force by [`schedule_name`]; `None` for the rule's own values.
    pub schedule: Option<String>,
    pub tags: &'a BTreeMap<String, String>,
}

impl<'a> Context<'a> {
    /// The context of `rule` over the series `(service, rule.metric, tags)` with what is
    /// in force at an instant and the statistic then.
    pub fn new(
        rule: &'a Rule,
        in_force: &InForce,
        value: Option<f64>,
        service: &'a str,
        tags: &'a BTreeMap<String, String>,
    ) -> Self {
        Self {
            value,
            threshold: in_force.threshold,
            service,
            metric: &rule.metric,
            severity: in_force.severity,
            schedule: schedule_name(rule, in_force),
            tags,
        }
    }
}

/// The schedule in force as breaches and templates name it: its `name`, or its place
/// (`schedules[1]`); `None` when the rule's own values hold.
pub fn schedule_name(rule: &Rule, in_force: &InForce) -> Option<String> {
    let index = in_force.schedule?;
    let schedule = rule.schedules.get(index)?;
    Some(
        schedule
            .name
            .clone()
            .unwrap_or_else(|| format!("schedules[{index}]")),
    )
}

/// The template with its placeholders filled in; a template that does not pass [`check`]
/// (which validation refuses) comes back as written.
pub fn render(template: &str, ctx: &Context<'_>) -> String {
    let Ok(parts) = parse(template) else {
        return template.to_owned();
    };
    let mut out = String::with_capacity(template.len());
    for part in parts {
        match part {
            Part::Text(text) => out.push_str(text),
            Part::Field(Field::Value) => out.push_str(&ctx.value.map(number).unwrap_or_default()),
            Part::Field(Field::Threshold) => out.push_str(&number(ctx.threshold)),
            Part::Field(Field::Service) => out.push_str(ctx.service),
            Part::Field(Field::Metric) => out.push_str(ctx.metric),
            Part::Field(Field::Severity) => out.push_str(ctx.severity.as_str()),
            Part::Field(Field::Schedule) => {
                out.push_str(ctx.schedule.as_deref().unwrap_or("default"))
            }
            Part::Field(Field::Tag(key)) => {
                out.push_str(ctx.tags.get(key).map_or("", String::as_str))
            }
        }
    }
    out
}

/// Whether `template` is one [`render`] fills in; the error says what is wrong.
pub fn check(template: &str) -> Result<(), String> {
    parse(template).map(drop)
}

enum Part<'t> {
    Text(&'t str),
    Field(Field<'t>),
}

enum Field<'t> {
    Value,
    Threshold,
    Service,
    Metric,
    Severity,
    Schedule,
    Tag(&'t str),
}

fn parse(template: &str) -> Result<Vec<Part<'_>>, String> {
    let mut parts = Vec::new();
    let mut rest = template;
    while let Some(open) = rest.find("{{") {
        parts.push(Part::Text(&rest[..open]));
        let inside = &rest[open + 2..];
        let Some(close) = inside.find("}}") else {
            let at = template.len() - rest.len() + open;
            return Err(format!(
                "unclosed {{{{ at character {}: close it with }}}}",
                template[..at].chars().count() + 1
            ));
        };
        parts.push(Part::Field(field(&inside[..close])?));
        rest = &inside[close + 2..];
    }
    parts.push(Part::Text(rest));
    Ok(parts)
}

/// The placeholder written `{{raw}}`.
fn field(raw: &str) -> Result<Field<'_>, String> {
    let name = raw.trim();
    Ok(match name {
        "value" => Field::Value,
        "threshold" => Field::Threshold,
        "service" => Field::Service,
        "metric" => Field::Metric,
        "severity" => Field::Severity,
        "schedule" => Field::Schedule,
        _ => match name.strip_prefix("tags.") {
            Some(key) => {
                check_tag(key, "").map_err(|e| format!("{{{{{raw}}}}}: {}", e.message))?;
                Field::Tag(key)
            }
            None => return Err(format!(
                "unknown placeholder {{{{{raw}}}}}: use value, threshold, service, metric, severity, schedule or tags.KEY"
            )),
        },
    })
}

/// `value` with at most six significant digits and no trailing zeros.
fn number(value: f64) -> String {
    const DIGITS: i32 = 6;
    if value == 0.0 || !value.is_finite() {
        return (value + 0.0).to_string();
    }
    let decimals = (DIGITS - 1 - value.abs().log10().floor() as i32).clamp(0, 15);
    let scale = 10f64.powi(decimals);
    // `+ 0.0` turns a rounded -0 into 0.
    ((value * scale).round() / scale + 0.0).to_string()
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::test_support::{errors, file, rule, RULE};

    fn tags(pairs: &[(&str, &str)]) -> BTreeMap<String, String> {
        pairs
            .iter()
            .map(|(k, v)| (k.to_string(), v.to_string()))
            .collect()
    }

    #[test]
    fn placeholders_are_filled_in_with_or_without_spaces() {
        let rule = rule(
            "schedules:\n  - name: weekend\n    days: [sat]\n    threshold: 300\n    severity: critical",
        );
        let series_tags = tags(&[("region", "eu")]);
        let saturday = rule.in_force("2026-06-06T12:00:00Z".parse().unwrap());
        let ctx = Context::new(&rule, &saturday, Some(512.5), "checkout", &series_tags);
        assert_eq!(
            render(
                "{{ metric }} p95 of {{service}} in {{ tags.region }}{{tags.zone}} is {{  value  }} > {{ threshold }} ({{ severity }}, {{ schedule }})",
                &ctx
            ),
            "http.latency_ms p95 of checkout in eu is 512.5 > 300 (critical, weekend)"
        );
        let monday = rule.in_force("2026-06-08T12:00:00Z".parse().unwrap());
        let ctx = Context::new(&rule, &monday, None, "checkout", &series_tags);
        assert_eq!(
            render(
                "[{{ value }}] {{ severity }} {{ schedule }} {{ threshold }}",
                &ctx
            ),
            "[] warning default 500"
        );
        assert_eq!(
            render("no placeholders }} here", &ctx),
            "no placeholders }} here"
        );
    }

    #[test]
    fn an_unnamed_schedule_is_named_by_its_place() {
        let rule = rule("schedules:\n  - days: [sat]\n    threshold: 300");
        let saturday = rule.in_force("2026-06-06T12:00:00Z".parse().unwrap());
        assert_eq!(
            schedule_name(&rule, &saturday).as_deref(),
            Some("schedules[0]")
        );
    }

    #[test]
    fn numbers_render_compactly() {
        let cases = [
            (512.5, "512.5"),
            (500.0, "500"),
            (0.05, "0.05"),
            (0.1 + 0.2, "0.3"),
            (512.345_678_9, "512.346"),
            (1_234_567.8, "1234568"),
            (-0.000_000_1, "-0.0000001"),
            (-0.0, "0"),
            (1e-20, "0"),
            (1.5e20, "150000000000000000000"),
        ];
        for (value, text) in cases {
            assert_eq!(number(value), text, "{value}");
        }
    }

    #[test]
    fn unknown_placeholders_and_unclosed_braces_name_the_rule_and_field() {
        let found = errors(&file(&[&format!(
            "{RULE}\nannotations:\n  summary: \"{{{{ value }}}} then {{{{ foo }}}}\"\n  runbook_url: \"https://runbooks/{{{{ service\""
        )]));
        assert_eq!(
            found,
            [
                r#"rules[0] "api-latency": annotations.summary: unknown placeholder {{ foo }}: use value, threshold, service, metric, severity, schedule or tags.KEY"#,
                r#"rules[0] "api-latency": annotations.runbook_url: unclosed {{ at character 18: close it with }}"#,
            ]
        );
        assert_eq!(
            check("{{ tags.a b }}"),
            Err("{{ tags.a b }}: tag keys must be 1-64 characters of [A-Za-z0-9._-]".to_owned())
        );
        assert_eq!(
            check("{{}}").unwrap_err(),
            "unknown placeholder {{}}: use value, threshold, service, metric, severity, schedule or tags.KEY"
        );
        assert_eq!(check("{{ tags.region }} {{value}}"), Ok(()));
    }
}
