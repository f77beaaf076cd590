//! Kueue run outside a pod against a test cluster.
//!
//! What its Deployment (and cert-manager or its internal rotator) would provide, provided by
//! hand:
//! - a `--config` Configuration (config.kueue.x-k8s.io/v1beta2): internal certificate
//!   management off, the webhook server on a free loopback port serving a certificate from a
//!   directory of its own, metrics and health on free loopback ports, leader election off, the
//!   integrations asked for (`batch/job` by default), `manageJobsWithoutQueueName: false`.
//! - a test CA (ECDSA, generated per start) and a serving certificate for 127.0.0.1 written into
//!   that directory.
//! - its published Mutating/ValidatingWebhookConfigurations (`config/components/webhook`),
//!   renamed, each kept webhook calling `https://127.0.0.1:<port><same path>` with the test CA.
//!   Only the webhooks of Kueue's own kinds and of the enabled integrations are kept: the others
//!   (Deployments, StatefulSets, pods, ...) would send every such object of the cluster to a
//!   server that does not handle it.
//! - with internal certificate management off, Kueue serves metrics over TLS with a certificate
//!   from the hard-coded `/etc/kueue/metrics/certs` (cmd/kueue/main.go, exits if absent): a
//!   self-signed pair for 127.0.0.1 is put there if none is (shared by every test; any valid
//!   pair will do, it is only ever read).
//! - namespace `kueue-system` (its default namespace); the visibility API server is off
//!   (`VisibilityOnDemand=false`: it would bind a fixed port and needs an APIService).
//!   The process dies with the test.

use std::net::{IpAddr, Ipv4Addr};
use std::path::{Path, PathBuf};
use std::time::Duration;

use k8s_openapi::api::admissionregistration::v1::{
    MutatingWebhookConfiguration, ValidatingWebhookConfiguration,
};
use k8s_openapi::api::core::v1::Namespace;
use kube::Api;
use kube::api::{ObjectMeta, PostParams};
use rcgen::{
    BasicConstraints, CertificateParams, DistinguishedName, DnType, ExtendedKeyUsagePurpose, IsCa,
    Issuer, KeyPair, KeyUsagePurpose, SanType,
};
use serde::Deserialize;
use serde_json::{Value, json};

use crate::cluster::TestCluster;
use crate::error::{Context, Error, Result};
use crate::operators::process::OperatorProcess;
use crate::operators::{OperatorBuild, build_async};
use crate::ports;
use crate::process::Proc;

/// The operator's name in tests/tools/operators.
pub const NAME: &str = "kueue";
/// Kueue's default namespace (`Configuration.namespace`).
pub const NAMESPACE: &str = "kueue-system";
pub const MUTATING_WEBHOOK_CONFIGURATION: &str = "kueue-mutating-webhook-configuration";
pub const VALIDATING_WEBHOOK_CONFIGURATION: &str = "kueue-validating-webhook-configuration";

/// Where Kueue reads its metrics certificate when internal cert management is off.
const METRICS_CERT_DIR: &str = "/etc/kueue/metrics/certs";

/// Puts a certificate and key into [`METRICS_CERT_DIR`] unless both are there: written into a
/// directory of this process's own beside it and renamed into place, so a concurrent test never
/// reads half a pair.
fn ensure_metrics_certs(certs: &WebhookCerts) -> Result<()> {
    let dir = Path::new(METRICS_CERT_DIR);
    if dir.join("tls.crt").is_file() && dir.join("tls.key").is_file() {
        return Ok(());
    }
    let parent = dir.parent().unwrap_or(dir);
    std::fs::create_dir_all(parent).context(format!("creating {}", parent.display()))?;
    let tmp = parent.join(format!(".certs-{}", std::process::id()));
    std::fs::create_dir_all(&tmp).context(format!("creating {}", tmp.display()))?;
    for (file, pem) in [("tls.crt", &certs.tls_cert), ("tls.key", &certs.tls_key)] {
        let p = tmp.join(file);
        std::fs::write(&p, pem).context(format!("writing {}", p.display()))?;
    }
    if std::fs::rename(&tmp, dir).is_err() {
        // Another test put its pair there first.
        let _ = std::fs::remove_dir_all(&tmp);
    }
    if dir.join("tls.crt").is_file() && dir.join("tls.key").is_file() {
        Ok(())
    } else {
        Err(fail(format!("no certificate pair in {METRICS_CERT_DIR}")))
    }
}

/// How to start Kueue.
#[derive(Clone, Debug)]
pub struct KueueConfig {
    /// `integrations.frameworks` (e.g. `batch/job`).
    pub frameworks: Vec<String>,
    /// `manageJobsWithoutQueueName`.
    pub manage_jobs_without_queue_name: bool,
    /// Further flags.
    pub extra_args: Vec<String>,
}

impl Default for KueueConfig {
    fn default() -> Self {
        KueueConfig {
            frameworks: vec!["batch/job".into()],
            manage_jobs_without_queue_name: false,
            extra_args: Vec::new(),
        }
    }
}

/// A running Kueue; killed on drop (and with the test process).
pub struct Kueue {
    process: OperatorProcess,
    pub build: OperatorBuild,
    pub webhook_port: u16,
    pub metrics_port: u16,
    pub health_port: u16,
    pub config_path: PathBuf,
}

struct WebhookCerts {
    ca_der: Vec<u8>,
    ca_cert: String,
    tls_cert: String,
    tls_key: String,
}

fn webhook_certs() -> Result<WebhookCerts> {
    let dn = |cn: &str| {
        let mut dn = DistinguishedName::new();
        dn.push(DnType::CommonName, cn);
        dn.push(DnType::OrganizationName, "kueue");
        dn
    };
    let ca_key = KeyPair::generate()?;
    let mut ca = CertificateParams::new(vec!["kueue-test-ca".to_string()])?;
    ca.distinguished_name = dn("kueue-test-ca");
    ca.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
    ca.key_usages = vec![
        KeyUsagePurpose::KeyCertSign,
        KeyUsagePurpose::CrlSign,
        KeyUsagePurpose::DigitalSignature,
    ];
    ca.not_before = rcgen::date_time_ymd(2020, 1, 1);
    ca.not_after = rcgen::date_time_ymd(2099, 1, 1);
    let ca_cert = ca.self_signed(&ca_key)?;
    let issuer = Issuer::from_params(&ca, &ca_key);

    let key = KeyPair::generate()?;
    let mut serving =
        CertificateParams::new(vec!["kueue-webhook-service.kueue-system.svc".into()])?;
    serving
        .subject_alt_names
        .push(SanType::IpAddress(IpAddr::V4(Ipv4Addr::LOCALHOST)));
    serving.distinguished_name = dn("kueue-webhook");
    serving.key_usages = vec![
        KeyUsagePurpose::DigitalSignature,
        KeyUsagePurpose::KeyEncipherment,
    ];
    serving.extended_key_usages = vec![ExtendedKeyUsagePurpose::ServerAuth];
    serving.not_before = rcgen::date_time_ymd(2020, 1, 1);
    serving.not_after = rcgen::date_time_ymd(2099, 1, 1);
    let cert = serving.signed_by(&key, &issuer)?;
    Ok(WebhookCerts {
        ca_der: ca_cert.der().to_vec(),
        ca_cert: ca_cert.pem(),
        tls_cert: cert.pem(),
        tls_key: key.serialize_pem(),
    })
}

fn fail(detail: impl Into<String>) -> Error {
    Error::Operator {
        name: NAME.into(),
        detail: detail.into(),
    }
}

/// Whether a published webhook path belongs to Kueue's own kinds or an enabled integration
/// (`batch/job` -> `/mutate-batch-v1-job`, `/validate-batch-v1-job`).
fn keep_webhook(path: &str, frameworks: &[String]) -> bool {
    if path.contains("-kueue-x-k8s-io-") {
        return true;
    }
    frameworks.iter().any(|f| {
        let (group, kind) = f.split_once('/').unwrap_or(("", f.as_str()));
        let group = group.replace('.', "-");
        path.strip_prefix("/mutate-")
            .or_else(|| path.strip_prefix("/validate-"))
            .is_some_and(|rest| {
                rest.starts_with(&format!("{group}-")) && rest.ends_with(&format!("-{kind}"))
            })
    })
}

/// The published webhook configuration of `kind`, renamed `name`, its kept webhooks calling
/// `https://127.0.0.1:<port><path>` with `ca`.
fn webhook_configuration(
    manifests: &Path,
    kind: &str,
    name: &str,
    port: u16,
    ca: &str,
    frameworks: &[String],
) -> Result<(Value, Vec<String>)> {
    let path = manifests.join("manifests.yaml");
    let text = std::fs::read_to_string(&path).context(format!("reading {}", path.display()))?;
    let mut found = None;
    for doc in serde_yaml::Deserializer::from_str(&text) {
        let v = Value::deserialize(doc)
            .map_err(|e| fail(format!("{} is not YAML: {e}", path.display())))?;
        if v["kind"] == kind {
            found = Some(v);
        }
    }
    let mut v = found.ok_or_else(|| fail(format!("no {kind} in {}", path.display())))?;
    v["metadata"] = json!({"name": name});
    let hooks = v["webhooks"]
        .as_array()
        .ok_or_else(|| fail(format!("{}: no webhooks in {kind}", path.display())))?;
    let mut kept = Vec::new();
    let mut paths = Vec::new();
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
        if !keep_webhook(&service_path, frameworks) {
            continue;
        }
        let mut hook = hook.clone();
        hook["clientConfig"] = json!({
            "url": format!("https://127.0.0.1:{port}{service_path}"),
            "caBundle": base64(ca.as_bytes()),
        });
        paths.push(service_path);
        kept.push(hook);
    }
    v["webhooks"] = Value::Array(kept);
    Ok((v, paths))
}

fn base64(data: &[u8]) -> String {
    const ALPHABET: &[u8; 64] = b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/";
    let mut out = String::with_capacity(data.len().div_ceil(3) * 4);
    for chunk in data.chunks(3) {
        let b = [
            chunk[0],
            chunk.get(1).copied().unwrap_or(0),
            chunk.get(2).copied().unwrap_or(0),
        ];
        let n = (u32::from(b[0]) << 16) | (u32::from(b[1]) << 8) | u32::from(b[2]);
        for i in 0..4 {
            if i <= chunk.len() {
                out.push(ALPHABET[((n >> (18 - 6 * i)) & 63) as usize] as char);
            } else {
                out.push('=');
            }
        }
    }
    out
}

/// The Configuration file's content.
fn configuration(
    config: &KueueConfig,
    webhook_port: u16,
    cert_dir: &Path,
    metrics_port: u16,
    health_port: u16,
) -> Value {
    json!({
        "apiVersion": "config.kueue.x-k8s.io/v1beta2",
        "kind": "Configuration",
        "namespace": NAMESPACE,
        "health": {"healthProbeBindAddress": format!("127.0.0.1:{health_port}")},
        "metrics": {"bindAddress": format!("127.0.0.1:{metrics_port}")},
        "webhook": {"port": webhook_port, "host": "127.0.0.1", "certDir": cert_dir.display().to_string()},
        "leaderElection": {"leaderElect": false},
        "internalCertManagement": {"enable": false},
        "manageJobsWithoutQueueName": config.manage_jobs_without_queue_name,
        "integrations": {"frameworks": config.frameworks},
    })
}

impl Kueue {
    /// Installs Kueue's CRDs, its webhook configurations and starts it; returns once its
    /// /readyz answers and every kept webhook path is served.
    pub async fn start(cluster: &TestCluster, config: KueueConfig) -> Result<Self> {
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

        let certs = webhook_certs()?;
        let state = cluster.dir().join(NAME);
        let cert_dir = state.join("serving-certs");
        std::fs::create_dir_all(&cert_dir).context(format!("creating {}", cert_dir.display()))?;
        for (file, pem) in [("tls.crt", &certs.tls_cert), ("tls.key", &certs.tls_key)] {
            let p = cert_dir.join(file);
            std::fs::write(&p, pem).context(format!("writing {}", p.display()))?;
        }

        ensure_metrics_certs(&certs)?;

        let webhook_port = ports::free_port()?;
        let metrics_port = ports::free_port()?;
        let health_port = ports::free_port()?;
        let config_path = state.join("config.yaml");
        let cfg = configuration(&config, webhook_port, &cert_dir, metrics_port, health_port);
        std::fs::write(
            &config_path,
            serde_yaml::to_string(&cfg).map_err(|e| fail(format!("config: {e}")))?,
        )
        .context(format!("writing {}", config_path.display()))?;

        let (mwc, mut paths) = webhook_configuration(
            &build.manifests_dir,
            "MutatingWebhookConfiguration",
            MUTATING_WEBHOOK_CONFIGURATION,
            webhook_port,
            &certs.ca_cert,
            &config.frameworks,
        )?;
        let (vwc, vpaths) = webhook_configuration(
            &build.manifests_dir,
            "ValidatingWebhookConfiguration",
            VALIDATING_WEBHOOK_CONFIGURATION,
            webhook_port,
            &certs.ca_cert,
            &config.frameworks,
        )?;
        paths.extend(vpaths);

        let mut args = vec![
            format!("--kubeconfig={}", cluster.kubeconfig_path().display()),
            format!("--config={}", config_path.display()),
            "--feature-gates=VisibilityOnDemand=false".into(),
        ];
        args.extend(config.extra_args.iter().cloned());
        let log = cluster.dir().join("logs").join(format!("{NAME}.log"));
        let proc = Proc::spawn_env(&build.binary(), &args, &[], &log)
            .map_err(|e| fail(format!("cannot start {}: {e}", build.binary().display())))?;
        let mut op = Kueue {
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

        // Registered once served, so no request of the cluster meets a closed port.
        let mwc: MutatingWebhookConfiguration = serde_json::from_value(mwc)
            .map_err(|e| fail(format!("MutatingWebhookConfiguration: {e}")))?;
        let vwc: ValidatingWebhookConfiguration = serde_json::from_value(vwc)
            .map_err(|e| fail(format!("ValidatingWebhookConfiguration: {e}")))?;
        Api::<MutatingWebhookConfiguration>::all(client.clone())
            .create(&PostParams::default(), &mwc)
            .await
            .context(format!(
                "creating MutatingWebhookConfiguration {MUTATING_WEBHOOK_CONFIGURATION}"
            ))?;
        Api::<ValidatingWebhookConfiguration>::all(client.clone())
            .create(&PostParams::default(), &vwc)
            .await
            .context(format!(
                "creating ValidatingWebhookConfiguration {VALIDATING_WEBHOOK_CONFIGURATION}"
            ))?;
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

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn base64_matches_the_standard_alphabet() {
        assert_eq!(base64(b""), "");
        assert_eq!(base64(b"f"), "Zg==");
        assert_eq!(base64(b"fo"), "Zm8=");
        assert_eq!(base64(b"foo"), "Zm9v");
        assert_eq!(base64(b"foobar"), "Zm9vYmFy");
    }

    #[test]
    fn keeps_kueue_and_enabled_framework_webhooks() {
        let f = vec!["batch/job".to_string()];
        assert!(keep_webhook("/mutate-batch-v1-job", &f));
        assert!(keep_webhook("/validate-batch-v1-job", &f));
        assert!(keep_webhook(
            "/mutate-kueue-x-k8s-io-v1beta2-clusterqueue",
            &f
        ));
        assert!(!keep_webhook("/mutate--v1-pod", &f));
        assert!(!keep_webhook("/mutate-apps-v1-deployment", &f));
        assert!(!keep_webhook("/mutate-kubeflow-org-v1-pytorchjob", &f));
        let pod = vec!["pod".to_string()];
        assert!(keep_webhook("/mutate--v1-pod", &pod));
    }
}
