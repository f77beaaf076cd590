//! A real Kubernetes control plane on loopback for Muster's tests and demo.
//!
//! [`TestCluster::start`] runs etcd, kube-apiserver, kube-controller-manager and kwok (plus
//! kube-scheduler on request) from the binaries `tests/tools/build.sh` builds from Go modules,
//! each on free loopback ports with per-cluster certificates, in a directory of its own whose
//! `logs/` hold every component's output. [`TestCluster::add_gpu_nodes`] adds kwok-faked GPU
//! nodes described by a [`NodeSpec`]. Dropping the cluster kills every process (also when a
//! test panics); children also die with the test process (PR_SET_PDEATHSIG).
//!
//! ```no_run
//! # async fn demo() -> muster_testcluster::Result<()> {
//! use muster_testcluster::{ClusterSpec, NodeSpec, TestCluster};
//! let cluster = TestCluster::start(ClusterSpec::default().with_default_scheduler()).await?;
//! cluster.add_gpu_nodes(&NodeSpec::fixture("dgx-a100", 4)).await?;
//! let client = cluster.client();
//! # drop(client);
//! # Ok(()) }
//! ```

mod certs;
mod cluster;
mod components;
mod crds;
mod error;
pub mod muster;
mod nodes;
pub mod operators;
mod ports;
mod probe;
mod process;
mod scheduler;
mod tools;
mod workspace;

pub use certs::Pki;
pub use cluster::{ClusterSpec, TestCluster};
pub use components::{Component, Ports};
pub use error::{Error, Result};
pub use muster::{AgentProcess, install_gang_gate, scheduler_config};
pub use nodes::{KWOK_NODE_ANNOTATION, KWOK_TYPE_LABEL, NodeSpec};
pub use operators::OperatorBuild;
pub use ports::free_port;
pub use probe::http_get;
pub use process::Proc;
pub use scheduler::SchedulerConfig;
pub use tools::{TOOLS_BIN_ENV, bin_dir, build_script, stages_file, tool};
pub use workspace::{build_workspace_binary, repo_root, target_dir};
