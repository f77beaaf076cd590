//! Pure translation of a [`NodeView`] into the `GpuNode` spec and the GFD node labels.

use crate::view::NodeView;
use muster_api::names::gfd;
use muster_crds::{GpuNodeGpu, GpuNodeSpec, GpuUsage, MigDevice};
use muster_gpu_inventory::{MetricsSample, MigMode};
use std::collections::BTreeMap;

/// The `GpuNode` spec for `view`, stamped `last_seen` (RFC 3339).
pub fn gpu_node_spec(view: &NodeView, last_seen: String) -> GpuNodeSpec {
    let Some(inv) = &view.inventory else {
        // No driver: an honest, empty object the scheduler reads as "no GPUs here".
        return GpuNodeSpec {
            node_name: view.node_name.clone(),
            driver_version: String::new(),
            cuda_version: None,
            model: String::new(),
            gpu_count: 0,
            healthy_count: 0,
            clique: None,
            gpus: Vec::new(),
            topology: Vec::new(),
            last_seen,
        };
    };
    let gpus: Vec<GpuNodeGpu> = inv
        .gpus
        .iter()
        .enumerate()
        .map(|(pos, g)| {
            let status = view.status(pos);
            GpuNodeGpu {
                index: saturating_i32(u64::from(g.index)),
                uuid: g.uuid.clone(),
                model: g.model.clone(),
                memory_mib: i64::try_from(g.memory_total_mib).unwrap_or(i64::MAX),
                pci_bus_id: g.pci_bus_id.clone(),
                numa_node: g.numa_node.map(|n| saturating_i32(u64::from(n))),
                healthy: status.healthy,
                unhealthy_reason: status.reason,
                mig_enabled: g.mig.mode == MigMode::Enabled,
                mig_devices: g
                    .mig
                    .instances
                    .iter()
                    .map(|m| MigDevice {
                        uuid: m.uuid.clone(),
                        profile: m.name.clone(),
                        memory_mib: i64::try_from(m.memory_mib).unwrap_or(i64::MAX),
                    })
                    .collect(),
                usage: None,
            }
        })
        .collect();
    GpuNodeSpec {
        node_name: view.node_name.clone(),
        driver_version: inv.driver_version.clone(),
        cuda_version: inv.cuda_version.clone(),
        model: node_model(view),
        gpu_count: saturating_i32(gpus.len() as u64),
        healthy_count: saturating_i32(gpus.iter().filter(|g| g.healthy).count() as u64),
        clique: view.clique.clone(),
        gpus,
        topology: inv.links.to_rows(),
        last_seen,
    }
}

/// `spec` with each GPU's readings from `sample` (matched by UUID; a lost GPU has none).
pub fn with_usage(mut spec: GpuNodeSpec, sample: Option<&MetricsSample>) -> GpuNodeSpec {
    let Some(sample) = sample else {
        return spec;
    };
    for gpu in &mut spec.gpus {
        gpu.usage = sample
            .gpus
            .iter()
            .find(|m| m.uuid == gpu.uuid && !m.lost)
            .map(|m| GpuUsage {
                utilization_percent: m.sm_util_percent.map(|v| saturating_i32(u64::from(v))),
                memory_used_mib: m
                    .memory_used_mib
                    .map(|v| i64::try_from(v).unwrap_or(i64::MAX)),
                temperature_c: m.temperature_c.map(|v| saturating_i32(u64::from(v))),
                power_watts: m.power_watts.map(|w| (w * 10.0).round() / 10.0),
            });
    }
    spec
}

fn saturating_i32(v: u64) -> i32 {
    i32::try_from(v).unwrap_or(i32::MAX)
}

/// The node's GPU model: the first GPU that could tell (a lost GPU has no name).
fn node_model(view: &NodeView) -> String {
    view.inventory
        .as_ref()
        .and_then(|inv| inv.gpus.iter().find(|g| !g.model.is_empty()))
        .map(|g| g.model.clone())
        .unwrap_or_default()
}

/// GFD-compatible labels. Empty without GPUs: applying an empty set through server-side apply
/// removes the labels this agent owned before (a driver that went away).
pub fn gfd_labels(view: &NodeView) -> BTreeMap<String, String> {
    let mut labels = BTreeMap::new();
    let Some(inv) = &view.inventory else {
        return labels;
    };
    if inv.gpus.is_empty() {
        return labels;
    }
    let model = node_model(view);
    if !model.is_empty() {
        labels.insert(gfd::PRODUCT.to_string(), label_value(&model));
    }
    labels.insert(gfd::COUNT.to_string(), inv.gpus.len().to_string());
    if let Some(mem) = inv.gpus.iter().map(|g| g.memory_total_mib).max() {
        // GFD publishes the per-GPU framebuffer in MiB under the name "MB".
        labels.insert(gfd::MEMORY.to_string(), mem.to_string());
    }
    if let Some(family) = view
        .compute_capability
        .and_then(family_from_compute_capability)
        .or_else(|| family_from_name(&model))
    {
        labels.insert(gfd::FAMILY.to_string(), family.to_string());
    }
    if let Some(machine) = view.machine.as_deref().map(label_value)
        && !machine.is_empty()
    {
        labels.insert(gfd::MACHINE.to_string(), machine);
    }
    if let Some(clique) = view.clique.as_deref().map(label_value)
        && !clique.is_empty()
    {
        labels.insert(gfd::CLIQUE.to_string(), clique);
    }
    labels.insert(gfd::MIG_STRATEGY.to_string(), view.mig_strategy.clone());
    labels
}

/// A label value the way GFD writes it: spaces become '-', anything a label value cannot hold
/// is dropped, and it is cut to 63 characters.
pub fn label_value(s: &str) -> String {
    let cleaned: String = s
        .trim()
        .chars()
        .map(|c| if c == ' ' { '-' } else { c })
        .filter(|c| c.is_ascii_alphanumeric() || matches!(c, '-' | '_' | '.'))
        .take(63)
        .collect();
    cleaned
        .trim_matches(|c: char| !c.is_ascii_alphanumeric())
        .to_string()
}

/// GFD's family names by CUDA compute capability major (and minor, for Ada).
pub fn family_from_compute_capability((major, minor): (i32, i32)) -> Option<&'static str> {
    Some(match (major, minor) {
        (3, _) => "kepler",
        (5, _) => "maxwell",
        (6, _) => "pascal",
        (7, 0..=4) => "volta",
        (7, _) => "turing",
        (8, 9) => "ada-lovelace",
        (8, _) => "ampere",
        (9, _) => "hopper",
        (10 | 12, _) => "blackwell",
        _ => return None,
    })
}

/// Family from the NVML device name, for libraries that cannot report the compute capability.
pub fn family_from_name(model: &str) -> Option<&'static str> {
    let words: Vec<String> = model
        .to_ascii_uppercase()
        .split([' ', '-'])
        .map(str::to_string)
        .collect();
    let has = |prefix: &str| words.iter().any(|w| w.starts_with(prefix));
    let is = |w: &str| words.iter().any(|x| x == w);
    if has("GB2") || has("B200") || has("B100") || has("GB3") || has("B300") {
        Some("blackwell")
    } else if has("H100") || has("H200") || has("H800") || has("GH200") || has("H20") {
        Some("hopper")
    } else if is("L4") || has("L40") || is("L20") || is("ADA") {
        Some("ada-lovelace")
    } else if has("A100") || is("A10") || is("A30") || is("A40") || is("A16") || is("A2") {
        Some("ampere")
    } else if is("T4") {
        Some("turing")
    } else if has("V100") {
        Some("volta")
    } else if has("P100") || is("P40") || is("P4") {
        Some("pascal")
    } else {
        None
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn families_of_every_fixture_model() {
        for name in muster_api::machines::builtin_names() {
            let m = muster_api::machines::builtin(name).unwrap();
            assert_eq!(
                family_from_name(&m.model),
                Some(m.family.as_str()),
                "{name}"
            );
        }
        assert_eq!(family_from_compute_capability((8, 0)), Some("ampere"));
        assert_eq!(family_from_compute_capability((8, 9)), Some("ada-lovelace"));
        assert_eq!(family_from_compute_capability((9, 0)), Some("hopper"));
        assert_eq!(family_from_name("Some Future GPU"), None);
    }

    #[test]
    fn label_values_follow_gfd() {
        assert_eq!(
            label_value("NVIDIA A100-SXM4-80GB"),
            "NVIDIA-A100-SXM4-80GB"
        );
        assert_eq!(label_value("Tesla V100-SXM2-32GB"), "Tesla-V100-SXM2-32GB");
        assert_eq!(label_value(" DGX-1 \n"), "DGX-1");
        assert_eq!(label_value("A (B)"), "A-B");
        for name in muster_api::machines::builtin_names() {
            let m = muster_api::machines::builtin(name).unwrap();
            assert_eq!(label_value(&m.model), m.product, "{name}");
        }
    }
}
