//! Metrics samples follow the fixture script.

mod common;

use common::{FakeNvml, fixture_with_script};
use serde_json::json;
use std::time::{Duration, Instant};

#[test]
fn idle_sample_reports_baseline_readings() {
    let inv = FakeNvml::new().inventory("dgx-a100", &[]);
    let sample = inv.sample().unwrap();
    assert_eq!(sample.gpus.len(), 8);
    for g in &sample.gpus {
        assert!(!g.lost);
        assert_eq!(g.sm_util_percent, Some(0));
        assert_eq!(g.memory_used_mib, Some(0));
        assert_eq!(g.memory_free_mib, Some(81920));
        assert_eq!(g.power_watts, Some(62.0));
        assert!(g.temperature_c.is_some() && g.sm_clock_mhz.is_some());
        assert!(g.processes.is_empty());
    }
    assert_eq!(sample.gpus[5].uuid, inv.uuids()[5]);
}

#[test]
fn scripted_load_shows_up_in_the_sample() {
    let fake = FakeNvml::new();
    let script = json!([{
        "atSeconds": 1.0, "gpu": 2, "utilizationPercent": 87, "memoryUtilizationPercent": 41,
        "memoryUsedMiB": 20480, "temperatureC": 61, "powerWatts": 231,
        "processes": [{"pid": 4242, "usedMemoryMiB": 20000}, {"pid": 4343, "usedMemoryMiB": 480}]
    }]);
    let path = fake.file("load.json", &fixture_with_script("dgx1-v100", script));
    let inv = fake.inventory(
        path.to_str().unwrap(),
        &[("MUSTER_FAKE_NVML_TIME_SCALE", "20")],
    );
    let before = inv.sample().unwrap();
    assert_eq!(before.gpus[2].sm_util_percent, Some(0));
    let deadline = Instant::now() + Duration::from_secs(5);
    let busy = loop {
        let s = inv.sample().unwrap();
        if s.gpus[2].sm_util_percent == Some(87) || Instant::now() > deadline {
            break s;
        }
        std::thread::sleep(Duration::from_millis(10));
    };
    let g = &busy.gpus[2];
    assert_eq!(g.sm_util_percent, Some(87));
    assert_eq!(g.memory_util_percent, Some(41));
    assert_eq!(g.memory_used_mib, Some(20480));
    assert_eq!(g.memory_free_mib, Some(32768 - 20480));
    assert_eq!(g.temperature_c, Some(61));
    assert_eq!(g.power_watts, Some(231.0));
    assert_eq!(g.processes.len(), 2);
    assert_eq!(
        (g.processes[0].pid, g.processes[0].used_memory_mib),
        (4242, Some(20000))
    );
    assert!(g.energy_mj.unwrap() > before.gpus[2].energy_mj.unwrap());
    assert!(
        g.sm_clock_mhz > before.gpus[2].sm_clock_mhz,
        "clocks rise under load"
    );
    assert_eq!(
        busy.gpus[3].sm_util_percent,
        Some(0),
        "other GPUs unaffected"
    );
    let json = serde_json::to_value(&busy).unwrap();
    assert_eq!(json["gpus"][2]["memoryUsedMiB"], 20480);
    assert_eq!(json["gpus"][2]["smUtilPercent"], 87);
}
