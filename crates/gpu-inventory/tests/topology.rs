//! Every machine fixture through the fake NVML: the computed link matrix is the fixture's
//! `nvidia-smi topo -m`, and the inventory reports the fixture's identity.

mod common;

use common::FakeNvml;
use muster_api::machines::{builtin, builtin_names};
use muster_api::{Link, PcieLevel};
use muster_gpu_inventory::{GpuHealth, MigMode};

fn check_fixture(name: &str) {
    let spec = builtin(name).unwrap();
    let fake = FakeNvml::new();
    let inv = fake.inventory(name, &[]);
    let snap = inv.snapshot().unwrap();
    assert_eq!(
        snap.links,
        spec.topology,
        "{name}: link matrix\n{:?}",
        snap.links.to_rows()
    );
    assert_eq!(snap.gpu_count as usize, spec.gpus.len());
    assert_eq!(snap.driver_version, spec.driver_version);
    assert_eq!(
        snap.cuda_version.as_deref(),
        Some(spec.cuda_version.as_str())
    );
    for (gpu, want) in snap.gpus.iter().zip(&spec.gpus) {
        assert_eq!(gpu.index, want.index);
        assert_eq!(gpu.uuid, want.uuid);
        assert_eq!(gpu.model, spec.model);
        assert_eq!(gpu.memory_total_mib, spec.memory_mib);
        assert_eq!(gpu.pci_bus_id, want.pci_bus_id.to_uppercase());
        assert_eq!(gpu.numa_node, Some(want.numa_node));
        assert_eq!(gpu.power_limit_watts, Some(spec.power_limit_watts));
        assert_eq!(gpu.health, GpuHealth::Healthy);
    }
}

#[test]
fn every_builtin_fixture_round_trips() {
    for name in builtin_names() {
        check_fixture(name);
    }
}

#[test]
fn dgx1_is_a_hybrid_cube_mesh_with_sys_pairs() {
    let inv = FakeNvml::new().inventory("dgx1-v100", &[]);
    let m = inv.links();
    assert_eq!(m.link(0, 1), Link::NvLink(1));
    assert_eq!(m.link(0, 3), Link::NvLink(2));
    assert_eq!(m.link(0, 4), Link::NvLink(2));
    assert_eq!(m.link(0, 5), Link::Pcie(PcieLevel::Sys));
    assert_eq!(m.link(3, 7), Link::NvLink(1));
}

#[test]
fn nvswitch_boxes_are_all_to_all() {
    for (name, n) in [("dgx-a100", 12), ("dgx-h100", 18), ("gb200-nvl72", 18)] {
        let inv = FakeNvml::new().inventory(name, &[]);
        let m = inv.links();
        for i in 0..m.size() {
            for j in (0..m.size()).filter(|&j| j != i) {
                assert_eq!(m.link(i, j), Link::NvLink(n), "{name} {i}-{j}");
            }
        }
    }
    assert_eq!(FakeNvml::new().inventory("gb200-nvl72", &[]).gpu_count(), 4);
}

#[test]
fn pcie_box_reports_pix_node_sys() {
    let inv = FakeNvml::new().inventory("l4-pcie-2s", &[]);
    let m = inv.links();
    assert_eq!(m.link(0, 1), Link::Pcie(PcieLevel::Pix));
    assert_eq!(m.link(0, 2), Link::Pcie(PcieLevel::Node));
    assert_eq!(m.link(0, 4), Link::Pcie(PcieLevel::Sys));
    let snap = inv.snapshot().unwrap();
    assert!(
        snap.gpus.iter().all(|g| g.mig.mode == MigMode::Unsupported),
        "L4 has no MIG"
    );
}

#[test]
fn mig_mode_and_instances_are_reported() {
    let inv = FakeNvml::new().inventory("a100-pcie-mig", &[]);
    let snap = inv.snapshot().unwrap();
    let (g0, g1) = (&snap.gpus[0], &snap.gpus[1]);
    assert_eq!(g0.mig.mode, MigMode::Enabled);
    assert_eq!(g0.mig.instances.len(), 7);
    assert!(
        g0.mig
            .instances
            .iter()
            .all(|m| m.uuid.starts_with("MIG-") && m.memory_mib == 10 * 1024)
    );
    assert!(
        g0.mig.instances[0].name.ends_with("MIG 1g.10gb"),
        "{}",
        g0.mig.instances[0].name
    );
    assert_eq!(g1.mig.mode, MigMode::Disabled);
    assert!(g1.mig.instances.is_empty());
    assert_eq!(snap.links.link(0, 1), Link::NvLink(12));
}

#[test]
fn node_name_derives_the_scheduler_uuids() {
    let inv = FakeNvml::new().inventory("dgx-a100", &[("MUSTER_FAKE_NVML_NODE", "kwok-node-7")]);
    let want = builtin("dgx-a100").unwrap().for_node("kwok-node-7");
    let got = inv.uuids();
    assert_eq!(
        got,
        want.gpus.iter().map(|g| g.uuid.clone()).collect::<Vec<_>>()
    );
}

#[test]
fn snapshot_serializes_camel_case_with_topo_rows() {
    let inv = FakeNvml::new().inventory("a100-pcie-mig", &[]);
    let json = serde_json::to_value(inv.snapshot().unwrap()).unwrap();
    assert_eq!(json["gpus"][0]["pciBusId"], "00000000:17:00.0");
    assert_eq!(json["gpus"][0]["memoryTotalMiB"], 81920);
    assert_eq!(json["gpus"][0]["mig"]["mode"], "enabled");
    assert_eq!(
        json["links"],
        serde_json::json!([["X", "NV12"], ["NV12", "X"]])
    );
}
