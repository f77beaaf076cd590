//! `muster-scheduler`: wires configuration, the cluster cache, the engine and the HTTP server.

use clap::Parser;
use muster_scheduler::config::{Config, Flags};
use muster_scheduler::engine::{Engine, EngineConfig};
use muster_scheduler::extender::server::AppState;
use muster_scheduler::extender::{listen, tls};
use muster_scheduler::{cache::Cache, leader, metrics::Metrics};
use std::process::ExitCode;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Duration;

#[global_allocator]
static ALLOCATOR: mimalloc::MiMalloc = mimalloc::MiMalloc;

#[tokio::main]
async fn main() -> ExitCode {
    let flags = Flags::parse();
    let log_json = flags.log_json;
    let filter =
        tracing_subscriber::EnvFilter::try_from_default_env().unwrap_or_else(|_| "info".into());
    if log_json {
        tracing_subscriber::fmt()
            .json()
            .with_env_filter(filter)
            .init();
    } else {
        tracing_subscriber::fmt().with_env_filter(filter).init();
    }
    match run(flags).await {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            tracing::error!("{e:#}");
            eprintln!("muster-scheduler: {e:#}");
            ExitCode::FAILURE
        }
    }
}

fn hostname() -> String {
    std::env::var("HOSTNAME")
        .ok()
        .filter(|h| !h.is_empty())
        .or_else(|| {
            std::fs::read_to_string("/proc/sys/kernel/hostname")
                .ok()
                .map(|h| h.trim().to_string())
        })
        .unwrap_or_else(|| "muster".into())
}

/// A client for the API server. `client_retries` lets kube-rs retry 429/503/504 on its own;
/// the client that binds and evicts turns that off, because Muster decides there: a 429 from
/// the eviction API is a PodDisruptionBudget's answer, not throttling, and release retries
/// within its own bound.
async fn client(config: &Config, client_retries: bool) -> anyhow::Result<kube::Client> {
    let kc = match &config.kubeconfig {
        Some(path) => {
            let kubeconfig = kube::config::Kubeconfig::read_from(path)
                .map_err(|e| anyhow::anyhow!("reading kubeconfig {}: {e}", path.display()))?;
            kube::Config::from_custom_kubeconfig(kubeconfig, &Default::default())
                .await
                .map_err(|e| anyhow::anyhow!("kubeconfig {}: {e}", path.display()))?
        }
        None => kube::Config::infer()
            .await
            .map_err(|e| anyhow::anyhow!("finding the API server: {e}"))?,
    };
    let mut kc = kc;
    kc.default_retry = client_retries;
    // Binding whole gangs at once needs more than client-go's default 5 QPS-style trickle.
    kc.read_timeout = Some(Duration::from_secs(60));
    kube::Client::try_from(kc).map_err(|e| anyhow::anyhow!("building Kubernetes client: {e}"))
}

async fn run(flags: Flags) -> anyhow::Result<()> {
    let config = Config::resolve(flags)?;
    let decisions = client(&config, false).await?;
    let client = client(&config, true).await?;
    let metrics = Metrics::new().map_err(|e| anyhow::anyhow!("registering metrics: {e}"))?;
    let ready = Arc::new(AtomicBool::new(false));
    // Certificates first: a bad file fails the start, not the first kube-scheduler call.
    let tls = config.tls.as_ref().map(tls::server_config).transpose()?;
    let verbs = tokio::net::TcpListener::bind(config.listen)
        .await
        .map_err(|e| anyhow::anyhow!("listening on {} (--listen): {e}", config.listen))?;
    let ops = tokio::net::TcpListener::bind(config.metrics_listen)
        .await
        .map_err(|e| {
            anyhow::anyhow!(
                "listening on {} (--metrics-listen): {e}",
                config.metrics_listen
            )
        })?;
    tracing::info!(
        listen = %config.listen,
        metrics_listen = %config.metrics_listen,
        mutual_tls = tls.is_some(),
        "extender listening: verbs on listen, /metrics /healthz /readyz on metrics_listen"
    );

    let cache = Cache::start(client.clone(), Duration::from_secs(60))
        .await?
        .with_scheduler_names(config.scheduler_names.clone());
    tracing::info!(scheduler_names = %config.scheduler_names, "scheduling pods with these spec.schedulerName");
    let engine = Engine::new(
        cache,
        client.clone(),
        decisions,
        EngineConfig {
            planner: config.planner.clone(),
            barrier_timeout: config.barrier_timeout,
            report: config.report,
            nominate: config.nominate,
        },
        metrics,
    );
    let leader = Arc::new(AtomicBool::new(!config.leader_elect));
    if config.leader_elect {
        let (name, identity, mode) = match &config.follow_lease {
            // kube-scheduler's identity is `<hostname>_<uuid>`; a pod's hostname is its name.
            Some(lease) => (
                lease.clone(),
                format!("{}_", hostname()),
                leader::LeaseMode::Follow,
            ),
            None => (
                "muster-scheduler".to_string(),
                std::env::var("POD_NAME")
                    .unwrap_or_else(|_| format!("{}-{}", hostname(), std::process::id())),
                leader::LeaseMode::Hold,
            ),
        };
        tracing::info!(lease = %name, %identity, ?mode, "leader election");
        tokio::spawn(leader::run(
            client.clone(),
            leader::LeaseConfig {
                namespace: config.lease_namespace.clone(),
                name,
                identity,
                mode,
                lease_duration: Duration::from_secs(15),
                renew_every: Duration::from_secs(2),
            },
            leader.clone(),
        ));
    }
    engine.follow_leadership(leader);
    // Ready once the cache is listed; a follower is ready too (it answers "not the leader").
    ready.store(true, Ordering::Release);
    tokio::spawn(engine.clone().run_background());
    listen::serve(verbs, ops, tls, AppState { engine, ready }, async {
        let _ = tokio::signal::ctrl_c().await;
        tracing::info!("shutting down");
    })
    .await
}
