//! A job operator's process as every operator harness runs it: started on loopback ports,
//! ready when its /readyz answers and every webhook path it serves answers over TLS, killed on
//! drop (and with the test process).

use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use crate::error::{Error, Result};
use crate::probe;
use crate::process::{Proc, log_tail};

pub(super) struct OperatorProcess {
    /// The operator's name in tests/tools/operators (for errors).
    name: &'static str,
    proc: Option<Proc>,
    webhook_port: u16,
    health_port: u16,
    log: PathBuf,
}

impl OperatorProcess {
    pub(super) fn new(
        name: &'static str,
        proc: Proc,
        webhook_port: u16,
        health_port: u16,
        log: PathBuf,
    ) -> Self {
        OperatorProcess {
            name,
            proc: Some(proc),
            webhook_port,
            health_port,
            log,
        }
    }

    fn fail(&self, detail: String) -> Error {
        Error::Operator {
            name: self.name.into(),
            detail,
        }
    }

    pub(super) async fn ready(&mut self, deadline: Duration) -> Result<()> {
        let started = Instant::now();
        loop {
            if let Some(status) = self.proc.as_mut().and_then(|p| p.exited()) {
                return Err(self.fail(format!(
                    "exited ({status}) before it was ready\n  log file: {}\n--- last lines ---\n{}",
                    self.log.display(),
                    self.log_tail(30)
                )));
            }
            let last = match probe::http_get(self.health_port, "/readyz").await {
                Ok(_) => return Ok(()),
                Err(e) => e,
            };
            if started.elapsed() > deadline {
                return Err(self.fail(format!(
                    "not ready after {}s ({last})\n  log file: {}\n--- last lines ---\n{}",
                    deadline.as_secs(),
                    self.log.display(),
                    self.log_tail(30)
                )));
            }
            tokio::time::sleep(Duration::from_millis(250)).await;
        }
    }

    /// Waits until every path answers something but 404 over TLS from 127.0.0.1 with the
    /// test CA (what the API server will do).
    pub(super) async fn webhooks_served(
        &self,
        paths: &[String],
        ca_der: &[u8],
        deadline: Duration,
    ) -> Result<()> {
        let url = format!("https://127.0.0.1:{}", self.webhook_port)
            .parse()
            .map_err(|e| self.fail(format!("webhook url: {e}")))?;
        let mut config = kube::Config::new(url);
        config.root_cert = Some(vec![ca_der.to_vec()]);
        config.connect_timeout = Some(Duration::from_secs(5));
        config.read_timeout = Some(Duration::from_secs(5));
        let client =
            kube::Client::try_from(config).map_err(|e| self.fail(format!("client: {e}")))?;
        let started = Instant::now();
        for path in paths {
            loop {
                let request = http::Request::post(path.as_str())
                    .header("Content-Type", "application/json")
                    .body(b"{}".to_vec())
                    .map_err(|e| self.fail(format!("request: {e}")))?;
                let last = match client.send(request.map(kube::client::Body::from)).await {
                    Ok(r) if r.status() != http::StatusCode::NOT_FOUND => break,
                    Ok(r) => format!("{}", r.status()),
                    Err(e) => e.to_string(),
                };
                if started.elapsed() > deadline {
                    return Err(self.fail(format!(
                        "webhook {path} not served after {}s ({last}); log: {}",
                        deadline.as_secs(),
                        self.log.display()
                    )));
                }
                tokio::time::sleep(Duration::from_millis(250)).await;
            }
        }
        Ok(())
    }

    pub(super) fn log_path(&self) -> &Path {
        &self.log
    }

    pub(super) fn log_tail(&self, lines: usize) -> String {
        log_tail(&self.log, lines)
    }

    pub(super) fn is_running(&mut self) -> bool {
        self.proc.as_mut().is_some_and(|p| p.exited().is_none())
    }

    pub(super) fn kill(&mut self) {
        if let Some(mut p) = self.proc.take() {
            p.kill();
        }
    }
}

impl Drop for OperatorProcess {
    fn drop(&mut self) {
        self.kill();
    }
}
