//! Queues and fair share on the real control plane (issue 17): kube-scheduler + the extender
//! on kwok nodes, with Muster's Queues (and Volcano's, from its published CRDs).
//!
//! (a) a queue below its guarantee reclaims whole gangs from a borrowing queue; (b) a parent's
//! limit holds over its children's gangs together; (c) Volcano Queues and PodGroups behave as
//! (a).

mod muster;

use k8s_openapi::api::core::v1::Pod;
use kube::api::{DeleteParams, PostParams};
use kube::{Api, Client};
use muster::queues::{muster_queue, planned_with};
use muster::*;
use muster_crds::compat::volcano;
use muster_testcluster::{NodeSpec, TestCluster};
use serde_json::{Value, json};
use std::collections::BTreeMap;
use std::path::PathBuf;
use std::time::{Duration, Instant};

const NS: &str = "ml";
/// Reclaim and placement happen within a few rounds; this bounds each wait of a test.
const WAIT: Duration = Duration::from_secs(40);

/// 8 nodes x 8 GPUs.
async fn cluster() -> (TestCluster, Extender) {
    let (cluster, ext) = muster_cluster(&[NodeSpec::fixture("dgx-a100", 8)], &[]).await;
    namespace(&cluster.client(), NS).await;
    (cluster, ext)
}

/// A gang of `n` whole-node members (8 GPUs each) in `queue`, by the pod label.
fn labelled_gang(prefix: &str, n: u32, queue: &str) -> Vec<Pod> {
    let min = n.to_string();
    gang(prefix, n, 8, Gang::Annotation(prefix, &min), None)
        .into_iter()
        .map(|mut p| {
            p.metadata
                .labels
                .get_or_insert_with(BTreeMap::new)
                .insert("muster.dev/queue".into(), queue.into());
            p
        })
        .collect()
}

fn live(p: &Pod) -> bool {
    p.metadata.deletion_timestamp.is_none()
}

/// Polls `check` until it returns `Some`, failing with `what` and `state()` after [`WAIT`].
async fn poll<T, F, Fut>(what: &str, mut check: F) -> T
where
    F: FnMut() -> Fut,
    Fut: std::future::Future<Output = Result<T, String>>,
{
    let started = Instant::now();
    loop {
        let last = match check().await {
            Ok(v) => return v,
            Err(state) => state,
        };
        assert!(
            started.elapsed() < WAIT,
            "gave up waiting for {what}: {last}"
        );
        tokio::time::sleep(Duration::from_millis(250)).await;
    }
}

/// Live pods per gang (the pod name without its `-<index>`) with prefix `prefix`, and how
/// many of them are bound.
async fn gangs_of(client: &Client, prefix: &str) -> BTreeMap<String, (usize, usize)> {
    let mut out: BTreeMap<String, (usize, usize)> = BTreeMap::new();
    for p in pods_with_prefix(client, NS, prefix).await {
        let name = p.metadata.name.clone().unwrap_or_default();
        let gang = name
            .rsplit_once('-')
            .map_or(name.clone(), |(g, _)| g.into());
        let e = out.entry(gang).or_default();
        if live(&p) {
            e.0 += 1;
            e.1 += usize::from(node_of(&p).is_some());
        }
    }
    out
}

async fn status_of(client: &Client, queue: &str) -> Value {
    let api: Api<muster_crds::Queue> = Api::all(client.clone());
    let q = api.get(queue).await.expect("get Queue");
    serde_json::to_value(q.status).unwrap_or(Value::Null)
}

/// Team A (guaranteed half) fills the cluster with four gangs of two whole nodes; team B's
/// gang (half of its guarantee) arrives: whole team A gangs are evicted and B binds, and team
/// A keeps at least its guarantee. `prefix` names gangs apart between scenarios.
async fn reclaim_scenario(
    client: &Client,
    ext: &Extender,
    make_gang: impl Fn(&str, &str) -> Vec<Pod>,
) {
    for g in 0..4 {
        create_pods(client, NS, make_gang(&format!("a{g}"), "team-a")).await;
    }
    wait_pods(client, NS, "a", "team A's 8 pods bound (borrowing)", |p| {
        bound_count(p) == 8
    })
    .await;

    let arrived = Instant::now();
    create_pods(client, NS, make_gang("b0", "team-b")).await;
    poll("team B's gang bound whole", || async move {
        let b = gangs_of(client, "b0").await;
        match b.get("b0") {
            Some(&(2, 2)) => Ok(()),
            other => Err(format!("{other:?}; extender: {}", ext.log_tail())),
        }
    })
    .await;
    let took = arrived.elapsed();
    eprintln!("team B bound {took:?} after it arrived");
    assert!(took < Duration::from_secs(30), "reclaim took {took:?}");

    // Evicted gangs are gone whole; what team A keeps is bound whole.
    let a = poll("team A's gangs settled (whole or gone)", || async move {
        let a = gangs_of(client, "a").await;
        let settled = a
            .values()
            .all(|&(live, bound)| (live == 0 || live == 2) && live == bound);
        if settled {
            Ok(a)
        } else {
            Err(format!("{a:?}"))
        }
    })
    .await;
    let kept_gpus: usize = a.values().map(|&(_, bound)| bound * 8).sum();
    assert!(
        kept_gpus >= 32,
        "team A went below its guarantee: {kept_gpus} GPUs ({a:?})"
    );
    assert!(kept_gpus <= 48, "nothing was reclaimed: {a:?}");
    assert!(
        ext.metric(r#"muster_reclaims_total{queue="team-b"}"#).await > 0.0,
        "no reclaim counted"
    );
}

/// (a) Two Muster queues, each guaranteed half of 8 x 8 GPUs.
#[tokio::test(flavor = "multi_thread")]
async fn a_queue_below_its_guarantee_reclaims_whole_gangs_from_a_borrower() {
    let (cluster, ext) = cluster().await;
    let client = &cluster.client();
    for q in ["team-a", "team-b"] {
        muster_queue(client, q, json!({"gpu": {"guaranteed": 32}})).await;
    }
    planned_with(&ext, &["team-a", "team-b"]).await;
    reclaim_scenario(client, &ext, |g, q| labelled_gang(g, 2, q)).await;

    // The Queue status shows what was reclaimed: B holds its 16, A no longer borrows it all.
    poll("Queue statuses after the reclaim", || async move {
        let (a, b) = (
            status_of(client, "team-a").await,
            status_of(client, "team-b").await,
        );
        let ok = b["allocatedGpus"] == 16
            && b["runningGangs"] == 1
            && a["allocatedGpus"] == 48
            && a["borrowed"]["nvidia.com/gpu"] == "16"
            && a["guaranteed"]["nvidia.com/gpu"] == "32"
            && a["conditions"][0]["type"] == "Valid"
            && a["conditions"][0]["status"] == "True";
        if ok {
            Ok(())
        } else {
            Err(format!("team-a {a}, team-b {b}"))
        }
    })
    .await;
}

/// (b) A parent limited to 16 GPUs over two unlimited children: their gangs together never
/// hold more than 16; the third waits, its PodGroup saying the parent is at its limit, and
/// binds once room is made under the limit.
#[tokio::test(flavor = "multi_thread")]
async fn a_parents_limit_holds_over_its_childrens_gangs() {
    let (cluster, ext) = cluster().await;
    let ext = &ext;
    let client = &cluster.client();
    muster_queue(client, "org", json!({"gpu": {"limit": 16}})).await;
    for q in ["child-1", "child-2"] {
        muster_queue(client, q, json!({"parent": "org"})).await;
    }
    planned_with(ext, &["org", "child-1", "child-2"]).await;
    let groups: &Api<muster_crds::PodGroup> = &Api::namespaced(client.clone(), NS);
    let mut pods = Vec::new();
    for (g, q) in [("g1", "child-1"), ("g2", "child-2"), ("g3", "child-1")] {
        let pg = serde_json::from_value(json!({
            "apiVersion": "muster.dev/v1alpha1", "kind": "PodGroup",
            "metadata": {"name": g}, "spec": {"minMember": 1, "queue": q},
        }))
        .expect("PodGroup json");
        groups
            .create(&PostParams::default(), &pg)
            .await
            .expect("create PodGroup");
        pods.push(member(&format!("{g}-0"), Gang::PodGroup(g), 8, None));
    }
    // All at once: the round and the fast path between rounds both see them.
    create_pods(client, NS, pods).await;

    let waiting = poll(
        "two gangs bound, the third told the parent is at its limit",
        || async move {
            let bound: Vec<Pod> = pods_with_prefix(client, NS, "g")
                .await
                .into_iter()
                .filter(|p| node_of(p).is_some())
                .collect();
            assert!(
                bound.len() <= 2,
                "above org's 16-GPU limit: {} bound",
                bound.len()
            );
            let mut told = None;
            for g in ["g1", "g2", "g3"] {
                let message = groups
                    .get(g)
                    .await
                    .ok()
                    .and_then(|pg| pg.status)
                    .and_then(|s| s.message)
                    .unwrap_or_default();
                if message.contains("queue org") && message.contains("limit") {
                    told = Some(g.to_string());
                }
            }
            match told {
                Some(g) if bound.len() == 2 => Ok(g),
                _ => Err(format!(
                    "{} bound, none told; {}",
                    bound.len(),
                    ext.log_tail()
                )),
            }
        },
    )
    .await;
    let unbound = pods_with_prefix(client, NS, &format!("{waiting}-")).await;
    assert_eq!(
        bound_count(&unbound),
        0,
        "{waiting} is told it waits but is bound"
    );

    // Room under the limit: the waiting gang binds.
    let other = ["g1", "g2", "g3"]
        .into_iter()
        .find(|g| *g != waiting)
        .expect("another gang");
    Api::<Pod>::namespaced(client.clone(), NS)
        .delete(&format!("{other}-0"), &DeleteParams::default())
        .await
        .expect("delete pod");
    wait_pods(
        client,
        NS,
        &format!("{waiting}-"),
        "the waiting gang bound",
        |p| bound_count(p) == 1,
    )
    .await;
    let bound = pods_with_prefix(client, NS, "g")
        .await
        .into_iter()
        .filter(|p| live(p) && node_of(p).is_some())
        .count();
    assert!(bound <= 2, "above org's limit: {bound} bound");
}

/// Volcano's published CRDs (Queue and PodGroup) from `volcano.sh/volcano@v1.10.0`, the
/// module the harness takes Volcano's PodGroup CRD from (`tests/tools/operators/*/operator.env`).
fn volcano_crds() -> tempfile::TempDir {
    let go = std::env::var_os("MUSTER_GO")
        .map(PathBuf::from)
        .or_else(|| {
            let p = PathBuf::from("/usr/local/go/bin/go");
            p.exists().then_some(p)
        })
        .unwrap_or_else(|| PathBuf::from("go"));
    let scratch = tempfile::tempdir().expect("temp dir");
    let out = std::process::Command::new(go)
        .args(["mod", "download", "-json", "volcano.sh/volcano@v1.10.0"])
        .current_dir(scratch.path())
        .env_remove("GOFLAGS")
        .output()
        .expect("running go mod download (the Go toolchain is needed once, as for the operators)");
    let info: Value = serde_json::from_slice(&out.stdout).unwrap_or_else(|e| {
        panic!(
            "go mod download volcano.sh/volcano@v1.10.0: {e}: {}",
            String::from_utf8_lossy(&out.stderr)
        )
    });
    let dir = PathBuf::from(info["Dir"].as_str().expect("module Dir"));
    let bases = dir.join("config/crd/volcano/bases");
    for f in [
        "scheduling.volcano.sh_queues.yaml",
        "scheduling.volcano.sh_podgroups.yaml",
    ] {
        std::fs::copy(bases.join(f), scratch.path().join(f)).expect("copying a Volcano CRD");
    }
    scratch
}

/// A gang of two whole-node members with a Volcano PodGroup naming `queue`.
async fn volcano_gang(client: &Client, prefix: &str, queue: &str) -> Vec<Pod> {
    let api: Api<volcano::PodGroup> = Api::namespaced(client.clone(), NS);
    let pg = serde_json::from_value(json!({
        "apiVersion": "scheduling.volcano.sh/v1beta1", "kind": "PodGroup",
        "metadata": {"name": prefix}, "spec": {"minMember": 2, "queue": queue},
    }))
    .expect("Volcano PodGroup json");
    api.create(&PostParams::default(), &pg)
        .await
        .expect("create Volcano PodGroup");
    gang(prefix, 2, 8, Gang::None, None)
        .into_iter()
        .map(|mut p| {
            p.metadata
                .annotations
                .get_or_insert_with(BTreeMap::new)
                .insert("scheduling.k8s.io/group-name".into(), prefix.into());
            p
        })
        .collect()
}

/// (c) As (a), with Volcano Queues (`deserved` half each) and Volcano PodGroups naming them.
#[tokio::test(flavor = "multi_thread")]
async fn volcano_queues_reclaim_like_musters() {
    let crds = volcano_crds();
    let (cluster, ext) = cluster().await;
    let ext = &ext;
    cluster
        .install_crds(crds.path())
        .await
        .expect("installing Volcano's CRDs");
    let client = &cluster.client();
    let queues: Api<volcano::Queue> = Api::all(client.clone());
    for q in ["team-a", "team-b"] {
        let queue = serde_json::from_value(json!({
            "metadata": {"name": q},
            "spec": {"weight": 1, "reclaimable": true, "deserved": {"nvidia.com/gpu": "32"}},
        }))
        .expect("Volcano Queue json");
        queues
            .create(&PostParams::default(), &queue)
            .await
            .expect("create Volcano Queue");
    }
    // The extender's watches retry absent CRDs with backoff: wait until it plans with them.
    poll("the extender reporting the Volcano queues", || async move {
        let g = ext
            .metric(r#"muster_queue_guaranteed{queue="team-b",resource="nvidia.com/gpu"}"#)
            .await;
        if g == 32.0 {
            Ok(())
        } else {
            Err(format!("guaranteed {g}"))
        }
    })
    .await;
    let mut gangs = BTreeMap::new();
    for (g, q) in [
        ("a0", "team-a"),
        ("a1", "team-a"),
        ("a2", "team-a"),
        ("a3", "team-a"),
        ("b0", "team-b"),
    ] {
        gangs.insert(g, volcano_gang(client, g, q).await);
    }
    reclaim_scenario(client, ext, |g, _| gangs[g].clone()).await;
    let allocated = ext
        .metric(r#"muster_queue_allocated{queue="team-b",resource="nvidia.com/gpu"}"#)
        .await;
    assert!(
        allocated == 0.0 || allocated == 16.0,
        "team-b allocated {allocated}"
    );
}
