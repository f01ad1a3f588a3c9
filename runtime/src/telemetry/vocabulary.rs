//! The vocabulary Tidemark's metrics are defined in (the model is vector's
//! `src/internal_events/`). Each metric is one constant — [`Counter`], [`Gauge`] or
//! [`Histogram`], with its name, label names, help text and unit — in the `telemetry`
//! module of the crate that emits it, declared inside [`define_metrics!`](crate::define_metrics),
//! which also lists them as that module's `METRICS`. Call sites emit through the constant
//! (`SAMPLES_ACCEPTED.increment(n)`, `LEASE_CHANGES.with(["lost"]).increment(1)`), never
//! through a name literal, and the number of label values is checked when compiling.
//! The binary describes every listed metric to the recorder, so `/metrics` carries their
//! `# HELP` lines, and the tests check the README and the Grafana dashboard against the
//! lists.
//!
//! The log events operators alert on sit next to the metric they pair with, as a function
//! of that `telemetry` module that logs and counts in one place.

use metrics::{KeyName, Label, SharedString, Unit};

/// How a metric's values behave, as Prometheus types them.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Kind {
    Counter,
    Gauge,
    /// Exported as a Prometheus histogram when the recorder has buckets for it (every
    /// `_seconds` metric), as a summary otherwise.
    Histogram,
}

/// What the vocabulary says of one metric, whatever its kind.
#[derive(Debug, Clone, Copy)]
pub struct Metric {
    pub name: &'static str,
    pub kind: Kind,
    pub unit: Option<Unit>,
    pub help: &'static str,
    /// Label names, in the order their values are given.
    pub labels: &'static [&'static str],
}

impl Metric {
    /// Describes the metric to the process's recorder (its `# HELP` line).
    pub fn describe(&self) {
        let (name, unit, help) = (KeyName::from_const_str(self.name), self.unit, self.help);
        metrics::with_recorder(|recorder| match self.kind {
            Kind::Counter => recorder.describe_counter(name, unit, help.into()),
            Kind::Gauge => recorder.describe_gauge(name, unit, help.into()),
            Kind::Histogram => recorder.describe_histogram(name, unit, help.into()),
        });
    }

    /// The labels of one series: each label name with its value.
    fn labelled<V: Into<SharedString>, const N: usize>(&self, values: [V; N]) -> Vec<Label> {
        self.labels
            .iter()
            .zip(values)
            .map(|(name, value)| Label::new(*name, value))
            .collect()
    }
}

/// Defines one kind of metric: a constant type with `N` labels, whose series are `$handle`s
/// registered by `metrics::$register!`; without labels, `$op` emits on the only series.
macro_rules! kind {
    ($(#[$doc:meta])* $kind:ident, $register:ident -> $handle:ty, $op:ident($value:ty)) => {
        $(#[$doc])*
        #[derive(Debug, Clone, Copy)]
        pub struct $kind<const N: usize = 0>(Metric);

        impl<const N: usize> $kind<N> {
            /// The metric `name`, with these label names and help text.
            pub const fn new(
                name: &'static str,
                labels: &'static [&'static str; N],
                help: &'static str,
            ) -> Self {
                Self(Metric { name, kind: Kind::$kind, unit: None, help, labels })
            }

            /// The same metric, its values in `unit`.
            pub const fn unit(mut self, unit: Unit) -> Self {
                self.0.unit = Some(unit);
                self
            }

            /// What the vocabulary lists of it.
            pub const fn metric(&self) -> Metric {
                self.0
            }

            /// The series with these label values, given in the order of the label names.
            pub fn with<V: Into<SharedString>>(&self, values: [V; N]) -> $handle {
                metrics::$register!(self.0.name, self.0.labelled(values))
            }
        }

        impl $kind {
            /// Emits on the metric's only series.
            pub fn $op(&self, value: $value) {
                self.with::<&'static str>([]).$op(value);
            }
        }
    };
}

kind!(
    /// A count that only goes up (its name ends in `_total`).
    Counter, counter -> metrics::Counter, increment(u64)
);
kind!(
    /// A value that goes up and down.
    Gauge, gauge -> metrics::Gauge, set(f64)
);
kind!(
    /// A distribution of observed values.
    Histogram, histogram -> metrics::Histogram, record(f64)
);

/// Defines a crate's metrics as `pub const` items of the types above (the help text is
/// their documentation) and lists them all as `pub const METRICS: &[Metric]`, so none is
/// left out of the list.
#[macro_export]
macro_rules! define_metrics {
    ($(pub const $id:ident: $ty:ty = $definition:expr;)*) => {
        $(pub const $id: $ty = $definition;)*

        /// Every metric this module defines.
        pub const METRICS: &[$crate::telemetry::vocabulary::Metric] = &[$($id.metric()),*];
    };
}

#[cfg(test)]
mod tests {
    use super::*;

    const PLAIN: Counter = Counter::new("tidemark_test_plain_total", &[], "A plain counter.");
    const TIMED: Histogram<2> = Histogram::new(
        "tidemark_test_duration_seconds",
        &["route", "method"],
        "Time taken.",
    )
    .unit(Unit::Seconds);

    #[test]
    fn a_definition_lists_what_it_was_given() {
        let timed = TIMED.metric();
        assert_eq!(timed.name, "tidemark_test_duration_seconds");
        assert_eq!(timed.kind, Kind::Histogram);
        assert_eq!(timed.unit, Some(Unit::Seconds));
        assert_eq!(timed.labels, ["route", "method"]);
        assert_eq!(PLAIN.metric().unit, None);
        assert!(PLAIN.metric().labels.is_empty());
    }

    #[test]
    fn label_values_pair_with_label_names_in_order() {
        let labels = TIMED
            .0
            .labelled(["/v1/samples".to_owned(), "POST".to_owned()]);
        let pairs: Vec<(&str, &str)> = labels.iter().map(|l| (l.key(), l.value())).collect();
        assert_eq!(pairs, [("route", "/v1/samples"), ("method", "POST")]);
    }
}
