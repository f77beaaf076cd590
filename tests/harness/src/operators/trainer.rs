//! Kubeflow Trainer v2 (`trainer-controller-manager`) run outside a pod against a test cluster.
//!
//! What its Deployment would provide, provided by hand (the same steps as training.rs, whose
//! rotator is the same cert-controller):
//! - namespace `kubeflow-system` (pkg/util/cert: the service-account namespace, else that),
//!   Secret `kubeflow-trainer-webhook-cert` and the ValidatingWebhookConfiguration
//!   `validator.trainer.kubeflow.org` (`cert.ManageCerts` insists on all three). The
//!   configuration is the published `manifests/base/webhook/manifests.yaml` with its kustomize
//!   `patch.yaml` applied (that patch gives the name the rotator looks for), each webhook's
//!   Service reference turned into `https://127.0.0.1:<port><same path>`.
//! - the Secret seeded with a test CA (RSA) and a serving certificate valid for both the
//!   Service name the rotator checks (`kubeflow-trainer-controller-manager.kubeflow-system.svc`)
//!   and 127.0.0.1; the rotator accepts the valid pair, keeps it and injects the CA.
//! - the Secret volume: `tls.crt`/`tls.key` in controller-runtime's default cert dir
//!   `$TMPDIR/k8s-webhook-server/serving-certs` (TMPDIR of its own); the rotator only stats
//!   `/tmp/k8s-webhook-server/serving-certs/tls.crt`, created empty if absent.
//! - JobSet's CRD must exist before it starts (it watches JobSets): start [`super::JobSet`]
//!   first. The PodGroup CRD (scheduler-plugins, at the version Trainer's go.mod selects) is
//!   installed with its own CRDs; without it `podGroupPolicy.coscheduling` does nothing.
//! - metrics off (`--metrics-bind-address=0`, its default), health and webhook on free
//!   loopback ports, leader election off, the admin kubeconfig. The process dies with the test.

use std::time::Duration;

use k8s_openapi::ByteString;
use k8s_openapi::api::core::v1::{Namespace, Secret};
use kube::Api;
use kube::api::{ObjectMeta, PostParams};

use crate::cluster::TestCluster;
use crate::error::{Context, Result};
use crate::operators::process::OperatorProcess;
use crate::operators::webhook_tls::{self, fail};
use crate::operators::{OperatorBuild, build_async};
use crate::ports;
use crate::process::Proc;

/// The operator's name in tests/tools/operators.
pub const NAME: &str = "trainer";
/// Fixed in the operator (pkg/util/cert, cmd/trainer-controller-manager flag defaults).
pub const NAMESPACE: &str = "kubeflow-system";
pub const WEBHOOK_SECRET: &str = "kubeflow-trainer-webhook-cert";
pub const WEBHOOK_SERVICE: &str = "kubeflow-trainer-controller-manager";
pub const WEBHOOK_CONFIGURATION: &str = "validator.trainer.kubeflow.org";
const CA_NAME: &str = "kubeflow-trainer-ca";
const CA_ORGANIZATION: &str = "kubeflow-trainer";

/// How to start the operator.
#[derive(Clone, Debug, Default)]
pub struct TrainerConfig {
    /// Further flags.
    pub extra_args: Vec<String>,
}

/// A running trainer-controller-manager; killed on drop (and with the test process).
pub struct Trainer {
    process: OperatorProcess,
    pub build: OperatorBuild,
    pub webhook_port: u16,
    pub health_port: u16,
}

async fn create_or_keep<K>(api: &Api<K>, object: &K, what: &str) -> Result<()>
where
    K: kube::Resource + Clone + std::fmt::Debug + serde::Serialize + serde::de::DeserializeOwned,
{
    match api.create(&PostParams::default(), object).await {
        Ok(_) => Ok(()),
        Err(kube::Error::Api(e)) if e.code == 409 => Ok(()),
        Err(e) => Err(e).context(format!("creating {what}")),
    }
}

impl Trainer {
    /// Installs Trainer's CRDs (and the PodGroup CRD), its webhook prerequisites, and starts
    /// it; returns once /readyz answers and its three webhooks are served.
    pub async fn start(cluster: &TestCluster, config: TrainerConfig) -> Result<Self> {
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
        create_or_keep(&namespaces, &ns, &format!("namespace {NAMESPACE}")).await?;

        let service_dns = format!("{WEBHOOK_SERVICE}.{NAMESPACE}.svc");
        let certs = webhook_tls::webhook_certs(CA_ORGANIZATION, CA_NAME, &service_dns)?;
        let secrets: Api<Secret> = Api::namespaced(client.clone(), NAMESPACE);
        let data = [
            ("ca.crt", &certs.ca_cert),
            ("ca.key", &certs.ca_key),
            ("tls.crt", &certs.tls_cert),
            ("tls.key", &certs.tls_key),
        ]
        .into_iter()
        .map(|(k, v)| (k.to_string(), ByteString(v.as_bytes().to_vec())))
        .collect();
        let secret = Secret {
            metadata: ObjectMeta {
                name: Some(WEBHOOK_SECRET.into()),
                ..Default::default()
            },
            data: Some(data),
            ..Default::default()
        };
        secrets
            .create(&PostParams::default(), &secret)
            .await
            .context(format!("creating Secret {NAMESPACE}/{WEBHOOK_SECRET}"))?;

        let webhook_port = ports::free_port()?;
        let health_port = ports::free_port()?;
        let vwc = webhook_tls::url_webhooks(
            NAME,
            &build.manifests_dir,
            "ValidatingWebhookConfiguration",
            &["patch.yaml"],
            WEBHOOK_CONFIGURATION,
            webhook_port,
            &certs.ca_cert,
        )?;
        webhook_tls::create(NAME, &client, &vwc).await?;

        let state = cluster.dir().join(NAME);
        let tmp = state.join("tmp");
        webhook_tls::write_serving_pair(&tmp.join("k8s-webhook-server/serving-certs"), &certs)?;
        webhook_tls::rotator_marker()?;

        let mut args = vec![
            format!("--kubeconfig={}", cluster.kubeconfig_path().display()),
            "--metrics-bind-address=0".into(),
            format!("--health-probe-bind-address=127.0.0.1:{health_port}"),
            format!("--webhook-server-port={webhook_port}"),
            "--leader-elect=false".into(),
        ];
        args.extend(config.extra_args.iter().cloned());
        let log = cluster.dir().join("logs").join(format!("{NAME}.log"));
        let proc = Proc::spawn_env(&build.binary(), &args, &[("TMPDIR", tmp.as_os_str())], &log)
            .map_err(|e| {
                fail(
                    NAME,
                    format!("cannot start {}: {e}", build.binary().display()),
                )
            })?;
        let mut op = Trainer {
            process: OperatorProcess::new(NAME, proc, webhook_port, health_port, log),
            build,
            webhook_port,
            health_port,
        };
        op.process.ready(Duration::from_secs(180)).await?;
        // /readyz turns ready with the webhook server; the webhooks are registered after the
        // certificates (setupControllers), so a runtime created right away could meet a 404.
        op.process
            .webhooks_served(&vwc.paths, &certs.ca_der, Duration::from_secs(60))
            .await?;

        // The rotator kept the seeded pair (had it replaced it, 127.0.0.1 would not verify).
        let now = secrets
            .get(WEBHOOK_SECRET)
            .await
            .context(format!("reading Secret {NAMESPACE}/{WEBHOOK_SECRET}"))?;
        let kept = now
            .data
            .as_ref()
            .and_then(|d| d.get("tls.crt"))
            .is_some_and(|c| c.0 == certs.tls_cert.as_bytes());
        if !kept {
            return Err(fail(
                NAME,
                format!(
                    "the certificate rotator replaced the seeded serving certificate; log: {}",
                    op.log_path().display()
                ),
            ));
        }
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
