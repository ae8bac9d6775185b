//! The results table and its JSON form.

use std::fmt::Write as _;

use crate::median;

/// One contender's samples in one scenario.
#[derive(Debug, Clone)]
pub(crate) struct Row {
    scenario: &'static str,
    contender: &'static str,
    unit: &'static str,
    higher_is_better: bool,
    samples: Vec<f64>,
}

impl Row {
    pub(crate) fn new(
        scenario: &'static str,
        contender: &'static str,
        unit: &'static str,
        higher_is_better: bool,
    ) -> Self {
        Self {
            scenario,
            contender,
            unit,
            higher_is_better,
            samples: Vec::new(),
        }
    }

    pub(crate) fn push(&mut self, sample: f64) {
        self.samples.push(sample);
    }

    fn median(&self) -> f64 {
        median(self.samples.clone())
    }

    fn min(&self) -> f64 {
        self.samples.iter().copied().fold(f64::INFINITY, f64::min)
    }

    fn max(&self) -> f64 {
        self.samples
            .iter()
            .copied()
            .fold(f64::NEG_INFINITY, f64::max)
    }
}

/// Every scenario's rows; the first row of a scenario is pos-p2p, the
/// others its baselines.
#[derive(Debug)]
pub(crate) struct Report {
    smoke: bool,
    scenarios: Vec<Vec<Row>>,
}

impl Report {
    pub(crate) fn new(smoke: bool) -> Self {
        Self {
            smoke,
            scenarios: Vec::new(),
        }
    }

    pub(crate) fn add(&mut self, rows: impl IntoIterator<Item = Row>) {
        // Group rows by scenario, keeping their order.
        let mut groups: Vec<Vec<Row>> = Vec::new();
        for row in rows {
            match groups.iter_mut().find(|g| g[0].scenario == row.scenario) {
                Some(group) => group.push(row),
                None => groups.push(vec![row]),
            }
        }
        self.scenarios.extend(groups);
    }

    pub(crate) fn print(&self) {
        if self.smoke {
            println!("smoke run: every scenario moved the right bytes; the numbers mean nothing");
        }
        println!(
            "{:<42} {:<30} {:>12} {:>23} {:>9}",
            "scenario", "contender", "median", "min–max", "pos/this"
        );
        for group in &self.scenarios {
            let pos = group[0].median();
            for row in group {
                let ratio = if std::ptr::eq(row, &group[0]) {
                    "—".to_owned()
                } else {
                    format!("{:.2}×", pos / row.median())
                };
                println!(
                    "{:<42} {:<30} {:>12} {:>23} {:>9}",
                    row.scenario,
                    row.contender,
                    format!("{:.1} {}", row.median(), row.unit),
                    format!("{:.1}–{:.1}", row.min(), row.max()),
                    ratio
                );
            }
        }
        println!(
            "ratios are pos-p2p's median / the contender's; higher is better for MB/s, req/s and \
             handshakes/s, lower for µs, KiB and CPU"
        );
    }

    pub(crate) fn json(&self) -> String {
        let mut out = String::from("{\n  \"smoke\": ");
        let _ = write!(out, "{},\n  \"results\": [\n", self.smoke);
        let mut first = true;
        for group in &self.scenarios {
            let pos = group[0].median();
            for row in group {
                if !first {
                    out.push_str(",\n");
                }
                first = false;
                let samples: Vec<String> = row.samples.iter().map(|s| format!("{s:.3}")).collect();
                let _ = write!(
                    out,
                    "    {{\"scenario\": {:?}, \"contender\": {:?}, \"unit\": {:?}, \
                     \"higher_is_better\": {}, \"median\": {:.3}, \"min\": {:.3}, \"max\": {:.3}, \
                     \"pos_over_this\": {:.4}, \"samples\": [{}]}}",
                    row.scenario,
                    row.contender,
                    row.unit,
                    row.higher_is_better,
                    row.median(),
                    row.min(),
                    row.max(),
                    pos / row.median(),
                    samples.join(", ")
                );
            }
        }
        out.push_str("\n  ]\n}\n");
        out
    }
}
