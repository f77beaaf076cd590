//! Issue #15 (security) for the node DaemonSet: the node pod's NetworkPolicy, `/debug/state` off
//! by default, and each node container's rights.

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
