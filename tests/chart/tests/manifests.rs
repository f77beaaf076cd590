//! Unit tests of the rendered manifests: the scheduler configuration, RBAC, the DaemonSet's
//! mounts and the security contexts.

mod common;
use common::*;
use serde_yaml::Value;

fn all() -> Vec<Value> {
    objects(&[
        "metrics.serviceMonitor.enabled=true",
        "metrics.prometheusRule.enabled=true",
    ])
}

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

fn scheduler_config(objs: &[Value]) -> Value {
    let cm = one(objs, "ConfigMap", "muster-scheduler-config");
    serde_yaml::from_str(cm["data"]["scheduler-config.yaml"].as_str().unwrap())
        .expect("KubeSchedulerConfiguration parses")
}

#[test]
fn scheduler_config_enables_every_extender_verb() {
    let objs = all();
    let cfg = scheduler_config(&objs);
    assert_eq!(cfg["apiVersion"], "kubescheduler.config.k8s.io/v1");
    assert_eq!(cfg["kind"], "KubeSchedulerConfiguration");
    let profiles = cfg["profiles"].as_sequence().unwrap();
    assert_eq!(profiles.len(), 1);
    assert_eq!(profiles[0]["schedulerName"], "muster");
    let extenders = cfg["extenders"].as_sequence().unwrap();
    assert_eq!(
        extenders.len(),
        1,
        "exactly one extender (only one may bind)"
    );
    let e = &extenders[0];
    assert_eq!(e["urlPrefix"], "http://127.0.0.1:8888");
    assert_eq!(e["filterVerb"], "filter");
    assert_eq!(e["prioritizeVerb"], "prioritize");
    assert_eq!(e["preemptVerb"], "preempt");
    assert_eq!(e["bindVerb"], "bind");
    assert_eq!(e["nodeCacheCapable"], Value::Bool(true));
    assert_eq!(e["httpTimeout"], "120s");
    assert!(e["weight"].as_i64().unwrap() >= 1);
    assert_ne!(
        e["ignorable"],
        Value::Bool(true),
        "Muster must not be skippable"
    );
    // Leader election on its own lease in the release namespace.
    let le = &cfg["leaderElection"];
    assert_eq!(le["leaderElect"], Value::Bool(true));
    assert_eq!(le["resourceName"], "muster-scheduler-kube-scheduler");
    assert_eq!(le["resourceNamespace"], "muster-system");
    assert!(cfg["clientConnection"]["qps"].as_f64().unwrap() > 50.0);
}

#[test]
fn extender_port_value_moves_both_sides() {
    let objs = objects(&[
        "scheduler.extender.port=9999",
        "scheduler.extender.metricsPort=9998",
    ]);
    let cfg = scheduler_config(&objs);
    assert_eq!(cfg["extenders"][0]["urlPrefix"], "http://127.0.0.1:9999");
    let dep = one(&objs, "Deployment", "muster-scheduler");
    let ext = container(dep, "extender");
    // The verbs on loopback only; metrics and probes on the pod IP.
    assert!(strs(&ext["command"]).contains(&"--listen=127.0.0.1:9999".to_string()));
    assert!(strs(&ext["command"]).contains(&"--metrics-listen=0.0.0.0:9998".to_string()));
    assert_eq!(ext["ports"][0]["containerPort"].as_i64(), Some(9998));
    assert_eq!(ext["ports"].as_sequence().map(Vec::len), Some(1));
}

#[test]
fn scheduler_pod_runs_kube_scheduler_and_the_extender_with_real_flags() {
    let objs = all();
    let dep = one(&objs, "Deployment", "muster-scheduler");
    let ks = container(dep, "kube-scheduler");
    assert_eq!(
        ks["image"].as_str(),
        Some("registry.k8s.io/kube-scheduler:v1.37.2")
    );
    let cmd = strs(&ks["command"]);
    assert!(cmd.contains(&"--config=/etc/muster/scheduler-config.yaml".to_string()));
    let mount = ks["volumeMounts"]
        .as_sequence()
        .unwrap()
        .iter()
        .find(|m| m["name"] == "config")
        .expect("config mount");
    assert_eq!(mount["mountPath"], "/etc/muster");

    let ext = container(dep, "extender");
    let cmd = strs(&ext["command"]);
    assert_eq!(cmd[0], "/usr/local/bin/muster-scheduler");
    // Every flag the chart passes exists in the scheduler's CLI.
    let flags_src = std::fs::read_to_string(repo_root().join("scheduler/src/config.rs")).unwrap();
    for arg in &cmd[1..] {
        let flag = arg.trim_start_matches("--").split('=').next().unwrap();
        let field = flag.replace('-', "_");
        assert!(
            flags_src.contains(&format!("pub {field}:"))
                || flags_src.contains(&format!("long = \"{flag}\"")),
            "muster-scheduler has no flag --{flag}"
        );
    }
    for expected in [
        "--leader-elect=true",
        "--preemption=true",
        "--barrier-timeout-seconds=60",
    ] {
        assert!(cmd.contains(&expected.to_string()), "missing {expected}");
    }
    let env: Vec<_> = ext["env"]
        .as_sequence()
        .unwrap()
        .iter()
        .map(|e| e["name"].as_str().unwrap())
        .collect();
    assert!(
        env.contains(&"POD_NAMESPACE"),
        "lease namespace from the downward API"
    );
    assert_eq!(
        dep["spec"]["template"]["spec"]["serviceAccountName"],
        "muster-scheduler"
    );
}

#[test]
fn node_daemonset_mounts_both_kubelet_dirs_and_targets_gpu_nodes() {
    let objs = all();
    let ds = one(&objs, "DaemonSet", "muster-node");
    let spec = &ds["spec"]["template"]["spec"];
    assert_eq!(spec["priorityClassName"], "system-node-critical");
    assert_eq!(spec["nodeSelector"]["nvidia.com/gpu.present"], "true");
    assert!(
        spec["tolerations"]
            .as_sequence()
            .unwrap()
            .iter()
            .any(|t| t["key"] == "nvidia.com/gpu"),
        "tolerates the GPU taint"
    );
    let host_path = |vol: &str| {
        spec["volumes"]
            .as_sequence()
            .unwrap()
            .iter()
            .find(|v| v["name"] == vol)
            .map(|v| v["hostPath"]["path"].as_str().unwrap().to_string())
            .unwrap_or_else(|| panic!("no volume {vol}"))
    };
    assert_eq!(
        host_path("device-plugins"),
        "/var/lib/kubelet/device-plugins"
    );
    assert_eq!(host_path("pod-resources"), "/var/lib/kubelet/pod-resources");
    let mount_of = |c: &Value, vol: &str| {
        c["volumeMounts"]
            .as_sequence()
            .unwrap()
            .iter()
            .find(|m| m["name"] == vol)
            .map(|m| m["mountPath"].as_str().unwrap().to_string())
    };
    let agent = container(ds, "node-agent");
    let plugin = container(ds, "device-plugin");
    assert_eq!(
        mount_of(agent, "pod-resources").as_deref(),
        Some("/var/lib/kubelet/pod-resources")
    );
    assert_eq!(
        mount_of(plugin, "device-plugins").as_deref(),
        Some("/var/lib/kubelet/device-plugins")
    );
    // The flags point at the mounted paths.
    assert!(
        strs(&agent["command"])
            .contains(&"--pod-resources-socket=/var/lib/kubelet/pod-resources/kubelet.sock".into())
    );
    assert!(
        strs(&plugin["command"])
            .contains(&"--device-plugin-dir=/var/lib/kubelet/device-plugins".into())
    );
    // Each flag exists in that binary's CLI.
    for (c, src) in [
        (agent, "node-agent/src/config.rs"),
        (plugin, "device-plugin/src/main.rs"),
    ] {
        let src = std::fs::read_to_string(repo_root().join(src)).unwrap();
        for arg in &strs(&c["command"])[1..] {
            let field = arg
                .trim_start_matches("--")
                .split('=')
                .next()
                .unwrap()
                .replace('-', "_");
            assert!(
                src.contains(&format!(" {field}:")),
                "{}: no flag for {arg}",
                c["name"].as_str().unwrap()
            );
        }
        let env = &c["env"].as_sequence().unwrap()[0];
        assert_eq!(env["name"], "NODE_NAME");
        assert_eq!(env["valueFrom"]["fieldRef"]["fieldPath"], "spec.nodeName");
    }

    // Custom GPU-node selection reaches the pod.
    let objs = objects(&[
        "node.nodeSelector.gpu=yes",
        "node.devicePlugin.enabled=false",
    ]);
    let ds = one(&objs, "DaemonSet", "muster-node");
    assert_eq!(ds["spec"]["template"]["spec"]["nodeSelector"]["gpu"], "yes");
    assert_eq!(containers(ds).len(), 1, "device plugin disabled");
}

#[test]
fn no_role_grants_secrets_or_wildcards() {
    let objs = all();
    let roles: Vec<_> = objs
        .iter()
        .filter(|o| kind_of(o) == "ClusterRole" || kind_of(o) == "Role")
        .collect();
    assert!(roles.len() >= 6, "roles: {}", roles.len());
    for role in roles {
        let rules = role["rules"].as_sequence().expect("rules");
        assert!(!rules.is_empty());
        for rule in rules {
            for field in ["apiGroups", "resources", "verbs", "resourceNames"] {
                assert!(
                    !strs(&rule[field]).iter().any(|x| x.contains('*')),
                    "{} grants a wildcard in {field}: {rule:?}",
                    name_of(role)
                );
            }
            assert!(
                !strs(&rule["resources"])
                    .iter()
                    .any(|r| r.starts_with("secrets")),
                "{} grants secrets",
                name_of(role)
            );
            assert!(rule["nonResourceURLs"].is_null());
            for verb in strs(&rule["verbs"]) {
                // deletecollection only where upstream's kube-scheduler role has it
                // (leasecandidates); no verb that grants rights or identities.
                let allowed = [
                    "get", "list", "watch", "create", "update", "patch", "delete",
                ]
                .contains(&verb.as_str())
                    || (verb == "deletecollection"
                        && name_of(role) == "muster-scheduler-kube-scheduler"
                        && strs(&rule["resources"]) == ["leasecandidates"]);
                assert!(allowed, "{}: unexpected verb {verb}", name_of(role));
            }
        }
    }
    // No binding to cluster-admin or any role the chart does not define, except the upstream
    // authentication reader.
    for b in objs.iter().filter(|o| kind_of(o).ends_with("RoleBinding")) {
        let r = b["roleRef"]["name"].as_str().unwrap();
        assert!(
            r.starts_with("muster-") || r == "extension-apiserver-authentication-reader",
            "{} binds {r}",
            name_of(b)
        );
    }
}

#[test]
fn security_contexts_are_locked_down() {
    let objs = all();
    let dep = one(&objs, "Deployment", "muster-scheduler");
    let pod = &dep["spec"]["template"]["spec"];
    assert_eq!(pod["securityContext"]["runAsNonRoot"], Value::Bool(true));
    assert_eq!(
        pod["securityContext"]["seccompProfile"]["type"],
        "RuntimeDefault"
    );
    let ds = one(&objs, "DaemonSet", "muster-node");
    assert_eq!(
        ds["spec"]["template"]["spec"]["securityContext"]["seccompProfile"]["type"],
        "RuntimeDefault"
    );
    for workload in [dep, ds] {
        for c in containers(workload) {
            let sc = &c["securityContext"];
            let name = c["name"].as_str().unwrap();
            assert_eq!(sc["readOnlyRootFilesystem"], Value::Bool(true), "{name}");
            assert_eq!(sc["allowPrivilegeEscalation"], Value::Bool(false), "{name}");
            assert_eq!(strs(&sc["capabilities"]["drop"]), ["ALL"], "{name}");
            assert!(
                sc["capabilities"]["add"].is_null(),
                "{name} adds capabilities"
            );
            assert_ne!(sc["privileged"], Value::Bool(true), "{name} is privileged");
            assert!(
                c["resources"]["requests"].is_mapping(),
                "{name} has no requests"
            );
        }
    }
    // Pods never share the host's namespaces.
    for workload in [dep, ds] {
        let spec = &workload["spec"]["template"]["spec"];
        for ns in ["hostNetwork", "hostPID", "hostIPC"] {
            assert_ne!(spec[ns], Value::Bool(true), "{ns}");
        }
    }
}

#[test]
fn services_expose_metrics_ports_of_the_pods() {
    let objs = all();
    let svc = one(&objs, "Service", "muster-scheduler");
    assert_eq!(svc["spec"]["ports"][0]["targetPort"], "http-metrics");
    assert_eq!(svc["spec"]["ports"][0]["port"].as_i64(), Some(8889));
    assert_eq!(svc["spec"]["ports"].as_sequence().map(Vec::len), Some(1));
    let svc = one(&objs, "Service", "muster-node-metrics");
    let ports: Vec<_> = svc["spec"]["ports"]
        .as_sequence()
        .unwrap()
        .iter()
        .map(|p| p["port"].as_i64().unwrap())
        .collect();
    assert_eq!(ports, [9400, 9401]);
    // ServiceMonitors select the Services' labels and ports.
    for sm in of_kind(&objs, "ServiceMonitor") {
        let component = sm["spec"]["selector"]["matchLabels"]["app.kubernetes.io/component"]
            .as_str()
            .unwrap();
        let svc = objs
            .iter()
            .find(|o| {
                kind_of(o) == "Service"
                    && o["metadata"]["labels"]["app.kubernetes.io/component"] == component
            })
            .expect("a Service for each ServiceMonitor");
        let svc_ports: Vec<_> = svc["spec"]["ports"]
            .as_sequence()
            .unwrap()
            .iter()
            .map(|p| p["name"].as_str().unwrap().to_string())
            .collect();
        for ep in sm["spec"]["endpoints"].as_sequence().unwrap() {
            assert!(svc_ports.contains(&ep["port"].as_str().unwrap().to_string()));
        }
    }
}

#[test]
fn notes_show_a_first_gang_job() {
    let notes = std::fs::read_to_string(chart_dir().join("templates/NOTES.txt")).unwrap();
    assert!(notes.contains("muster.dev/gang"));
    assert!(notes.contains("muster.dev/min-available"));
    assert!(notes.contains("schedulerName: {{ .Values.scheduler.schedulerName }}"));
    assert!(notes.contains("completionMode: Indexed"));
}

#[test]
fn network_policy_admits_only_the_listed_scrapers() {
    // The scheduler's is off by default (the node pod's is on: hardening.rs).
    assert!(
        !of_kind(&objects(&[]), "NetworkPolicy")
            .iter()
            .any(|np| name_of(np) == "muster-scheduler"),
        "off by default"
    );
    let objs = objects(&[
        "scheduler.networkPolicy.enabled=true",
        "scheduler.networkPolicy.metricsFrom[0].namespaceSelector.matchLabels.team=monitoring",
    ]);
    let np = one(&objs, "NetworkPolicy", "muster-scheduler");
    assert_eq!(
        np["spec"]["podSelector"]["matchLabels"]["app.kubernetes.io/component"],
        "scheduler"
    );
    let rules = np["spec"]["ingress"].as_sequence().unwrap();
    assert_eq!(rules.len(), 1);
    assert_eq!(
        rules[0]["from"][0]["namespaceSelector"]["matchLabels"]["team"],
        "monitoring"
    );
    // The metrics port only: the verbs listen on loopback.
    assert_eq!(rules[0]["ports"][0]["port"].as_i64(), Some(8889));
    assert_eq!(rules[0]["ports"].as_sequence().map(Vec::len), Some(1));
    // Enabled without peers: nothing may reach the port.
    let objs = objects(&["scheduler.networkPolicy.enabled=true"]);
    let np = one(&objs, "NetworkPolicy", "muster-scheduler");
    assert!(
        np["spec"]["ingress"].is_null()
            || np["spec"]["ingress"]
                .as_sequence()
                .is_some_and(|s| s.is_empty())
    );
    assert_eq!(strs(&np["spec"]["policyTypes"]), ["Ingress"]);
}

#[test]
fn standby_replicas_get_a_disruption_budget() {
    assert!(of_kind(&objects(&[]), "PodDisruptionBudget").is_empty());
    let objs = objects(&["scheduler.replicas=2"]);
    let pdb = one(&objs, "PodDisruptionBudget", "muster-scheduler");
    assert_eq!(pdb["spec"]["minAvailable"].as_i64(), Some(1));
    let dep = one(&objs, "Deployment", "muster-scheduler");
    assert_eq!(
        pdb["spec"]["selector"]["matchLabels"],
        dep["spec"]["selector"]["matchLabels"]
    );
}
