//! The PrometheusRule: `promtool check rules` on its groups, `promtool test rules` with alert
//! unit tests, and every expression refers to metrics Muster or the agent really exports.

mod common;
use common::monitoring::{all_rules as alerts, rule_groups, write_rules};
use common::*;
use std::process::Command;

fn promtool(args: &[&str]) -> (bool, String) {
    let out = Command::new(tool("promtool"))
        .args(args)
        .output()
        .expect("running promtool");
    (
        out.status.success(),
        format!("{}{}", text(&out.stdout), text(&out.stderr)),
    )
}

#[test]
fn promtool_check_rules_accepts_the_rules() {
    let dir = tempfile::tempdir().unwrap();
    let rules = write_rules(dir.path());
    let (ok, out) = promtool(&["check", "rules", rules.to_str().unwrap()]);
    assert!(ok, "promtool check rules:\n{out}");
    assert!(out.contains("SUCCESS"), "{out}");
}

#[test]
fn promtool_check_rules_catches_a_broken_expression() {
    // The check above can fail: a rule file with a broken expression is rejected.
    let dir = tempfile::tempdir().unwrap();
    let mut groups = rule_groups();
    groups["groups"][0]["rules"][0]["expr"] = "sum by (queue (muster_pending_gangs)".into();
    let path = dir.path().join("bad.yaml");
    std::fs::write(&path, serde_yaml::to_string(&groups).unwrap()).unwrap();
    let (ok, out) = promtool(&["check", "rules", path.to_str().unwrap()]);
    assert!(!ok, "a broken expression passed:\n{out}");
}

#[test]
fn alerts_cover_the_issue_and_use_real_metrics() {
    let known = exported_metrics();
    let alerts = alerts();
    let names: Vec<_> = alerts
        .iter()
        .map(|a| a["alert"].as_str().unwrap().to_string())
        .collect();
    for required in [
        "MusterGpuXidError",
        "MusterGpuUnhealthy",
        "MusterGangPendingTooLong",
        "MusterGpuAllocatedButIdle",
        "MusterExtenderErrors",
        "MusterExtenderSlow",
        "MusterNodeAgentDown",
        "MusterQueueBelowGuarantee",
    ] {
        assert!(names.contains(&required.to_string()), "no alert {required}");
    }
    for a in &alerts {
        let name = a["alert"].as_str().unwrap();
        let expr = a["expr"].as_str().unwrap();
        let refs = metric_refs(expr);
        assert!(
            !refs.is_empty() || expr.starts_with("up{"),
            "{name}: {expr} names no Muster/DCGM metric"
        );
        let unknown = unknown_metrics(expr, &known);
        assert!(unknown.is_empty(), "{name}: unknown metrics {unknown:?}");
        assert!(a["labels"]["severity"].is_string(), "{name}: no severity");
        assert!(
            a["annotations"]["summary"].is_string(),
            "{name}: no summary"
        );
        assert!(a["annotations"]["description"].is_string(), "{name}");
    }
}

#[test]
fn alert_thresholds_follow_values() {
    let objs = objects(&[
        "metrics.prometheusRule.enabled=true",
        "alerts.gangPendingFor=2h",
        "alerts.idleUtilizationPercent=10",
        "alerts.extenderLatencySeconds=2",
        "alerts.queueBelowGuaranteeFor=1h",
    ]);
    let rule = one(&objs, "PrometheusRule", "muster");
    let find = |n: &str| {
        rule["spec"]["groups"]
            .as_sequence()
            .unwrap()
            .iter()
            .flat_map(|g| g["rules"].as_sequence().unwrap().iter())
            .find(|r| r["alert"] == n)
            .unwrap()
            .clone()
    };
    assert_eq!(find("MusterGangPendingTooLong")["for"], "2h");
    assert_eq!(find("MusterQueueBelowGuarantee")["for"], "1h");
    assert!(
        find("MusterGpuAllocatedButIdle")["expr"]
            .as_str()
            .unwrap()
            .contains("DCGM_FI_DEV_GPU_UTIL < 10")
    );
    assert!(
        find("MusterExtenderSlow")["expr"]
            .as_str()
            .unwrap()
            .ends_with("> 2")
    );
}

/// Alert unit tests run by `promtool test rules` against the rendered rules.
const RULE_TESTS: &str = r#"
rule_files: [rules.yaml]
evaluation_interval: 1m
tests:
  - interval: 1m
    input_series:
      - series: 'DCGM_FI_DEV_XID_ERRORS{gpu="0",UUID="GPU-a",Hostname="n1"}'
        values: '0 0 0 79 79 79'
      - series: 'muster_gpu_healthy{gpu="1",UUID="GPU-b",Hostname="n1"}'
        values: '1 0 0 0 0 0 0 0 0'
      - series: 'muster_gpu_healthy{gpu="0",UUID="GPU-a",Hostname="n1"}'
        values: '1 1 1 1 1 1 1 1 1'
    alert_rule_test:
      - eval_time: 2m
        alertname: MusterGpuXidError
        exp_alerts: []
      - eval_time: 5m
        alertname: MusterGpuXidError
        exp_alerts:
          - exp_labels: {severity: warning, gpu: "0", UUID: GPU-a, Hostname: n1}
            exp_annotations:
              summary: 'GPU reported an XID error'
              description: 'GPU 0 (GPU-a) on n1 reported XID errors in the last 15 minutes (see DCGM_FI_DEV_XID_ERRORS for the code).'
      - eval_time: 3m
        alertname: MusterGpuUnhealthy
        exp_alerts: []
      - eval_time: 7m
        alertname: MusterGpuUnhealthy
        exp_alerts:
          - exp_labels: {severity: critical, gpu: "1", UUID: GPU-b, Hostname: n1}
            exp_annotations:
              summary: 'GPU is unhealthy'
              description: 'GPU 1 (GPU-b) on n1 is unhealthy (critical XID or lost); Muster no longer places pods on it.'
  - interval: 5m
    input_series:
      - series: 'muster_pending_gangs{queue="research",instance="s:8888"}'
        values: '1x12'
      - series: 'muster_pending_gangs{queue="prod",instance="s:8888"}'
        values: '1 0 1 0 1 0 1 0 1 0 1 0 1'
    alert_rule_test:
      - eval_time: 20m
        alertname: MusterGangPendingTooLong
        exp_alerts: []
      - eval_time: 40m
        alertname: MusterGangPendingTooLong
        exp_alerts:
          - exp_labels: {severity: warning, queue: research}
            exp_annotations:
              summary: 'Gangs pending for a long time'
              description: 'Queue research has had pending gangs continuously for 30m; see the PodGroup status or the pods'' PodScheduled condition for the reason.'
  # research: 8 of 16 guaranteed GPUs with a gang waiting (fires after 15m); vision: below its
  # guarantee but nothing waits; prod: waiting, at its guarantee.
  - interval: 5m
    input_series:
      - series: 'muster_queue_allocated{queue="research",resource="nvidia.com/gpu",instance="s:8888"}'
        values: '8x8'
      - series: 'muster_queue_guaranteed{queue="research",resource="nvidia.com/gpu",instance="s:8888"}'
        values: '16x8'
      - series: 'muster_queue_pending_gangs{queue="research",instance="s:8888"}'
        values: '1x8'
      - series: 'muster_queue_allocated{queue="vision",resource="nvidia.com/gpu",instance="s:8888"}'
        values: '0x8'
      - series: 'muster_queue_guaranteed{queue="vision",resource="nvidia.com/gpu",instance="s:8888"}'
        values: '16x8'
      - series: 'muster_queue_pending_gangs{queue="vision",instance="s:8888"}'
        values: '0x8'
      - series: 'muster_queue_allocated{queue="prod",resource="nvidia.com/gpu",instance="s:8888"}'
        values: '32x8'
      - series: 'muster_queue_guaranteed{queue="prod",resource="nvidia.com/gpu",instance="s:8888"}'
        values: '32x8'
      - series: 'muster_queue_pending_gangs{queue="prod",instance="s:8888"}'
        values: '3x8'
    alert_rule_test:
      - eval_time: 10m
        alertname: MusterQueueBelowGuarantee
        exp_alerts: []
      - eval_time: 20m
        alertname: MusterQueueBelowGuarantee
        exp_alerts:
          - exp_labels: {severity: warning, queue: research}
            exp_annotations:
              summary: 'A queue is held below its GPU guarantee'
              description: 'Queue research has held 8 GPUs, below its guarantee, with gangs waiting, for 15m; see kubectl muster top queues and the waiting PodGroups'' conditions (reclaim refused, a gang larger than the guarantee, or fragmentation).'
  - interval: 5m
    input_series:
      - series: 'DCGM_FI_DEV_GPU_UTIL{gpu="0",UUID="GPU-a",Hostname="n1",pod="p",namespace="ns"}'
        values: '1x20'
      - series: 'muster_gpu_allocated{gpu="0",UUID="GPU-a",Hostname="n1",pod="p",namespace="ns"}'
        values: '1x20'
      - series: 'DCGM_FI_DEV_GPU_UTIL{gpu="1",UUID="GPU-b",Hostname="n1"}'
        values: '0x20'
      - series: 'muster_gpu_allocated{gpu="1",UUID="GPU-b",Hostname="n1"}'
        values: '0x20'
      - series: 'DCGM_FI_DEV_GPU_UTIL{gpu="2",UUID="GPU-c",Hostname="n1",pod="q",namespace="ns"}'
        values: '90x20'
      - series: 'muster_gpu_allocated{gpu="2",UUID="GPU-c",Hostname="n1",pod="q",namespace="ns"}'
        values: '1x20'
    alert_rule_test:
      - eval_time: 30m
        alertname: MusterGpuAllocatedButIdle
        exp_alerts: []
      - eval_time: 65m
        alertname: MusterGpuAllocatedButIdle
        exp_alerts:
          - exp_labels: {severity: info, gpu: "0", UUID: GPU-a, Hostname: n1, pod: p, namespace: ns}
            exp_annotations:
              summary: 'GPU allocated but idle'
              description: 'GPU GPU-a on n1 is allocated to ns/p but below 5% utilization for 1h.'
  - interval: 1m
    input_series:
      - series: 'up{job="node",endpoint="metrics",namespace="muster-system",instance="10.0.0.1:9400"}'
        values: '1 1 0 0 0 0 0 0 0 0'
      - series: 'up{job="node",endpoint="plugin-metrics",namespace="muster-system",instance="10.0.0.1:9401"}'
        values: '0x10'
      - series: 'muster_extender_errors_total{verb="bind",kind="api"}'
        values: '0+1x20'
      - series: 'muster_extender_errors_total{verb="filter",kind="api"}'
        values: '0x20'
    alert_rule_test:
      - eval_time: 8m
        alertname: MusterNodeAgentDown
        exp_alerts:
          - exp_labels: {severity: warning, job: node, endpoint: metrics, namespace: muster-system, instance: "10.0.0.1:9400"}
            exp_annotations:
              summary: 'Muster node agent is down'
              description: 'The node agent target 10.0.0.1:9400 has been down; its GPUs'' metrics and GpuNode are stale.'
      - eval_time: 16m
        alertname: MusterExtenderErrors
        exp_alerts:
          - exp_labels: {severity: warning, verb: bind}
            exp_annotations:
              summary: 'Muster extender returns errors'
              description: 'The extender''s bind verb returned errors for 10 minutes.'
"#;

#[test]
fn promtool_test_rules_alert_unit_tests() {
    let dir = tempfile::tempdir().unwrap();
    write_rules(dir.path());
    let tests = dir.path().join("tests.yaml");
    std::fs::write(&tests, RULE_TESTS).unwrap();
    let out = Command::new(tool("promtool"))
        .current_dir(dir.path())
        .args(["test", "rules", "tests.yaml"])
        .output()
        .expect("running promtool");
    assert!(
        out.status.success(),
        "promtool test rules:\n{}{}",
        text(&out.stdout),
        text(&out.stderr)
    );
}
