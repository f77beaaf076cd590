//! Configuration: flags, optionally a YAML file for the same settings (flags win).

use clap::Parser;
use serde::Deserialize;
use std::net::SocketAddr;
use std::path::PathBuf;
use std::time::Duration;

#[derive(Debug, Parser)]
#[command(
    name = "muster-scheduler",
    version,
    about = "Muster's gang-scheduling kube-scheduler extender"
)]
pub struct Flags {
    /// YAML file with any of: listen, barrierTimeoutSeconds, reserveAfterSeconds,
    /// maxReservations, preemption, leaderElect, leaseNamespace, followLease, report.
    #[arg(long, env = "MUSTER_CONFIG")]
    pub config: Option<PathBuf>,
    /// Address for the extender verbs, /metrics, /healthz and /readyz.
    #[arg(long, env = "MUSTER_LISTEN")]
    pub listen: Option<SocketAddr>,
    /// Path to a kubeconfig (default: in-cluster, then $KUBECONFIG / ~/.kube/config).
    #[arg(long, env = "KUBECONFIG")]
    pub kubeconfig: Option<PathBuf>,
    /// Seconds a planned gang may take for every member to reach bind before it is retried.
    #[arg(long)]
    pub barrier_timeout_seconds: Option<u64>,
    /// Seconds a blocked gang waits before it reserves nodes (starvation guard).
    #[arg(long)]
    pub reserve_after_seconds: Option<u64>,
    #[arg(long)]
    pub max_reservations: Option<usize>,
    /// Allow higher-priority gangs to evict whole lower-priority gangs.
    #[arg(long)]
    pub preemption: Option<bool>,
    /// Hold a Lease before acting (run several replicas safely).
    #[arg(long)]
    pub leader_elect: Option<bool>,
    #[arg(long, env = "POD_NAMESPACE")]
    pub lease_namespace: Option<String>,
    /// With --leader-elect: instead of holding a Lease, lead exactly while the kube-scheduler
    /// in this pod (same hostname) holds this Lease (its `leaderElection.resourceName`).
    #[arg(long)]
    pub follow_lease: Option<String>,
    /// Write PodGroup status and Events.
    #[arg(long)]
    pub report: Option<bool>,
    /// Set planned pods' status.nominatedNodeName so kube-scheduler checks only that node.
    #[arg(long, env = "MUSTER_NOMINATE")]
    pub nominate: Option<bool>,
    /// Log as JSON lines.
    #[arg(long)]
    pub log_json: bool,
}

const MAX_BARRIER_SECS: u64 = 90;
const MAX_RESERVE_AFTER_SECS: u64 = 30 * 24 * 3600;
const MAX_RESERVATIONS: usize = 1024;

#[derive(Debug, Default, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct FileConfig {
    pub listen: Option<SocketAddr>,
    pub barrier_timeout_seconds: Option<u64>,
    pub reserve_after_seconds: Option<u64>,
    pub max_reservations: Option<usize>,
    pub preemption: Option<bool>,
    pub leader_elect: Option<bool>,
    pub lease_namespace: Option<String>,
    pub follow_lease: Option<String>,
    pub report: Option<bool>,
    pub nominate: Option<bool>,
}

#[derive(Debug, Clone)]
pub struct Config {
    pub listen: SocketAddr,
    pub kubeconfig: Option<PathBuf>,
    pub barrier_timeout: Duration,
    pub planner: muster_core::PlannerConfig,
    pub leader_elect: bool,
    pub lease_namespace: String,
    pub follow_lease: Option<String>,
    pub report: bool,
    pub nominate: bool,
    pub log_json: bool,
}

impl Config {
    pub fn resolve(flags: Flags) -> anyhow::Result<Config> {
        let file = match &flags.config {
            None => FileConfig::default(),
            Some(path) => {
                let text = std::fs::read_to_string(path)
                    .map_err(|e| anyhow::anyhow!("reading config {}: {e}", path.display()))?;
                serde_yaml::from_str(&text)
                    .map_err(|e| anyhow::anyhow!("config {}: {e}", path.display()))?
            }
        };
        let defaults = muster_core::PlannerConfig::default();
        let barrier = flags
            .barrier_timeout_seconds
            .or(file.barrier_timeout_seconds)
            .unwrap_or(60);
        // A bind call waits up to the barrier, then the release's validation and retries;
        // all of it must end within kube-scheduler's extender httpTimeout (120 s in the chart).
        if !(1..=MAX_BARRIER_SECS).contains(&barrier) {
            anyhow::bail!(
                "barrierTimeoutSeconds must be between 1 and {MAX_BARRIER_SECS} (bind calls must finish within kube-scheduler's extender httpTimeout, 120s in the chart), got {barrier}"
            );
        }
        let reserve_after = flags
            .reserve_after_seconds
            .or(file.reserve_after_seconds)
            .unwrap_or(defaults.reserve_after_secs);
        if reserve_after > MAX_RESERVE_AFTER_SECS {
            anyhow::bail!(
                "reserveAfterSeconds must be at most {MAX_RESERVE_AFTER_SECS} (30 days), got {reserve_after}"
            );
        }
        let max_reservations = flags
            .max_reservations
            .or(file.max_reservations)
            .unwrap_or(defaults.max_reservations);
        if max_reservations > MAX_RESERVATIONS {
            anyhow::bail!(
                "maxReservations must be at most {MAX_RESERVATIONS} (each idles the nodes it holds), got {max_reservations}"
            );
        }
        Ok(Config {
            listen: flags
                .listen
                .or(file.listen)
                .unwrap_or_else(|| SocketAddr::from(([0, 0, 0, 0], 8888))),
            kubeconfig: flags.kubeconfig,
            barrier_timeout: Duration::from_secs(barrier),
            planner: muster_core::PlannerConfig {
                reserve_after_secs: reserve_after,
                max_reservations,
                preemption: flags.preemption.or(file.preemption).unwrap_or(true),
                ..defaults
            },
            leader_elect: flags.leader_elect.or(file.leader_elect).unwrap_or(false),
            lease_namespace: flags
                .lease_namespace
                .or(file.lease_namespace)
                .unwrap_or_else(|| "kube-system".into()),
            follow_lease: flags.follow_lease.or(file.follow_lease),
            report: flags.report.or(file.report).unwrap_or(true),
            nominate: flags.nominate.or(file.nominate).unwrap_or(true),
            log_json: flags.log_json,
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn file_values_apply_and_flags_win() {
        let dir = std::env::temp_dir().join(format!("muster-cfg-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let path = dir.join("c.yaml");
        std::fs::write(&path, "barrierTimeoutSeconds: 9\npreemption: false\n").unwrap();
        let flags = Flags::parse_from([
            "x",
            "--config",
            path.to_str().unwrap(),
            "--preemption",
            "true",
        ]);
        let c = Config::resolve(flags).unwrap();
        assert_eq!(c.barrier_timeout, Duration::from_secs(9));
        assert!(c.planner.preemption);
    }

    #[test]
    fn unknown_or_bad_settings_are_clear_errors() {
        let dir = std::env::temp_dir().join(format!("muster-cfg2-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let path = dir.join("c.yaml");
        std::fs::write(&path, "barierTimeout: 9\n").unwrap();
        let err = Config::resolve(Flags::parse_from(["x", "--config", path.to_str().unwrap()]))
            .unwrap_err();
        assert!(
            err.to_string().contains("unknown field `barierTimeout`"),
            "{err}"
        );
        for (flag, value, needle) in [
            ("--barrier-timeout-seconds", "0", "between 1 and 90"),
            ("--barrier-timeout-seconds", "121", "httpTimeout"),
            ("--reserve-after-seconds", "99999999999", "at most"),
            ("--max-reservations", "100000", "at most 1024"),
        ] {
            let err = Config::resolve(Flags::parse_from(["x", flag, value])).unwrap_err();
            assert!(err.to_string().contains(needle), "{flag} {value}: {err}");
        }
    }
}
