//! The verbs over mutual TLS: only a client whose certificate the client CA signed gets an
//! answer; a client without a certificate, or with one from another CA, fails the handshake,
//! and neither stops the listener. RSA keys load in PKCS#1 (what Helm's `genSignedCert`
//! writes) and PKCS#8.

use muster_scheduler::cache::{Cache, CacheObjects};
use muster_scheduler::config::TlsFiles;
use muster_scheduler::engine::{Engine, EngineConfig};
use muster_scheduler::extender::listen::serve_verbs;
use muster_scheduler::extender::server::{AppState, verbs_router};
use muster_scheduler::extender::tls::server_config;
use muster_scheduler::metrics::Metrics;
use rcgen::{
    BasicConstraints, CertificateParams, DnType, ExtendedKeyUsagePurpose, IsCa, Issuer, KeyPair,
    KeyUsagePurpose,
};
use rustls::pki_types::pem::PemObject as _;
use rustls::pki_types::{CertificateDer, PrivateKeyDer, ServerName};
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::sync::atomic::AtomicBool;
use std::time::Duration;
use tokio::io::{AsyncReadExt, AsyncWriteExt};

struct Ca {
    cert_pem: String,
    params: CertificateParams,
    key: KeyPair,
}

fn ca(name: &str) -> Ca {
    let key = KeyPair::generate().unwrap();
    let mut params = CertificateParams::default();
    params.distinguished_name.push(DnType::CommonName, name);
    params.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
    params.key_usages = vec![KeyUsagePurpose::KeyCertSign, KeyUsagePurpose::CrlSign];
    let cert = params.self_signed(&key).unwrap();
    Ca {
        cert_pem: cert.pem(),
        params,
        key,
    }
}

/// A certificate for `key` signed by `ca`: (certificate PEM).
fn signed(ca: &Ca, key: &KeyPair, names: &[&str], usage: ExtendedKeyUsagePurpose) -> String {
    let mut params =
        CertificateParams::new(names.iter().map(|n| n.to_string()).collect::<Vec<_>>()).unwrap();
    params.distinguished_name.push(
        DnType::CommonName,
        names.first().copied().unwrap_or("client"),
    );
    params.extended_key_usages = vec![usage];
    let issuer = Issuer::from_params(&ca.params, &ca.key);
    params.signed_by(key, &issuer).unwrap().pem()
}

fn write(dir: &Path, name: &str, text: &str) -> PathBuf {
    let path = dir.join(name);
    std::fs::write(&path, text).unwrap();
    path
}

fn state() -> AppState {
    let config = kube::Config::new("http://127.0.0.1:9".parse().unwrap());
    let client = kube::Client::try_from(config).unwrap();
    let engine = Engine::new(
        Cache::from_objects(CacheObjects::default()),
        client.clone(),
        client,
        EngineConfig {
            planner: muster_core::PlannerConfig::default(),
            barrier_timeout: Duration::from_secs(1),
            report: false,
            nominate: false,
        },
        Metrics::new().unwrap(),
    );
    AppState {
        engine,
        ready: Arc::new(AtomicBool::new(true)),
    }
}

/// Starts the verbs with mutual TLS on a free loopback port.
async fn start(files: &TlsFiles) -> SocketAddr {
    let config = server_config(files).expect("TLS configuration");
    let tcp = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = tcp.local_addr().unwrap();
    tokio::spawn(serve_verbs(
        tcp,
        Some(config),
        verbs_router(state()),
        std::future::pending(),
    ));
    addr
}

/// A client trusting `server_ca`, presenting `identity` (certificate PEM, key PEM) if any.
fn client(server_ca: &str, identity: Option<(&str, &str)>) -> tokio_rustls::TlsConnector {
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    let mut roots = rustls::RootCertStore::empty();
    for c in CertificateDer::pem_slice_iter(server_ca.as_bytes()) {
        roots.add(c.unwrap()).unwrap();
    }
    let builder = rustls::ClientConfig::builder_with_provider(provider)
        .with_safe_default_protocol_versions()
        .unwrap()
        .with_root_certificates(roots);
    let config = match identity {
        None => builder.with_no_client_auth(),
        Some((cert, key)) => {
            let chain = CertificateDer::pem_slice_iter(cert.as_bytes())
                .collect::<Result<Vec<_>, _>>()
                .unwrap();
            let key = PrivateKeyDer::from_pem_slice(key.as_bytes()).unwrap();
            builder.with_client_auth_cert(chain, key).unwrap()
        }
    };
    tokio_rustls::TlsConnector::from(Arc::new(config))
}

/// POST /preempt over TLS: the HTTP status, or the TLS/IO error.
async fn preempt(addr: SocketAddr, connector: &tokio_rustls::TlsConnector) -> Result<u16, String> {
    let call = async {
        let tcp = tokio::net::TcpStream::connect(addr)
            .await
            .map_err(|e| format!("connect: {e}"))?;
        let name = ServerName::try_from("localhost").unwrap();
        let mut tls = connector
            .connect(name, tcp)
            .await
            .map_err(|e| format!("handshake: {e}"))?;
        let request = "POST /preempt HTTP/1.1\r\nHost: localhost\r\nContent-Type: application/json\r\nContent-Length: 2\r\nConnection: close\r\n\r\n{}";
        tls.write_all(request.as_bytes())
            .await
            .map_err(|e| format!("write: {e}"))?;
        let mut answer = Vec::new();
        tls.read_to_end(&mut answer)
            .await
            .map_err(|e| format!("read: {e}"))?;
        let text = String::from_utf8_lossy(&answer).into_owned();
        text.strip_prefix("HTTP/1.1 ")
            .and_then(|rest| rest.get(..3))
            .and_then(|code| code.parse().ok())
            .ok_or_else(|| format!("no HTTP answer: {text:?}"))
    };
    tokio::time::timeout(Duration::from_secs(10), call)
        .await
        .map_err(|_| "no answer within 10s".to_string())?
}

#[tokio::test]
async fn only_clients_signed_by_the_client_ca_reach_the_verbs() {
    let dir = tempfile::tempdir().unwrap();
    let trusted = ca("muster-extender-ca");
    let other = ca("someone-else");
    let server_key = KeyPair::generate().unwrap();
    let server_cert = signed(
        &trusted,
        &server_key,
        &["localhost", "127.0.0.1"],
        ExtendedKeyUsagePurpose::ServerAuth,
    );
    let files = TlsFiles {
        cert: write(dir.path(), "tls.crt", &server_cert),
        key: write(dir.path(), "tls.key", &server_key.serialize_pem()),
        client_ca: write(dir.path(), "ca.crt", &trusted.cert_pem),
    };
    let addr = start(&files).await;

    let client_key = KeyPair::generate().unwrap();
    let client_cert = signed(
        &trusted,
        &client_key,
        &["kube-scheduler"],
        ExtendedKeyUsagePurpose::ClientAuth,
    );
    let client_key = client_key.serialize_pem();
    let good = client(&trusted.cert_pem, Some((&client_cert, &client_key)));
    assert_eq!(preempt(addr, &good).await, Ok(200));

    // No client certificate: TLS 1.3 lets the client finish first, so the refusal (alert
    // "certificate required") arrives on the first read; no HTTP answer either way.
    let anonymous = client(&trusted.cert_pem, None);
    let err = preempt(addr, &anonymous).await.unwrap_err();
    assert!(err.contains("CertificateRequired"), "{err}");

    // A certificate from another CA.
    let stranger_key = KeyPair::generate().unwrap();
    let stranger_cert = signed(
        &other,
        &stranger_key,
        &["kube-scheduler"],
        ExtendedKeyUsagePurpose::ClientAuth,
    );
    let stranger_key = stranger_key.serialize_pem();
    let stranger = client(&trusted.cert_pem, Some((&stranger_cert, &stranger_key)));
    let err = preempt(addr, &stranger).await.unwrap_err();
    assert!(err.contains("UnknownCA"), "{err}");

    // Plain HTTP on the TLS port gets no HTTP answer.
    let mut tcp = tokio::net::TcpStream::connect(addr).await.unwrap();
    tcp.write_all(b"POST /preempt HTTP/1.1\r\nHost: x\r\nContent-Length: 2\r\n\r\n{}")
        .await
        .unwrap();
    let mut answer = Vec::new();
    let _ = tokio::time::timeout(Duration::from_secs(10), tcp.read_to_end(&mut answer)).await;
    assert!(
        !String::from_utf8_lossy(&answer).contains("HTTP/1.1 200"),
        "plain HTTP was answered"
    );

    // A client that connects and says nothing does not block the others.
    let _silent = tokio::net::TcpStream::connect(addr).await.unwrap();
    // None of it stopped the listener.
    for _ in 0..3 {
        assert_eq!(preempt(addr, &good).await, Ok(200));
    }
}

#[tokio::test]
async fn rsa_server_keys_load_as_pkcs1_and_pkcs8() {
    let fixtures = Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/fixtures");
    let pkcs1 = fixtures.join("test-only-rsa-pkcs1.pem");
    let pkcs8 = fixtures.join("test-only-rsa-pkcs8.pem");
    assert!(
        std::fs::read_to_string(&pkcs1)
            .unwrap()
            .starts_with("-----BEGIN RSA PRIVATE KEY-----")
    );
    assert!(
        std::fs::read_to_string(&pkcs8)
            .unwrap()
            .starts_with("-----BEGIN PRIVATE KEY-----")
    );
    let dir = tempfile::tempdir().unwrap();
    let trusted = ca("muster-extender-ca");
    let rsa = KeyPair::from_pem(&std::fs::read_to_string(&pkcs8).unwrap()).unwrap();
    let server_cert = signed(
        &trusted,
        &rsa,
        &["localhost", "127.0.0.1"],
        ExtendedKeyUsagePurpose::ServerAuth,
    );
    let client_key = KeyPair::generate().unwrap();
    let client_cert = signed(
        &trusted,
        &client_key,
        &["kube-scheduler"],
        ExtendedKeyUsagePurpose::ClientAuth,
    );
    let client_key = client_key.serialize_pem();
    let good = client(&trusted.cert_pem, Some((&client_cert, &client_key)));
    for key in [pkcs1, pkcs8] {
        let files = TlsFiles {
            cert: write(dir.path(), "tls.crt", &server_cert),
            key,
            client_ca: write(dir.path(), "ca.crt", &trusted.cert_pem),
        };
        let addr = start(&files).await;
        assert_eq!(
            preempt(addr, &good).await,
            Ok(200),
            "{}",
            files.key.display()
        );
    }
}

#[test]
fn bad_files_are_clear_errors() {
    let dir = tempfile::tempdir().unwrap();
    let trusted = ca("muster-extender-ca");
    let key = KeyPair::generate().unwrap();
    let cert = signed(
        &trusted,
        &key,
        &["localhost"],
        ExtendedKeyUsagePurpose::ServerAuth,
    );
    let other_key = KeyPair::generate().unwrap();
    let good = TlsFiles {
        cert: write(dir.path(), "tls.crt", &cert),
        key: write(dir.path(), "tls.key", &key.serialize_pem()),
        client_ca: write(dir.path(), "ca.crt", &trusted.cert_pem),
    };
    server_config(&good).expect("the good files load");
    let cases = [
        (
            TlsFiles {
                cert: dir.path().join("absent.crt"),
                ..good.clone()
            },
            "reading the TLS certificate",
        ),
        (
            TlsFiles {
                key: write(dir.path(), "empty.key", "not a key"),
                ..good.clone()
            },
            "parsing the TLS key",
        ),
        (
            TlsFiles {
                client_ca: write(dir.path(), "empty-ca.crt", ""),
                ..good.clone()
            },
            "holds no PEM CERTIFICATE",
        ),
        (
            TlsFiles {
                key: write(dir.path(), "other.key", &other_key.serialize_pem()),
                ..good.clone()
            },
            "do not make a usable pair",
        ),
    ];
    for (files, needle) in cases {
        let err = format!("{:#}", server_config(&files).unwrap_err());
        assert!(err.contains(needle), "{needle}: {err}");
    }
}
