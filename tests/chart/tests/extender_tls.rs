//! The chart's mutual TLS between kube-scheduler and the extender, end to end on the harness
//! control plane. kwok runs no containers, so the rendered pod runs as host processes: the
//! real kube-scheduler with the rendered KubeSchedulerConfiguration (certificate paths pointed
//! at the rendered Secret's files, the loopback port at a free one) and `muster-scheduler`
//! with the rendered Deployment's flags. A gang is bound through the mTLS extender; a client
//! without kube-scheduler's certificate cannot call the verbs.

mod common;
use common::host::{HostProcess, free_port, muster_scheduler_binary};
use common::tls::{SECRET, connector, post, secret_files};
use common::*;
use k8s_openapi::api::core::v1::{Namespace, Pod, Secret};
use kube::api::{ListParams, PostParams};
use kube::{Api, Client, ResourceExt};
use muster_testcluster::{ClusterSpec, NodeSpec, SchedulerConfig, TestCluster};
use serde_json::json;
use serde_yaml::Value;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

const NS: &str = "muster-system";
const TLS: &str = "scheduler.extender.tls.enabled=true";
const DEADLINE: Duration = Duration::from_secs(180);
/// Where the chart mounts the Secret in both containers.
const MOUNT: &str = "/etc/muster-tls";

/// `helm template` with TLS against the cluster (`--dry-run=server`: `lookup` sees it).
fn render_against(cluster: &TestCluster) -> Vec<Value> {
    let chart = chart_dir();
    let kubeconfig = cluster.kubeconfig_path().display().to_string();
    let out = helm(&[
        "template",
        "muster",
        chart.to_str().unwrap(),
        "--namespace",
        NS,
        "--kubeconfig",
        &kubeconfig,
        "--dry-run=server",
        "--set",
        TLS,
    ]);
    assert!(
        out.status.success(),
        "helm template:\n{}",
        text(&out.stderr)
    );
    docs(&text(&out.stdout))
}

fn checksum(objs: &[Value]) -> String {
    one(objs, "Deployment", "muster-scheduler")["spec"]["template"]["metadata"]["annotations"]
        ["checksum/extender-tls"]
        .as_str()
        .expect("checksum/extender-tls")
        .to_string()
}

/// A plain-HTTP GET on loopback (the metrics listener): (status, body).
async fn get(port: u16, path: &str) -> std::io::Result<(u16, String)> {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let mut s = tokio::net::TcpStream::connect(("127.0.0.1", port)).await?;
    let req = format!("GET {path} HTTP/1.1\r\nHost: 127.0.0.1\r\nConnection: close\r\n\r\n");
    s.write_all(req.as_bytes()).await?;
    let mut buf = Vec::new();
    tokio::time::timeout(Duration::from_secs(10), s.read_to_end(&mut buf))
        .await
        .map_err(|_| std::io::Error::other("no answer within 10s"))??;
    let text = String::from_utf8_lossy(&buf).into_owned();
    let status = text
        .split(' ')
        .nth(1)
        .and_then(|c| c.parse().ok())
        .unwrap_or(0);
    let body = text
        .split_once("\r\n\r\n")
        .map(|(_, b)| b.to_string())
        .unwrap_or_default();
    Ok((status, body))
}

/// Sum of the samples of `series` (name and labels as exported) on /metrics.
async fn metric(port: u16, series: &str) -> f64 {
    let (_, body) = get(port, "/metrics").await.unwrap_or_default();
    body.lines()
        .filter(|l| l.starts_with(series))
        .filter_map(|l| l.rsplit(' ').next()?.parse::<f64>().ok())
        .sum()
}

fn tail(path: &Path) -> String {
    let text = std::fs::read_to_string(path).unwrap_or_default();
    let lines: Vec<&str> = text.lines().collect();
    lines[lines.len().saturating_sub(30)..].join("\n")
}

fn gang_pod(name: &str) -> Pod {
    serde_json::from_value(json!({
        "apiVersion": "v1",
        "kind": "Pod",
        "metadata": {"name": name, "annotations": {
            "muster.dev/gang": "tls-gang", "muster.dev/min-available": "3"}},
        "spec": {
            "schedulerName": "muster",
            "terminationGracePeriodSeconds": 0,
            "containers": [{"name": "main", "image": "registry.example/train:1",
                "resources": {"limits": {"nvidia.com/gpu": "4"}}}]
        }
    }))
    .unwrap()
}

async fn bound(client: &Client, prefix: &str) -> Vec<(String, String)> {
    Api::<Pod>::namespaced(client.clone(), "default")
        .list(&ListParams::default())
        .await
        .expect("list pods")
        .items
        .iter()
        .filter(|p| p.name_any().starts_with(prefix))
        .filter_map(|p| Some((p.name_any(), p.spec.as_ref()?.node_name.clone()?)))
        .collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_gang_binds_through_mutual_tls_and_no_other_client_reaches_the_verbs() {
    let cluster = TestCluster::start(ClusterSpec::default())
        .await
        .expect("control plane");
    let client = cluster.client();
    let objs = objects(&[TLS]);
    let files = secret_files(&objs);

    // Upgrades keep the certificates: with the Secret installed, the chart's `lookup` reuses it
    // and the pods' checksum stays (no restart, no rotation on `helm upgrade`).
    let ns: Namespace = serde_json::from_value(json!({"metadata": {"name": NS}})).unwrap();
    Api::<Namespace>::all(client.clone())
        .create(&PostParams::default(), &ns)
        .await
        .expect("namespace");
    let doc = objs.iter().find(|o| name_of(o) == SECRET).unwrap();
    let secret: Secret = serde_json::from_value(serde_json::to_value(doc).unwrap()).unwrap();
    Api::<Secret>::namespaced(client.clone(), NS)
        .create(&PostParams::default(), &secret)
        .await
        .expect("creating the rendered Secret");
    let again = render_against(&cluster);
    assert_eq!(
        secret_files(&again),
        files,
        "an upgrade regenerated the certificates"
    );
    assert_eq!(checksum(&again), checksum(&objs));

    // The Secret's files, where the containers would mount them.
    let dir = cluster.dir().join("extender-tls");
    std::fs::create_dir_all(&dir).unwrap();
    for (name, bytes) in &files {
        std::fs::write(dir.join(name), bytes).unwrap();
    }
    let dir_text = dir.display().to_string();

    // muster-scheduler with the Deployment's flags: the TLS files and the ports rewritten.
    let port = free_port();
    let metrics_port = free_port();
    let dep = one(&objs, "Deployment", "muster-scheduler");
    let ext = dep["spec"]["template"]["spec"]["containers"]
        .as_sequence()
        .unwrap()
        .iter()
        .find(|c| c["name"] == "extender")
        .unwrap();
    let command = strs(&ext["command"]);
    assert!(command.contains(&"--listen=0.0.0.0:8888".to_string()));
    let mut args: Vec<String> = command[1..]
        .iter()
        .filter(|a| {
            !a.starts_with("--listen") && !a.starts_with("--metrics-listen") && *a != "--log-json"
        })
        .map(|a| a.replace(MOUNT, &dir_text))
        .collect();
    assert_eq!(
        args.iter().filter(|a| a.starts_with("--tls-")).count(),
        3,
        "{args:?}"
    );
    args.push(format!("--listen=127.0.0.1:{port}"));
    args.push(format!("--metrics-listen=127.0.0.1:{metrics_port}"));
    args.push(format!(
        "--kubeconfig={}",
        cluster.kubeconfig_path().display()
    ));
    let ext_log = cluster.dir().join("muster-scheduler.log");
    let log = std::fs::File::create(&ext_log).unwrap();
    let mut cmd = Command::new(muster_scheduler_binary());
    cmd.args(&args)
        .env("POD_NAMESPACE", NS)
        .env("POD_NAME", "muster-scheduler-host")
        .env("RUST_LOG", "info")
        .stdin(Stdio::null())
        .stdout(log.try_clone().unwrap())
        .stderr(log);
    let _extender = HostProcess::spawn(&mut cmd, "muster-scheduler");
    let started = Instant::now();
    while !matches!(get(metrics_port, "/readyz").await, Ok((200, _))) {
        assert!(
            started.elapsed() < DEADLINE,
            "extender never ready:\n{}",
            tail(&ext_log)
        );
        tokio::time::sleep(Duration::from_millis(200)).await;
    }

    // kube-scheduler with the ConfigMap's KubeSchedulerConfiguration: https, the client
    // certificate and the CA from the Secret. It refuses to start on a tlsConfig it rejects.
    let cm = one(&objs, "ConfigMap", "muster-scheduler-config");
    let config = cm["data"]["scheduler-config.yaml"].as_str().unwrap();
    assert!(config.contains("https://127.0.0.1:8888"), "{config}");
    assert!(config.contains(&format!("{MOUNT}/client.crt")), "{config}");
    let config = config
        .replace(
            "https://127.0.0.1:8888",
            &format!("https://127.0.0.1:{port}"),
        )
        .replace(MOUNT, &dir_text);
    cluster
        .start_scheduler(&SchedulerConfig::Yaml(config))
        .await
        .expect("kube-scheduler runs the chart's configuration");
    let ks_log: PathBuf = cluster.log_path(muster_testcluster::Component::Scheduler);

    // (a) A gang of three 4-GPU pods is bound, each with the GPUs Muster chose: every
    // filter, prioritize and bind call went over mutual TLS.
    let nodes = cluster
        .add_gpu_nodes(&NodeSpec::fixture("dgx-a100", 2))
        .await
        .expect("GPU nodes");
    let pods = Api::<Pod>::namespaced(client.clone(), "default");
    for i in 0..3 {
        pods.create(&PostParams::default(), &gang_pod(&format!("tls-gang-{i}")))
            .await
            .expect("gang pod");
    }
    let started = Instant::now();
    loop {
        let placed = bound(&client, "tls-gang-").await;
        if placed.len() == 3 {
            break;
        }
        assert!(
            started.elapsed() < DEADLINE,
            "gang not bound ({placed:?})\nkube-scheduler:\n{}\nextender:\n{}",
            tail(&ks_log),
            tail(&ext_log)
        );
        tokio::time::sleep(Duration::from_millis(300)).await;
    }
    for p in pods.list(&ListParams::default()).await.unwrap().items {
        assert!(
            p.annotations().contains_key("muster.dev/gpu-ids"),
            "{} bound without muster.dev/gpu-ids",
            p.name_any()
        );
    }
    let binds = r#"muster_extender_request_duration_seconds_count{verb="bind"}"#;
    assert!(
        metric(metrics_port, binds).await >= 3.0,
        "binds not counted"
    );

    // (b) A client without kube-scheduler's certificate: the handshake is refused, whatever
    // the verb, and no call reaches a handler.
    let outsider: Pod = serde_json::from_value(json!({
        "apiVersion": "v1", "kind": "Pod",
        "metadata": {"name": "outsider"},
        "spec": {"schedulerName": "nobody", "containers": [{"name": "main", "image": "x",
            "resources": {"limits": {"nvidia.com/gpu": "1"}}}]}
    }))
    .unwrap();
    let outsider = pods
        .create(&PostParams::default(), &outsider)
        .await
        .unwrap();
    let filter_body = json!({"Pod": outsider, "NodeNames": nodes}).to_string();
    let bind_body = json!({"PodName": "outsider", "PodNamespace": "default",
        "PodUID": outsider.metadata.uid, "Node": nodes[0]})
    .to_string();
    let series = r#"muster_extender_request_duration_seconds_count"#;
    let calls_before = metric(metrics_port, series).await;
    let anonymous = connector(&files["ca.crt"], None);
    for (verb, body) in [("/filter", &filter_body), ("/bind", &bind_body)] {
        let err = post(port, &anonymous, verb, body)
            .await
            .expect_err("a client without a certificate was answered");
        assert!(err.contains("CertificateRequired"), "{verb}: {err}");
    }
    // Nor does plain HTTP get an answer on the verbs port.
    let plain = tokio::net::TcpStream::connect(("127.0.0.1", port)).await;
    if let Ok(mut s) = plain {
        use tokio::io::{AsyncReadExt, AsyncWriteExt};
        let req = format!(
            "POST /bind HTTP/1.1\r\nHost: x\r\nContent-Length: {}\r\n\r\n{bind_body}",
            bind_body.len()
        );
        let _ = s.write_all(req.as_bytes()).await;
        let mut buf = Vec::new();
        let _ = tokio::time::timeout(Duration::from_secs(10), s.read_to_end(&mut buf)).await;
        assert!(
            !String::from_utf8_lossy(&buf).contains("HTTP/1.1 200"),
            "plain HTTP answered"
        );
    }
    tokio::time::sleep(Duration::from_secs(3)).await;
    assert_eq!(
        metric(metrics_port, series).await,
        calls_before,
        "a refused client reached a verb"
    );
    let outsider = pods.get("outsider").await.unwrap();
    assert!(
        outsider.spec.and_then(|s| s.node_name).is_none(),
        "the outsider pod was bound"
    );
    let log = std::fs::read_to_string(&ext_log).unwrap_or_default();
    assert!(
        log.lines()
            .any(|l| l.contains("TLS handshake refused") && l.contains("127.0.0.1")),
        "no refusal with the peer address in the log:\n{}",
        tail(&ext_log)
    );
    // The same call with kube-scheduler's certificate is answered: the refusal was TLS.
    let trusted = connector(
        &files["ca.crt"],
        Some((&files["client.crt"], &files["client.key"])),
    );
    let (status, _) = post(port, &trusted, "/filter", &filter_body)
        .await
        .expect("kube-scheduler's certificate is answered");
    assert_eq!(status, 200);
    // The extender kept serving throughout.
    assert!(matches!(get(metrics_port, "/healthz").await, Ok((200, _))));
}
