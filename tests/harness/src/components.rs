//! The control-plane components and the command lines the harness starts them with.

use std::fmt;
use std::path::{Path, PathBuf};

use crate::certs::Pki;

/// One process of the test cluster.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum Component {
    Etcd,
    ApiServer,
    ControllerManager,
    Scheduler,
    Kwok,
}

impl Component {
    pub const ALL: [Component; 5] = [
        Component::Etcd,
        Component::ApiServer,
        Component::ControllerManager,
        Component::Scheduler,
        Component::Kwok,
    ];

    /// Executable name in the tools bin directory (also the log file's stem).
    pub fn binary_name(self) -> &'static str {
        match self {
            Component::Etcd => "etcd",
            Component::ApiServer => "kube-apiserver",
            Component::ControllerManager => "kube-controller-manager",
            Component::Scheduler => "kube-scheduler",
            Component::Kwok => "kwok",
        }
    }
}

impl fmt::Display for Component {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.binary_name())
    }
}

/// Loopback ports of one cluster.
#[derive(Clone, Copy, Debug)]
pub struct Ports {
    pub etcd_client: u16,
    pub etcd_peer: u16,
    pub apiserver: u16,
    pub controller_manager: u16,
    pub scheduler: u16,
    pub kwok: u16,
}

/// Everything a command line refers to.
pub(crate) struct Layout<'a> {
    pub dir: &'a Path,
    pub pki: &'a Pki,
    pub ports: Ports,
    pub kubeconfig: &'a Path,
    pub stages: &'a Path,
    pub scheduler_config: &'a Path,
}

fn p(path: &Path) -> String {
    path.display().to_string()
}

/// Command-line flags for `component` (before the caller's extra flags).
pub(crate) fn args(component: Component, l: &Layout<'_>) -> Vec<String> {
    let pki = l.pki;
    let ports = l.ports;
    let kubeconfig = p(l.kubeconfig);
    match component {
        Component::Etcd => vec![
            "--name=muster".into(),
            format!("--data-dir={}", p(&l.dir.join("etcd"))),
            format!(
                "--listen-client-urls=http://127.0.0.1:{}",
                ports.etcd_client
            ),
            format!(
                "--advertise-client-urls=http://127.0.0.1:{}",
                ports.etcd_client
            ),
            format!("--listen-peer-urls=http://127.0.0.1:{}", ports.etcd_peer),
            format!(
                "--initial-advertise-peer-urls=http://127.0.0.1:{}",
                ports.etcd_peer
            ),
            format!(
                "--initial-cluster=muster=http://127.0.0.1:{}",
                ports.etcd_peer
            ),
            // Test data is thrown away; fsync only costs time on a shared disk.
            "--unsafe-no-fsync".into(),
            "--log-level=warn".into(),
        ],
        Component::ApiServer => vec![
            format!("--etcd-servers=http://127.0.0.1:{}", ports.etcd_client),
            // No default route on this kind of machine: without it the apiserver cannot pick
            // an address to advertise.
            "--advertise-address=127.0.0.1".into(),
            "--bind-address=127.0.0.1".into(),
            format!("--secure-port={}", ports.apiserver),
            format!("--tls-cert-file={}", p(&pki.serving_cert)),
            format!("--tls-private-key-file={}", p(&pki.serving_key)),
            format!("--client-ca-file={}", p(&pki.ca_cert)),
            format!("--service-account-key-file={}", p(&pki.service_account_pub)),
            format!(
                "--service-account-signing-key-file={}",
                p(&pki.service_account_key)
            ),
            "--service-account-issuer=https://kubernetes.default.svc.cluster.local".into(),
            "--service-cluster-ip-range=10.96.0.0/16".into(),
            "--authorization-mode=RBAC".into(),
            "--allow-privileged=true".into(),
            // The ServiceAccount admission plugin rejects pods until KCM has created the
            // namespace's `default` account, a race every fresh test namespace would hit; fake
            // kwok pods have no use for tokens.
            "--disable-admission-plugins=ServiceAccount".into(),
            // A loopback address is not a valid Endpoints entry for the `kubernetes` Service.
            "--endpoint-reconciler-type=none".into(),
            "--profiling=false".into(),
        ],
        Component::ControllerManager => vec![
            format!("--kubeconfig={kubeconfig}"),
            "--bind-address=127.0.0.1".into(),
            format!("--secure-port={}", ports.controller_manager),
            format!("--tls-cert-file={}", p(&pki.serving_cert)),
            format!("--tls-private-key-file={}", p(&pki.serving_key)),
            "--controllers=*".into(),
            format!(
                "--service-account-private-key-file={}",
                p(&pki.service_account_key)
            ),
            format!("--root-ca-file={}", p(&pki.ca_cert)),
            format!("--cluster-signing-cert-file={}", p(&pki.ca_cert)),
            format!("--cluster-signing-key-file={}", p(&pki.ca_key)),
            // No election: a restarted controller manager must act at once, not after the
            // previous lease expires.
            "--leader-elect=false".into(),
            "--kube-api-qps=100".into(),
            "--kube-api-burst=200".into(),
            "--profiling=false".into(),
        ],
        Component::Scheduler => vec![
            format!("--config={}", p(l.scheduler_config)),
            "--bind-address=127.0.0.1".into(),
            format!("--secure-port={}", ports.scheduler),
            format!("--tls-cert-file={}", p(&pki.serving_cert)),
            format!("--tls-private-key-file={}", p(&pki.serving_key)),
        ],
        Component::Kwok => vec![
            format!("--kubeconfig={kubeconfig}"),
            format!("--config={}", p(l.stages)),
            // Only nodes the harness creates (annotated) are faked, never a real one.
            "--manage-all-nodes=false".into(),
            "--manage-nodes-with-annotation-selector=kwok.x-k8s.io/node=fake".into(),
            format!("--server-address=127.0.0.1:{}", ports.kwok),
            // Room for many pods: the default /24 runs out after 254 pod IPs.
            "--cidr=10.64.0.1/10".into(),
            "--node-ip=10.63.0.1".into(),
        ],
    }
}

/// Path of a component's log file in the cluster directory.
pub(crate) fn log_path(dir: &Path, component: Component) -> PathBuf {
    dir.join("logs")
        .join(format!("{}.log", component.binary_name()))
}
