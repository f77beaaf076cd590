//! `helm lint` and `helm template` for the default values and several custom ones.

mod common;
use common::*;

/// Value sets users really pass (each also goes through the schema).
const CUSTOM: &[&[&str]] = &[
    &[],
    &[
        "metrics.serviceMonitor.enabled=true",
        "metrics.prometheusRule.enabled=true",
    ],
    &[
        "scheduler.replicas=3",
        "scheduler.kubeScheduler.image.tag=v1.33.4",
        "scheduler.schedulerName=gang",
        "scheduler.additionalSchedulerNames={scheduler-plugins-scheduler}",
    ],
    &["node.enabled=false", "dashboard.enabled=false"],
    &["scheduler.enabled=false"],
    &[
        "node.devicePlugin.enabled=false",
        "node.runtimeClassName=nvidia",
        "node.nvmlLib=/usr/lib64/libnvidia-ml.so.1",
        "node.nodeSelector=null",
    ],
    &[
        "image.repository=registry.example.com/muster",
        "image.tag=dev",
        "rbac.create=false",
        "serviceAccount.create=false",
        "scheduler.leaderElection.enabled=false",
    ],
    &[
        "scheduler.extender.tls.enabled=true",
        "scheduler.extender.metricsPort=9000",
    ],
];

#[test]
fn lint_passes_for_default_and_custom_values() {
    let chart = chart_dir();
    for sets in CUSTOM {
        let mut args = vec!["lint", "--strict", chart.to_str().unwrap()];
        for s in *sets {
            args.push("--set");
            args.push(s);
        }
        let out = helm(&args);
        assert!(
            out.status.success(),
            "helm lint {sets:?}:\n{}{}",
            text(&out.stdout),
            text(&out.stderr)
        );
    }
}

#[test]
fn template_renders_valid_objects_for_custom_values() {
    for sets in CUSTOM {
        let objs = objects(sets);
        assert!(!objs.is_empty(), "{sets:?} rendered nothing");
        for o in &objs {
            assert!(
                o["apiVersion"].is_string() && !kind_of(o).is_empty() && !name_of(o).is_empty(),
                "{sets:?}: object without apiVersion/kind/name: {o:?}"
            );
        }
        let has = |kind: &str| objs.iter().any(|o| kind_of(o) == kind);
        let scheduler_off = sets.contains(&"scheduler.enabled=false");
        assert_eq!(has("Deployment"), !scheduler_off, "{sets:?}");
        assert_eq!(
            has("DaemonSet"),
            !sets.contains(&"node.enabled=false"),
            "{sets:?}"
        );
        assert_eq!(
            has("ClusterRole"),
            !sets.contains(&"rbac.create=false"),
            "{sets:?}"
        );
        assert_eq!(
            has("ServiceAccount"),
            !sets.contains(&"serviceAccount.create=false"),
            "{sets:?}"
        );
        assert_eq!(
            has("PrometheusRule"),
            sets.contains(&"metrics.prometheusRule.enabled=true"),
            "{sets:?}"
        );
        assert_eq!(
            of_kind(&objs, "ServiceMonitor").len(),
            if sets.contains(&"metrics.serviceMonitor.enabled=true") {
                2
            } else {
                0
            },
            "{sets:?}"
        );
        // The CRDs always ship with the chart.
        let crds: Vec<_> = of_kind(&objs, "CustomResourceDefinition")
            .into_iter()
            .map(name_of)
            .collect();
        assert_eq!(
            crds,
            [
                "gpunodes.muster.dev",
                "podgroups.muster.dev",
                "queues.muster.dev"
            ],
            "{sets:?}"
        );
    }
}

#[test]
fn custom_values_reach_the_manifests() {
    let objs = objects(CUSTOM[2]);
    let dep = one(&objs, "Deployment", "muster-scheduler");
    assert_eq!(dep["spec"]["replicas"].as_i64(), Some(3));
    let containers = dep["spec"]["template"]["spec"]["containers"]
        .as_sequence()
        .unwrap();
    assert_eq!(
        containers[0]["image"].as_str(),
        Some("registry.k8s.io/kube-scheduler:v1.33.4")
    );
    let cm = one(&objs, "ConfigMap", "muster-scheduler-config");
    let cfg: serde_yaml::Value =
        serde_yaml::from_str(cm["data"]["scheduler-config.yaml"].as_str().unwrap()).unwrap();
    assert_eq!(cfg["profiles"][0]["schedulerName"].as_str(), Some("gang"));
    // One profile per name, the extender told every name (else it refuses those pods).
    assert_eq!(
        cfg["profiles"][1]["schedulerName"].as_str(),
        Some("scheduler-plugins-scheduler")
    );
    assert_eq!(
        cfg["profiles"][1]["percentageOfNodesToScore"].as_i64(),
        Some(100)
    );
    let command = strs(&containers[1]["command"]);
    for name in ["gang", "scheduler-plugins-scheduler"] {
        assert!(
            command.contains(&format!("--scheduler-name={name}")),
            "{command:?}"
        );
    }

    let objs = objects(CUSTOM[6]);
    let dep = one(&objs, "Deployment", "muster-scheduler");
    let extender = &dep["spec"]["template"]["spec"]["containers"][1];
    assert_eq!(
        extender["image"].as_str(),
        Some("registry.example.com/muster:dev")
    );
    assert!(strs(&extender["command"]).contains(&"--leader-elect=false".to_string()));

    // The default image tag is the chart's appVersion.
    let objs = objects(&[]);
    let chart: serde_yaml::Value =
        serde_yaml::from_str(&std::fs::read_to_string(chart_dir().join("Chart.yaml")).unwrap())
            .unwrap();
    let app = chart["appVersion"].as_str().unwrap();
    let ds = one(&objs, "DaemonSet", "muster-node");
    assert_eq!(
        ds["spec"]["template"]["spec"]["containers"][0]["image"].as_str(),
        Some(format!("ghcr.io/muster-dev/muster:{app}").as_str())
    );
}
