//! KubeRay's ray-operator (RayCluster, RayJob) run outside a pod against a test cluster.
//!
//! It needs no webhooks (they are off unless `ENABLE_WEBHOOKS=true`) and no certificates: the
//! cluster's admin kubeconfig, its metrics and health ports on free loopback ports, leader
//! election off, and `--batch-scheduler` naming the gang integration. The process dies with
//! the test.

use std::time::Duration;

use crate::cluster::TestCluster;
use crate::error::{Error, Result};
use crate::operators::process::OperatorProcess;
use crate::operators::{OperatorBuild, build_async};
use crate::ports;
use crate::process::Proc;

/// The operator's name in tests/tools/operators.
pub const NAME: &str = "kuberay";

/// How to start the operator.
#[derive(Clone, Debug, Default)]
pub struct KubeRayConfig {
    /// `--batch-scheduler`: `scheduler-plugins` (scheduler-plugins PodGroups, pods get
    /// `schedulerName: scheduler-plugins-scheduler`), `volcano` (Volcano PodGroups,
    /// `schedulerName: volcano`), or empty for none.
    pub batch_scheduler: String,
    /// Further flags.
    pub extra_args: Vec<String>,
}

/// A running ray-operator; killed on drop (and with the test process).
pub struct KubeRay {
    process: OperatorProcess,
    pub build: OperatorBuild,
    pub metrics_port: u16,
    pub health_port: u16,
}

impl KubeRay {
    /// Installs KubeRay's CRDs (and the PodGroup CRDs it writes) and starts the operator.
    pub async fn start(cluster: &TestCluster, config: KubeRayConfig) -> Result<KubeRay> {
        let build = build_async(NAME).await?;
        cluster.install_crds(&build.crds_dir).await?;
        let metrics_port = ports::free_port()?;
        let health_port = ports::free_port()?;
        let mut args = vec![
            format!("--kubeconfig={}", cluster.kubeconfig_path().display()),
            format!("--metrics-addr=127.0.0.1:{metrics_port}"),
            format!("--health-probe-bind-address=127.0.0.1:{health_port}"),
            "--enable-leader-election=false".into(),
            "--log-stdout-encoder=console".into(),
        ];
        if !config.batch_scheduler.is_empty() {
            args.push(format!("--batch-scheduler={}", config.batch_scheduler));
        }
        args.extend(config.extra_args.iter().cloned());
        let log = cluster.dir().join("logs").join(format!("{NAME}.log"));
        let proc =
            Proc::spawn_env(&build.binary(), &args, &[], &log).map_err(|e| Error::Operator {
                name: NAME.into(),
                detail: format!("cannot start {}: {e}", build.binary().display()),
            })?;
        let mut op = KubeRay {
            process: OperatorProcess::new(NAME, proc, 0, health_port, log),
            build,
            metrics_port,
            health_port,
        };
        op.process.ready(Duration::from_secs(120)).await?;
        Ok(op)
    }

    pub fn log_tail(&self, lines: usize) -> String {
        self.process.log_tail(lines)
    }

    /// Whether the process still runs.
    pub fn is_running(&mut self) -> bool {
        self.process.is_running()
    }
}
