//! The muster-scheduler process: build, start, kill, restart, and a monitor that reports an
//! unexpected exit, a panic in its log and its memory (VmRSS) over the run.

use std::os::unix::process::CommandExt;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::Arc;
use std::time::{Duration, Instant};

use anyhow::Context as _;
use serde::Serialize;
use serde_json::json;
use tokio::io::{AsyncReadExt, AsyncWriteExt};

use crate::state::Shared;

pub use muster_testcluster::repo_root;

/// `cargo build -p muster-scheduler` (debug) and the binary's path.
pub fn build_extender() -> anyhow::Result<PathBuf> {
    Ok(muster_testcluster::build_workspace_binary(
        "muster-scheduler",
        "muster-scheduler",
        false,
    )?)
}

/// One extender process at a time, on fixed ports, its output appended to one log.
pub struct Extender {
    child: Option<Child>,
    /// The verbs (`--listen`).
    pub port: u16,
    /// `/metrics`, `/healthz`, `/readyz` (`--metrics-listen`).
    pub metrics_port: u16,
    bin: PathBuf,
    kubeconfig: PathBuf,
    pub log: PathBuf,
    pub starts: u32,
}

impl Extender {
    pub fn new(
        bin: PathBuf,
        kubeconfig: PathBuf,
        log: PathBuf,
        port: u16,
        metrics_port: u16,
    ) -> Extender {
        Extender {
            child: None,
            port,
            metrics_port,
            bin,
            kubeconfig,
            log,
            starts: 0,
        }
    }

    pub fn spawn(&mut self) -> anyhow::Result<()> {
        let log = std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(&self.log)
            .with_context(|| format!("opening {}", self.log.display()))?;
        let err = log.try_clone().context("duplicating the log handle")?;
        let mut cmd = Command::new(&self.bin);
        cmd.arg("--listen")
            .arg(format!("127.0.0.1:{}", self.port))
            .arg("--metrics-listen")
            .arg(format!("127.0.0.1:{}", self.metrics_port))
            .arg("--kubeconfig")
            .arg(&self.kubeconfig)
            .env("RUST_LOG", "info")
            .env("RUST_BACKTRACE", "1")
            .env("NO_COLOR", "1")
            .stdin(Stdio::null())
            .stdout(log)
            .stderr(err);
        // SAFETY: prctl is async-signal-safe; the child dies with the soak.
        unsafe {
            cmd.pre_exec(|| {
                libc::prctl(libc::PR_SET_PDEATHSIG, libc::SIGKILL);
                Ok(())
            });
        }
        let child = cmd
            .spawn()
            .with_context(|| format!("starting {}", self.bin.display()))?;
        self.child = Some(child);
        self.starts += 1;
        Ok(())
    }

    pub fn pid(&self) -> Option<u32> {
        self.child.as_ref().map(Child::id)
    }

    /// `Some(status)` when the process has exited (or was never started).
    pub fn exited(&mut self) -> Option<String> {
        match self.child.as_mut() {
            None => Some("not running".into()),
            Some(c) => match c.try_wait() {
                Ok(Some(status)) => Some(status.to_string()),
                Ok(None) => None,
                Err(e) => Some(format!("wait failed: {e}")),
            },
        }
    }

    /// SIGKILL, as a crash would.
    pub fn kill(&mut self) {
        if let Some(mut c) = self.child.take() {
            let _ = c.kill();
            let _ = c.wait();
        }
    }

    /// Waits until /readyz answers 200.
    pub async fn ready(&self, deadline: Duration) -> anyhow::Result<()> {
        let started = Instant::now();
        loop {
            if let Ok((200, _)) = http_get(self.metrics_port, "/readyz").await {
                return Ok(());
            }
            if started.elapsed() > deadline {
                anyhow::bail!(
                    "extender not ready after {}s; log tail:\n{}",
                    deadline.as_secs(),
                    log_tail(&self.log, 30)
                );
            }
            tokio::time::sleep(Duration::from_millis(200)).await;
        }
    }

    /// Kill, start, wait for /readyz.
    pub async fn restart(&mut self) -> anyhow::Result<()> {
        self.kill();
        self.spawn()?;
        self.ready(Duration::from_secs(180)).await
    }
}

impl Drop for Extender {
    fn drop(&mut self) {
        self.kill();
    }
}

pub fn log_tail(path: &Path, lines: usize) -> String {
    let text = std::fs::read_to_string(path).unwrap_or_default();
    let all: Vec<&str> = text.lines().collect();
    all[all.len().saturating_sub(lines)..].join("\n")
}

/// A loopback GET: (status, body).
pub async fn http_get(port: u16, path: &str) -> std::io::Result<(u16, String)> {
    let mut s = tokio::net::TcpStream::connect(("127.0.0.1", port)).await?;
    let req = format!("GET {path} HTTP/1.1\r\nHost: 127.0.0.1\r\nConnection: close\r\n\r\n");
    s.write_all(req.as_bytes()).await?;
    let mut buf = Vec::new();
    tokio::time::timeout(Duration::from_secs(10), s.read_to_end(&mut buf))
        .await
        .map_err(|_| std::io::Error::other("no answer within 10s"))??;
    let text = String::from_utf8_lossy(&buf).to_string();
    let status = text
        .split(' ')
        .nth(1)
        .and_then(|c| c.parse().ok())
        .unwrap_or(0);
    let body = text
        .split_once("\r\n\r\n")
        .map(|(_, b)| b.to_string())
        .unwrap_or_default();
    Ok((status, body))
}

/// VmRSS of a process in KiB.
pub fn rss_kib(pid: u32) -> Option<u64> {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).ok()?;
    let line = status.lines().find(|l| l.starts_with("VmRSS:"))?;
    line.split_whitespace().nth(1)?.parse().ok()
}

/// The extender over the run: memory, and what its log says it did.
#[derive(Clone, Debug, Default, Serialize)]
pub struct ExtenderStats {
    /// (seconds since start, KiB).
    pub samples: Vec<(f64, u64)>,
    pub first_kib: Option<u64>,
    pub last_kib: Option<u64>,
    pub max_kib: Option<u64>,
    /// Mean of the last third's samples over the first third's.
    pub growth: Option<f64>,
    pub extender_starts: u32,
    /// Log lines: preemption decisions, evicted victims, plans dropped, WARN and ERROR lines.
    pub log_preemptions: u64,
    pub log_evictions: u64,
    pub log_plans_dropped: u64,
    pub log_warnings: u64,
    pub log_errors: u64,
}

/// Watches the extender until `deadline`: an exit the soak did not cause and a "panicked" in
/// its log are violations (the process is started again so the soak goes on); VmRSS is
/// sampled about ten times per run (at most every minute).
pub async fn monitor(
    extender: Arc<tokio::sync::Mutex<Extender>>,
    shared: Arc<Shared>,
    duration: Duration,
    deadline: Instant,
) -> ExtenderStats {
    let mut stats = ExtenderStats::default();
    let every = (duration / 10).clamp(Duration::from_secs(5), Duration::from_secs(60));
    let mut next_sample = Instant::now();
    let mut log_offset = 0u64;
    while Instant::now() < deadline {
        tokio::time::sleep(Duration::from_secs(1)).await;
        let mut ext = extender.lock().await;
        let log = ext.log.clone();
        for line in new_log_lines(&log, &mut log_offset) {
            if line.contains("panicked") {
                shared.violation("extender-panic", json!({"line": line}));
            }
            stats.log_preemptions += u64::from(line.contains(" preempting "));
            stats.log_evictions += u64::from(line.contains(" evicted victim="));
            stats.log_plans_dropped += u64::from(line.contains("gang plan dropped"));
            stats.log_warnings += u64::from(line.contains(" WARN "));
            stats.log_errors += u64::from(line.contains(" ERROR "));
        }
        if !shared.extender_restarting()
            && let Some(status) = ext.exited()
        {
            shared.violation(
                "extender-died",
                json!({"status": status, "log_tail": log_tail(&log, 15)}),
            );
            if let Err(e) = ext.restart().await {
                tracing::error!("restarting the dead extender: {e:#}");
            }
        }
        if Instant::now() >= next_sample {
            next_sample += every;
            if let Some(kib) = ext.pid().and_then(rss_kib) {
                stats.samples.push((shared.at(Instant::now()), kib));
            }
        }
        stats.extender_starts = ext.starts;
    }
    finish_rss(&mut stats, &shared, duration);
    stats
}

fn new_log_lines(path: &Path, offset: &mut u64) -> Vec<String> {
    use std::io::{Read, Seek, SeekFrom};
    let Ok(mut file) = std::fs::File::open(path) else {
        return Vec::new();
    };
    let len = file.metadata().map(|m| m.len()).unwrap_or(0);
    if len < *offset {
        *offset = 0;
    }
    let mut bytes = Vec::new();
    if file.seek(SeekFrom::Start(*offset)).is_err() || file.read_to_end(&mut bytes).is_err() {
        return Vec::new();
    }
    // Only whole lines; a partial last line is read next time.
    let Some(end) = bytes.iter().rposition(|b| *b == b'\n') else {
        return Vec::new();
    };
    *offset += end as u64 + 1;
    String::from_utf8_lossy(&bytes[..end])
        .lines()
        .map(strip_ansi)
        .collect()
}

/// The line without terminal colour sequences (`ESC [ ... m`).
fn strip_ansi(line: &str) -> String {
    let mut out = String::with_capacity(line.len());
    let mut chars = line.chars();
    while let Some(c) = chars.next() {
        if c == '\u{1b}' {
            for c in chars.by_ref() {
                if c.is_ascii_alphabetic() {
                    break;
                }
            }
        } else {
            out.push(c);
        }
    }
    out
}

fn finish_rss(stats: &mut ExtenderStats, shared: &Shared, duration: Duration) {
    stats.first_kib = stats.samples.first().map(|s| s.1);
    stats.last_kib = stats.samples.last().map(|s| s.1);
    stats.max_kib = stats.samples.iter().map(|s| s.1).max();
    let third = duration.as_secs_f64() / 3.0;
    let mean = |pick: &dyn Fn(f64) -> bool| {
        let v: Vec<u64> = stats
            .samples
            .iter()
            .filter(|s| pick(s.0))
            .map(|s| s.1)
            .collect();
        (!v.is_empty()).then(|| v.iter().sum::<u64>() as f64 / v.len() as f64)
    };
    let first = mean(&|t| t <= third);
    let last = mean(&|t| t >= 2.0 * third);
    if let (Some(first), Some(last)) = (first, last)
        && first > 0.0
    {
        let growth = last / first;
        stats.growth = Some((growth * 100.0).round() / 100.0);
        if growth > 3.0 {
            shared.violation(
                "extender-rss-growth",
                json!({"first_third_kib": first, "last_third_kib": last, "growth": growth}),
            );
        }
    }
}

#[cfg(test)]
mod tests {
    #[test]
    fn strips_colours() {
        let line = "2026Z \u{1b}[33m WARN\u{1b}[0m \u{1b}[2mmuster\u{1b}[0m\u{1b}[2m:\u{1b}[0m x";
        assert_eq!(super::strip_ansi(line), "2026Z  WARN muster: x");
    }
}
