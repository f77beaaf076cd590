//! `muster-device-plugin`: serves the node's GPUs to the kubelet (device plugin API v1beta1).
//! Runs next to the node agent in the same DaemonSet (a second container sharing the host's
//! device-plugins directory and the NVIDIA driver).

use anyhow::Context as _;
use clap::Parser;
use muster_device_plugin::config::{DEFAULT_DIR, DEFAULT_SOCKET};
use muster_device_plugin::devices::DeviceList;
use muster_device_plugin::{Plugin, PluginConfig, metrics};
use muster_gpu_inventory::{Discovery, Inventory, WatchConfig};
use std::net::SocketAddr;
use std::path::PathBuf;
use std::time::Duration;
use tracing_subscriber::EnvFilter;

#[derive(Debug, Parser)]
#[command(name = "muster-device-plugin", version, about)]
struct Args {
    /// Kubelet device-plugins directory (holds kubelet.sock).
    #[arg(long, env = "MUSTER_DEVICE_PLUGIN_DIR", default_value = DEFAULT_DIR)]
    device_plugin_dir: PathBuf,
    /// File name of this plugin's socket in that directory.
    #[arg(long, default_value = DEFAULT_SOCKET)]
    socket_name: String,
    /// Extended resource to advertise.
    #[arg(long, default_value = muster_api::names::GPU_RESOURCE)]
    resource: String,
    /// This node's name (the downward API's spec.nodeName).
    #[arg(long, env = "NODE_NAME")]
    node_name: String,
    /// NVML library to load.
    #[arg(long, env = "MUSTER_NVML_LIB")]
    nvml_lib: Option<PathBuf>,
    /// Root of the driver's device nodes on the host.
    #[arg(long, default_value = "/")]
    driver_root: PathBuf,
    /// Also return CDI device names (nvidia.com/gpu=<uuid>) from Allocate.
    #[arg(long)]
    cdi: bool,
    /// Do not talk to the API server: no pod watch, every choice is the plugin's own.
    #[arg(long)]
    no_kube: bool,
    /// How long GetPreferredAllocation waits for the pod watch to show an annotated pod that
    /// fits, before choosing by topology (only paid when no annotated pod fits).
    #[arg(long, default_value_t = 250)]
    annotation_wait_ms: u64,
    /// How often the plugin's socket is checked for deletion by a restarting kubelet.
    #[arg(long, default_value_t = 100)]
    socket_poll_ms: u64,
    /// Address of /metrics and /healthz.
    #[arg(long, default_value = "0.0.0.0:9401")]
    metrics_addr: SocketAddr,
    /// Log as JSON.
    #[arg(long)]
    log_json: bool,
}

fn init_tracing(json: bool) {
    let filter = EnvFilter::try_from_default_env().unwrap_or_else(|_| EnvFilter::new("info"));
    let builder = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(std::io::stderr);
    if json {
        builder.json().init();
    } else {
        builder.init();
    }
}

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    let args = Args::parse();
    init_tracing(args.log_json);

    let inventory = match Inventory::open(args.nvml_lib.as_deref()).context("opening NVML")? {
        Discovery::Ready(inventory) => inventory,
        Discovery::NoDriver { reason } => {
            // Nothing to advertise; exiting would only make the DaemonSet restart us forever.
            tracing::warn!(%reason, "no NVIDIA driver on this node; advertising no GPUs");
            std::future::pending::<()>().await;
            return Ok(());
        }
    };
    let list = DeviceList::from_inventory(&inventory).context("reading the GPU inventory")?;
    tracing::info!(gpus = list.gpus.len(), node = %args.node_name, "GPU inventory read");
    let (watcher, events) = inventory
        .watch_health(WatchConfig::default())
        .context("starting the XID health watcher")?;

    let client = if args.no_kube {
        tracing::info!("--no-kube: no pod watch; choosing GPUs by topology only");
        None
    } else {
        match kube::Client::try_default().await {
            Ok(client) => Some(client),
            Err(e) => {
                tracing::warn!(error = %e, "no Kubernetes client; choosing GPUs by topology only");
                None
            }
        }
    };

    let mut config = PluginConfig::new(&args.device_plugin_dir, &args.node_name);
    config.socket_name = args.socket_name;
    config.resource = args.resource;
    config.driver_root = args.driver_root;
    config.cdi = args.cdi;
    config.socket_poll = Duration::from_millis(args.socket_poll_ms);
    if client.is_some() {
        config.annotation_wait = Duration::from_millis(args.annotation_wait_ms);
    }
    let mut plugin = Plugin::new(config, list)?.with_health(events);
    if let Some(client) = client {
        plugin = plugin.with_kube(client);
    }
    let metrics = plugin.metrics();
    let metrics_server = tokio::spawn(metrics::serve(args.metrics_addr, metrics));
    let mut handle = plugin.start()?;

    let mut sigterm = tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate())
        .context("installing the SIGTERM handler")?;
    let result = tokio::select! {
        _ = sigterm.recv() => { tracing::info!("SIGTERM: shutting down"); handle.shutdown().await }
        _ = tokio::signal::ctrl_c() => { tracing::info!("interrupted: shutting down"); handle.shutdown().await }
        r = handle.stopped() => r,
    };
    metrics_server.abort();
    watcher.stop();
    result
}
