//! A real Prometheus server (built by tests/tools/build.sh from the module promtool comes from)
//! on loopback: a generated configuration with static targets, the chart's rules, and a small
//! client for its HTTP API.

use super::common::host::{HostProcess, free_port};
use super::common::tool;
use serde_json::{Value, json};
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};

pub mod node;

/// Bound for waits ("soon"), not a performance assertion: the e2e helpers' bound.
pub use crate::agent_common::DEADLINE;

/// One scrape job: targets (`127.0.0.1:port`) and the labels the chart's ServiceMonitors would
/// give them (`job`, `endpoint`, `namespace`), so the rules' selectors match as in a cluster.
pub struct Job {
    pub name: &'static str,
    pub job_label: &'static str,
    pub endpoint: &'static str,
    pub honor_labels: bool,
    pub targets: Vec<String>,
}

pub struct Prometheus {
    _process: HostProcess,
    pub port: u16,
    pub log: PathBuf,
}

impl Prometheus {
    /// Starts Prometheus in `dir` scraping `jobs` every second and evaluating `rules` every
    /// second; returns once it is ready.
    pub async fn start(dir: &Path, jobs: &[Job], rules: &Path) -> Prometheus {
        let scrape_configs: Vec<Value> = jobs
            .iter()
            .map(|j| {
                json!({
                    "job_name": j.name,
                    "honor_labels": j.honor_labels,
                    "static_configs": [{"targets": j.targets, "labels": {
                        "endpoint": j.endpoint, "namespace": "muster-system"}}],
                    // A ServiceMonitor's job is its jobLabel's value, shared by its endpoints;
                    // job names must be unique here, so the label is set after discovery.
                    "relabel_configs": [{"target_label": "job", "replacement": j.job_label}],
                })
            })
            .collect();
        let config = json!({
            "global": {"scrape_interval": "1s", "scrape_timeout": "1s", "evaluation_interval": "1s"},
            "rule_files": [rules],
            "scrape_configs": scrape_configs,
        });
        let config_path = dir.join("prometheus.yml");
        std::fs::write(&config_path, config.to_string()).expect("writing prometheus.yml");
        let port = free_port();
        let log = dir.join("prometheus.log");
        let out = std::fs::File::create(&log).expect("prometheus log");
        let err = out.try_clone().expect("prometheus log");
        let process = HostProcess::spawn(
            Command::new(tool("prometheus"))
                .arg(format!("--config.file={}", config_path.display()))
                .arg(format!(
                    "--storage.tsdb.path={}",
                    dir.join("data").display()
                ))
                .arg(format!("--web.listen-address=127.0.0.1:{port}"))
                .stdin(Stdio::null())
                .stdout(out)
                .stderr(err),
            "prometheus",
        );
        let prom = Prometheus {
            _process: process,
            port,
            log,
        };
        prom.wait("Prometheus ready", || async {
            matches!(get(port, "/-/ready").await, Ok((200, _))).then_some(())
        })
        .await;
        prom
    }

    pub fn log_tail(&self) -> String {
        let text = std::fs::read_to_string(&self.log).unwrap_or_default();
        let lines: Vec<&str> = text.lines().collect();
        lines[lines.len().saturating_sub(30)..].join("\n")
    }

    /// `GET /api/v1/<path>`: the `data` of a successful answer, else the error.
    pub async fn api(&self, path: &str) -> Result<Value, String> {
        let (status, body) = get(self.port, &format!("/api/v1/{path}"))
            .await
            .map_err(|e| format!("GET /api/v1/{path}: {e}"))?;
        let v: Value = serde_json::from_str(&body)
            .map_err(|e| format!("GET /api/v1/{path}: {status}: {e}: {body}"))?;
        if v["status"] != "success" {
            return Err(format!("GET /api/v1/{path}: {status}: {body}"));
        }
        Ok(v["data"].clone())
    }

    /// An instant query's result vector (a scalar answer counts as one series).
    pub async fn query(&self, promql: &str) -> Result<Vec<Value>, String> {
        let data = self.api(&format!("query?query={}", encode(promql))).await?;
        match data["resultType"].as_str() {
            Some("vector") => Ok(data["result"].as_array().cloned().unwrap_or_default()),
            Some("scalar") => Ok(vec![json!({"metric": {}, "value": data["result"]})]),
            other => Err(format!("{promql}: unexpected result type {other:?}")),
        }
    }

    /// The values of label `name` on the series `matcher` selects.
    pub async fn label_values(&self, name: &str, matcher: &str) -> Result<Vec<String>, String> {
        let data = self
            .api(&format!("label/{name}/values?match[]={}", encode(matcher)))
            .await?;
        Ok(data
            .as_array()
            .map(|a| {
                a.iter()
                    .filter_map(|v| v.as_str().map(str::to_string))
                    .collect()
            })
            .unwrap_or_default())
    }

    /// Polls `f` until it yields, panicking with `what` and the log tail after [`DEADLINE`].
    pub async fn wait<T, F, Fut>(&self, what: &str, f: F) -> T
    where
        F: FnMut() -> Fut,
        Fut: std::future::Future<Output = Option<T>>,
    {
        let context = || format!("prometheus log:\n{}", self.log_tail());
        crate::agent_common::eventually(what, context, f).await
    }
}

/// The float of an instant-query sample (`[time, "value"]`).
pub fn sample_value(series: &Value) -> Option<f64> {
    series["value"][1].as_str()?.parse().ok()
}

/// Percent-encodes a query-string value (everything but unreserved characters).
fn encode(s: &str) -> String {
    s.bytes()
        .map(|b| match b {
            b'A'..=b'Z' | b'a'..=b'z' | b'0'..=b'9' | b'-' | b'_' | b'.' | b'~' => {
                (b as char).to_string()
            }
            _ => format!("%{b:02X}"),
        })
        .collect()
}

/// `GET path` on 127.0.0.1:port as HTTP/1.0, so the answer is neither chunked (Go chunks
/// HTTP/1.1 answers above 2 KiB) nor kept alive: (status, body).
async fn get(port: u16, path: &str) -> std::io::Result<(u16, String)> {
    crate::muster::exchange(
        port,
        &format!("GET {path} HTTP/1.0\r\nHost: 127.0.0.1\r\n\r\n"),
    )
    .await
}
