//! `kubectl muster top nodes`.

use super::{domain_of, gpu_node_names, gpus_of, model_of, node_status, owners};
use crate::render::{
    Cell, Color, Rendered, Style, Table, gib, percent, ratio, to_value, util_color,
};
use crate::scene::{Analysis, Scene, parse_time};
use serde::Serialize;

#[derive(Clone, Debug, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct NodeRow {
    pub node: String,
    pub status: String,
    pub model: String,
    pub gpus_total: u32,
    pub gpus_allocated: u32,
    pub gpus_healthy: u32,
    /// Mean utilization of the GPUs the agent sampled.
    pub utilization_percent: Option<f64>,
    pub memory_used_mib: Option<i64>,
    pub memory_total_mib: i64,
    pub nvlink_domain: Option<String>,
    pub driver_version: Option<String>,
    /// Seconds since the node agent last wrote the `GpuNode` (none: no agent).
    pub agent_seen_seconds_ago: Option<i64>,
    pub pods: Vec<String>,
}

#[derive(Clone, Debug, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct Summary {
    pub gpus_total: u64,
    pub gpus_allocated: u64,
    pub gpus_healthy: u64,
    pub nodes: usize,
}

pub fn rows(scene: &Scene, analysis: &Analysis) -> Vec<NodeRow> {
    let owners = owners(analysis);
    gpu_node_names(scene, analysis)
        .into_iter()
        .map(|node| {
            let gpus = gpus_of(scene, analysis, &node);
            let capacity = analysis
                .snapshot
                .cluster
                .node(&node)
                .map_or(0, |n| n.allocatable.gpus);
            let total = if gpus.is_empty() {
                capacity
            } else {
                gpus.len() as u32
            };
            let mut pods: Vec<String> = owners
                .iter()
                .filter(|((n, _), _)| *n == node)
                .map(|(_, p)| p.clone())
                .collect();
            let allocated = pods.len() as u32;
            pods.sort();
            pods.dedup();
            let sampled: Vec<f64> = gpus
                .iter()
                .filter_map(|g| g.usage.as_ref()?.utilization_percent)
                .map(f64::from)
                .collect();
            let used: Vec<i64> = gpus
                .iter()
                .filter_map(|g| g.usage.as_ref()?.memory_used_mib)
                .collect();
            let gn = scene.gpu_node(&node);
            NodeRow {
                status: node_status(scene, &node),
                model: model_of(scene, &node),
                gpus_total: total,
                gpus_allocated: allocated,
                gpus_healthy: if gpus.is_empty() {
                    total
                } else {
                    gpus.iter().filter(|g| g.healthy).count() as u32
                },
                utilization_percent: (!sampled.is_empty())
                    .then(|| sampled.iter().sum::<f64>() / sampled.len() as f64),
                memory_used_mib: (!used.is_empty()).then(|| used.iter().sum()),
                memory_total_mib: gpus.iter().map(|g| g.memory_mib).sum(),
                nvlink_domain: domain_of(scene, &node),
                driver_version: gn.map(|g| g.spec.driver_version.clone()),
                agent_seen_seconds_ago: gn
                    .and_then(|g| parse_time(&g.spec.last_seen))
                    .map(|t| scene.now - t),
                pods,
                node,
            }
        })
        .collect()
}

pub fn render(scene: &Scene, analysis: &Analysis, wide: bool, style: &Style) -> Rendered {
    let rows = rows(scene, analysis);
    let mut headers = vec![
        "NODE", "STATUS", "MODEL", "GPUS", "HEALTHY", "UTIL", "MEMORY", "NVLINK",
    ];
    if wide {
        headers.extend(["DRIVER", "AGENT", "PODS"]);
    }
    let mut table = Table::new(&headers);
    for r in &rows {
        let full = r.gpus_total > 0 && r.gpus_allocated >= r.gpus_total;
        let mut row = vec![
            Cell::new(r.node.as_str()),
            Cell::colored(
                r.status.as_str(),
                (r.status != "Ready").then_some(Color::Red),
            ),
            Cell::new(r.model.as_str()),
            Cell::colored(
                format!("{}/{}", r.gpus_allocated, r.gpus_total),
                full.then_some(Color::Yellow),
            ),
            Cell::colored(
                format!("{}/{}", r.gpus_healthy, r.gpus_total),
                (r.gpus_healthy < r.gpus_total).then_some(Color::Red),
            ),
            Cell::colored(
                percent(r.utilization_percent),
                util_color(r.utilization_percent),
            ),
            Cell::new(match r.memory_used_mib {
                Some(u) => format!("{}/{} GiB", gib(u), gib(r.memory_total_mib)),
                None if r.memory_total_mib > 0 => format!("-/{} GiB", gib(r.memory_total_mib)),
                None => "-".into(),
            }),
            Cell::new(r.nvlink_domain.clone().unwrap_or_else(|| "-".into())),
        ];
        if wide {
            row.push(Cell::new(
                r.driver_version.clone().unwrap_or_else(|| "-".into()),
            ));
            row.push(match r.agent_seen_seconds_ago {
                Some(s) => Cell::colored(style.age(s), (s > 120).then_some(Color::Red)),
                None => Cell::colored("none", Some(Color::Dim)),
            });
            row.push(Cell::new(crate::render::list(&r.pods, 3)));
        }
        table.push(row);
    }
    let summary = Summary {
        gpus_total: rows.iter().map(|r| u64::from(r.gpus_total)).sum(),
        gpus_allocated: rows.iter().map(|r| u64::from(r.gpus_allocated)).sum(),
        gpus_healthy: rows.iter().map(|r| u64::from(r.gpus_healthy)).sum(),
        nodes: rows.len(),
    };
    let footer = vec![format!(
        "Allocated/Total GPUs: {}   Healthy: {}/{}   Nodes: {}",
        ratio(summary.gpus_allocated, summary.gpus_total),
        summary.gpus_healthy,
        summary.gpus_total,
        summary.nodes
    )];
    Rendered {
        table,
        footer,
        data: serde_json::json!({"kind": "NodeList", "items": to_value(&rows), "summary": to_value(&summary)}),
    }
}
