//! Presenting results: the comparison table (stdout), `summary.json` and `allocation.svg`.

pub mod plot;
pub mod queues;
pub mod table;

use crate::run::Results;
use std::path::{Path, PathBuf};

#[derive(Debug, thiserror::Error)]
pub enum ReportError {
    #[error("writing {path}: {source}")]
    Write {
        path: String,
        source: std::io::Error,
    },
    #[error("serialising results: {0}")]
    Json(#[from] serde_json::Error),
}

/// Writes `summary.json`, `allocation.svg` and `jobs.csv` into `dir`; returns their paths.
pub fn write(dir: &Path, results: &Results) -> Result<Vec<PathBuf>, ReportError> {
    let io = |path: &Path| {
        let path = path.display().to_string();
        move |source| ReportError::Write { path, source }
    };
    std::fs::create_dir_all(dir).map_err(io(dir))?;
    let json = dir.join("summary.json");
    std::fs::write(&json, serde_json::to_string_pretty(results)? + "\n").map_err(io(&json))?;
    let svg = dir.join("allocation.svg");
    std::fs::write(&svg, plot::svg(results)).map_err(io(&svg))?;
    let csv = dir.join("jobs.csv");
    std::fs::write(&csv, jobs_csv(results)).map_err(io(&csv))?;
    Ok(vec![json, svg, csv])
}

/// One row per job: its facts, then start, end and evictions under each policy (empty when
/// it never started or finished).
pub fn jobs_csv(results: &Results) -> String {
    use std::fmt::Write;
    let mut out = String::from("job,arrival,gpus,duration,priority,queue");
    for (policy, _) in &results.outcomes {
        let _ = write!(out, ",{policy}_start,{policy}_end,{policy}_evictions");
    }
    out.push('\n');
    let opt = |v: Option<u64>| v.map(|x| x.to_string()).unwrap_or_default();
    for j in &results.jobs {
        let _ = write!(
            out,
            "{},{},{},{},{},{}",
            j.id, j.arrival, j.gpus, j.duration, j.priority, j.queue
        );
        for (_, outcomes) in &results.outcomes {
            if let Some(o) = outcomes.get(j.id) {
                let _ = write!(
                    out,
                    ",{},{},{}",
                    opt(o.first_start),
                    opt(o.end),
                    o.evictions
                );
            }
        }
        out.push('\n');
    }
    out
}

/// `3.2h`, `45m`, `1.5d`, `30s`.
pub fn duration(secs: f64) -> String {
    if secs >= 2.0 * 86400.0 {
        format!("{:.1}d", secs / 86400.0)
    } else if secs >= 2.0 * 3600.0 {
        format!("{:.1}h", secs / 3600.0)
    } else if secs >= 120.0 {
        format!("{:.0}m", secs / 60.0)
    } else {
        format!("{secs:.0}s")
    }
}
