//! `kubectl muster topo <node>`: the link matrix as `nvidia-smi topo -m` prints it.

use super::{gpus_of, owners};
use crate::error::Error;
use crate::render::{Cell, Color, Rendered, Table};
use crate::scene::{Analysis, Scene};
use muster_api::topology::Link;

/// nvidia-smi's legend, in its order.
const LEGEND: [(&str, &str); 7] = [
    ("X", "Self"),
    (
        "SYS",
        "Connection traversing PCIe as well as the SMP interconnect between NUMA nodes (e.g., QPI/UPI)",
    ),
    (
        "NODE",
        "Connection traversing PCIe as well as the interconnect between PCIe Host Bridges within a NUMA node",
    ),
    (
        "PHB",
        "Connection traversing PCIe as well as a PCIe Host Bridge (typically the CPU)",
    ),
    (
        "PXB",
        "Connection traversing multiple PCIe bridges (without traversing the PCIe Host Bridge)",
    ),
    ("PIX", "Connection traversing at most a single PCIe bridge"),
    ("NV#", "Connection traversing a bonded set of # NVLinks"),
];

pub fn render(scene: &Scene, analysis: &Analysis, node: &str) -> Result<Rendered, Error> {
    if scene.node(node).is_none() && scene.gpu_node(node).is_none() {
        return Err(Error::NotFound(format!("node {node} not found")));
    }
    // Rows as published by the agent; else the scheduler's matrix (fixture label).
    let rows: Vec<Vec<String>> = match scene.gpu_node(node) {
        Some(gn) if !gn.spec.topology.is_empty() => gn.spec.topology.clone(),
        _ => match analysis
            .snapshot
            .cluster
            .node(node)
            .and_then(|n| n.topology.as_ref())
        {
            Some(m) => m.to_rows(),
            None => {
                return Err(Error::NotFound(format!(
                    "node {node} has no known GPU topology (no GpuNode from the node agent, no {} label)",
                    muster_api::names::LABEL_TOPOLOGY_FIXTURE
                )));
            }
        },
    };
    let gpus = gpus_of(scene, analysis, node);
    let owners = owners(analysis);
    let n = rows.len();
    let mut headers: Vec<String> = vec![String::new()];
    headers.extend((0..n).map(|i| format!("GPU{i}")));
    headers.push("NUMA Affinity".into());
    headers.push("Pod".into());
    let header_refs: Vec<&str> = headers.iter().map(String::as_str).collect();
    let mut table = Table::new(&header_refs);
    for (i, row) in rows.iter().enumerate() {
        let mut cells = vec![Cell::colored(format!("GPU{i}"), Some(Color::Bold))];
        cells.extend(row.iter().map(|c| Cell::colored(c.as_str(), link_color(c))));
        let gpu = gpus.iter().find(|g| g.index as usize == i);
        cells.push(Cell::new(
            gpu.and_then(|g| g.numa_node)
                .map_or_else(|| "N/A".into(), |n| n.to_string()),
        ));
        let owner = owners.get(&(node.to_string(), i as u32));
        cells.push(match (gpu.is_some_and(|g| !g.healthy), owner) {
            (true, _) => Cell::colored("unhealthy", Some(Color::Red)),
            (false, Some(p)) => Cell::colored(p.as_str(), Some(Color::Cyan)),
            (false, None) => Cell::colored("-", Some(Color::Dim)),
        });
        table.push(cells);
    }
    let mut footer = vec![String::new(), "Legend:".to_string(), String::new()];
    footer.extend(LEGEND.iter().map(|(k, v)| format!("  {k:<4} = {v}")));
    let data = serde_json::json!({
        "kind": "GpuTopology",
        "node": node,
        "matrix": rows,
        "numaAffinity": gpus.iter().map(|g| g.numa_node).collect::<Vec<_>>(),
        "pods": (0..n).map(|i| owners.get(&(node.to_string(), i as u32))).collect::<Vec<_>>(),
    });
    Ok(Rendered {
        table,
        footer,
        data,
    })
}

fn link_color(cell: &str) -> Option<Color> {
    if cell.trim() == "X" {
        return Some(Color::Dim);
    }
    match cell.parse::<Link>() {
        Ok(l) if l.is_nvlink() => Some(Color::Green),
        Ok(_) if cell.trim() == "SYS" => Some(Color::Red),
        Ok(_) => Some(Color::Yellow),
        Err(_) => None,
    }
}
