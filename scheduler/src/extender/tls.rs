//! Mutual TLS for the verbs listener: the server's certificate, and only clients whose
//! certificate the client CA signed (kube-scheduler's `tlsConfig.certFile`).
//!
//! Handshakes run in tasks of their own, each bounded by [`HANDSHAKE_TIMEOUT`], so a client
//! that connects and stalls (or fails its handshake) neither blocks other clients nor stops
//! the listener; a refused handshake is logged with the peer's address.

use crate::config::TlsFiles;
use anyhow::Context as _;
use rustls::RootCertStore;
use rustls::pki_types::pem::PemObject as _;
use rustls::pki_types::{CertificateDer, PrivateKeyDer};
use rustls::server::{ServerConfig, WebPkiClientVerifier};
use std::net::SocketAddr;
use std::path::Path;
use std::sync::Arc;
use std::time::Duration;
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::{Semaphore, mpsc};
use tokio_rustls::TlsAcceptor;
use tokio_rustls::server::TlsStream;

/// A TLS handshake that takes longer is dropped.
pub const HANDSHAKE_TIMEOUT: Duration = Duration::from_secs(10);
/// Handshakes in flight at once; further connections wait to be accepted.
const MAX_PENDING_HANDSHAKES: usize = 256;

fn read(path: &Path, what: &str) -> anyhow::Result<Vec<u8>> {
    std::fs::read(path).with_context(|| format!("reading the {what} {}", path.display()))
}

fn certificates(path: &Path, what: &str) -> anyhow::Result<Vec<CertificateDer<'static>>> {
    let pem = read(path, what)?;
    let certs = CertificateDer::pem_slice_iter(&pem)
        .collect::<Result<Vec<_>, _>>()
        .with_context(|| format!("parsing the {what} {} (PEM)", path.display()))?;
    anyhow::ensure!(
        !certs.is_empty(),
        "the {what} {} holds no PEM CERTIFICATE",
        path.display()
    );
    Ok(certs)
}

/// The private key of a PEM file: PKCS#1 (`RSA PRIVATE KEY`, what Helm's `genCA` and
/// `genSignedCert` write), PKCS#8 (`PRIVATE KEY`) or SEC1 (`EC PRIVATE KEY`).
pub fn private_key(path: &Path) -> anyhow::Result<PrivateKeyDer<'static>> {
    let pem = read(path, "TLS key")?;
    PrivateKeyDer::from_pem_slice(&pem).with_context(|| {
        format!(
            "parsing the TLS key {} (PEM: RSA PRIVATE KEY, PRIVATE KEY or EC PRIVATE KEY)",
            path.display()
        )
    })
}

/// The server configuration: HTTPS with `files.cert`/`files.key`, and a client certificate
/// signed by `files.client_ca` required of every client.
pub fn server_config(files: &TlsFiles) -> anyhow::Result<Arc<ServerConfig>> {
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    let mut roots = RootCertStore::empty();
    for ca in certificates(&files.client_ca, "client CA")? {
        roots.add(ca).with_context(|| {
            format!(
                "the client CA {} is not a usable CA certificate",
                files.client_ca.display()
            )
        })?;
    }
    let verifier = WebPkiClientVerifier::builder_with_provider(Arc::new(roots), provider.clone())
        .build()
        .with_context(|| format!("client CA {}", files.client_ca.display()))?;
    let chain = certificates(&files.cert, "TLS certificate")?;
    let key = private_key(&files.key)?;
    let config = ServerConfig::builder_with_provider(provider)
        .with_safe_default_protocol_versions()
        .context("TLS protocol versions")?
        .with_client_cert_verifier(verifier)
        .with_single_cert(chain, key)
        .with_context(|| {
            format!(
                "the TLS certificate {} and key {} do not make a usable pair",
                files.cert.display(),
                files.key.display()
            )
        })?;
    Ok(Arc::new(config))
}

/// Aborts the accept loop when the listener is dropped.
struct AbortOnDrop(tokio::task::JoinHandle<()>);

impl Drop for AbortOnDrop {
    fn drop(&mut self) {
        self.0.abort();
    }
}

/// An [`axum::serve::Listener`] yielding only connections whose TLS handshake, client
/// certificate included, succeeded.
pub struct TlsListener {
    established: mpsc::Receiver<(TlsStream<TcpStream>, SocketAddr)>,
    local: SocketAddr,
    _accept_loop: AbortOnDrop,
}

impl TlsListener {
    pub fn new(tcp: TcpListener, config: Arc<ServerConfig>) -> std::io::Result<TlsListener> {
        let local = tcp.local_addr()?;
        let (tx, established) = mpsc::channel(64);
        let task = tokio::spawn(accept_loop(tcp, TlsAcceptor::from(config), tx));
        Ok(TlsListener {
            established,
            local,
            _accept_loop: AbortOnDrop(task),
        })
    }
}

async fn accept_loop(
    tcp: TcpListener,
    acceptor: TlsAcceptor,
    established: mpsc::Sender<(TlsStream<TcpStream>, SocketAddr)>,
) {
    let pending = Arc::new(Semaphore::new(MAX_PENDING_HANDSHAKES));
    loop {
        let Ok(permit) = pending.clone().acquire_owned().await else {
            return;
        };
        let (stream, peer) = match tcp.accept().await {
            Ok(accepted) => accepted,
            Err(e) => {
                // Out of file descriptors and the like: wait instead of spinning.
                tracing::warn!(error = %e, "accepting a TLS connection");
                tokio::time::sleep(Duration::from_millis(100)).await;
                continue;
            }
        };
        let acceptor = acceptor.clone();
        let established = established.clone();
        tokio::spawn(async move {
            let _permit = permit;
            match tokio::time::timeout(HANDSHAKE_TIMEOUT, acceptor.accept(stream)).await {
                Ok(Ok(tls)) => {
                    // The server is gone when nobody receives: nothing left to do.
                    let _ = established.send((tls, peer)).await;
                }
                Ok(Err(e)) => {
                    tracing::info!(%peer, error = %e, "TLS handshake refused");
                }
                Err(_) => {
                    tracing::info!(
                        %peer,
                        timeout_secs = HANDSHAKE_TIMEOUT.as_secs(),
                        "TLS handshake timed out"
                    );
                }
            }
        });
    }
}

impl axum::serve::Listener for TlsListener {
    type Io = TlsStream<TcpStream>;
    type Addr = SocketAddr;

    async fn accept(&mut self) -> (Self::Io, Self::Addr) {
        match self.established.recv().await {
            Some(connection) => connection,
            None => {
                // Only if the accept loop died; `serve` has no way to hear of it but this.
                tracing::error!(listen = %self.local, "the TLS accept loop stopped");
                std::future::pending().await
            }
        }
    }

    fn local_addr(&self) -> std::io::Result<Self::Addr> {
        Ok(self.local)
    }
}
