//! The JSON a scenario writes, the SVG beside it, and copies for the docs.

use std::path::{Path, PathBuf};

use anyhow::{Context, Result};
use serde::Serialize;
use serde_json::Value;

use crate::competitors::{Competitor, SCHEDULER_PLUGINS_VERSION, repo_root};
use crate::measure::median;

#[derive(Debug, Serialize)]
pub struct Skipped {
    pub scheduler: Competitor,
    pub reason: String,
}

#[derive(Debug, Serialize)]
pub struct Report {
    pub scenario: String,
    pub command: String,
    pub machine: Value,
    pub versions: Value,
    pub schedulers: Vec<Value>,
    pub params: Value,
    pub skipped: Vec<Skipped>,
    /// One entry per (scheduler, repetition, sub-case).
    pub runs: Vec<Value>,
    /// Medians over repetitions, with ratios against plain kube-scheduler where meaningful.
    pub summary: Vec<Value>,
}

impl Report {
    pub fn new(scenario: &str, schedulers: &[Competitor], params: Value) -> Report {
        let cpus = std::thread::available_parallelism().map_or(0, |n| n.get());
        Report {
            scenario: scenario.into(),
            command: std::env::args().collect::<Vec<_>>().join(" "),
            machine: serde_json::json!({"cpus": cpus, "os": std::env::consts::OS}),
            versions: serde_json::json!({
                "kubernetes": "v1.37.2",
                "kwok": "v0.8.0",
                "scheduler_plugins": SCHEDULER_PLUGINS_VERSION,
                "muster": env!("CARGO_PKG_VERSION"),
            }),
            schedulers: schedulers
                .iter()
                .map(|c| serde_json::json!({"name": c.name(), "what": c.describe()}))
                .collect(),
            params,
            skipped: Vec::new(),
            runs: Vec::new(),
            summary: Vec::new(),
        }
    }

    /// Writes `<out>/<scenario>.json`.
    pub fn write(&self, out: &Path) -> Result<PathBuf> {
        std::fs::create_dir_all(out).with_context(|| format!("creating {}", out.display()))?;
        let path = out.join(format!("{}.json", self.scenario));
        let text = serde_json::to_string_pretty(self).context("serialising the report")?;
        std::fs::write(&path, text).with_context(|| format!("writing {}", path.display()))?;
        Ok(path)
    }
}

/// Writes an SVG into `out` and, with `publish`, copies it to docs/img/bench-<file>.
pub fn write_svg(out: &Path, file: &str, svg: &str, publish: bool) -> Result<PathBuf> {
    std::fs::create_dir_all(out).with_context(|| format!("creating {}", out.display()))?;
    let path = out.join(file);
    std::fs::write(&path, svg).with_context(|| format!("writing {}", path.display()))?;
    if publish {
        let img = repo_root().join("docs/img");
        std::fs::create_dir_all(&img).with_context(|| format!("creating {}", img.display()))?;
        let dest = img.join(format!("bench-{file}"));
        std::fs::copy(&path, &dest)
            .with_context(|| format!("copying {} to {}", path.display(), dest.display()))?;
        eprintln!("published {}", dest.display());
    }
    Ok(path)
}

/// Median of field `key` over the runs matching `filter`.
pub fn median_of(runs: &[Value], filter: impl Fn(&Value) -> bool, key: &str) -> Option<f64> {
    let v: Vec<f64> = runs
        .iter()
        .filter(|r| filter(r))
        .filter_map(|r| r.get(key).and_then(Value::as_f64))
        .collect();
    (!v.is_empty()).then(|| median(&v))
}

/// `x / plain`, rounded to 2 decimals, when both exist and plain is not 0.
pub fn ratio(x: Option<f64>, plain: Option<f64>) -> Value {
    match (x, plain) {
        (Some(x), Some(p)) if p.abs() > 1e-12 => {
            serde_json::json!(((x / p) * 100.0).round() / 100.0)
        }
        _ => Value::Null,
    }
}

/// Prints summary rows as a Markdown table (for docs/benchmarks.md).
pub fn print_table(summary: &[Value], columns: &[&str]) {
    println!("| {} |", columns.join(" | "));
    println!("|{}", " --- |".repeat(columns.len()));
    for row in summary {
        let cells: Vec<String> = columns
            .iter()
            .map(|c| match row.get(*c) {
                Some(Value::Number(n)) => {
                    let f = n.as_f64().unwrap_or(0.0);
                    if f.fract() == 0.0 || f.abs() >= 100.0 {
                        format!("{f:.0}")
                    } else {
                        format!("{f:.2}")
                    }
                }
                Some(Value::String(s)) => s.clone(),
                Some(Value::Bool(b)) => b.to_string(),
                Some(Value::Null) | None => "–".into(),
                Some(other) => other.to_string(),
            })
            .collect();
        println!("| {} |", cells.join(" | "));
    }
}
