//! Katib (v1beta1 katib-controller: Experiment, Suggestion and Trial controllers plus their
//! admission webhooks) run outside a pod against a test cluster.
//!
//! What its Deployment would provide, provided by hand:
//! - namespace `kubeflow` (consts.DefaultKatibNamespace) and the ConfigMap `katib-config`
//!   (key `katib-config.yaml`), from which the controllers and webhooks read the runtime
//!   configuration (suggestion images, metrics collectors) on every use.
//! - `--katib-config`: the same file, the published `installs/katib-standalone/katib-config.yaml`
//!   with only `init` changed: the certificate generator off (its certificate would name only
//!   `katib-controller.kubeflow.svc`, which the API server cannot reach here), the webhook
//!   server on a free port, metrics and health on free loopback ports. trialResources as
//!   published (kinds whose CRD is missing are skipped by the trial controller: start Katib
//!   after the job operators).
//! - The webhook Secret volume: `tls.crt`/`tls.key` in the hard-coded `/tmp/cert`
//!   (consts.CertDir), a test CA's serving certificate for 127.0.0.1, kept there beside the CA
//!   (`ca.crt`) and shared by every test (written once, renamed into place); the published
//!   Validating/MutatingWebhookConfigurations `katib.kubeflow.org`, each webhook calling
//!   `https://127.0.0.1:<port><same path>` with that CA, registered once served.
//! - The Services it dials by DNS name: the DB manager's address is configurable
//!   (`KATIB_DB_MANAGER_SERVICE_IP`/`_PORT`, with `KATIB_DB_MANAGER_SERVICE_NAMESPACE` empty so
//!   no `.<namespace>` is appended); a suggestion service's is not (`<suggestion>-<algorithm>.
//!   <namespace>:6789`, util.GetAlgorithmEndpoint), so [`KatibConfig::loopback_hosts`] runs the
//!   controller in a mount namespace of its own whose `/etc/hosts` maps those names to 127.0.0.1
//!   (what cluster DNS would answer, for this process only). The process dies with the test.

use std::net::{IpAddr, Ipv4Addr};
use std::path::{Path, PathBuf};
use std::time::Duration;

use k8s_openapi::api::admissionregistration::v1::{
    MutatingWebhookConfiguration, ValidatingWebhookConfiguration,
};
use k8s_openapi::api::core::v1::{ConfigMap, Namespace};
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
pub const NAME: &str = "katib";
/// Katib's namespace (consts.DefaultKatibNamespace, env KATIB_CORE_NAMESPACE).
pub const NAMESPACE: &str = "kubeflow";
/// consts.KatibConfigMapName and its key (consts.LabelKatibConfigTag).
pub const CONFIG_MAP: &str = "katib-config";
const CONFIG_KEY: &str = "katib-config.yaml";
/// The published webhook configurations' name (both kinds).
pub const WEBHOOK_CONFIGURATION: &str = "katib.kubeflow.org";
/// Where the webhook server reads its certificate (consts.CertDir, a constant).
const CERT_DIR: &str = "/tmp/cert";

/// How to start Katib.
#[derive(Clone, Debug, Default)]
pub struct KatibConfig {
    /// The DB manager's `host:port` (e.g. [`super::KatibDb::address`]); None leaves Katib's
    /// default `katib-db-manager.kubeflow:6789`, which does not resolve here (trials then
    /// never get an observation).
    pub db_manager: Option<String>,
    /// Names (`<service>.<namespace>`) the controller resolves to 127.0.0.1.
    pub loopback_hosts: Vec<String>,
}

/// A running katib-controller; killed on drop (and with the test process).
pub struct Katib {
    process: OperatorProcess,
    pub build: OperatorBuild,
    pub webhook_port: u16,
    pub metrics_port: u16,
    pub health_port: u16,
    pub config_path: PathBuf,
}

fn fail(detail: impl Into<String>) -> Error {
    Error::Operator {
        name: NAME.into(),
        detail: detail.into(),
    }
}

/// (CA PEM, serving certificate PEM, key PEM): a fresh test CA and a certificate for 127.0.0.1.
fn webhook_certs() -> Result<(String, String, String)> {
    let dn = |cn: &str| {
        let mut dn = DistinguishedName::new();
        dn.push(DnType::CommonName, cn);
        dn.push(DnType::OrganizationName, "katib");
        dn
    };
    let ca_key = KeyPair::generate()?;
    let mut ca = CertificateParams::new(vec!["katib-test-ca".to_string()])?;
    ca.distinguished_name = dn("katib-test-ca");
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
    let mut serving = CertificateParams::new(vec!["katib-controller.kubeflow.svc".into()])?;
    serving
        .subject_alt_names
        .push(SanType::IpAddress(IpAddr::V4(Ipv4Addr::LOCALHOST)));
    serving.distinguished_name = dn("katib-controller");
    serving.key_usages = vec![
        KeyUsagePurpose::DigitalSignature,
        KeyUsagePurpose::KeyEncipherment,
    ];
    serving.extended_key_usages = vec![ExtendedKeyUsagePurpose::ServerAuth];
    serving.not_before = rcgen::date_time_ymd(2020, 1, 1);
    serving.not_after = rcgen::date_time_ymd(2099, 1, 1);
    let cert = serving.signed_by(&key, &issuer)?;
    Ok((ca_cert.pem(), cert.pem(), key.serialize_pem()))
}

/// The CA of the pair in [`CERT_DIR`], putting a fresh CA and pair there unless one is: written
/// into a directory of this process's own beside it and renamed into place, so a concurrent
/// test never reads half of it.
fn ensure_webhook_certs() -> Result<String> {
    let dir = Path::new(CERT_DIR);
    let complete = |d: &Path| {
        ["ca.crt", "tls.crt", "tls.key"]
            .iter()
            .all(|f| d.join(f).is_file())
    };
    if !complete(dir) {
        if dir.join("tls.crt").exists() {
            return Err(fail(format!(
                "{CERT_DIR} holds a certificate without ca.crt (not this harness's): remove it"
            )));
        }
        let (ca, cert, key) = webhook_certs()?;
        let parent = dir.parent().unwrap_or(dir);
        // Unique per call: tests of one process run on threads sharing its pid.
        static ATTEMPT: std::sync::atomic::AtomicU64 = std::sync::atomic::AtomicU64::new(0);
        let attempt = ATTEMPT.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
        let tmp = parent.join(format!(".katib-cert-{}-{attempt}", std::process::id()));
        std::fs::create_dir_all(&tmp).context(format!("creating {}", tmp.display()))?;
        for (file, pem) in [("ca.crt", &ca), ("tls.crt", &cert), ("tls.key", &key)] {
            let p = tmp.join(file);
            std::fs::write(&p, pem).context(format!("writing {}", p.display()))?;
        }
        if std::fs::rename(&tmp, dir).is_err() {
            // Another test put its pair there first (or an empty directory is in the way).
            let _ = std::fs::remove_dir(dir);
            if std::fs::rename(&tmp, dir).is_err() {
                let _ = std::fs::remove_dir_all(&tmp);
            }
        }
    }
    if !complete(dir) {
        return Err(fail(format!("no CA and certificate pair in {CERT_DIR}")));
    }
    let ca = dir.join("ca.crt");
    std::fs::read_to_string(&ca).context(format!("reading {}", ca.display()))
}

/// The DER form of a PEM certificate (for the readiness probe's client).
fn pem_to_der(pem: &str) -> Result<Vec<u8>> {
    let body: String = pem
        .lines()
        .filter(|l| !l.starts_with("-----"))
        .collect::<Vec<_>>()
        .concat();
    unbase64(&body).ok_or_else(|| fail("the webhook CA is not PEM"))
}

const ALPHABET: &[u8; 64] = b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/";

fn base64(data: &[u8]) -> String {
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

/// Standard base64 (padding optional); None on any other character.
fn unbase64(text: &str) -> Option<Vec<u8>> {
    let mut out = Vec::with_capacity(text.len() / 4 * 3);
    let (mut acc, mut bits) = (0u32, 0u32);
    for c in text.bytes().filter(|c| *c != b'=') {
        let v = ALPHABET.iter().position(|a| *a == c)? as u32;
        acc = (acc << 6) | v;
        bits += 6;
        if bits >= 8 {
            bits -= 8;
            out.push((acc >> bits) as u8);
            acc &= (1 << bits) - 1;
        }
    }
    Some(out)
}

/// The published katib-config with `init` set for a process on loopback.
fn katib_config(
    published: &str,
    webhook_port: u16,
    metrics_port: u16,
    health_port: u16,
) -> Result<String> {
    let mut v: Value =
        serde_yaml::from_str(published).map_err(|e| fail(format!("katib-config: {e}")))?;
    if !v["init"].is_object() {
        return Err(fail("katib-config has no init section"));
    }
    v["init"]["certGenerator"] = json!({"enable": false});
    let controller = &mut v["init"]["controller"];
    if !controller.is_object() {
        *controller = json!({});
    }
    controller["webhookPort"] = json!(webhook_port);
    controller["metricsAddr"] = json!(format!("127.0.0.1:{metrics_port}"));
    controller["healthzAddr"] = json!(format!("127.0.0.1:{health_port}"));
    controller["enableLeaderElection"] = json!(false);
    serde_yaml::to_string(&v).map_err(|e| fail(format!("katib-config: {e}")))
}

/// The published webhook configuration of `kind`, each webhook calling
/// `https://127.0.0.1:<port><path>` with `ca`; and those paths.
fn webhook_configuration(
    manifests: &Path,
    kind: &str,
    port: u16,
    ca: &str,
) -> Result<(Value, Vec<String>)> {
    let path = manifests.join("webhooks.yaml");
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
    let hooks = v["webhooks"]
        .as_array_mut()
        .ok_or_else(|| fail(format!("{}: no webhooks in {kind}", path.display())))?;
    let mut paths = Vec::new();
    for hook in hooks {
        let service_path = hook["clientConfig"]["service"]["path"]
            .as_str()
            .ok_or_else(|| fail(format!("{}: a webhook without a path", path.display())))?
            .to_string();
        hook["clientConfig"] = json!({
            "url": format!("https://127.0.0.1:{port}{service_path}"),
            "caBundle": base64(ca.as_bytes()),
        });
        paths.push(service_path);
    }
    Ok((v, paths))
}

async fn create_or_replace<K>(api: &Api<K>, name: &str, object: &K) -> Result<()>
where
    K: kube::Resource + Clone + std::fmt::Debug + serde::Serialize + serde::de::DeserializeOwned,
{
    match api.create(&PostParams::default(), object).await {
        Ok(_) => Ok(()),
        Err(kube::Error::Api(e)) if e.code == 409 => {
            let current = api.get(name).await.context(format!("reading {name}"))?;
            let mut object = object.clone();
            object.meta_mut().resource_version = current.meta().resource_version.clone();
            api.replace(name, &PostParams::default(), &object)
                .await
                .map(|_| ())
                .context(format!("replacing {name}"))
        }
        Err(e) => Err(e).context(format!("creating {name}")),
    }
}

impl Katib {
    /// Installs Katib's CRDs, namespace, ConfigMap and starts the controller; registers its
    /// webhook configurations once /readyz answers and every webhook path is served.
    pub async fn start(cluster: &TestCluster, config: KatibConfig) -> Result<Self> {
        let build = build_async(NAME).await?;
        cluster.install_crds(&build.crds_dir).await?;
        let client = cluster.client();
        let ns: Namespace = serde_json::from_value(json!({"metadata": {"name": NAMESPACE}}))
            .map_err(|e| fail(e.to_string()))?;
        create_or_replace(&Api::all(client.clone()), NAMESPACE, &ns).await?;

        let webhook_port = ports::free_port()?;
        let metrics_port = ports::free_port()?;
        let health_port = ports::free_port()?;
        let published_path = build.manifests_dir.join(CONFIG_KEY);
        let published = std::fs::read_to_string(&published_path)
            .context(format!("reading {}", published_path.display()))?;
        let text = katib_config(&published, webhook_port, metrics_port, health_port)?;
        let state = cluster.dir().join(NAME);
        std::fs::create_dir_all(&state).context(format!("creating {}", state.display()))?;
        let config_path = state.join(CONFIG_KEY);
        std::fs::write(&config_path, &text)
            .context(format!("writing {}", config_path.display()))?;
        let cm = ConfigMap {
            metadata: ObjectMeta {
                name: Some(CONFIG_MAP.into()),
                namespace: Some(NAMESPACE.into()),
                ..Default::default()
            },
            data: Some([(CONFIG_KEY.to_string(), text)].into_iter().collect()),
            ..Default::default()
        };
        create_or_replace(&Api::namespaced(client.clone(), NAMESPACE), CONFIG_MAP, &cm).await?;

        let ca = ensure_webhook_certs()?;
        let (mwc, mut paths) = webhook_configuration(
            &build.manifests_dir,
            "MutatingWebhookConfiguration",
            webhook_port,
            &ca,
        )?;
        let (vwc, vpaths) = webhook_configuration(
            &build.manifests_dir,
            "ValidatingWebhookConfiguration",
            webhook_port,
            &ca,
        )?;
        paths.extend(vpaths);

        let db = config
            .db_manager
            .clone()
            .unwrap_or_else(|| "katib-db-manager:6789".into());
        let (db_host, db_port) = db
            .rsplit_once(':')
            .ok_or_else(|| fail(format!("db_manager {db:?} is not host:port")))?;
        let mut env: Vec<(&str, &std::ffi::OsStr)> = vec![
            ("KUBECONFIG", cluster.kubeconfig_path().as_os_str()),
            ("KATIB_DB_MANAGER_SERVICE_IP", db_host.as_ref()),
            ("KATIB_DB_MANAGER_SERVICE_PORT", db_port.as_ref()),
        ];
        if config.db_manager.is_some() {
            env.push(("KATIB_DB_MANAGER_SERVICE_NAMESPACE", "".as_ref()));
        }
        let binary = build.binary();
        let mut args = vec![format!("--katib-config={}", config_path.display())];
        let program = if config.loopback_hosts.is_empty() {
            binary.clone()
        } else {
            // /etc/hosts plus the names, bind-mounted over /etc/hosts in a mount namespace.
            let system = std::fs::read_to_string("/etc/hosts").unwrap_or_default();
            let hosts = state.join("hosts");
            let text = format!("{system}\n127.0.0.1 {}\n", config.loopback_hosts.join(" "));
            std::fs::write(&hosts, text).context(format!("writing {}", hosts.display()))?;
            let mut wrapped = vec![
                "--mount".into(),
                "--propagation=private".into(),
                "--".into(),
                "/bin/sh".into(),
                "-c".into(),
                r#"mount --bind "$1" /etc/hosts && shift && exec "$@""#.into(),
                "sh".into(),
                hosts.display().to_string(),
                binary.display().to_string(),
            ];
            wrapped.append(&mut args);
            args = wrapped;
            PathBuf::from("/usr/bin/unshare")
        };
        let log = cluster.dir().join("logs").join(format!("{NAME}.log"));
        let proc = Proc::spawn_env(&program, &args, &env, &log)
            .map_err(|e| fail(format!("cannot start {}: {e}", program.display())))?;
        let mut op = Katib {
            process: OperatorProcess::new(NAME, proc, webhook_port, health_port, log),
            build,
            webhook_port,
            metrics_port,
            health_port,
            config_path,
        };
        op.process.ready(Duration::from_secs(180)).await?;
        op.process
            .webhooks_served(&paths, &pem_to_der(&ca)?, Duration::from_secs(60))
            .await?;

        let mwc: MutatingWebhookConfiguration = serde_json::from_value(mwc)
            .map_err(|e| fail(format!("MutatingWebhookConfiguration: {e}")))?;
        let vwc: ValidatingWebhookConfiguration = serde_json::from_value(vwc)
            .map_err(|e| fail(format!("ValidatingWebhookConfiguration: {e}")))?;
        create_or_replace(&Api::all(client.clone()), WEBHOOK_CONFIGURATION, &mwc).await?;
        create_or_replace(&Api::all(client.clone()), WEBHOOK_CONFIGURATION, &vwc).await?;
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
    fn base64_round_trips() {
        for s in [&b""[..], b"f", b"fo", b"foo", b"foobar", &[0, 255, 7, 128]] {
            assert_eq!(unbase64(&base64(s)).unwrap(), s);
        }
        assert_eq!(base64(b"foobar"), "Zm9vYmFy");
        assert!(unbase64("a*b").is_none());
    }

    #[test]
    fn init_is_set_for_loopback_and_runtime_kept() {
        let published = "apiVersion: config.kubeflow.org/v1beta1\nkind: KatibConfig\ninit:\n  certGenerator:\n    enable: true\n  controller:\n    webhookPort: 8443\n    trialResources: [Job.v1.batch]\nruntime:\n  suggestions:\n  - algorithmName: random\n    image: x\n";
        let out: Value = serde_yaml::from_str(&katib_config(published, 1, 2, 3).unwrap()).unwrap();
        assert_eq!(out["init"]["certGenerator"]["enable"], json!(false));
        assert_eq!(out["init"]["controller"]["webhookPort"], json!(1));
        assert_eq!(
            out["init"]["controller"]["healthzAddr"],
            json!("127.0.0.1:3")
        );
        assert_eq!(
            out["init"]["controller"]["trialResources"],
            json!(["Job.v1.batch"])
        );
        assert_eq!(out["runtime"]["suggestions"][0]["image"], json!("x"));
    }
}
