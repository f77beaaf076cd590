//! JobSet (sigs.k8s.io/jobset) run outside a pod against a test cluster.
//!
//! What its Deployment would provide, provided by hand:
//! - a `--config` Configuration (config.jobset.x-k8s.io/v1alpha1) as its release ships one
//!   (config/components/manager/controller_manager_config.yaml), with internal certificate
//!   management off (`internalCertManagement.enable: false`: no Secret, no rotator), the
//!   webhook server on a free loopback port serving a test certificate from a directory of its
//!   own (`webhook.host/port/certDir`), health and metrics on free loopback ports, leader
//!   election off.
//! - its published Mutating/ValidatingWebhookConfigurations
//!   (`config/components/webhook/manifests.yaml`) with the release's kustomize patches
//!   (`patches/{mutating,validating}-patch.yaml`: the pod webhooks only see pods labelled
//!   `jobset.sigs.k8s.io/jobset-name`) and its `namePrefix: jobset-`, each webhook calling
//!   `https://127.0.0.1:<port><same path>` with the test CA.
//! - namespace `jobset-system`. The process dies with the test.

use std::path::PathBuf;
use std::time::Duration;

use k8s_openapi::api::core::v1::Namespace;
use kube::Api;
use kube::api::{ObjectMeta, PostParams};
use serde_json::json;

use crate::cluster::TestCluster;
use crate::error::{Context, Result};
use crate::operators::process::OperatorProcess;
use crate::operators::webhook_tls::{self, fail};
use crate::operators::{OperatorBuild, build_async};
use crate::ports;
use crate::process::Proc;

/// The operator's name in tests/tools/operators.
pub const NAME: &str = "jobset";
/// Its release's namespace (config/default/kustomization.yaml).
pub const NAMESPACE: &str = "jobset-system";
/// The release's names (`namePrefix: jobset-`).
pub const MUTATING_WEBHOOK_CONFIGURATION: &str = "jobset-mutating-webhook-configuration";
pub const VALIDATING_WEBHOOK_CONFIGURATION: &str = "jobset-validating-webhook-configuration";
const SERVICE_DNS_NAME: &str = "jobset-webhook-service.jobset-system.svc";

/// How to start JobSet.
#[derive(Clone, Debug, Default)]
pub struct JobSetConfig {
    /// Further flags (e.g. `--feature-gates=...`).
    pub extra_args: Vec<String>,
}

/// A running JobSet controller manager; killed on drop (and with the test process).
pub struct JobSet {
    process: OperatorProcess,
    pub build: OperatorBuild,
    pub webhook_port: u16,
    pub metrics_port: u16,
    pub health_port: u16,
    pub config_path: PathBuf,
}

impl JobSet {
    /// Installs the JobSet CRD and webhook configurations and starts the controller; returns
    /// once its /readyz answers and every webhook path is served.
    pub async fn start(cluster: &TestCluster, config: JobSetConfig) -> Result<Self> {
        let build = build_async(NAME).await?;
        cluster.install_crds(&build.crds_dir).await?;
        let client = cluster.client();

        let namespaces: Api<Namespace> = Api::all(client.clone());
        let ns = Namespace {
            metadata: ObjectMeta {
                name: Some(NAMESPACE.into()),
                ..Default::default()
            },
            ..Default::default()
        };
        match namespaces.create(&PostParams::default(), &ns).await {
            Ok(_) => {}
            Err(kube::Error::Api(e)) if e.code == 409 => {}
            Err(e) => return Err(e).context(format!("creating namespace {NAMESPACE}")),
        }

        let certs = webhook_tls::webhook_certs("jobset", "jobset-test-ca", SERVICE_DNS_NAME)?;
        let webhook_port = ports::free_port()?;
        let metrics_port = ports::free_port()?;
        let health_port = ports::free_port()?;
        let mut paths = Vec::new();
        for (kind, patch, name) in [
            (
                "MutatingWebhookConfiguration",
                "mutating-patch.yaml",
                MUTATING_WEBHOOK_CONFIGURATION,
            ),
            (
                "ValidatingWebhookConfiguration",
                "validating-patch.yaml",
                VALIDATING_WEBHOOK_CONFIGURATION,
            ),
        ] {
            let w = webhook_tls::url_webhooks(
                NAME,
                &build.manifests_dir,
                kind,
                &[patch],
                name,
                webhook_port,
                &certs.ca_cert,
            )?;
            webhook_tls::create(NAME, &client, &w).await?;
            paths.extend(w.paths);
        }

        let state = cluster.dir().join(NAME);
        let cert_dir = state.join("certs");
        webhook_tls::write_serving_pair(&cert_dir, &certs)?;
        let config_path = state.join("config.yaml");
        let configuration = json!({
            "apiVersion": "config.jobset.x-k8s.io/v1alpha1",
            "kind": "Configuration",
            "leaderElection": {"leaderElect": false},
            "internalCertManagement": {"enable": false},
            "webhook": {"port": webhook_port, "host": "127.0.0.1",
                "certDir": cert_dir.display().to_string()},
            "metrics": {"bindAddress": format!("127.0.0.1:{metrics_port}")},
            "health": {"healthProbeBindAddress": format!("127.0.0.1:{health_port}")},
        });
        let text = serde_yaml::to_string(&configuration)
            .map_err(|e| fail(NAME, format!("encoding the configuration: {e}")))?;
        std::fs::write(&config_path, text).context(format!("writing {}", config_path.display()))?;

        let mut args = vec![
            format!("--kubeconfig={}", cluster.kubeconfig_path().display()),
            format!("--config={}", config_path.display()),
        ];
        args.extend(config.extra_args.iter().cloned());
        let log = cluster.dir().join("logs").join(format!("{NAME}.log"));
        let proc = Proc::spawn_env(&build.binary(), &args, &[], &log).map_err(|e| {
            fail(
                NAME,
                format!("cannot start {}: {e}", build.binary().display()),
            )
        })?;
        let mut op = JobSet {
            process: OperatorProcess::new(NAME, proc, webhook_port, health_port, log),
            build,
            webhook_port,
            metrics_port,
            health_port,
            config_path,
        };
        op.process.ready(Duration::from_secs(180)).await?;
        op.process
            .webhooks_served(&paths, &certs.ca_der, Duration::from_secs(60))
            .await?;
        Ok(op)
    }

    pub fn log_path(&self) -> &std::path::Path {
        self.process.log_path()
    }

    pub fn log_tail(&self, lines: usize) -> String {
        self.process.log_tail(lines)
    }

    /// Whether the process still runs.
    pub fn is_running(&mut self) -> bool {
        self.process.is_running()
    }

    pub fn kill(&mut self) {
        self.process.kill();
    }
}
