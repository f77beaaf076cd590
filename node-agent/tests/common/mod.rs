//! Test helpers: the agent binary run as a subprocess against the fake NVML (whose state is
//! process-global, so one agent process per node is the faithful setup), a tiny HTTP client for
//! its endpoints, and a fake kubelet pod-resources server.
#![allow(dead_code)]

pub mod kubelet;

use std::io::{BufRead, BufReader, Read, Write};
use std::net::TcpStream;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, ExitStatus, Stdio};
use std::sync::{Arc, Mutex, mpsc};
use std::time::{Duration, Instant};

/// Bound for anything the agent should do "soon"; a wait, not a performance assertion.
pub const DEADLINE: Duration = Duration::from_secs(60);

/// `target/<profile>` of this test binary (`target/<profile>/deps/<test>`).
fn profile_dir() -> PathBuf {
    let exe = std::env::current_exe().expect("test executable path");
    exe.parent()
        .and_then(Path::parent)
        .expect("test binary lives in target/<profile>/deps")
        .to_path_buf()
}

/// The fake `libnvidia-ml.so`: a dev-dependency, so cargo built its cdylib into `deps/`.
pub fn fake_lib() -> PathBuf {
    let dir = profile_dir();
    let candidates = [
        dir.join("deps/libmuster_fake_nvml.so"),
        dir.join("libmuster_fake_nvml.so"),
    ];
    candidates
        .iter()
        .filter_map(|p| Some((std::fs::metadata(p).ok()?.modified().ok()?, p.clone())))
        .max()
        .map(|(_, p)| p)
        .unwrap_or_else(|| {
            let status = Command::new(std::env::var("CARGO").unwrap_or_else(|_| "cargo".into()))
                .args(["build", "-p", "muster-fake-nvml"])
                .status()
                .expect("running cargo build");
            assert!(status.success(), "building the fake NVML failed");
            dir.join("libmuster_fake_nvml.so")
        })
}

/// A built-in fixture with its script replaced, as JSON.
pub fn fixture_with_script(name: &str, script: serde_json::Value) -> String {
    let spec = muster_api::machines::builtin(name).expect("built-in fixture");
    let mut json = serde_json::to_value(spec).expect("fixture serializes");
    json["script"] = script;
    serde_json::to_string_pretty(&json).expect("fixture serializes")
}

/// How to start one agent.
pub struct AgentSpec {
    pub node: String,
    /// `MUSTER_FAKE_NVML_FIXTURE` (name or path); `None`: no driver.
    pub fixture: Option<String>,
    pub args: Vec<String>,
    pub env: Vec<(String, String)>,
}

impl AgentSpec {
    pub fn new(node: &str, fixture: Option<&str>) -> AgentSpec {
        AgentSpec {
            node: node.to_string(),
            fixture: fixture.map(str::to_string),
            args: Vec::new(),
            env: Vec::new(),
        }
    }

    pub fn arg(mut self, a: impl Into<String>) -> Self {
        self.args.push(a.into());
        self
    }

    pub fn env(mut self, k: &str, v: &str) -> Self {
        self.env.push((k.to_string(), v.to_string()));
        self
    }

    fn command(&self) -> Command {
        let mut cmd = Command::new(env!("CARGO_BIN_EXE_muster-node-agent"));
        cmd.arg("--node-name")
            .arg(&self.node)
            .arg("--nvml-lib")
            .arg(fake_lib())
            .arg("--metrics-addr")
            .arg("127.0.0.1:0")
            .args(&self.args)
            .env_remove("MUSTER_FAKE_NVML_FIXTURE")
            .env_remove("MUSTER_FAKE_NVML_TIME_SCALE")
            .env_remove("MUSTER_FAKE_NVML_WAIT_ERROR_AFTER")
            .env_remove("MUSTER_DEBUG_ENDPOINTS")
            .env("MUSTER_FAKE_NVML_NODE", &self.node)
            .env("RUST_LOG", "info")
            .stdout(Stdio::null())
            .stderr(Stdio::piped());
        if let Some(f) = &self.fixture {
            cmd.env("MUSTER_FAKE_NVML_FIXTURE", f);
        }
        for (k, v) in &self.env {
            cmd.env(k, v);
        }
        cmd
    }

    /// Starts the agent and waits until it serves metrics.
    pub fn start(&self) -> Agent {
        let mut child = self.command().spawn().expect("spawning muster-node-agent");
        let log = Arc::new(Mutex::new(Vec::new()));
        let (addr_tx, addr_rx) = mpsc::channel();
        let stderr = child.stderr.take().expect("piped stderr");
        let lines = Arc::clone(&log);
        std::thread::spawn(move || {
            for line in BufReader::new(stderr).lines().map_while(Result::ok) {
                if let Some(addr) = line
                    .split_whitespace()
                    .find_map(|w| w.strip_prefix("metrics_addr="))
                {
                    let _ = addr_tx.send(addr.to_string());
                }
                lines.lock().unwrap().push(line);
            }
        });
        let addr = match addr_rx.recv_timeout(DEADLINE) {
            Ok(a) => a,
            Err(_) => panic!(
                "agent did not start serving; log:\n{}",
                log.lock().unwrap().join("\n")
            ),
        };
        Agent { child, addr, log }
    }

    /// Runs the agent to its exit (for startup failures): status and log.
    pub fn run_to_exit(&self) -> (ExitStatus, String) {
        let mut child = self.command().spawn().expect("spawning muster-node-agent");
        let started = Instant::now();
        loop {
            if let Some(status) = child.try_wait().expect("waiting for the agent") {
                let mut log = String::new();
                if let Some(mut e) = child.stderr.take() {
                    let _ = e.read_to_string(&mut log);
                }
                return (status, log);
            }
            if started.elapsed() > DEADLINE {
                let _ = child.kill();
                panic!("agent did not exit");
            }
            std::thread::sleep(Duration::from_millis(50));
        }
    }
}

/// A running agent, killed on drop.
pub struct Agent {
    pub child: Child,
    pub addr: String,
    log: Arc<Mutex<Vec<String>>>,
}

impl Drop for Agent {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

impl Agent {
    pub fn log(&self) -> String {
        self.log.lock().unwrap().join("\n")
    }

    /// Body of `GET path` (panics on a non-200 answer).
    pub fn get(&self, path: &str) -> String {
        http_get(&self.addr, path).unwrap_or_else(|e| panic!("GET {path}: {e}\n{}", self.log()))
    }

    pub fn metrics(&self) -> String {
        self.get("/metrics")
    }

    pub fn state(&self) -> serde_json::Value {
        serde_json::from_str(&self.get("/debug/state")).expect("/debug/state is JSON")
    }

    /// Polls until `f` returns `Some`, panicking with the agent's log after [`DEADLINE`].
    pub fn wait_for<T>(&self, what: &str, mut f: impl FnMut(&Agent) -> Option<T>) -> T {
        let started = Instant::now();
        loop {
            if let Some(v) = f(self) {
                return v;
            }
            assert!(
                started.elapsed() < DEADLINE,
                "gave up waiting for {what}; agent log:\n{}",
                self.log()
            );
            std::thread::sleep(Duration::from_millis(50));
        }
    }

    pub fn is_running(&mut self) -> bool {
        matches!(self.child.try_wait(), Ok(None))
    }
}

/// A minimal HTTP/1.1 GET (the agent answers with a Content-Length body).
pub fn http_get(addr: &str, path: &str) -> Result<String, String> {
    let mut stream = TcpStream::connect(addr).map_err(|e| e.to_string())?;
    stream
        .set_read_timeout(Some(Duration::from_secs(10)))
        .map_err(|e| e.to_string())?;
    write!(
        stream,
        "GET {path} HTTP/1.1\r\nHost: {addr}\r\nConnection: close\r\n\r\n"
    )
    .map_err(|e| e.to_string())?;
    let mut response = String::new();
    stream
        .read_to_string(&mut response)
        .map_err(|e| e.to_string())?;
    let (head, body) = response
        .split_once("\r\n\r\n")
        .ok_or_else(|| format!("malformed response: {response}"))?;
    if !head.starts_with("HTTP/1.1 200") {
        return Err(head.to_string());
    }
    Ok(body.to_string())
}

/// Value of the single sample of `metric` whose labels include every `(name, value)` pair.
pub fn sample(text: &str, metric: &str, labels: &[(&str, &str)]) -> Option<f64> {
    text.lines()
        .filter(|l| !l.starts_with('#'))
        .filter(|l| {
            l.strip_prefix(metric)
                .is_some_and(|rest| rest.starts_with('{') || rest.starts_with(' '))
        })
        .find(|l| {
            labels
                .iter()
                .all(|(k, v)| l.contains(&format!("{k}=\"{v}\"")))
        })
        .and_then(|l| l.rsplit(' ').next())
        .and_then(|v| v.parse().ok())
}

/// Samples of `metric` (lines), for counting series.
pub fn series<'a>(text: &'a str, metric: &str) -> Vec<&'a str> {
    text.lines()
        .filter(|l| !l.starts_with('#'))
        .filter(|l| l.strip_prefix(metric).is_some_and(|r| r.starts_with('{')))
        .collect()
}

/// Number of writes of `object` ("gpuNode" or "labels") the agent made.
pub fn writes(state: &serde_json::Value, object: &str) -> u64 {
    state["writes"][object].as_u64().unwrap_or(0)
}
