//! The Grafana dashboard ConfigMap: sidecar label, valid JSON, every panel's PromQL parses
//! (checked by promtool as recording rules) and refers to metrics Muster or the agent export.

mod common;
use common::monitoring::{dashboard, dashboard_exprs as exprs};
use common::*;
use std::process::Command;

#[test]
fn dashboard_panels_use_real_metrics() {
    let known = exported_metrics();
    let d = dashboard();
    let exprs = exprs(&d);
    assert!(exprs.len() >= 20, "only {} queries", exprs.len());
    for (title, expr) in &exprs {
        assert!(
            !metric_refs(expr).is_empty(),
            "{title}: {expr} names no Muster/DCGM metric"
        );
        let unknown = unknown_metrics(expr, &known);
        assert!(
            unknown.is_empty(),
            "{title}: unknown metrics {unknown:?} in {expr}"
        );
    }
    // Template variables query real metrics too.
    for v in d["templating"]["list"].as_array().unwrap() {
        if v["type"] == "query" {
            let q = v["query"].as_str().unwrap();
            assert!(
                unknown_metrics(q, &known).is_empty() && !metric_refs(q).is_empty(),
                "{q}"
            );
        }
    }
    // Panel ids are unique (Grafana keys state by id).
    let mut ids: Vec<_> = d["panels"]
        .as_array()
        .unwrap()
        .iter()
        .filter_map(|p| p["id"].as_i64())
        .collect();
    let n = ids.len();
    ids.sort();
    ids.dedup();
    assert_eq!(ids.len(), n, "duplicate panel ids");
}

#[test]
fn dashboard_covers_the_issue() {
    let d = dashboard();
    let all: Vec<_> = exprs(&d);
    let any = |needle: &str| all.iter().any(|(_, e)| e.contains(needle));
    // Allocation vs utilization, per node and per pod utilization/memory/temperature/power.
    assert!(any("muster_node_gpus_allocated") && any("muster_node_gpus_total"));
    for m in [
        "DCGM_FI_DEV_GPU_UTIL",
        "DCGM_FI_DEV_FB_USED",
        "DCGM_FI_DEV_GPU_TEMP",
        "DCGM_FI_DEV_POWER_USAGE",
    ] {
        assert!(
            all.iter()
                .any(|(_, e)| e.contains(m) && e.contains("by (Hostname")),
            "{m} per node"
        );
        assert!(
            all.iter()
                .any(|(_, e)| e.contains(m) && e.contains("by (namespace, pod)")),
            "{m} per pod"
        );
    }
    // Pending gangs, wait times, preemptions.
    assert!(any("muster_pending_gangs"));
    assert!(any("muster_gang_wait_seconds_bucket"));
    assert!(any("muster_preemptions_total"));
    // Queues: allocated against guarantee and limit, share, borrowing, gangs, reclaims.
    for m in [
        "muster_queue_allocated",
        "muster_queue_guaranteed",
        "muster_queue_limit",
        "muster_queue_share",
        "muster_queue_borrowed",
        "muster_queue_pending_gangs",
        "muster_queue_running_gangs",
        "muster_reclaims_total",
    ] {
        assert!(
            all.iter()
                .any(|(_, e)| e.contains(m) && e.contains("by (queue)")),
            "{m} per queue"
        );
    }
}

#[test]
fn every_dashboard_query_parses_as_promql() {
    let d = dashboard();
    let rules: Vec<serde_json::Value> = exprs(&d)
        .iter()
        .enumerate()
        .map(|(i, (_, e))| {
            // Grafana's interval variable is not PromQL; substitute a duration.
            let e = e.replace("$__rate_interval", "5m");
            serde_json::json!({"record": format!("muster_dashboard:query_{i}"), "expr": e})
        })
        .collect();
    let file = serde_json::json!({"groups": [{"name": "dashboard", "rules": rules}]});
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("dashboard-rules.yaml");
    std::fs::write(&path, serde_yaml::to_string(&file).unwrap()).unwrap();
    let out = Command::new(tool("promtool"))
        .args(["check", "rules", path.to_str().unwrap()])
        .output()
        .expect("promtool");
    assert!(
        out.status.success(),
        "dashboard PromQL does not parse:\n{}{}",
        text(&out.stdout),
        text(&out.stderr)
    );
}

#[test]
fn dashboard_can_be_disabled_and_relabelled() {
    let objs = objects(&["dashboard.enabled=false"]);
    assert!(
        !objs
            .iter()
            .any(|o| kind_of(o) == "ConfigMap" && name_of(o) == "muster-dashboard")
    );
    let objs = objects(&[
        "dashboard.labels.grafana_dashboard=null",
        "dashboard.labels.team=gpu",
    ]);
    let cm = one(&objs, "ConfigMap", "muster-dashboard");
    assert_eq!(cm["metadata"]["labels"]["team"], "gpu");
}
