//! Issue #15 (security) for the node DaemonSet and the images: the node pod's NetworkPolicy,
//! `/debug/state` off by default, each node container's rights, `image.digest`, and base images
//! of the `Dockerfile` pinned by digest.

mod common;
use common::*;
use serde_yaml::Value;

fn containers(workload: &Value) -> &Vec<Value> {
    workload["spec"]["template"]["spec"]["containers"]
        .as_sequence()
        .expect("containers")
}

fn container<'a>(workload: &'a Value, name: &str) -> &'a Value {
    containers(workload)
        .iter()
        .find(|c| c["name"].as_str() == Some(name))
        .unwrap_or_else(|| panic!("no container {name}"))
}

fn ports(rule: &Value) -> Vec<i64> {
    rule["ports"]
        .as_sequence()
        .expect("ports")
        .iter()
        .map(|p| {
            assert_eq!(p["protocol"], "TCP");
            p["port"].as_i64().expect("a port number")
        })
        .collect()
}

#[test]
fn node_network_policy_is_on_by_default_and_admits_only_monitoring_to_the_metrics_ports() {
    let objs = objects(&[]);
    let np = one(&objs, "NetworkPolicy", "muster-node");
    assert_eq!(
        np["spec"]["podSelector"]["matchLabels"]["app.kubernetes.io/component"],
        "node"
    );
    let ds = one(&objs, "DaemonSet", "muster-node");
    assert_eq!(
        np["spec"]["podSelector"]["matchLabels"], ds["spec"]["template"]["metadata"]["labels"],
        "selects exactly the DaemonSet's pods"
    );
    assert_eq!(strs(&np["spec"]["policyTypes"]), ["Ingress"]);
    let rules = np["spec"]["ingress"].as_sequence().expect("ingress rules");
    assert_eq!(rules.len(), 1);
    let from = rules[0]["from"].as_sequence().expect("peers");
    assert_eq!(from.len(), 1);
    assert_eq!(
        from[0]["namespaceSelector"]["matchLabels"]["kubernetes.io/metadata.name"],
        "monitoring"
    );
    assert!(from[0]["podSelector"].is_null() && from[0]["ipBlock"].is_null());
    assert_eq!(ports(&rules[0]), [9400, 9401]);
    // Those are the container ports, and there are no others.
    let container_ports: Vec<i64> = containers(ds)
        .iter()
        .flat_map(|c| c["ports"].as_sequence().cloned().unwrap_or_default())
        .map(|p| p["containerPort"].as_i64().unwrap())
        .collect();
    assert_eq!(container_ports, [9400, 9401]);
    // NetworkPolicies do not apply to host-network pods.
    let spec = &ds["spec"]["template"]["spec"];
    assert_ne!(spec["hostNetwork"], Value::Bool(true));
}

#[test]
fn node_network_policy_follows_the_values() {
    let objs = objects(&[
        "node.agent.metricsPort=19400",
        "node.devicePlugin.enabled=false",
        "node.networkPolicy.metricsFrom[0].podSelector.matchLabels.app=prometheus",
    ]);
    let np = one(&objs, "NetworkPolicy", "muster-node");
    let rule = &np["spec"]["ingress"][0];
    assert_eq!(ports(rule), [19400], "no plugin, no plugin port");
    assert_eq!(
        rule["from"][0]["podSelector"]["matchLabels"]["app"],
        "prometheus"
    );
    // No peers: nothing may reach the ports.
    let objs = objects(&["node.networkPolicy.metricsFrom=null"]);
    let np = one(&objs, "NetworkPolicy", "muster-node");
    assert!(
        np["spec"]["ingress"].is_null()
            || np["spec"]["ingress"]
                .as_sequence()
                .is_some_and(|s| s.is_empty()),
        "{np:?}"
    );
    assert_eq!(strs(&np["spec"]["policyTypes"]), ["Ingress"]);
    // Off, or no node pod: no policy.
    for sets in [
        &["node.networkPolicy.enabled=false"][..],
        &["node.enabled=false"],
    ] {
        let objs = objects(sets);
        assert!(
            !of_kind(&objs, "NetworkPolicy")
                .iter()
                .any(|np| name_of(np) == "muster-node"),
            "{sets:?}"
        );
    }
}

#[test]
fn agent_debug_endpoint_is_off_unless_enabled() {
    let has_flag = |sets: &[&str]| {
        let objs = objects(sets);
        let ds = one(&objs, "DaemonSet", "muster-node");
        strs(&container(ds, "node-agent")["command"]).contains(&"--debug-endpoints".to_string())
    };
    assert!(!has_flag(&[]));
    assert!(has_flag(&["node.agent.debugEndpoints=true"]));
    let src = std::fs::read_to_string(repo_root().join("node-agent/src/config.rs")).unwrap();
    assert!(src.contains("pub debug_endpoints: bool"));
}

/// The rights every node container must keep, whatever else is configured.
fn assert_locked_down(c: &Value) {
    let name = c["name"].as_str().unwrap();
    let sc = &c["securityContext"];
    assert_eq!(sc["allowPrivilegeEscalation"], Value::Bool(false), "{name}");
    assert_eq!(strs(&sc["capabilities"]["drop"]), ["ALL"], "{name}");
    assert!(
        sc["capabilities"]["add"].is_null(),
        "{name} adds capabilities"
    );
    assert_eq!(sc["readOnlyRootFilesystem"], Value::Bool(true), "{name}");
    assert_eq!(sc["seccompProfile"]["type"], "RuntimeDefault", "{name}");
    assert!(sc["privileged"].is_null(), "{name}: privileged is set");
    assert!(sc["procMount"].is_null(), "{name}");
}

#[test]
fn node_containers_keep_no_rights_beyond_uid_0() {
    let objs = objects(&[]);
    let ds = one(&objs, "DaemonSet", "muster-node");
    assert_eq!(containers(ds).len(), 2);
    for c in containers(ds) {
        assert_locked_down(c);
        // uid 0 for the kubelet's root-owned sockets (see values.yaml).
        assert_eq!(c["securityContext"]["runAsUser"].as_i64(), Some(0));
    }
    let spec = &ds["spec"]["template"]["spec"];
    for ns in ["hostNetwork", "hostPID", "hostIPC", "hostUsers"] {
        assert!(spec[ns].is_null(), "{ns} is set");
    }
    // Exactly the two kubelet directories from the host, the pod-resources one read-only.
    let volumes = spec["volumes"].as_sequence().unwrap();
    let host_paths: Vec<&str> = volumes
        .iter()
        .filter_map(|v| v["hostPath"]["path"].as_str())
        .collect();
    assert_eq!(
        host_paths,
        [
            "/var/lib/kubelet/pod-resources",
            "/var/lib/kubelet/device-plugins"
        ]
    );
    let agent = container(ds, "node-agent");
    let mounts = agent["volumeMounts"].as_sequence().unwrap();
    assert_eq!(mounts.len(), 1);
    assert_eq!(mounts[0]["readOnly"], Value::Bool(true));
    let plugin = container(ds, "device-plugin");
    assert_eq!(plugin["volumeMounts"].as_sequence().unwrap().len(), 1);
    for c in containers(ds) {
        let r = &c["resources"];
        for kind in ["requests", "limits"] {
            let names: Vec<&str> = r[kind]
                .as_mapping()
                .map(|m| m.keys().filter_map(|k| k.as_str()).collect())
                .unwrap_or_default();
            assert!(
                names.iter().all(|n| ["cpu", "memory"].contains(n)),
                "{}: no device resources are requested: {names:?}",
                c["name"].as_str().unwrap()
            );
        }
    }
}

#[test]
fn per_container_security_context_is_merged_over_the_node_one() {
    let objs = objects(&[
        "node.agent.securityContext.runAsUser=65532",
        "node.agent.securityContext.runAsGroup=65532",
        "node.agent.securityContext.runAsNonRoot=true",
    ]);
    let ds = one(&objs, "DaemonSet", "muster-node");
    let agent = container(ds, "node-agent");
    assert_locked_down(agent);
    assert_eq!(agent["securityContext"]["runAsUser"].as_i64(), Some(65532));
    assert_eq!(agent["securityContext"]["runAsNonRoot"], Value::Bool(true));
    let plugin = container(ds, "device-plugin");
    assert_locked_down(plugin);
    assert_eq!(plugin["securityContext"]["runAsUser"].as_i64(), Some(0));
    assert!(plugin["securityContext"]["runAsGroup"].is_null());
}

const DIGEST: &str = "sha256:0123456789abcdef0123456789abcdef0123456789abcdef0123456789abcdef";

/// Images of the containers running a Muster binary (all but kube-scheduler).
fn muster_images(objs: &[Value]) -> Vec<String> {
    let mut images = Vec::new();
    for kind in ["Deployment", "DaemonSet"] {
        for w in of_kind(objs, kind) {
            for c in containers(w) {
                if c["name"] != "kube-scheduler" {
                    images.push(c["image"].as_str().unwrap().to_string());
                }
            }
        }
    }
    images
}

#[test]
fn image_digest_pins_every_muster_container() {
    let objs = objects(&[]);
    let images = muster_images(&objs);
    assert_eq!(images.len(), 3, "extender, node agent, device plugin");
    assert!(
        images
            .iter()
            .all(|i| i == "ghcr.io/muster-dev/muster:0.1.0"),
        "{images:?}"
    );

    let digest = format!("image.digest={DIGEST}");
    let objs = objects(&[&digest, "image.tag=ignored"]);
    let images = muster_images(&objs);
    assert_eq!(images.len(), 3);
    let pinned = format!("ghcr.io/muster-dev/muster@{DIGEST}");
    assert!(images.iter().all(|i| *i == pinned), "{images:?}");
    // kube-scheduler keeps its own image.
    let dep = one(&objs, "Deployment", "muster-scheduler");
    assert_eq!(
        container(dep, "kube-scheduler")["image"],
        "registry.k8s.io/kube-scheduler:v1.37.2"
    );
    // A digest that is not one is refused at install time.
    for bad in ["image.digest=latest", "image.digest=sha256:abc"] {
        let out = render_result(&[bad]);
        assert!(!out.status.success(), "{bad} rendered");
        assert!(
            text(&out.stderr).contains("/image/digest"),
            "{}",
            text(&out.stderr)
        );
    }
}

/// The image reference of a `FROM` line (`FROM [--platform=...] image [AS name]`).
fn from_image(line: &str) -> Option<&str> {
    let mut words = line.split_whitespace();
    words.next().filter(|w| w.eq_ignore_ascii_case("FROM"))?;
    words.find(|w| !w.starts_with("--"))
}

fn pinned_by_digest(image: &str) -> bool {
    let Some((name, digest)) = image.split_once("@sha256:") else {
        return false;
    };
    !name.is_empty()
        && digest.len() == 64
        && digest
            .chars()
            .all(|c| c.is_ascii_digit() || ('a'..='f').contains(&c))
}

#[test]
fn dockerfile_base_images_are_pinned_by_digest() {
    assert!(pinned_by_digest(&format!("rust:1.88-bookworm@{DIGEST}")));
    assert!(!pinned_by_digest("rust:1.88-bookworm"));
    assert!(!pinned_by_digest("rust:1.88-bookworm@sha256:abc"));
    assert!(!pinned_by_digest(&format!(
        "rust@{}",
        DIGEST.to_uppercase()
    )));
    assert_eq!(
        from_image("FROM --platform=$BUILDPLATFORM rust:1 AS build"),
        Some("rust:1")
    );

    let dockerfile = std::fs::read_to_string(repo_root().join("Dockerfile")).unwrap();
    let stages: Vec<&str> = dockerfile
        .lines()
        .filter(|l| l.trim_start().to_ascii_uppercase().starts_with("FROM "))
        .collect();
    assert!(stages.len() >= 2, "{stages:?}");
    // A stage may start from an earlier stage by name; everything else is pulled.
    let names: Vec<String> = stages
        .iter()
        .filter_map(|l| {
            let words: Vec<&str> = l.split_whitespace().collect();
            words
                .iter()
                .position(|w| w.eq_ignore_ascii_case("AS"))
                .and_then(|i| words.get(i + 1))
                .map(|n| n.to_string())
        })
        .collect();
    // `FROM ${ARG}` picks a stage; its default must name one (image/build.sh passes another).
    let arg_default = |name: &str| {
        dockerfile.lines().find_map(|l| {
            let rest = l.trim().strip_prefix("ARG ")?;
            let (arg, value) = rest.split_once('=')?;
            (arg.trim() == name).then(|| value.trim().to_string())
        })
    };
    for line in stages {
        let image = from_image(line).unwrap_or_else(|| panic!("unparsed FROM line: {line}"));
        let image = match image.strip_prefix("${").and_then(|a| a.strip_suffix('}')) {
            Some(arg) => {
                arg_default(arg).unwrap_or_else(|| panic!("`{line}`: ARG {arg} has no default"))
            }
            None => image.to_string(),
        };
        assert!(
            image == "scratch" || names.contains(&image) || pinned_by_digest(&image),
            "Dockerfile: `{line}` is not pinned as image:tag@sha256:<64 hex>"
        );
    }
}
