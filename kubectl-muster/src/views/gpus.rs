//! `kubectl muster top gpus [--node N]`.

use super::{gpu_node_names, gpus_of, owners};
use crate::error::Error;
use crate::render::{Cell, Color, Rendered, Table, gib, percent, to_value, util_color};
use crate::scene::{Analysis, Scene};
use serde::Serialize;

#[derive(Clone, Debug, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct GpuRow {
    pub node: String,
    pub index: u32,
    pub uuid: String,
    pub model: String,
    /// `namespace/name` of the pod holding it.
    pub pod: Option<String>,
    pub utilization_percent: Option<i32>,
    pub memory_used_mib: Option<i64>,
    pub memory_total_mib: i64,
    pub temperature_c: Option<i32>,
    pub power_watts: Option<f64>,
    pub healthy: bool,
    pub unhealthy_reason: Option<String>,
    pub pci_bus_id: Option<String>,
    pub numa_node: Option<i32>,
}

pub fn rows(scene: &Scene, analysis: &Analysis, node: Option<&str>) -> Result<Vec<GpuRow>, Error> {
    let names = gpu_node_names(scene, analysis);
    let selected: Vec<String> = match node {
        Some(n) if names.iter().any(|x| x == n) => vec![n.to_string()],
        Some(n) if scene.node(n).is_some() => {
            return Err(Error::NotFound(format!("node {n} has no GPUs")));
        }
        Some(n) => return Err(Error::NotFound(format!("node {n} not found"))),
        None => names,
    };
    let owners = owners(analysis);
    let mut out = Vec::new();
    for n in selected {
        for g in gpus_of(scene, analysis, &n) {
            let u = g.usage.clone().unwrap_or_default();
            out.push(GpuRow {
                pod: owners.get(&(n.clone(), g.index)).cloned(),
                node: n.clone(),
                index: g.index,
                uuid: g.uuid,
                model: g.model,
                utilization_percent: u.utilization_percent,
                memory_used_mib: u.memory_used_mib,
                memory_total_mib: g.memory_mib,
                temperature_c: u.temperature_c,
                power_watts: u.power_watts,
                healthy: g.healthy,
                unhealthy_reason: g.reason,
                pci_bus_id: g.pci_bus_id,
                numa_node: g.numa_node,
            });
        }
    }
    Ok(out)
}

pub fn render(
    scene: &Scene,
    analysis: &Analysis,
    node: Option<&str>,
    wide: bool,
) -> Result<Rendered, Error> {
    let rows = rows(scene, analysis, node)?;
    let mut headers = vec![
        "NODE", "GPU", "MODEL", "POD", "UTIL", "MEMORY", "TEMP", "POWER", "HEALTH",
    ];
    if wide {
        headers.extend(["UUID", "PCI", "NUMA"]);
    }
    let mut table = Table::new(&headers);
    for r in &rows {
        let util = r.utilization_percent.map(f64::from);
        let mut row = vec![
            Cell::new(r.node.as_str()),
            Cell::new(r.index.to_string()),
            Cell::new(r.model.as_str()),
            match &r.pod {
                Some(p) => Cell::colored(p.as_str(), Some(Color::Cyan)),
                None => Cell::colored("-", Some(Color::Dim)),
            },
            Cell::colored(percent(util), util_color(util)),
            Cell::new(match r.memory_used_mib {
                Some(u) => format!("{}/{} GiB", gib(u), gib(r.memory_total_mib)),
                None => format!("-/{} GiB", gib(r.memory_total_mib)),
            }),
            Cell::colored(
                r.temperature_c
                    .map_or_else(|| "-".into(), |t| format!("{t}C")),
                r.temperature_c.filter(|t| *t >= 85).map(|_| Color::Red),
            ),
            Cell::new(
                r.power_watts
                    .map_or_else(|| "-".into(), |w| format!("{w:.0}W")),
            ),
            if r.healthy {
                Cell::colored("ok", Some(Color::Green))
            } else {
                Cell::colored(
                    format!(
                        "unhealthy ({})",
                        r.unhealthy_reason.as_deref().unwrap_or("unknown")
                    ),
                    Some(Color::Red),
                )
            },
        ];
        if wide {
            row.push(Cell::new(r.uuid.as_str()));
            row.push(Cell::new(
                r.pci_bus_id.clone().unwrap_or_else(|| "-".into()),
            ));
            row.push(Cell::new(
                r.numa_node.map_or_else(|| "-".into(), |n| n.to_string()),
            ));
        }
        table.push(row);
    }
    let held = rows.iter().filter(|r| r.pod.is_some()).count();
    let unhealthy = rows.iter().filter(|r| !r.healthy).count();
    let footer = vec![format!(
        "GPUs: {}   held by pods: {held}   unhealthy: {unhealthy}",
        rows.len()
    )];
    Ok(Rendered {
        table,
        footer,
        data: serde_json::json!({"kind": "GpuList", "items": to_value(&rows)}),
    })
}
