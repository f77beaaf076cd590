//! The extender's TLS material as the chart renders it, and rustls clients and verifiers to
//! check it from outside.

use super::{kind_of, name_of};
use k8s_openapi::api::core::v1::Secret;
use rustls::RootCertStore;
use rustls::pki_types::pem::PemObject as _;
use rustls::pki_types::{CertificateDer, PrivateKeyDer};
use serde_yaml::Value;
use std::collections::BTreeMap;
use std::sync::Arc;

pub const SECRET: &str = "muster-scheduler-extender-tls";
/// Every file of the Secret (no CA key).
pub const FILES: [&str; 5] = ["ca.crt", "client.crt", "client.key", "tls.crt", "tls.key"];

/// The decoded files of the rendered Secret.
pub fn secret_files(objs: &[Value]) -> BTreeMap<String, Vec<u8>> {
    let doc = objs
        .iter()
        .find(|o| kind_of(o) == "Secret" && name_of(o) == SECRET)
        .unwrap_or_else(|| panic!("no Secret {SECRET} rendered"));
    let secret: Secret =
        serde_json::from_value(serde_json::to_value(doc).unwrap()).expect("a valid Secret");
    secret
        .data
        .unwrap_or_default()
        .into_iter()
        .map(|(k, v)| (k, v.0))
        .collect()
}

pub fn provider() -> Arc<rustls::crypto::CryptoProvider> {
    Arc::new(rustls::crypto::ring::default_provider())
}

pub fn certs(pem: &[u8]) -> Vec<CertificateDer<'static>> {
    CertificateDer::pem_slice_iter(pem)
        .collect::<Result<Vec<_>, _>>()
        .expect("PEM certificates")
}

pub fn key(pem: &[u8]) -> PrivateKeyDer<'static> {
    PrivateKeyDer::from_pem_slice(pem).expect("a PEM private key")
}

pub fn roots(ca_pem: &[u8]) -> Arc<RootCertStore> {
    let mut roots = RootCertStore::empty();
    for c in certs(ca_pem) {
        roots.add(c).expect("a CA certificate");
    }
    Arc::new(roots)
}

/// A client trusting `ca_pem`, with the client certificate and key when given.
pub fn connector(ca_pem: &[u8], identity: Option<(&[u8], &[u8])>) -> tokio_rustls::TlsConnector {
    let builder = rustls::ClientConfig::builder_with_provider(provider())
        .with_safe_default_protocol_versions()
        .unwrap()
        .with_root_certificates(roots(ca_pem));
    let config = match identity {
        None => builder.with_no_client_auth(),
        Some((cert, k)) => builder.with_client_auth_cert(certs(cert), key(k)).unwrap(),
    };
    tokio_rustls::TlsConnector::from(Arc::new(config))
}

/// One HTTP/1.1 POST over TLS to 127.0.0.1:`port` (server name `localhost`): the status and
/// body, or the TLS/IO error as text.
pub async fn post(
    port: u16,
    connector: &tokio_rustls::TlsConnector,
    path: &str,
    body: &str,
) -> Result<(u16, String), String> {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let call = async {
        let tcp = tokio::net::TcpStream::connect(("127.0.0.1", port))
            .await
            .map_err(|e| format!("connect: {e}"))?;
        let name = rustls::pki_types::ServerName::try_from("localhost").unwrap();
        let mut tls = connector
            .connect(name, tcp)
            .await
            .map_err(|e| format!("handshake: {e}"))?;
        let request = format!(
            "POST {path} HTTP/1.1\r\nHost: localhost\r\nContent-Type: application/json\r\nContent-Length: {}\r\nConnection: close\r\n\r\n{body}",
            body.len()
        );
        tls.write_all(request.as_bytes())
            .await
            .map_err(|e| format!("write: {e}"))?;
        let mut answer = Vec::new();
        tls.read_to_end(&mut answer)
            .await
            .map_err(|e| format!("read: {e}"))?;
        let text = String::from_utf8_lossy(&answer).into_owned();
        let status = text
            .strip_prefix("HTTP/1.1 ")
            .and_then(|rest| rest.get(..3))
            .and_then(|code| code.parse().ok())
            .ok_or_else(|| format!("no HTTP answer: {text:?}"))?;
        let body = text
            .split_once("\r\n\r\n")
            .map(|(_, b)| b.to_string())
            .unwrap_or_default();
        Ok((status, body))
    };
    tokio::time::timeout(std::time::Duration::from_secs(20), call)
        .await
        .map_err(|_| "no answer within 20s".to_string())?
}
