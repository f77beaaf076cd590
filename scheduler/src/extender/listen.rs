//! Serving the two routers: the verbs on their listener (plain HTTP, or HTTPS with client
//! certificates), `/metrics` and the probes on theirs.

use super::server::{AppState, ops_router, verbs_router};
use super::tls::TlsListener;
use anyhow::Context as _;
use axum::Router;
use rustls::ServerConfig;
use std::future::Future;
use std::sync::Arc;
use tokio::net::TcpListener;

/// Serves `app` (the verbs) on `tcp` until `shutdown` completes: over TLS with `tls`.
pub async fn serve_verbs(
    tcp: TcpListener,
    tls: Option<Arc<ServerConfig>>,
    app: Router,
    shutdown: impl Future<Output = ()> + Send + 'static,
) -> std::io::Result<()> {
    match tls {
        None => axum::serve(tcp, app).with_graceful_shutdown(shutdown).await,
        Some(config) => {
            axum::serve(TlsListener::new(tcp, config)?, app)
                .with_graceful_shutdown(shutdown)
                .await
        }
    }
}

/// Serves the verbs on `verbs` and `/metrics`, `/healthz`, `/readyz` on `ops` until
/// `shutdown` completes; both stop together.
pub async fn serve(
    verbs: TcpListener,
    ops: TcpListener,
    tls: Option<Arc<ServerConfig>>,
    state: AppState,
    shutdown: impl Future<Output = ()> + Send + 'static,
) -> anyhow::Result<()> {
    let (stop, stopped) = tokio::sync::watch::channel(false);
    let when_stopped = |mut rx: tokio::sync::watch::Receiver<bool>| async move {
        let _ = rx.wait_for(|s| *s).await;
    };
    tokio::spawn(async move {
        shutdown.await;
        let _ = stop.send(true);
    });
    let verbs_addr = verbs.local_addr().context("the verbs listener's address")?;
    let ops_addr = ops.local_addr().context("the metrics listener's address")?;
    let verbs = serve_verbs(
        verbs,
        tls,
        verbs_router(state.clone()),
        when_stopped(stopped.clone()),
    );
    let ops = axum::serve(ops, ops_router(state)).with_graceful_shutdown(when_stopped(stopped));
    tokio::try_join!(
        async {
            verbs
                .await
                .with_context(|| format!("serving the verbs on {verbs_addr}"))
        },
        async {
            ops.await
                .with_context(|| format!("serving /metrics on {ops_addr}"))
        },
    )?;
    Ok(())
}
