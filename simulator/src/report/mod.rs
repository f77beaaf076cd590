//! Presenting results: the comparison table (stdout), `summary.json` and `allocation.svg`.

pub mod plot;
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

/// Writes `summary.json` and `allocation.svg` into `dir`; returns their paths.
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
    Ok(vec![json, svg])
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
