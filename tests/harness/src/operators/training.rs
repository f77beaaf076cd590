//! Kubeflow training-operator (v1) run outside a pod against a test cluster.
//!
//! What its Deployment would provide, provided by hand:
//! - namespace `kubeflow`, Secret `training-operator-webhook-cert` and the
//!   ValidatingWebhookConfiguration `validator.training-operator.kubeflow.org` (its certificate
//!   rotator, pkg/cert, insists on all three). The configuration is the operator's published
//!   `manifests/base/webhook/manifests.yaml` renamed as its kustomize patch does, with each
//!   webhook's service reference turned into `https://127.0.0.1:<port><same path>`.
//! - The Secret is seeded with a CA (RSA, as the rotator requires) and a serving certificate
//!   valid for both the Service name the rotator checks (`training-operator.kubeflow.svc`)
//!   and 127.0.0.1 (the rotator's own certificate names only the Service, which the API
//!   server cannot reach here); the rotator accepts a valid pair, keeps it and injects the CA
//!   into the webhook configuration.
//! - The Secret volume: `tls.crt`/`tls.key` written into controller-runtime's default cert dir
//!   `$TMPDIR/k8s-webhook-server/serving-certs`, with a TMPDIR of the operator's own so parallel
//!   tests never share it. The rotator itself only checks that `tls.crt` exists under the
//!   hard-coded `/tmp/k8s-webhook-server/serving-certs` (cert-controller `ensureCertsMounted`,
//!   a stat, never a read), so that file is created, empty, if it is absent.
//! - Its metrics and health ports on free loopback ports, its webhook server on a free port,
//!   leader election off, the cluster's admin kubeconfig. The process dies with the test.

use std::path::Path;
use std::time::Duration;

use k8s_openapi::ByteString;
use k8s_openapi::api::admissionregistration::v1::ValidatingWebhookConfiguration;
use k8s_openapi::api::core::v1::{Namespace, Secret};
use kube::Api;
use kube::api::{ObjectMeta, PostParams};
use serde::Deserialize;
use serde_json::{Value, json};

use crate::cluster::TestCluster;
use crate::error::{Context, Error, Result};
use crate::operators::process::OperatorProcess;
use crate::operators::webhook_tls;
use crate::operators::{OperatorBuild, build_async};
use crate::ports;
use crate::process::Proc;

/// The operator's name in tests/tools/operators.
pub const NAME: &str = "training-operator";
/// Fixed in the operator (pkg/cert/cert.go, defaults of its flags).
pub const NAMESPACE: &str = "kubeflow";
pub const WEBHOOK_SECRET: &str = "training-operator-webhook-cert";
pub const WEBHOOK_CONFIGURATION: &str = "validator.training-operator.kubeflow.org";
const SERVICE_DNS_NAME: &str = "training-operator.kubeflow.svc";
const CA_NAME: &str = "training-operator-ca";

/// How to start the operator.
#[derive(Clone, Debug, Default)]
pub struct TrainingOperatorConfig {
    /// `--gang-scheduler-name`: "volcano" makes Volcano PodGroups, any other name
    /// scheduler-plugins PodGroups and that `schedulerName` on pods; empty: no gangs.
    pub gang_scheduler_name: String,
    /// Further flags (e.g. `--enable-scheme=pytorchjob`).
    pub extra_args: Vec<String>,
}

/// A running training-operator; killed on drop (and with the test process).
pub struct TrainingOperator {
    process: OperatorProcess,
    pub build: OperatorBuild,
    pub webhook_port: u16,
    pub metrics_port: u16,
    pub health_port: u16,
}

fn fail(detail: impl Into<String>) -> Error {
    Error::Operator {
        name: NAME.into(),
        detail: detail.into(),
    }
}

/// The published ValidatingWebhookConfiguration, renamed, each webhook calling
/// `https://127.0.0.1:<port><its path>`.
fn webhook_configuration(manifests: &Path, port: u16) -> Result<ValidatingWebhookConfiguration> {
    let path = manifests.join("manifests.yaml");
    let text = std::fs::read_to_string(&path).context(format!("reading {}", path.display()))?;
    let mut found = None;
    for doc in serde_yaml::Deserializer::from_str(&text) {
        let v = Value::deserialize(doc)
            .map_err(|e| fail(format!("{} is not YAML: {e}", path.display())))?;
        if v["kind"] == "ValidatingWebhookConfiguration" {
            found = Some(v);
        }
    }
    let mut v = found.ok_or_else(|| {
        fail(format!(
            "no ValidatingWebhookConfiguration in {}",
            path.display()
        ))
    })?;
    v["metadata"] = json!({"name": WEBHOOK_CONFIGURATION});
    let hooks = v["webhooks"]
        .as_array_mut()
        .ok_or_else(|| fail(format!("{}: no webhooks", path.display())))?;
    for hook in hooks {
        let service_path = hook["clientConfig"]["service"]["path"]
            .as_str()
            .ok_or_else(|| {
                fail(format!(
                    "{}: a webhook without a service path",
                    path.display()
                ))
            })?
            .to_string();
        hook["clientConfig"] = json!({"url": format!("https://127.0.0.1:{port}{service_path}")});
    }
    serde_json::from_value(v).map_err(|e| fail(format!("{}: {e}", path.display())))
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

impl TrainingOperator {
    /// Installs the operator's CRDs, its webhook prerequisites, and starts it; returns once
    /// its /readyz answers (certificates in place, webhook server listening).
    pub async fn start(cluster: &TestCluster, config: TrainingOperatorConfig) -> Result<Self> {
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
        create_or_keep(&namespaces, &ns, "namespace kubeflow").await?;

        let certs = webhook_tls::webhook_certs("training-operator", CA_NAME, SERVICE_DNS_NAME)?;
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
        let metrics_port = ports::free_port()?;
        let health_port = ports::free_port()?;
        let vwcs: Api<ValidatingWebhookConfiguration> = Api::all(client.clone());
        let vwc = webhook_configuration(&build.manifests_dir, webhook_port)?;
        let webhook_paths: Vec<String> = vwc
            .webhooks
            .iter()
            .flatten()
            .filter_map(|w| w.client_config.url.as_deref())
            .filter_map(|u| u.find("/validate").map(|i| u[i..].to_string()))
            .collect();
        vwcs.create(&PostParams::default(), &vwc)
            .await
            .context(format!(
                "creating ValidatingWebhookConfiguration {WEBHOOK_CONFIGURATION}"
            ))?;

        // The Secret volume, in a TMPDIR of this operator's own.
        let state = cluster.dir().join(NAME);
        let tmp = state.join("tmp");
        let cert_dir = tmp.join("k8s-webhook-server/serving-certs");
        webhook_tls::write_serving_pair(&cert_dir, &certs)?;
        webhook_tls::rotator_marker()?;

        let mut args = vec![
            format!("--kubeconfig={}", cluster.kubeconfig_path().display()),
            format!("--metrics-bind-address=127.0.0.1:{metrics_port}"),
            format!("--health-probe-bind-address=127.0.0.1:{health_port}"),
            format!("--webhook-server-port={webhook_port}"),
            "--leader-elect=false".into(),
        ];
        if !config.gang_scheduler_name.is_empty() {
            args.push(format!(
                "--gang-scheduler-name={}",
                config.gang_scheduler_name
            ));
        }
        args.extend(config.extra_args.iter().cloned());
        let log = cluster.dir().join("logs").join(format!("{NAME}.log"));
        let proc = Proc::spawn_env(&build.binary(), &args, &[("TMPDIR", tmp.as_os_str())], &log)
            .map_err(|e| fail(format!("cannot start {}: {e}", build.binary().display())))?;
        let mut op = TrainingOperator {
            process: OperatorProcess::new(NAME, proc, webhook_port, health_port, log),
            build,
            webhook_port,
            metrics_port,
            health_port,
        };
        op.process.ready(Duration::from_secs(180)).await?;
        // /readyz turns ready with the webhook server; the operator registers its webhooks
        // one scheme after the other, so a job created right away could meet a 404.
        op.process
            .webhooks_served(&webhook_paths, &certs.ca_der, Duration::from_secs(60))
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
            return Err(fail(format!(
                "the certificate rotator replaced the seeded serving certificate; log: {}",
                op.log_path().display()
            )));
        }
        Ok(op)
    }

    pub fn log_path(&self) -> &Path {
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
