//! Shared helpers: run helm and promtool from the tools cache, render the chart, parse the
//! manifests, and list the metric names the Muster binaries really export.
#![allow(dead_code)] // each test binary uses a different subset

pub mod audit;
pub mod host;
pub mod monitoring;
pub mod tls;

use serde_yaml::Value;
use std::collections::BTreeSet;
use std::path::{Path, PathBuf};
use std::process::{Command, Output};

pub use muster_testcluster::repo_root;

pub fn chart_dir() -> PathBuf {
    repo_root().join("charts/muster")
}

pub fn tool(name: &str) -> PathBuf {
    let path = muster_testcluster::tool(name).expect("tools cache (tests/tools/build.sh)");
    assert!(path.exists(), "{} is missing", path.display());
    path
}

/// Runs `helm` with these arguments; the output, whatever the exit status.
pub fn helm(args: &[&str]) -> Output {
    Command::new(tool("helm"))
        .args(args)
        // Keep helm away from the user's config, cache and kube context.
        .env(
            "HELM_CONFIG_HOME",
            std::env::temp_dir().join("muster-chart-helm/config"),
        )
        .env(
            "HELM_CACHE_HOME",
            std::env::temp_dir().join("muster-chart-helm/cache"),
        )
        .env(
            "HELM_DATA_HOME",
            std::env::temp_dir().join("muster-chart-helm/data"),
        )
        .output()
        .expect("running helm")
}

pub fn text(bytes: &[u8]) -> String {
    String::from_utf8_lossy(bytes).into_owned()
}

/// `helm template` of the chart with `--set`-style overrides; fails the test on a helm error.
pub fn render_with(sets: &[&str]) -> String {
    let out = render_result(sets);
    assert!(
        out.status.success(),
        "helm template {sets:?} failed:\n{}",
        text(&out.stderr)
    );
    text(&out.stdout)
}

pub fn render_result(sets: &[&str]) -> Output {
    let chart = chart_dir();
    let mut args = vec![
        "template",
        "muster",
        chart.to_str().unwrap(),
        "--namespace",
        "muster-system",
        "--include-crds",
    ];
    for s in sets {
        args.push("--set");
        args.push(s);
    }
    helm(&args)
}

/// Every document of a multi-document YAML stream (empty ones dropped).
pub fn docs(yaml: &str) -> Vec<Value> {
    serde_yaml::Deserializer::from_str(yaml)
        .map(|d| Value::deserialize(d).expect("rendered YAML parses"))
        .filter(|v| !v.is_null())
        .collect()
}

use serde::Deserialize as _;

/// Rendered objects for these overrides.
pub fn objects(sets: &[&str]) -> Vec<Value> {
    docs(&render_with(sets))
}

pub fn kind_of(v: &Value) -> &str {
    v["kind"].as_str().unwrap_or("")
}

pub fn name_of(v: &Value) -> &str {
    v["metadata"]["name"].as_str().unwrap_or("")
}

pub fn of_kind<'a>(objs: &'a [Value], kind: &str) -> Vec<&'a Value> {
    objs.iter().filter(|o| kind_of(o) == kind).collect()
}

pub fn one<'a>(objs: &'a [Value], kind: &str, name: &str) -> &'a Value {
    objs.iter()
        .find(|o| kind_of(o) == kind && name_of(o) == name)
        .unwrap_or_else(|| panic!("no {kind} {name} rendered"))
}

pub fn strs(v: &Value) -> Vec<String> {
    v.as_sequence()
        .map(|s| {
            s.iter()
                .filter_map(|x| x.as_str().map(str::to_string))
                .collect()
        })
        .unwrap_or_default()
}

/// Metric names the binaries export, read from their sources: every quoted `muster_*` or
/// `DCGM_*` identifier in scheduler/, node-agent/ and device-plugin/.
pub fn exported_metrics() -> BTreeSet<String> {
    let mut names = BTreeSet::new();
    for dir in ["scheduler/src", "node-agent/src", "device-plugin/src"] {
        walk(&repo_root().join(dir), &mut |path| {
            if path.extension().is_some_and(|e| e == "rs") {
                let src = std::fs::read_to_string(path).expect("source file");
                for piece in src.split('"').skip(1).step_by(2) {
                    if (piece.starts_with("muster_") || piece.starts_with("DCGM_"))
                        && piece.chars().all(|c| c.is_ascii_alphanumeric() || c == '_')
                    {
                        names.insert(piece.to_string());
                    }
                }
            }
        });
    }
    assert!(
        names.contains("DCGM_FI_DEV_GPU_UTIL") && names.contains("muster_pending_gangs"),
        "metric names not found in the sources: {names:?}"
    );
    names
}

fn walk(dir: &Path, f: &mut dyn FnMut(&Path)) {
    for entry in std::fs::read_dir(dir).expect("source dir") {
        let path = entry.expect("dir entry").path();
        if path.is_dir() {
            walk(&path, f);
        } else {
            f(&path);
        }
    }
}

/// Identifiers in a PromQL expression that look like Muster or DCGM metric names, with the
/// histogram suffixes `_bucket`, `_sum`, `_count` removed.
pub fn metric_refs(expr: &str) -> Vec<String> {
    let mut out = Vec::new();
    let mut cur = String::new();
    let flush = |cur: &mut String, out: &mut Vec<String>| {
        if cur.starts_with("muster_") || cur.starts_with("DCGM_") {
            let base = ["_bucket", "_sum", "_count"]
                .iter()
                .find_map(|s| cur.strip_suffix(s))
                .unwrap_or(cur);
            out.push(base.to_string());
        }
        cur.clear();
    };
    for c in expr.chars() {
        if c.is_ascii_alphanumeric() || c == '_' || c == ':' {
            cur.push(c);
        } else {
            flush(&mut cur, &mut out);
        }
    }
    flush(&mut cur, &mut out);
    out
}

/// A metric reference is real when the sources export it (histograms: under the base name).
pub fn unknown_metrics(expr: &str, known: &BTreeSet<String>) -> Vec<String> {
    metric_refs(expr)
        .into_iter()
        .filter(|m| !known.contains(m))
        .collect()
}
