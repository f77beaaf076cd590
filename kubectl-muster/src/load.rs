//! Connecting like kubectl and listing what the views read, once per refresh.

use crate::cli::Global;
use crate::error::Error;
use crate::scene::Scene;
use k8s_openapi::api::core::v1::{Event, Namespace, Node, Pod, ResourceQuota};
use k8s_openapi::api::scheduling::v1::PriorityClass;
use k8s_openapi::api::scheduling::v1beta1::PodGroup as UpstreamPodGroup;
use kube::api::ListParams;
use kube::config::{KubeConfigOptions, Kubeconfig};
use kube::{Api, Client, Resource};
use muster_api::SchedulerNames;
use muster_crds::compat::{coscheduling, volcano};
use muster_crds::{GpuNode, PodGroup, Queue};
use serde::de::DeserializeOwned;
use std::fmt::Debug;

/// A client for the selected kubeconfig context, and the namespace kubectl would use.
pub struct Connection {
    pub client: Client,
    pub scheduler_names: SchedulerNames,
    pub server: String,
    pub namespace: String,
}

pub async fn connect(g: &Global) -> Result<Connection, Error> {
    let kubeconfig = match &g.kubeconfig {
        Some(path) => Kubeconfig::read_from(path)
            .map_err(|e| Error::Config(format!("reading kubeconfig {}: {e}", path.display())))?,
        None => Kubeconfig::read().map_err(|e| {
            Error::Config(format!(
                "no kubeconfig ($KUBECONFIG or ~/.kube/config): {e}; pass --kubeconfig"
            ))
        })?,
    };
    let options = KubeConfigOptions {
        context: g.context.clone(),
        cluster: g.cluster.clone(),
        user: g.user.clone(),
    };
    let mut config = kube::Config::from_custom_kubeconfig(kubeconfig, &options)
        .await
        .map_err(|e| Error::Config(format!("loading kubeconfig: {e}")))?;
    config.connect_timeout = Some(g.request_timeout);
    config.read_timeout = Some(g.request_timeout);
    // An unreachable server is reported at once rather than retried.
    config.default_retry = false;
    let server = config
        .cluster_url
        .to_string()
        .trim_end_matches('/')
        .to_string();
    let namespace = g
        .namespace
        .clone()
        .unwrap_or_else(|| config.default_namespace.clone());
    let client = Client::try_from(config)
        .map_err(|e| Error::Config(format!("building the client for {server}: {e}")))?;
    let scheduler_names = SchedulerNames::new(g.scheduler_names.iter().cloned())
        .map_err(|e| Error::Config(format!("--scheduler-name: {e}")))?;
    Ok(Connection {
        client,
        scheduler_names,
        server,
        namespace,
    })
}

/// Lists everything the scheduler's snapshot reads, plus quotas and preemption events.
pub async fn scene(conn: &Connection, now: i64) -> Result<Scene, Error> {
    let c = &conn.client;
    // Nodes first: the one call whose failure means the server itself is unusable.
    let nodes = match Api::<Node>::all(c.clone())
        .list(&ListParams::default())
        .await
    {
        Ok(l) => l.items,
        Err(e) => return Err(classify(conn, "nodes", e)),
    };
    let mut warnings = Vec::new();
    let (pods, gpu_nodes, pod_groups, cosched, volc, upstream, classes, quotas, preempted) = tokio::join!(
        list::<Pod>(conn, Api::all(c.clone()), Need::Required, "pods"),
        list::<GpuNode>(conn, Api::all(c.clone()), Need::MusterCrd, "GpuNode"),
        list::<PodGroup>(conn, Api::all(c.clone()), Need::MusterCrd, "PodGroup"),
        list::<coscheduling::PodGroup>(conn, Api::all(c.clone()), Need::Optional, ""),
        list::<volcano::PodGroup>(conn, Api::all(c.clone()), Need::Optional, ""),
        list::<UpstreamPodGroup>(conn, Api::all(c.clone()), Need::Optional, ""),
        list::<PriorityClass>(conn, Api::all(c.clone()), Need::Required, "priorityclasses"),
        list::<ResourceQuota>(conn, Api::all(c.clone()), Need::Optional, ""),
        preemption_events(conn),
    );
    let (queues, volcano_queues, namespaces) = tokio::join!(
        list::<Queue>(conn, Api::all(c.clone()), Need::Queues, "queues.muster.dev"),
        list::<volcano::Queue>(
            conn,
            Api::all(c.clone()),
            Need::Queues,
            "queues.scheduling.volcano.sh"
        ),
        list::<Namespace>(conn, Api::all(c.clone()), Need::Queues, "namespaces"),
    );
    let mut scene = Scene {
        nodes,
        pods: take(pods, &mut warnings)?,
        gpu_nodes: take(gpu_nodes, &mut warnings)?,
        pod_groups: take(pod_groups, &mut warnings)?,
        coscheduling: take(cosched, &mut warnings)?,
        volcano: take(volc, &mut warnings)?,
        upstream: take(upstream, &mut warnings)?,
        priority_classes: take(classes, &mut warnings)?,
        quotas: take(quotas, &mut warnings)?,
        events: take(preempted, &mut warnings)?,
        queues: take(queues, &mut warnings)?,
        volcano_queues: take(volcano_queues, &mut warnings)?,
        namespaces: Vec::new(),
        warnings: Vec::new(),
        now,
        scheduler_names: conn.scheduler_names.clone(),
    };
    let queue_objects = scene.queues.len() + scene.volcano_queues.len();
    scene.namespaces = take(only_with_queues(namespaces, queue_objects), &mut warnings)?;
    // Both muster.dev kinds missing: one line, not two.
    if warnings
        .iter()
        .filter(|w| w.contains("CRDs are not installed"))
        .count()
        == 2
    {
        warnings.retain(|w| !w.contains("CRDs are not installed"));
        warnings.insert(0, crd_warning("GpuNode and PodGroup"));
    }
    scene.warnings = warnings;
    Ok(scene)
}

/// Events about one object (pod or PodGroup), for `explain`.
pub async fn events_of(conn: &Connection, ns: &str, kind: &str, name: &str) -> Vec<Event> {
    let lp = ListParams::default().fields(&format!(
        "involvedObject.kind={kind},involvedObject.name={name}"
    ));
    match Api::<Event>::namespaced(conn.client.clone(), ns)
        .list(&lp)
        .await
    {
        Ok(l) => l.items,
        Err(e) => {
            tracing::debug!(error = %e, "listing events");
            Vec::new()
        }
    }
}

async fn preemption_events(conn: &Connection) -> Result<Listed<Event>, Error> {
    let lp = ListParams::default().fields("reason=Preempted");
    match Api::<Event>::all(conn.client.clone()).list(&lp).await {
        Ok(l) => Ok(Listed {
            items: l.items,
            warning: None,
        }),
        Err(kube::Error::Api(s)) => Ok(Listed {
            items: Vec::new(),
            warning: Some(format!("cannot list events: {}", s.message)),
        }),
        Err(e) => Err(classify(conn, "events", e)),
    }
}

fn take<K>(r: Result<Listed<K>, Error>, warnings: &mut Vec<String>) -> Result<Vec<K>, Error> {
    let l = r?;
    warnings.extend(l.warning);
    Ok(l.items)
}

#[derive(Clone, Copy, PartialEq, Eq)]
enum Need {
    /// Core kinds: a refusal is a warning, an outage an error.
    Required,
    /// Muster's CRDs: a 404 means the chart is not installed.
    MusterCrd,
    /// Other schedulers' kinds, quotas: absent is normal.
    Optional,
    /// What queues are read from: a 404 (CRD not installed) means no queues; a refusal is a
    /// warning, since the queue views would then be wrong.
    Queues,
}

struct Listed<K> {
    items: Vec<K>,
    warning: Option<String>,
}

async fn list<K>(conn: &Connection, api: Api<K>, need: Need, what: &str) -> Result<Listed<K>, Error>
where
    K: Resource + Clone + DeserializeOwned + Debug,
{
    match api.list(&ListParams::default()).await {
        Ok(l) => Ok(Listed {
            items: l.items,
            warning: None,
        }),
        Err(kube::Error::Api(s)) => Ok(Listed {
            items: Vec::new(),
            warning: refusal(need, s.code, what, &s.message),
        }),
        Err(e) if need == Need::Optional => {
            tracing::debug!(error = %e, "optional list failed");
            Ok(Listed {
                items: Vec::new(),
                warning: None,
            })
        }
        // One malformed queue object must not take every view down with it.
        Err(kube::Error::SerdeError(e)) if need == Need::Queues => Ok(Listed {
            items: Vec::new(),
            warning: Some(format!("cannot read {what}: {e}; planned without them")),
        }),
        Err(e) => Err(classify(conn, what, e)),
    }
}

/// Namespaces are read for their queue annotation only: many users may not list them, and
/// without queues that is no loss worth a warning.
fn only_with_queues(
    listed: Result<Listed<Namespace>, Error>,
    queue_objects: usize,
) -> Result<Listed<Namespace>, Error> {
    listed.map(|mut l| {
        if queue_objects == 0 {
            l.warning = None;
        }
        l
    })
}

/// The warning for a list the API server answered with an error (`None`: quietly empty).
fn refusal(need: Need, code: u16, what: &str, message: &str) -> Option<String> {
    match (need, code) {
        (Need::Optional, _) | (Need::Queues, 404) => None,
        (Need::MusterCrd, 404) => Some(crd_warning(what)),
        _ => Some(format!("cannot list {what}: {message} ({code})")),
    }
}

pub fn crd_warning(kinds: &str) -> String {
    format!(
        "the muster.dev CRDs are not installed ({kinds} not found): install the chart \
         (helm install muster charts/muster); GPU details, gang groups and agent readings are missing"
    )
}

/// Outage or refusal, named with the server URL.
fn classify(conn: &Connection, what: &str, e: kube::Error) -> Error {
    match e {
        kube::Error::Api(s) => Error::Api {
            server: conn.server.clone(),
            what: what.to_string(),
            code: s.code,
            message: s.message,
        },
        other => Error::Unreachable {
            server: conn.server.clone(),
            cause: root_cause(&other),
        },
    }
}

/// The innermost error message (e.g. "Connection refused (os error 111)").
pub fn root_cause(e: &(dyn std::error::Error + 'static)) -> String {
    let mut cur = e;
    while let Some(next) = cur.source() {
        cur = next;
    }
    cur.to_string()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn namespaces_refused_matter_only_with_queues() {
        let refused = || Listed::<Namespace> {
            items: Vec::new(),
            warning: Some("cannot list namespaces: forbidden (403)".into()),
        };
        assert_eq!(only_with_queues(Ok(refused()), 0).unwrap().warning, None);
        assert!(
            only_with_queues(Ok(refused()), 2)
                .unwrap()
                .warning
                .is_some()
        );
    }

    #[test]
    fn an_absent_queue_crd_means_no_queues_but_a_refusal_is_said() {
        assert_eq!(
            refusal(Need::Queues, 404, "queues.scheduling.volcano.sh", "nf"),
            None
        );
        assert_eq!(
            refusal(Need::Queues, 403, "queues.muster.dev", "forbidden").as_deref(),
            Some("cannot list queues.muster.dev: forbidden (403)")
        );
        assert_eq!(refusal(Need::Optional, 403, "", "forbidden"), None);
        assert!(
            refusal(Need::MusterCrd, 404, "GpuNode", "nf")
                .is_some_and(|w| w.contains("not installed"))
        );
    }
}
