//! The chart's monitoring objects as the tests read them: the Grafana dashboard's queries and
//! the PrometheusRule's rule groups (shared by the static checks and the real-Prometheus test).

use super::{objects, one};
use serde_json::Value as Json;
use serde_yaml::Value;
use std::path::{Path, PathBuf};

/// The dashboard JSON of the rendered ConfigMap (checked to carry the Grafana sidecar label).
pub fn dashboard() -> Json {
    let objs = objects(&[]);
    let cm = one(&objs, "ConfigMap", "muster-dashboard");
    assert_eq!(cm["metadata"]["labels"]["grafana_dashboard"], "1");
    let text = cm["data"]["muster.json"].as_str().expect("muster.json");
    serde_json::from_str(text).expect("dashboard JSON parses")
}

/// (panel title, expr) of every query panel.
pub fn dashboard_exprs(d: &Json) -> Vec<(String, String)> {
    let mut out = Vec::new();
    for p in d["panels"].as_array().expect("dashboard panels") {
        if p["type"] == "row" {
            continue;
        }
        let title = p["title"].as_str().expect("panel title").to_string();
        let targets = p["targets"].as_array().expect("panel targets");
        assert!(!targets.is_empty(), "panel {title} has no query");
        for t in targets {
            out.push((title.clone(), t["expr"].as_str().expect("expr").to_string()));
        }
    }
    out
}

/// The rendered PrometheusRule's `groups`, as a Prometheus rule file (`{groups: [...]}`).
pub fn rule_groups() -> Value {
    let objs = objects(&["metrics.prometheusRule.enabled=true"]);
    let rule = one(&objs, "PrometheusRule", "muster");
    let mut file = serde_yaml::Mapping::new();
    file.insert("groups".into(), rule["spec"]["groups"].clone());
    Value::Mapping(file)
}

/// Writes [`rule_groups`] to `dir/rules.yaml`.
pub fn write_rules(dir: &Path) -> PathBuf {
    let path = dir.join("rules.yaml");
    let text = serde_yaml::to_string(&rule_groups()).expect("rules serialize");
    std::fs::write(&path, text).expect("writing rules.yaml");
    path
}

/// Every rule (alerting and recording) of [`rule_groups`].
pub fn all_rules() -> Vec<Value> {
    rule_groups()["groups"]
        .as_sequence()
        .expect("rule groups")
        .iter()
        .flat_map(|g| g["rules"].as_sequence().expect("group rules").clone())
        .collect()
}
