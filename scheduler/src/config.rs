//! Configuration: flags, optionally a YAML file for the same settings (flags win).

use clap::Parser;
use serde::Deserialize;
use std::net::{IpAddr, Ipv4Addr, SocketAddr};
use std::path::PathBuf;
use std::time::Duration;

#[derive(Debug, Parser)]
#[command(
    name = "muster-scheduler",
    version,
    about = "Muster's gang-scheduling kube-scheduler extender"
)]
pub struct Flags {
    /// YAML file with any of: schedulerNames, listen, metricsListen, tlsCertFile, tlsKeyFile, tlsClientCaFile,
    /// barrierTimeoutSeconds, reserveAfterSeconds, maxReservations, preemption, leaderElect,
    /// leaseNamespace, followLease, report.
    #[arg(long, env = "MUSTER_CONFIG")]
    pub config: Option<PathBuf>,
    /// A `spec.schedulerName` whose pods are Muster's; repeat for several (one kube-scheduler
    /// profile each, e.g. `scheduler-plugins-scheduler` for KubeRay) [default: muster].
    #[arg(long = "scheduler-name", value_name = "NAME")]
    pub scheduler_names: Vec<String>,
    /// Address of the extender verbs (/filter, /prioritize, /preempt, /bind), which only
    /// kube-scheduler may call [default: 127.0.0.1:8888, loopback].
    #[arg(long, env = "MUSTER_LISTEN")]
    pub listen: Option<SocketAddr>,
    /// Address of /metrics, /healthz and /readyz (Prometheus, kubelet probes)
    /// [default: 0.0.0.0:8889].
    #[arg(long, env = "MUSTER_METRICS_LISTEN")]
    pub metrics_listen: Option<SocketAddr>,
    /// Serve the verbs over HTTPS with this certificate chain (PEM). Needs --tls-key-file and
    /// --tls-client-ca-file too.
    #[arg(long)]
    pub tls_cert_file: Option<PathBuf>,
    /// The private key of --tls-cert-file (PEM: PKCS#1 RSA, PKCS#8 or SEC1).
    #[arg(long)]
    pub tls_key_file: Option<PathBuf>,
    /// CA bundle (PEM): the verbs answer only clients with a certificate it signed.
    #[arg(long)]
    pub tls_client_ca_file: Option<PathBuf>,
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
    /// Order among gangs of equal priority: `response-ratio` (default; shortest declared run
    /// time relative to its wait first, oldest first when none declares one) or `arrival`.
    #[arg(long)]
    pub gang_order: Option<muster_core::GangOrder>,
    /// Run time the response-ratio order assumes for gangs that declare none.
    #[arg(long)]
    pub undeclared_runtime_seconds: Option<u64>,
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
const MAX_UNDECLARED_RUNTIME_SECS: u64 = 365 * 24 * 3600;

#[derive(Debug, Default, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct FileConfig {
    pub scheduler_names: Option<Vec<String>>,
    pub listen: Option<SocketAddr>,
    pub metrics_listen: Option<SocketAddr>,
    pub tls_cert_file: Option<PathBuf>,
    pub tls_key_file: Option<PathBuf>,
    pub tls_client_ca_file: Option<PathBuf>,
    pub barrier_timeout_seconds: Option<u64>,
    pub reserve_after_seconds: Option<u64>,
    pub max_reservations: Option<usize>,
    pub gang_order: Option<muster_core::GangOrder>,
    pub undeclared_runtime_seconds: Option<u64>,
    pub preemption: Option<bool>,
    pub leader_elect: Option<bool>,
    pub lease_namespace: Option<String>,
    pub follow_lease: Option<String>,
    pub report: Option<bool>,
    pub nominate: Option<bool>,
}

/// Default address of the verbs: loopback, where the kube-scheduler of the same pod calls.
pub const DEFAULT_LISTEN: SocketAddr = SocketAddr::new(IpAddr::V4(Ipv4Addr::LOCALHOST), 8888);
/// Default address of /metrics, /healthz and /readyz: every interface (scrapes, probes).
pub const DEFAULT_METRICS_LISTEN: SocketAddr =
    SocketAddr::new(IpAddr::V4(Ipv4Addr::UNSPECIFIED), 8889);

/// The verbs' mutual TLS: the server's certificate and key, and the CA that signs clients.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TlsFiles {
    pub cert: PathBuf,
    pub key: PathBuf,
    pub client_ca: PathBuf,
}

#[derive(Debug, Clone)]
pub struct Config {
    pub scheduler_names: muster_api::SchedulerNames,
    pub listen: SocketAddr,
    pub metrics_listen: SocketAddr,
    /// HTTPS with client certificates on the verbs; plain HTTP when `None`.
    pub tls: Option<TlsFiles>,
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
        let undeclared_runtime = flags
            .undeclared_runtime_seconds
            .or(file.undeclared_runtime_seconds)
            .unwrap_or(defaults.undeclared_runtime_secs);
        if !(1..=MAX_UNDECLARED_RUNTIME_SECS).contains(&undeclared_runtime) {
            anyhow::bail!(
                "undeclaredRuntimeSeconds must be between 1 and {MAX_UNDECLARED_RUNTIME_SECS} (a year), got {undeclared_runtime}"
            );
        }
        let listen = flags.listen.or(file.listen).unwrap_or(DEFAULT_LISTEN);
        let metrics_listen = flags
            .metrics_listen
            .or(file.metrics_listen)
            .unwrap_or(DEFAULT_METRICS_LISTEN);
        if overlap(listen, metrics_listen) {
            anyhow::bail!(
                "--listen ({listen}) and --metrics-listen ({metrics_listen}) must be different addresses: the verbs and /metrics are served by separate listeners"
            );
        }
        let tls = tls_files(
            flags.tls_cert_file.or(file.tls_cert_file),
            flags.tls_key_file.or(file.tls_key_file),
            flags.tls_client_ca_file.or(file.tls_client_ca_file),
        )?;
        let scheduler_names = if flags.scheduler_names.is_empty() {
            file.scheduler_names.unwrap_or_default()
        } else {
            flags.scheduler_names
        };
        let scheduler_names = muster_api::SchedulerNames::new(scheduler_names)?;
        Ok(Config {
            scheduler_names,
            listen,
            metrics_listen,
            tls,
            kubeconfig: flags.kubeconfig,
            barrier_timeout: Duration::from_secs(barrier),
            planner: muster_core::PlannerConfig {
                reserve_after_secs: reserve_after,
                max_reservations,
                order: flags
                    .gang_order
                    .or(file.gang_order)
                    .unwrap_or(defaults.order),
                undeclared_runtime_secs: undeclared_runtime,
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

/// Whether two listeners would claim the same port (port 0 picks a free one each time).
fn overlap(a: SocketAddr, b: SocketAddr) -> bool {
    a.port() == b.port()
        && a.port() != 0
        && (a.ip() == b.ip() || a.ip().is_unspecified() || b.ip().is_unspecified())
}

/// The three TLS files, all or none.
fn tls_files(
    cert: Option<PathBuf>,
    key: Option<PathBuf>,
    client_ca: Option<PathBuf>,
) -> anyhow::Result<Option<TlsFiles>> {
    match (cert, key, client_ca) {
        (None, None, None) => Ok(None),
        (Some(cert), Some(key), Some(client_ca)) => Ok(Some(TlsFiles {
            cert,
            key,
            client_ca,
        })),
        (cert, key, client_ca) => {
            let missing: Vec<&str> = [
                (cert.is_none(), "--tls-cert-file"),
                (key.is_none(), "--tls-key-file"),
                (client_ca.is_none(), "--tls-client-ca-file"),
            ]
            .into_iter()
            .filter_map(|(absent, flag)| absent.then_some(flag))
            .collect();
            anyhow::bail!(
                "--tls-cert-file, --tls-key-file and --tls-client-ca-file go together (mutual TLS needs all three); missing {}",
                missing.join(", ")
            )
        }
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
            ("--undeclared-runtime-seconds", "0", "between 1 and"),
        ] {
            let err = Config::resolve(Flags::parse_from(["x", flag, value])).unwrap_err();
            assert!(err.to_string().contains(needle), "{flag} {value}: {err}");
        }
    }

    #[test]
    fn the_gang_order_defaults_to_response_ratio_and_is_chosen_by_flag_or_file() {
        use muster_core::GangOrder;
        let c = Config::resolve(Flags::parse_from(["x"])).unwrap();
        assert_eq!(c.planner.order, GangOrder::ResponseRatio);
        let dir = std::env::temp_dir().join(format!("muster-cfg3-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let path = dir.join("c.yaml");
        std::fs::write(
            &path,
            "gangOrder: arrival\nundeclaredRuntimeSeconds: 3600\n",
        )
        .unwrap();
        let c =
            Config::resolve(Flags::parse_from(["x", "--config", path.to_str().unwrap()])).unwrap();
        assert_eq!(c.planner.order, GangOrder::Arrival);
        assert_eq!(c.planner.undeclared_runtime_secs, 3600);
        let flags = Flags::parse_from(["x", "--gang-order", "response-ratio"]);
        assert_eq!(
            Config::resolve(flags).unwrap().planner.order,
            GangOrder::ResponseRatio
        );
        let err = Flags::try_parse_from(["x", "--gang-order", "sjf"]).unwrap_err();
        assert!(
            err.to_string().contains("response-ratio or arrival"),
            "{err}"
        );
        std::fs::write(&path, "gangOrder: fifo\n").unwrap();
        let err = Config::resolve(Flags::parse_from(["x", "--config", path.to_str().unwrap()]))
            .unwrap_err();
        assert!(
            format!("{err:#}").contains("unknown variant `fifo`"),
            "{err:#}"
        );
    }

    #[test]
    fn scheduler_names_default_to_muster_and_may_be_added() {
        let c = Config::resolve(Flags::parse_from(["x"])).unwrap();
        assert_eq!(c.scheduler_names, muster_api::SchedulerNames::default());
        let c = Config::resolve(Flags::parse_from([
            "x",
            "--scheduler-name",
            "muster",
            "--scheduler-name=scheduler-plugins-scheduler",
        ]))
        .unwrap();
        assert_eq!(
            c.scheduler_names.to_string(),
            "muster, scheduler-plugins-scheduler"
        );
        let err = Config::resolve(Flags::parse_from(["x", "--scheduler-name", "Not_A_Name"]))
            .unwrap_err();
        assert!(err.to_string().contains("DNS-1123"), "{err}");
    }

    #[test]
    fn listeners_default_apart_and_must_not_collide() {
        let c = Config::resolve(Flags::parse_from(["x"])).unwrap();
        assert_eq!(c.listen, "127.0.0.1:8888".parse().unwrap());
        assert_eq!(c.metrics_listen, "0.0.0.0:8889".parse().unwrap());
        assert!(c.tls.is_none());
        for (listen, metrics) in [
            ("127.0.0.1:9000", "127.0.0.1:9000"),
            ("0.0.0.0:9000", "127.0.0.1:9000"),
            ("127.0.0.1:8889", "0.0.0.0:8889"),
        ] {
            let err = Config::resolve(Flags::parse_from([
                "x",
                "--listen",
                listen,
                "--metrics-listen",
                metrics,
            ]))
            .unwrap_err();
            assert!(
                err.to_string().contains("must be different addresses"),
                "{listen} {metrics}: {err}"
            );
        }
        let c = Config::resolve(Flags::parse_from([
            "x",
            "--listen",
            "127.0.0.1:9000",
            "--metrics-listen",
            "127.0.0.2:9000",
        ]))
        .unwrap();
        assert_eq!(c.metrics_listen.port(), 9000);
    }

    #[test]
    fn tls_files_come_all_three_or_none() {
        let c = Config::resolve(Flags::parse_from([
            "x",
            "--tls-cert-file",
            "/c",
            "--tls-key-file",
            "/k",
            "--tls-client-ca-file",
            "/ca",
        ]))
        .unwrap();
        assert_eq!(
            c.tls,
            Some(TlsFiles {
                cert: "/c".into(),
                key: "/k".into(),
                client_ca: "/ca".into()
            })
        );
        let err = Config::resolve(Flags::parse_from([
            "x",
            "--tls-cert-file",
            "/c",
            "--tls-key-file",
            "/k",
        ]))
        .unwrap_err();
        let msg = err.to_string();
        assert!(msg.contains("go together"), "{msg}");
        assert!(msg.contains("missing --tls-client-ca-file"), "{msg}");
        let err =
            Config::resolve(Flags::parse_from(["x", "--tls-client-ca-file", "/ca"])).unwrap_err();
        assert!(
            err.to_string()
                .contains("missing --tls-cert-file, --tls-key-file"),
            "{err}"
        );
    }
}
