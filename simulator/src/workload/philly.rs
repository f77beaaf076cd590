//! Reading Philly traces: `philly-jobs.csv` (timestamp,duration,num_gpus,gpu_time,cluster) and
//! the Pollux `philly-workload-*.csv` samples (name,time,application,num_replicas,batch_size).
//!
//! The workload samples carry no durations; those are drawn from the synthetic model for the
//! job's gang size (seeded), and the source line says so.

use super::{Job, Workload, synthetic};
use crate::rng::Rng;
use std::path::Path;

#[derive(Debug, thiserror::Error)]
pub enum TraceError {
    #[error("cannot read trace {path}: {source}")]
    Read {
        path: String,
        source: std::io::Error,
    },
    #[error("{path}:{line}: {message}")]
    BadRow {
        path: String,
        line: usize,
        message: String,
    },
    #[error("{path}: unknown header {header:?}; expected `{JOBS_HEADER}` or `{WORKLOAD_HEADER}`")]
    UnknownFormat { path: String, header: String },
    #[error(
        "bad window {0:?}: expected START..END or START.. with durations like 30d, 12h, 90m, 600s"
    )]
    BadWindow(String),
}

const JOBS_HEADER: &str = "timestamp,duration,num_gpus,gpu_time,cluster";
const WORKLOAD_HEADER: &str = "name,time,application,num_replicas,batch_size";

/// Which part of a trace to use.
#[derive(Clone, Debug, Default)]
pub struct TraceWindow {
    /// Seconds after the trace's first submission.
    pub start: u64,
    pub end: Option<u64>,
    /// At most this many jobs (the first ones from `start`).
    pub max_jobs: Option<usize>,
    /// Multiplies arrival times (below 1 compresses the trace and raises the load).
    pub time_scale: f64,
    pub skip_bad_rows: bool,
    /// Seed for durations of workload samples, which have none.
    pub seed: u64,
}

impl TraceWindow {
    /// Parses `START..END` / `START..` (durations with unit s, m, h or d; bare numbers are s).
    pub fn parse_range(text: &str) -> Result<(u64, Option<u64>), TraceError> {
        let bad = || TraceError::BadWindow(text.to_string());
        let (a, b) = text.split_once("..").ok_or_else(bad)?;
        let start = if a.trim().is_empty() {
            0
        } else {
            parse_duration(a).ok_or_else(bad)?
        };
        let end = if b.trim().is_empty() {
            None
        } else {
            Some(parse_duration(b).ok_or_else(bad)?)
        };
        if end.is_some_and(|e| e <= start) {
            return Err(bad());
        }
        Ok((start, end))
    }
}

pub fn parse_duration(s: &str) -> Option<u64> {
    let s = s.trim();
    let (num, mult) = match s.chars().last()? {
        's' => (&s[..s.len() - 1], 1.0),
        'm' => (&s[..s.len() - 1], 60.0),
        'h' => (&s[..s.len() - 1], 3600.0),
        'd' => (&s[..s.len() - 1], 86400.0),
        _ => (s, 1.0),
    };
    let v: f64 = num.trim().parse().ok()?;
    (v.is_finite() && v >= 0.0).then(|| (v * mult).round() as u64)
}

/// Seconds since 1970 of `YYYY-MM-DD HH:MM:SS` (UTC; the trace has no zone).
fn parse_timestamp(s: &str) -> Option<i64> {
    let (date, time) = s.trim().split_once(' ')?;
    let mut d = date.split('-').map(|x| x.parse::<i64>().ok());
    let (y, m, day) = (d.next()??, d.next()??, d.next()??);
    let mut t = time.split(':').map(|x| x.parse::<i64>().ok());
    let (hh, mm, ss) = (t.next()??, t.next()??, t.next()??);
    if !(1..=12).contains(&m) || !(1..=31).contains(&day) || hh > 23 || mm > 59 || ss > 60 {
        return None;
    }
    // Days from civil (Howard Hinnant's algorithm).
    let y = if m <= 2 { y - 1 } else { y };
    let era = y.div_euclid(400);
    let yoe = y - era * 400;
    let mp = (m + 9) % 12;
    let doy = (153 * mp + 2) / 5 + day - 1;
    let doe = yoe * 365 + yoe / 4 - yoe / 100 + doy;
    let days = era * 146_097 + doe - 719_468;
    Some(days * 86400 + hh * 3600 + mm * 60 + ss)
}

/// Raw rows before windowing: (submit second, duration, gpus, queue, line).
struct Row {
    submit: i64,
    duration: u64,
    gpus: u32,
    queue: String,
}

pub fn load(path: &Path, window: &TraceWindow) -> Result<Workload, TraceError> {
    let shown = path.display().to_string();
    let text = std::fs::read_to_string(path).map_err(|source| TraceError::Read {
        path: shown.clone(),
        source,
    })?;
    let (rows, skipped, format) = parse(&shown, &text, window)?;
    if skipped > 0 {
        tracing::warn!(path = %shown, skipped, "skipped bad trace rows");
    }
    Ok(select(rows, window, &shown, format, skipped))
}

/// Parses trace text; `path` only names it in errors.
pub fn parse_text(path: &str, text: &str, window: &TraceWindow) -> Result<Workload, TraceError> {
    let (rows, skipped, format) = parse(path, text, window)?;
    Ok(select(rows, window, path, format, skipped))
}

fn parse(
    path: &str,
    text: &str,
    window: &TraceWindow,
) -> Result<(Vec<Row>, usize, &'static str), TraceError> {
    let mut lines = text.lines().enumerate();
    let header = lines
        .next()
        .map(|(_, h)| h.trim().trim_start_matches('\u{feff}').to_string())
        .unwrap_or_default();
    let workload = match header.as_str() {
        JOBS_HEADER => false,
        WORKLOAD_HEADER => true,
        _ => {
            return Err(TraceError::UnknownFormat {
                path: path.to_string(),
                header,
            });
        }
    };
    let mut rng = Rng::new(window.seed ^ 0x6475_7261);
    let mut rows = Vec::new();
    let mut skipped = 0;
    for (i, line) in lines {
        if line.trim().is_empty() {
            continue;
        }
        let parsed = if workload {
            parse_workload_row(line, &mut rng)
        } else {
            parse_jobs_row(line)
        };
        match parsed {
            Ok(row) => rows.push(row),
            Err(message) if window.skip_bad_rows => {
                tracing::debug!(line = i + 1, %message, "skipping bad row");
                skipped += 1;
            }
            Err(message) => {
                return Err(TraceError::BadRow {
                    path: path.to_string(),
                    line: i + 1,
                    message: format!("{message} (use --skip-bad-rows to skip such rows)"),
                });
            }
        }
    }
    let format = if workload {
        "Pollux workload sample (durations drawn from the synthetic model)"
    } else {
        "Philly jobs"
    };
    Ok((rows, skipped, format))
}

fn fields(line: &str, want: usize) -> Result<Vec<&str>, String> {
    let f: Vec<&str> = line.split(',').map(str::trim).collect();
    if f.len() != want {
        return Err(format!(
            "expected {want} columns, found {}: {line:?}",
            f.len()
        ));
    }
    Ok(f)
}

fn parse_gpus(s: &str) -> Result<u32, String> {
    match s.parse::<u32>() {
        Ok(g) if g >= 1 => Ok(g),
        _ => Err(format!("num_gpus must be a whole number >= 1, got {s:?}")),
    }
}

fn parse_jobs_row(line: &str) -> Result<Row, String> {
    let f = fields(line, 5)?;
    let submit = parse_timestamp(f[0])
        .ok_or_else(|| format!("timestamp must be YYYY-MM-DD HH:MM:SS, got {:?}", f[0]))?;
    let duration: f64 = f[1]
        .parse()
        .ok()
        .filter(|d: &f64| d.is_finite() && *d >= 0.0)
        .ok_or_else(|| format!("duration must be seconds >= 0, got {:?}", f[1]))?;
    let gpus = parse_gpus(f[2])?;
    if f[4].is_empty() {
        return Err("cluster is empty".into());
    }
    Ok(Row {
        submit,
        duration: (duration.round() as u64).max(1),
        gpus,
        queue: format!("vc-{}", f[4]),
    })
}

fn parse_workload_row(line: &str, rng: &mut Rng) -> Result<Row, String> {
    let f = fields(line, 5)?;
    let submit = f[1]
        .parse::<i64>()
        .ok()
        .filter(|t| *t >= 0)
        .ok_or_else(|| format!("time must be whole seconds >= 0, got {:?}", f[1]))?;
    let gpus = parse_gpus(f[3])?;
    let duration = synthetic::duration_quantile(gpus, rng.unit())
        .round()
        .max(1.0) as u64;
    Ok(Row {
        submit,
        duration,
        gpus,
        queue: if f[2].is_empty() {
            "default".into()
        } else {
            f[2].to_string()
        },
    })
}

fn select(
    mut rows: Vec<Row>,
    window: &TraceWindow,
    path: &str,
    format: &str,
    skipped: usize,
) -> Workload {
    // The trace file is not in submission order.
    rows.sort_by_key(|r| r.submit);
    let first = rows.first().map_or(0, |r| r.submit);
    let scale = if window.time_scale > 0.0 {
        window.time_scale
    } else {
        1.0
    };
    let jobs: Vec<Job> = rows
        .into_iter()
        .filter(|r| {
            let off = (r.submit - first) as u64;
            off >= window.start && window.end.is_none_or(|e| off < e)
        })
        .take(window.max_jobs.unwrap_or(usize::MAX))
        .enumerate()
        .map(|(id, r)| Job {
            id,
            arrival: ((r.submit - first) as f64 * scale).round() as u64,
            duration: r.duration,
            gpus: r.gpus,
            queue: r.queue,
            priority: 0,
        })
        .collect();
    let mut w = Workload {
        source: format!(
            "{format} from {path}: window {}..{}, {} jobs, time scale {scale}{}",
            fmt_secs(window.start),
            window.end.map(fmt_secs).unwrap_or_default(),
            jobs.len(),
            if skipped > 0 {
                format!(", {skipped} bad rows skipped")
            } else {
                String::new()
            }
        ),
        jobs,
    };
    w.normalise();
    w
}

fn fmt_secs(s: u64) -> String {
    if s.is_multiple_of(86400) {
        format!("{}d", s / 86400)
    } else if s.is_multiple_of(3600) {
        format!("{}h", s / 3600)
    } else {
        format!("{s}s")
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn timestamps_and_durations_parse() {
        assert_eq!(parse_timestamp("1970-01-02 00:00:01"), Some(86401));
        assert_eq!(parse_timestamp("2017-10-09 07:01:55"), Some(1_507_532_515));
        assert_eq!(parse_timestamp("2017-13-09 07:01:55"), None);
        assert_eq!(parse_duration("2d"), Some(172_800));
        assert_eq!(parse_duration("90m"), Some(5400));
        assert_eq!(parse_duration("x"), None);
        assert_eq!(
            TraceWindow::parse_range("1d..2d").unwrap(),
            (86400, Some(172_800))
        );
        assert_eq!(TraceWindow::parse_range("12h..").unwrap(), (43200, None));
        assert!(TraceWindow::parse_range("2d..1d").is_err());
    }
}
