//! Command line and environment of the agent (a DaemonSet passes `NODE_NAME` from the downward API).

use clap::Parser;
use std::net::SocketAddr;
use std::path::PathBuf;
use std::time::Duration;

#[derive(Clone, Debug, Parser)]
#[command(
    name = "muster-node-agent",
    version,
    about = "Publishes this node's GPUs (GpuNode, GFD labels) and serves DCGM-compatible GPU metrics"
)]
pub struct Config {
    /// Name of the Node this agent runs on (the GpuNode gets the same name).
    #[arg(long, env = "NODE_NAME")]
    pub node_name: String,
    /// Path of libnvidia-ml (default: the driver's `libnvidia-ml.so.1` from the loader path).
    #[arg(long, env = "MUSTER_NVML_LIB")]
    pub nvml_lib: Option<PathBuf>,
    /// Metrics collection period (e.g. `1s`, `500ms`).
    #[arg(long, default_value = "1s", value_parser = parse_duration)]
    pub interval: Duration,
    /// Longest time between two GpuNode writes when nothing changed (refreshes `lastSeen`).
    #[arg(long, default_value = "30s", value_parser = parse_duration)]
    pub publish_interval: Duration,
    /// Address of the `/metrics` and `/healthz` server (port 0 picks a free port).
    #[arg(long, default_value = "0.0.0.0:9400")]
    pub metrics_addr: SocketAddr,
    /// The kubelet pod-resources socket (attributes GPUs to pods).
    #[arg(long, default_value = "/var/lib/kubelet/pod-resources/kubelet.sock")]
    pub pod_resources_socket: PathBuf,
    /// Kubeconfig file; default: in-cluster config, else `$KUBECONFIG` / `~/.kube/config`.
    #[arg(long)]
    pub kubeconfig: Option<PathBuf>,
    /// Do not talk to the API server: only metrics (and `/debug/state` with `--debug-endpoints`).
    #[arg(long)]
    pub no_publish: bool,
    /// Also serve `/debug/state` (the GpuNode spec and labels last written, write counts) on the
    /// metrics port. Off by default: the port has no authentication, so anything that can reach
    /// it could read the node's inventory; without the flag the path answers 404.
    #[arg(long, env = "MUSTER_DEBUG_ENDPOINTS")]
    pub debug_endpoints: bool,
    /// File naming the machine type (GFD's `nvidia.com/gpu.machine`).
    #[arg(long, default_value = "/sys/class/dmi/id/product_name")]
    pub machine_type_file: PathBuf,
    /// MIG strategy advertised in `nvidia.com/mig.strategy` (none, single or mixed).
    #[arg(long, default_value = "none", value_parser = ["none", "single", "mixed"])]
    pub mig_strategy: String,
    /// Log as JSON lines instead of text.
    #[arg(long)]
    pub log_json: bool,
}

/// Parses `250ms`, `1s`, `1.5s`, `2m`, `1h` (a bare number is seconds).
pub fn parse_duration(s: &str) -> Result<Duration, String> {
    let s = s.trim();
    let split = s
        .find(|c: char| !(c.is_ascii_digit() || c == '.'))
        .unwrap_or(s.len());
    let (number, unit) = s.split_at(split);
    let value: f64 = number
        .parse()
        .map_err(|_| format!("{s:?} is not a duration like 500ms, 1s, 2m"))?;
    let seconds = match unit {
        "ms" => value / 1000.0,
        "" | "s" => value,
        "m" => value * 60.0,
        "h" => value * 3600.0,
        other => return Err(format!("unknown duration unit {other:?} in {s:?}")),
    };
    if !seconds.is_finite() || seconds <= 0.0 {
        return Err(format!("duration {s:?} must be positive"));
    }
    Ok(Duration::from_secs_f64(seconds))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn parse(args: &[&str]) -> Config {
        let mut argv = vec!["muster-node-agent", "--node-name", "n1"];
        argv.extend_from_slice(args);
        Config::try_parse_from(argv).expect("flags parse")
    }

    #[test]
    fn debug_endpoints_are_off_unless_asked_for() {
        // The env var is read only when set; this test does not set it, and no test does.
        if std::env::var_os("MUSTER_DEBUG_ENDPOINTS").is_none() {
            assert!(!parse(&[]).debug_endpoints);
        }
        assert!(parse(&["--debug-endpoints"]).debug_endpoints);
    }

    #[test]
    fn durations() {
        assert_eq!(parse_duration("1s"), Ok(Duration::from_secs(1)));
        assert_eq!(parse_duration("250ms"), Ok(Duration::from_millis(250)));
        assert_eq!(parse_duration("2m"), Ok(Duration::from_secs(120)));
        assert_eq!(parse_duration("1.5"), Ok(Duration::from_millis(1500)));
        assert!(parse_duration("0s").is_err());
        assert!(parse_duration("5 parsecs").is_err());
        assert!(parse_duration("fast").is_err());
    }
}
