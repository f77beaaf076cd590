//! `helm install` into a real control plane (the harness: etcd, kube-apiserver,
//! kube-controller-manager, kwok GPU nodes). kwok runs no containers, so the chart's pods never
//! start; the test checks every object was created and the CRDs are established, then runs the
//! installed configuration as host processes: kube-scheduler with the KubeSchedulerConfiguration
//! read back from the installed ConfigMap, and `muster-scheduler` with the flags of the installed
//! Deployment. The examples/ are then submitted and must be scheduled as gangs.

mod common;
use common::host::{HostProcess, free_port, muster_scheduler_binary};
use common::*;
use k8s_openapi::api::apps::v1::{DaemonSet, Deployment};
use k8s_openapi::api::coordination::v1::Lease;
use k8s_openapi::api::core::v1::{ConfigMap, Pod, Secret, Service, ServiceAccount};
use k8s_openapi::api::rbac::v1::{ClusterRole, ClusterRoleBinding, Role, RoleBinding};
use k8s_openapi::apiextensions_apiserver::pkg::apis::apiextensions::v1::CustomResourceDefinition;
use kube::api::{DynamicObject, ListParams, PostParams};
use kube::discovery::{ApiCapabilities, ApiResource, Discovery, Scope};
use kube::{Api, Client, CustomResourceExt, ResourceExt};
use muster_testcluster::{ClusterSpec, NodeSpec, TestCluster};
use std::collections::BTreeMap;
use std::path::PathBuf;
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

const NS: &str = "muster-system";
const DEADLINE: Duration = Duration::from_secs(180);

/// Creates every document of an example file (namespaced objects go to `ns`).
async fn apply_example(client: &Client, file: &str, ns: &str) {
    let text = std::fs::read_to_string(repo_root().join("examples").join(file)).unwrap();
    let discovery = Discovery::new(client.clone())
        .run()
        .await
        .expect("discovery");
    for doc in docs(&text) {
        let obj: DynamicObject = serde_yaml::from_value(doc).expect("example object");
        let tm = obj.types.clone().expect("apiVersion/kind");
        let (group, version) = tm
            .api_version
            .split_once('/')
            .unwrap_or(("", tm.api_version.as_str()));
        let gvk = kube::api::GroupVersionKind::gvk(group, version, &tm.kind);
        let (ar, caps): (ApiResource, ApiCapabilities) = discovery
            .resolve_gvk(&gvk)
            .unwrap_or_else(|| panic!("{file}: the cluster does not serve {gvk:?}"));
        let api: Api<DynamicObject> = match caps.scope {
            Scope::Namespaced => Api::namespaced_with(client.clone(), ns, &ar),
            Scope::Cluster => Api::all_with(client.clone(), &ar),
        };
        api.create(&PostParams::default(), &obj)
            .await
            .unwrap_or_else(|e| panic!("{file}: creating {} {}: {e}", tm.kind, obj.name_any()));
    }
}

/// Waits until the Job's `want` pods are all bound to nodes; returns node per pod.
async fn wait_job_bound(
    client: &Client,
    ns: &str,
    job: &str,
    want: usize,
    logs: &[PathBuf],
) -> BTreeMap<String, String> {
    let api: Api<Pod> = Api::namespaced(client.clone(), ns);
    let started = Instant::now();
    loop {
        let pods = api
            .list(&ListParams::default().labels(&format!("job-name={job}")))
            .await
            .expect("list pods");
        let bound: BTreeMap<String, String> = pods
            .items
            .iter()
            .filter(|p| p.metadata.deletion_timestamp.is_none())
            .filter_map(|p| {
                let node = p.spec.as_ref()?.node_name.clone()?;
                Some((p.name_any(), node))
            })
            .collect();
        if bound.len() >= want {
            return bound;
        }
        assert!(
            started.elapsed() < DEADLINE,
            "job {ns}/{job}: only {} of {want} pods bound: {bound:?}\nforbidden in logs:\n{}",
            bound.len(),
            forbidden_lines(logs)
        );
        tokio::time::sleep(Duration::from_millis(300)).await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn helm_install_creates_everything_and_the_examples_schedule() {
    // Every request is audited: what the ServiceAccount really called is checked at the end.
    let audit_dir = tempfile::tempdir().expect("audit dir");
    let (audit_args, audit_log) = audit::audit_flags(audit_dir.path());
    let mut spec = ClusterSpec::default();
    spec.extra_args
        .insert(muster_testcluster::Component::ApiServer, audit_args);
    let cluster = TestCluster::start(spec).await.expect("control plane");
    let client = cluster.client();
    let kubeconfig = cluster.kubeconfig_path().to_str().unwrap().to_string();
    let chart = chart_dir();

    // Install with everything the harness can serve (no Prometheus operator CRDs here).
    let out = helm(&[
        "install",
        "muster",
        chart.to_str().unwrap(),
        "--kubeconfig",
        &kubeconfig,
        "--namespace",
        NS,
        "--create-namespace",
        "--set",
        "scheduler.replicas=2",
    ]);
    assert!(
        out.status.success(),
        "helm install:\n{}{}",
        text(&out.stdout),
        text(&out.stderr)
    );
    let notes = text(&out.stdout);
    assert!(notes.contains("STATUS: deployed"), "{notes}");
    assert!(notes.contains("muster.dev/gang"), "NOTES shown: {notes}");

    // Every object exists.
    cluster
        .wait_crds_established(
            &["podgroups.muster.dev".into(), "gpunodes.muster.dev".into()],
            DEADLINE,
        )
        .await
        .expect("CRDs established");
    let dep = Api::<Deployment>::namespaced(client.clone(), NS)
        .get("muster-scheduler")
        .await
        .expect("scheduler Deployment");
    assert_eq!(dep.spec.replicas, Some(2));
    Api::<DaemonSet>::namespaced(client.clone(), NS)
        .get("muster-node")
        .await
        .expect("node DaemonSet");
    for sa in ["muster-scheduler", "muster-node"] {
        Api::<ServiceAccount>::namespaced(client.clone(), NS)
            .get(sa)
            .await
            .expect(sa);
    }
    for svc in ["muster-scheduler", "muster-node-metrics"] {
        Api::<Service>::namespaced(client.clone(), NS)
            .get(svc)
            .await
            .expect(svc);
    }
    for cm in ["muster-scheduler-config", "muster-dashboard"] {
        Api::<ConfigMap>::namespaced(client.clone(), NS)
            .get(cm)
            .await
            .expect(cm);
    }
    for r in [
        "muster-scheduler-kube-scheduler",
        "muster-scheduler-volume-scheduler",
        "muster-scheduler-extender",
        "muster-node-agent",
        "muster-node-device-plugin",
    ] {
        Api::<ClusterRole>::all(client.clone())
            .get(r)
            .await
            .expect(r);
        Api::<ClusterRoleBinding>::all(client.clone())
            .get(r)
            .await
            .expect(r);
    }
    for role in [
        "muster-scheduler-kube-scheduler-lease",
        "muster-scheduler-extender-lease",
    ] {
        Api::<Role>::namespaced(client.clone(), NS)
            .get(role)
            .await
            .expect(role);
    }
    Api::<RoleBinding>::namespaced(client.clone(), "kube-system")
        .get("muster-scheduler-auth-reader")
        .await
        .expect("auth reader RoleBinding");
    // The API server accepted the rendered objects unchanged: the count matches the render.
    let out = helm(&[
        "get",
        "manifest",
        "muster",
        "--kubeconfig",
        &kubeconfig,
        "-n",
        NS,
    ]);
    assert!(out.status.success());
    let installed = docs(&text(&out.stdout)).len();
    let rendered = objects(&["scheduler.replicas=2"])
        .iter()
        .filter(|o| kind_of(o) != "CustomResourceDefinition")
        .count();
    assert_eq!(installed, rendered);

    // Run the installed configuration as host processes.
    let cm = Api::<ConfigMap>::namespaced(client.clone(), NS)
        .get("muster-scheduler-config")
        .await
        .unwrap();
    let config = cm.data.unwrap()["scheduler-config.yaml"].clone();
    let port = free_port();
    // The pod's loopback port is this test's free port (tests run in parallel on one host).
    assert!(config.contains("http://127.0.0.1:8888"));
    let config = config.replace("http://127.0.0.1:8888", &format!("http://127.0.0.1:{port}"));
    let deployment = Api::<Deployment>::namespaced(client.clone(), NS)
        .get("muster-scheduler")
        .await
        .unwrap();
    let pod_spec = deployment.spec.template.spec.unwrap();
    let ext = pod_spec
        .containers
        .iter()
        .find(|c| c.name == "extender")
        .expect("extender container");
    let command = ext.command.clone().unwrap();
    // The chart's verbs are on the pod's loopback, its metrics on the pod IP.
    assert!(command.contains(&"--listen=127.0.0.1:8888".to_string()));
    assert!(command.contains(&"--metrics-listen=0.0.0.0:8889".to_string()));
    let mut args: Vec<String> = command[1..]
        .iter()
        .filter(|a| {
            !a.starts_with("--listen") && !a.starts_with("--metrics-listen") && *a != "--log-json"
        })
        .cloned()
        .collect();
    args.push(format!("--listen=127.0.0.1:{port}"));
    args.push(format!("--metrics-listen=127.0.0.1:{}", free_port()));
    // The extender acts as the chart's ServiceAccount (impersonation), so its ClusterRole and
    // the leases Role are what let it watch, bind, annotate, evict and elect itself.
    let sa_kubeconfig = impersonating_kubeconfig(&cluster, "muster-scheduler");
    args.push(format!("--kubeconfig={}", sa_kubeconfig.display()));
    let sa_client = {
        let kc = kube::config::Kubeconfig::read_from(&sa_kubeconfig).unwrap();
        let config = kube::Config::from_custom_kubeconfig(kc, &Default::default())
            .await
            .unwrap();
        Client::try_from(config).unwrap()
    };
    Api::<Pod>::all(sa_client.clone())
        .list(&ListParams::default())
        .await
        .expect("the scheduler's ServiceAccount lists pods");
    match Api::<Secret>::namespaced(sa_client.clone(), NS)
        .list(&ListParams::default())
        .await
    {
        Err(kube::Error::Api(e)) if e.code == 403 => {}
        other => panic!("the scheduler's ServiceAccount must not read Secrets: {other:?}"),
    }
    let log = std::fs::File::create(cluster.dir().join("muster-scheduler.log")).unwrap();
    let mut cmd = Command::new(muster_scheduler_binary());
    cmd.args(&args)
        .env("POD_NAMESPACE", NS)
        .env("POD_NAME", "muster-scheduler-host")
        .stdin(Stdio::null())
        .stdout(log.try_clone().unwrap())
        .stderr(log);
    let _extender = HostProcess::spawn(&mut cmd, "muster-scheduler");
    // kube-scheduler, also as the chart's ServiceAccount: the upstream-derived ClusterRoles, the
    // leases Role and the auth-reader binding must be enough for it to sync and schedule.
    let mut ks_config: serde_yaml::Value = serde_yaml::from_str(&config).unwrap();
    ks_config["clientConnection"]["kubeconfig"] = sa_kubeconfig.display().to_string().into();
    let ks_config_path = cluster.dir().join("muster-kube-scheduler.yaml");
    std::fs::write(&ks_config_path, serde_yaml::to_string(&ks_config).unwrap()).unwrap();
    let ks_log_path = cluster.dir().join("muster-kube-scheduler.log");
    let ks_log = std::fs::File::create(&ks_log_path).unwrap();
    let mut cmd = Command::new(
        muster_testcluster::bin_dir()
            .unwrap()
            .join("kube-scheduler"),
    );
    cmd.arg(format!("--config={}", ks_config_path.display()))
        .arg("--bind-address=127.0.0.1")
        .arg(format!("--secure-port={}", free_port()))
        .arg(format!(
            "--cert-dir={}",
            cluster.dir().join("muster-kube-scheduler-certs").display()
        ))
        .arg(format!(
            "--authentication-kubeconfig={}",
            sa_kubeconfig.display()
        ))
        .arg(format!(
            "--authorization-kubeconfig={}",
            sa_kubeconfig.display()
        ))
        .arg("--v=2")
        .stdin(Stdio::null())
        .stdout(ks_log.try_clone().unwrap())
        .stderr(ks_log);
    let _kube_scheduler = HostProcess::spawn(&mut cmd, "kube-scheduler");
    let logs = [ks_log_path, cluster.dir().join("muster-scheduler.log")];

    // Compatible PodGroup CRDs (scheduler-plugins, Volcano) for their examples.
    let crds: Api<CustomResourceDefinition> = Api::all(client.clone());
    let compat = [
        muster_crds::compat::coscheduling::PodGroup::crd(),
        muster_crds::compat::volcano::PodGroup::crd(),
    ];
    for crd in &compat {
        crds.create(&PostParams::default(), crd)
            .await
            .expect("compat CRD");
    }
    let names: Vec<String> = compat.iter().map(|c| c.name_any()).collect();
    cluster
        .wait_crds_established(&names, DEADLINE)
        .await
        .expect("compat CRDs established");

    cluster
        .add_gpu_nodes(&NodeSpec::fixture("dgx-a100", 4))
        .await
        .expect("GPU nodes");

    // 4x2 + 2x4 + 3x1 + 2x2 = 23 of 32 GPUs.
    let ns = "default";
    for (file, job, pods) in [
        ("indexed-job-gang.yaml", "train-indexed", 4),
        ("muster-podgroup.yaml", "llm-finetune", 2),
        ("scheduler-plugins-podgroup.yaml", "sp-gang", 3),
        ("volcano-podgroup.yaml", "vc-gang", 2),
    ] {
        apply_example(&client, file, ns).await;
        let bound = wait_job_bound(&client, ns, job, pods, &logs).await;
        assert_eq!(bound.len(), pods, "{file}: {bound:?}");
    }
    // Each bound pod carries the GPUs Muster chose.
    let pods = Api::<Pod>::namespaced(client.clone(), ns)
        .list(&ListParams::default())
        .await
        .unwrap();
    for p in &pods.items {
        if p.spec.as_ref().and_then(|s| s.node_name.as_ref()).is_some() {
            assert!(
                p.annotations().contains_key("muster.dev/gpu-ids"),
                "{} bound without muster.dev/gpu-ids",
                p.name_any()
            );
        }
    }

    // The high-priority gang needs 2 whole nodes: only 9 GPUs are free, so Muster preempts
    // whole lower-priority gangs to place it.
    apply_example(&client, "preempting-gang.yaml", ns).await;
    let bound = wait_job_bound(&client, ns, "urgent-train", 2, &logs).await;
    let nodes: std::collections::BTreeSet<_> = bound.values().collect();
    assert_eq!(nodes.len(), 2, "one 8-GPU pod per node: {bound:?}");

    // Neither component was denied anything by the chart's RBAC.
    let denied = forbidden_lines(&logs);
    assert!(denied.is_empty(), "RBAC denials:\n{denied}");
    calls_match_declarations(&audit_log);
    // kube-scheduler leads on its own Lease.
    let lease = Api::<Lease>::namespaced(client.clone(), NS)
        .get("muster-scheduler-kube-scheduler")
        .await
        .expect("kube-scheduler's Lease");
    assert!(lease.spec.and_then(|s| s.holder_identity).is_some());
    // The extender holds no Lease of its own: it follows kube-scheduler's (same host), reading
    // it as the ServiceAccount, and leads because the kube-scheduler beside it does.
    let own = Api::<Lease>::namespaced(client.clone(), NS)
        .get_opt("muster-scheduler")
        .await
        .expect("reading leases");
    assert!(
        own.is_none(),
        "the extender took a Lease of its own: {own:?}"
    );
    let log =
        std::fs::read_to_string(cluster.dir().join("muster-scheduler.log")).unwrap_or_default();
    assert!(
        log.lines()
            .any(|l| l.contains("leadership changed") && l.contains("true")),
        "the extender never led:\n{log}"
    );
}

/// What the scheduler's ServiceAccount called, per the audit log: no call was refused, and
/// every call the extender made is one `scheduler/src/access.rs` declares (so the chart, which
/// the rbac test holds to that list, grants it). kube-scheduler's calls are upstream's business.
fn calls_match_declarations(log: &std::path::Path) {
    use muster_api::access::Scope;
    let user = format!("system:serviceaccount:{NS}:muster-scheduler");
    let calls: Vec<audit::Call> = audit::calls(log)
        .into_iter()
        .filter(|c| c.user == user)
        .collect();
    // This test's own probe that the ServiceAccount cannot read Secrets is the one refusal.
    let probe = |c: &audit::Call| c.resource == "secrets" && c.verb == "list";
    let refused: Vec<_> = calls
        .iter()
        .filter(|c| c.code == 403 && !probe(c))
        .collect();
    assert!(refused.is_empty(), "calls refused by RBAC: {refused:#?}");
    let extender: Vec<_> = calls
        .iter()
        .filter(|c| !c.user_agent.starts_with("kube-scheduler") && !probe(c))
        .collect();
    assert!(
        extender.iter().any(|c| c.resource == "pods/binding"),
        "the audit log shows no Binding by the extender: {} calls",
        extender.len()
    );
    let declared = |c: &audit::Call| {
        muster_scheduler::access::API_CALLS.iter().any(|a| {
            a.group == c.group
                && a.resource == c.resource
                && a.verbs.contains(&c.verb.as_str())
                && match a.scope {
                    Scope::Cluster => true,
                    Scope::ReleaseNamespace(names) => {
                        c.namespace == NS
                            && names
                                .iter()
                                .any(|n| n.replace("{release}", "muster-scheduler") == c.name)
                    }
                }
        })
    };
    let undeclared: std::collections::BTreeSet<_> = extender
        .iter()
        .filter(|c| !declared(c))
        .map(|c| (&c.verb, &c.group, &c.resource, &c.namespace, &c.name))
        .collect();
    assert!(
        undeclared.is_empty(),
        "the extender made calls scheduler/src/access.rs does not declare: {undeclared:#?}"
    );
}

/// Lines of the host processes' logs that report an RBAC denial.
fn forbidden_lines(logs: &[PathBuf]) -> String {
    logs.iter()
        .flat_map(|p| {
            std::fs::read_to_string(p)
                .unwrap_or_default()
                .lines()
                .filter(|l| l.contains("forbidden"))
                .take(20)
                .map(str::to_string)
                .collect::<Vec<_>>()
        })
        .collect::<Vec<_>>()
        .join("\n")
}

/// A copy of the admin kubeconfig that impersonates ServiceAccount `sa` of the release.
fn impersonating_kubeconfig(cluster: &TestCluster, sa: &str) -> PathBuf {
    let mut kc: serde_yaml::Value =
        serde_yaml::from_str(&std::fs::read_to_string(cluster.kubeconfig_path()).unwrap()).unwrap();
    let users = kc["users"].as_sequence_mut().expect("kubeconfig users");
    for u in users {
        let user = u["user"].as_mapping_mut().expect("user");
        user.insert(
            "as".into(),
            format!("system:serviceaccount:{NS}:{sa}").into(),
        );
        user.insert(
            "as-groups".into(),
            serde_yaml::to_value([
                "system:serviceaccounts",
                &format!("system:serviceaccounts:{NS}"),
                "system:authenticated",
            ])
            .unwrap(),
        );
    }
    let path = cluster.dir().join(format!("kubeconfig-{sa}"));
    std::fs::write(&path, serde_yaml::to_string(&kc).unwrap()).unwrap();
    path
}
