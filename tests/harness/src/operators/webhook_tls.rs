//! Loopback webhooks for operators run outside a pod, shared by [`super::trainer`] and
//! [`super::jobset`] (training.rs and kueue.rs keep their own copies of the same steps):
//! - a test CA (RSA, the fixed test-only key training.rs uses: cert-controller's rotator parses
//!   its CA key as PKCS#1 RSA) and a serving certificate for the operator's Service DNS name
//!   and 127.0.0.1;
//! - the operator's published webhook configurations with the JSON 6902 patches its kustomize
//!   release applies to them, every webhook's Service reference turned into
//!   `https://127.0.0.1:<port><same path>` with the test CA;
//! - the serving pair written where controller-runtime's webhook server reads it.

use std::net::{IpAddr, Ipv4Addr};
use std::path::Path;

use k8s_openapi::api::admissionregistration::v1::{
    MutatingWebhookConfiguration, ValidatingWebhookConfiguration,
};
use kube::api::{Api, PostParams};
use rcgen::{
    BasicConstraints, CertificateParams, DistinguishedName, DnType, ExtendedKeyUsagePurpose, IsCa,
    Issuer, KeyPair, KeyUsagePurpose, SanType,
};
use serde::Deserialize;
use serde_json::{Value, json};

use crate::error::{Context, Error, Result};

/// The throwaway test CA key every operator harness uses (`openssl genrsa`), not a secret: it only ever
/// signs loopback webhooks of test clusters.
const CA_KEY_PKCS1: &str = include_str!("training-webhook-ca.rsa.pem");
const CA_KEY_PKCS8: &str = include_str!("training-webhook-ca.pkcs8.pem");

/// Where cert-controller's rotator looks for `tls.crt` in Trainer and JobSet (a hard-coded
/// constant of their pkg/util/cert): it only stats the file, never reads it.
pub(super) const ROTATOR_CERT_DIR: &str = "/tmp/k8s-webhook-server/serving-certs";

pub(super) struct WebhookCerts {
    pub ca_der: Vec<u8>,
    pub ca_cert: String,
    pub ca_key: String,
    pub tls_cert: String,
    pub tls_key: String,
}

pub(super) fn fail(name: &str, detail: impl Into<String>) -> Error {
    Error::Operator {
        name: name.into(),
        detail: detail.into(),
    }
}

/// A CA named `ca_name` (the rotator verifies its CA for that DNS name) and a serving
/// certificate for `service_dns` and 127.0.0.1, both valid 2020-2099.
pub(super) fn webhook_certs(org: &str, ca_name: &str, service_dns: &str) -> Result<WebhookCerts> {
    let dn = |cn: &str| {
        let mut dn = DistinguishedName::new();
        dn.push(DnType::CommonName, cn);
        dn.push(DnType::OrganizationName, org);
        dn
    };
    let ca_key = KeyPair::from_pkcs8_pem_and_sign_algo(CA_KEY_PKCS8, &rcgen::PKCS_RSA_SHA256)?;
    let mut ca = CertificateParams::new(vec![ca_name.to_string()])?;
    ca.distinguished_name = dn(ca_name);
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
    let mut serving = CertificateParams::new(vec![service_dns.to_string()])?;
    serving
        .subject_alt_names
        .push(SanType::IpAddress(IpAddr::V4(Ipv4Addr::LOCALHOST)));
    serving.distinguished_name = dn(service_dns);
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
        ca_key: CA_KEY_PKCS1.to_string(),
        tls_cert: cert.pem(),
        tls_key: key.serialize_pem(),
    })
}

/// Writes `tls.crt`/`tls.key` into `dir` (created).
pub(super) fn write_serving_pair(dir: &Path, certs: &WebhookCerts) -> Result<()> {
    std::fs::create_dir_all(dir).context(format!("creating {}", dir.display()))?;
    for (file, pem) in [("tls.crt", &certs.tls_cert), ("tls.key", &certs.tls_key)] {
        let p = dir.join(file);
        std::fs::write(&p, pem).context(format!("writing {}", p.display()))?;
    }
    Ok(())
}

/// Creates [`ROTATOR_CERT_DIR`]`/tls.crt`, empty, unless it exists.
pub(super) fn rotator_marker() -> Result<()> {
    std::fs::create_dir_all(ROTATOR_CERT_DIR).context(format!("creating {ROTATOR_CERT_DIR}"))?;
    let marker = Path::new(ROTATOR_CERT_DIR).join("tls.crt");
    match std::fs::OpenOptions::new()
        .write(true)
        .create_new(true)
        .open(&marker)
    {
        Ok(_) => Ok(()),
        Err(e) if e.kind() == std::io::ErrorKind::AlreadyExists => Ok(()),
        Err(e) => Err(e).context(format!("creating {}", marker.display())),
    }
}

fn yaml_docs(name: &str, path: &Path) -> Result<Vec<Value>> {
    let text = std::fs::read_to_string(path).context(format!("reading {}", path.display()))?;
    serde_yaml::Deserializer::from_str(&text)
        .map(|doc| {
            Value::deserialize(doc)
                .map_err(|e| fail(name, format!("{} is not YAML: {e}", path.display())))
        })
        .filter(|v| !matches!(v, Ok(Value::Null)))
        .collect()
}

/// Applies a kustomize JSON 6902 patch file (a list of `replace`/`add` operations on JSON
/// pointers) to `target`.
fn apply_json6902(name: &str, patch: &Path, target: &mut Value) -> Result<()> {
    let bad = |d: String| fail(name, format!("{}: {d}", patch.display()));
    for ops in yaml_docs(name, patch)? {
        let ops = ops
            .as_array()
            .ok_or_else(|| bad("not a list of operations".into()))?;
        for op in ops {
            let path = op["path"]
                .as_str()
                .ok_or_else(|| bad("an operation without a path".into()))?;
            let kind = op["op"].as_str().unwrap_or("");
            if !matches!(kind, "replace" | "add") {
                return Err(bad(format!("unsupported operation {kind:?} at {path}")));
            }
            let slot = target
                .pointer_mut(path)
                .ok_or_else(|| bad(format!("{path} does not exist in the target")))?;
            *slot = op["value"].clone();
        }
    }
    Ok(())
}

/// One derived webhook configuration.
pub(super) struct UrlWebhooks {
    /// `ValidatingWebhookConfiguration` or `MutatingWebhookConfiguration`.
    pub kind: String,
    pub object: Value,
    /// The webhook paths it calls.
    pub paths: Vec<String>,
}

/// The configuration of `kind` in `manifests_dir/manifests.yaml`, patched by the files
/// `patches` (in `manifests_dir`, applied in order), named `name` (kustomize's `namePrefix`
/// or the patch's new name, as the release has it), each webhook calling
/// `https://127.0.0.1:<port><its path>` with the CA `ca_pem`.
pub(super) fn url_webhooks(
    operator: &str,
    manifests_dir: &Path,
    kind: &str,
    patches: &[&str],
    name: &str,
    port: u16,
    ca_pem: &str,
) -> Result<UrlWebhooks> {
    let path = manifests_dir.join("manifests.yaml");
    let mut v = yaml_docs(operator, &path)?
        .into_iter()
        .find(|v| v["kind"] == kind)
        .ok_or_else(|| fail(operator, format!("no {kind} in {}", path.display())))?;
    for p in patches {
        apply_json6902(operator, &manifests_dir.join(p), &mut v)?;
    }
    v["metadata"] = json!({"name": name});
    let hooks = v["webhooks"].as_array_mut().ok_or_else(|| {
        fail(
            operator,
            format!("{}: no webhooks in {kind}", path.display()),
        )
    })?;
    let mut paths = Vec::new();
    for hook in hooks {
        let service_path = hook["clientConfig"]["service"]["path"]
            .as_str()
            .ok_or_else(|| {
                fail(
                    operator,
                    format!("{}: a webhook without a service path", path.display()),
                )
            })?
            .to_string();
        hook["clientConfig"] = json!({
            "url": format!("https://127.0.0.1:{port}{service_path}"),
            "caBundle": base64(ca_pem.as_bytes()),
        });
        paths.push(service_path);
    }
    Ok(UrlWebhooks {
        kind: kind.to_string(),
        object: v,
        paths,
    })
}

/// Creates the derived configuration.
pub(super) async fn create(operator: &str, client: &kube::Client, w: &UrlWebhooks) -> Result<()> {
    let what = format!("{} {}", w.kind, w.object["metadata"]["name"]);
    let bad = |e: serde_json::Error| fail(operator, format!("{what}: {e}"));
    let pp = PostParams::default();
    match w.kind.as_str() {
        "ValidatingWebhookConfiguration" => {
            let o: ValidatingWebhookConfiguration =
                serde_json::from_value(w.object.clone()).map_err(bad)?;
            let api: Api<ValidatingWebhookConfiguration> = Api::all(client.clone());
            api.create(&pp, &o)
                .await
                .context(format!("creating {what}"))?;
        }
        "MutatingWebhookConfiguration" => {
            let o: MutatingWebhookConfiguration =
                serde_json::from_value(w.object.clone()).map_err(bad)?;
            let api: Api<MutatingWebhookConfiguration> = Api::all(client.clone());
            api.create(&pp, &o)
                .await
                .context(format!("creating {what}"))?;
        }
        other => {
            return Err(fail(
                operator,
                format!("not a webhook configuration: {other}"),
            ));
        }
    }
    Ok(())
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

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn base64_pads() {
        assert_eq!(base64(b"ab"), "YWI=");
        assert_eq!(base64(b"abc"), "YWJj");
        assert_eq!(base64(b"a"), "YQ==");
    }

    #[test]
    fn json6902_replaces_by_pointer() {
        let dir = tempfile::tempdir().expect("tempdir");
        let p = dir.path().join("patch.yaml");
        std::fs::write(
            &p,
            "- op: replace\n  path: /metadata/name\n  value: renamed\n- op: replace\n  path: /webhooks/1/x\n  value: 2\n",
        )
        .expect("write");
        let mut v = json!({"metadata": {"name": "a"}, "webhooks": [{"x": 0}, {"x": 1}]});
        apply_json6902("t", &p, &mut v).expect("patch");
        assert_eq!(
            v,
            json!({"metadata": {"name": "renamed"}, "webhooks": [{"x": 0}, {"x": 2}]})
        );
        std::fs::write(&p, "- op: remove\n  path: /metadata\n").expect("write");
        assert!(apply_json6902("t", &p, &mut v).is_err());
    }
}
