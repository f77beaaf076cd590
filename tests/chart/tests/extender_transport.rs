//! How kube-scheduler reaches the extender (issue #15): the verbs on the pod's loopback, metrics
//! and probes on their own port, and with `scheduler.extender.tls.enabled` mutual TLS with
//! certificates the chart generates.

mod common;
use common::tls::{FILES, SECRET, certs, provider, roots, secret_files};
use common::*;
use rustls::client::WebPkiServerVerifier;
use rustls::client::danger::ServerCertVerifier as _;
use rustls::pki_types::{PrivateKeyDer, ServerName, UnixTime};
use rustls::server::WebPkiClientVerifier;
use serde_yaml::Value;

const TLS: &str = "scheduler.extender.tls.enabled=true";

fn pod_spec(objs: &[Value]) -> &Value {
    &one(objs, "Deployment", "muster-scheduler")["spec"]["template"]["spec"]
}

fn container<'a>(objs: &'a [Value], name: &str) -> &'a Value {
    pod_spec(objs)["containers"]
        .as_sequence()
        .unwrap()
        .iter()
        .find(|c| c["name"] == name)
        .unwrap_or_else(|| panic!("no container {name}"))
}

fn extender_entry(objs: &[Value]) -> Value {
    let cm = one(objs, "ConfigMap", "muster-scheduler-config");
    let cfg: Value =
        serde_yaml::from_str(cm["data"]["scheduler-config.yaml"].as_str().unwrap()).unwrap();
    cfg["extenders"][0].clone()
}

/// (mount path, Secret keys) of the container's TLS mount, if any.
fn tls_mount(objs: &[Value], container_name: &str) -> Option<(String, Vec<String>)> {
    let c = container(objs, container_name);
    let mount = c["volumeMounts"]
        .as_sequence()?
        .iter()
        .find(|m| m["name"].as_str().is_some_and(|n| n.ends_with("-tls")))?;
    assert_eq!(mount["readOnly"], Value::Bool(true));
    let volume = pod_spec(objs)["volumes"]
        .as_sequence()
        .unwrap()
        .iter()
        .find(|v| v["name"] == mount["name"])
        .expect("the mounted volume");
    assert_eq!(volume["secret"]["secretName"], SECRET);
    let mut keys: Vec<String> = volume["secret"]["items"]
        .as_sequence()
        .unwrap()
        .iter()
        .map(|i| {
            assert_eq!(i["key"], i["path"]);
            i["key"].as_str().unwrap().to_string()
        })
        .collect();
    keys.sort();
    Some((mount["mountPath"].as_str().unwrap().to_string(), keys))
}

#[test]
fn verbs_stay_on_loopback_and_metrics_get_their_own_port() {
    let objs = objects(&[
        "metrics.serviceMonitor.enabled=true",
        "scheduler.networkPolicy.enabled=true",
        "scheduler.networkPolicy.metricsFrom[0].podSelector.matchLabels.app=prometheus",
    ]);
    let ext = container(&objs, "extender");
    let cmd = strs(&ext["command"]);
    assert!(
        cmd.contains(&"--listen=127.0.0.1:8888".to_string()),
        "{cmd:?}"
    );
    assert!(cmd.contains(&"--metrics-listen=0.0.0.0:8889".to_string()));
    assert!(!cmd.iter().any(|a| a.starts_with("--tls-")), "{cmd:?}");
    // Only the metrics port is declared; the probes use it.
    let ports = ext["ports"].as_sequence().unwrap();
    assert_eq!(ports.len(), 1);
    assert_eq!(ports[0]["name"], "http-metrics");
    assert_eq!(ports[0]["containerPort"].as_i64(), Some(8889));
    for probe in ["livenessProbe", "readinessProbe"] {
        assert_eq!(ext[probe]["httpGet"]["port"], "http-metrics", "{probe}");
    }
    assert_eq!(ext["livenessProbe"]["httpGet"]["path"], "/healthz");
    assert_eq!(ext["readinessProbe"]["httpGet"]["path"], "/readyz");
    // kube-scheduler calls plain HTTP on loopback.
    let e = extender_entry(&objs);
    assert_eq!(e["urlPrefix"], "http://127.0.0.1:8888");
    assert_eq!(e["enableHTTPS"], Value::Bool(false));
    assert!(e["tlsConfig"].is_null());
    // No Secret, no TLS mounts.
    assert!(!objs.iter().any(|o| name_of(o) == SECRET));
    assert!(tls_mount(&objs, "extender").is_none());
    assert!(tls_mount(&objs, "kube-scheduler").is_none());
    // The Service, the ServiceMonitor and the NetworkPolicy know only the metrics port.
    let svc = one(&objs, "Service", "muster-scheduler");
    let svc_ports = svc["spec"]["ports"].as_sequence().unwrap();
    assert_eq!(svc_ports.len(), 1);
    assert_eq!(svc_ports[0]["name"], "http-metrics");
    assert_eq!(svc_ports[0]["port"].as_i64(), Some(8889));
    assert_eq!(svc_ports[0]["targetPort"], "http-metrics");
    let sm = one(&objs, "ServiceMonitor", "muster-scheduler");
    let endpoints = sm["spec"]["endpoints"].as_sequence().unwrap();
    assert_eq!(endpoints.len(), 1);
    assert_eq!(endpoints[0]["port"], "http-metrics");
    let np = one(&objs, "NetworkPolicy", "muster-scheduler");
    let rule = &np["spec"]["ingress"][0];
    assert_eq!(rule["ports"].as_sequence().map(Vec::len), Some(1));
    assert_eq!(rule["ports"][0]["port"].as_i64(), Some(8889));
}

#[test]
fn the_same_port_for_verbs_and_metrics_is_refused() {
    let out = render_result(&["scheduler.extender.metricsPort=8888"]);
    assert!(!out.status.success());
    let err = text(&out.stderr);
    assert!(
        err.contains("scheduler.extender.port and scheduler.extender.metricsPort must differ"),
        "{err}"
    );
}

#[test]
fn tls_wires_the_secret_into_both_containers_and_kube_schedulers_config() {
    let objs = objects(&[TLS, "metrics.serviceMonitor.enabled=true"]);
    let files = secret_files(&objs);
    assert_eq!(
        files.keys().collect::<Vec<_>>(),
        FILES.iter().collect::<Vec<_>>()
    );
    // The extender: its own key, never kube-scheduler's; listens on the pod IP now.
    let (dir, keys) = tls_mount(&objs, "extender").expect("extender TLS mount");
    assert_eq!(keys, ["ca.crt", "tls.crt", "tls.key"]);
    let cmd = strs(&container(&objs, "extender")["command"]);
    for flag in [
        "--listen=0.0.0.0:8888".to_string(),
        "--metrics-listen=0.0.0.0:8889".to_string(),
        format!("--tls-cert-file={dir}/tls.crt"),
        format!("--tls-key-file={dir}/tls.key"),
        format!("--tls-client-ca-file={dir}/ca.crt"),
    ] {
        assert!(cmd.contains(&flag), "missing {flag}: {cmd:?}");
    }
    let ports = container(&objs, "extender")["ports"].clone();
    assert!(
        ports
            .as_sequence()
            .unwrap()
            .iter()
            .any(|p| p["name"] == "https-verbs" && p["containerPort"].as_i64() == Some(8888))
    );
    // kube-scheduler: its client certificate and the CA, never the extender's key.
    let (ks_dir, keys) = tls_mount(&objs, "kube-scheduler").expect("kube-scheduler TLS mount");
    assert_eq!(keys, ["ca.crt", "client.crt", "client.key"]);
    let e = extender_entry(&objs);
    assert_eq!(e["urlPrefix"], "https://127.0.0.1:8888");
    assert_eq!(e["enableHTTPS"], Value::Bool(true));
    let t = &e["tlsConfig"];
    assert_eq!(t["certFile"], format!("{ks_dir}/client.crt").as_str());
    assert_eq!(t["keyFile"], format!("{ks_dir}/client.key").as_str());
    assert_eq!(t["caFile"], format!("{ks_dir}/ca.crt").as_str());
    assert_eq!(t["serverName"], "localhost");
    assert_ne!(t["insecure"], Value::Bool(true));
    // The pods restart when the certificates change: the annotation hashes the Secret's data
    // as the Secret itself renders it (one generation per render, shared by both templates).
    let annotations = &one(&objs, "Deployment", "muster-scheduler")["spec"]["template"]["metadata"]
        ["annotations"];
    let secret = objs.iter().find(|o| name_of(o) == SECRET).unwrap();
    let data = secret["data"].as_mapping().unwrap();
    let mut lines: Vec<String> = data
        .iter()
        .map(|(k, v)| format!("{}: {}", k.as_str().unwrap(), v.as_str().unwrap()))
        .collect();
    lines.sort();
    let digest = ring::digest::digest(&ring::digest::SHA256, lines.join("\n").as_bytes());
    let hex: String = digest.as_ref().iter().map(|b| format!("{b:02x}")).collect();
    assert_eq!(annotations["checksum/extender-tls"], hex.as_str());
    // Metrics stay as they were; the verbs are not exposed by the Service.
    let svc = one(&objs, "Service", "muster-scheduler");
    assert_eq!(svc["spec"]["ports"].as_sequence().map(Vec::len), Some(1));
    assert_eq!(svc["spec"]["ports"][0]["port"].as_i64(), Some(8889));
}

#[test]
fn generated_certificates_chain_to_the_ca_with_the_right_names() {
    let objs = objects(&[TLS]);
    let files = secret_files(&objs);
    // Helm's genSignedCert writes RSA keys in PKCS#1; the extender loads them.
    for k in ["tls.key", "client.key"] {
        let pem = String::from_utf8(files[k].clone()).unwrap();
        assert!(pem.starts_with("-----BEGIN RSA PRIVATE KEY-----"), "{k}");
        assert!(matches!(
            common::tls::key(pem.as_bytes()),
            PrivateKeyDer::Pkcs1(_)
        ));
    }
    let ca = &files["ca.crt"];
    let server = WebPkiServerVerifier::builder_with_provider(roots(ca), provider())
        .build()
        .unwrap();
    let tls_crt = certs(&files["tls.crt"]);
    for name in [
        "127.0.0.1",
        "localhost",
        "muster-scheduler",
        "muster-scheduler.muster-system",
        "muster-scheduler.muster-system.svc",
        "muster-scheduler.muster-system.svc.cluster.local",
    ] {
        server
            .verify_server_cert(
                &tls_crt[0],
                &tls_crt[1..],
                &ServerName::try_from(name).unwrap(),
                &[],
                UnixTime::now(),
            )
            .unwrap_or_else(|e| panic!("the serving certificate is not valid for {name}: {e}"));
    }
    assert!(
        server
            .verify_server_cert(
                &tls_crt[0],
                &[],
                &ServerName::try_from("elsewhere.example").unwrap(),
                &[],
                UnixTime::now(),
            )
            .is_err()
    );
    // kube-scheduler's certificate is one the extender's client verifier accepts.
    let clients = WebPkiClientVerifier::builder_with_provider(roots(ca), provider())
        .build()
        .unwrap();
    let client_crt = certs(&files["client.crt"]);
    clients
        .verify_client_cert(&client_crt[0], &client_crt[1..], UnixTime::now())
        .expect("kube-scheduler's client certificate chains to the CA");
    // Each render without an installed Secret generates new ones (install); upgrades reuse
    // the installed Secret (extender_tls.rs checks it against a cluster).
    assert_ne!(secret_files(&objects(&[TLS]))["ca.crt"], files["ca.crt"]);
}
