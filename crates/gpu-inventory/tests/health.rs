//! The XID health watcher against scripted fake-NVML events.

mod common;

use common::{FakeNvml, fixture_with_script};
use muster_gpu_inventory::{HealthCause, HealthEvent, WatchConfig};
use serde_json::json;
use std::sync::mpsc::Receiver;
use std::time::{Duration, Instant};

/// Script times are fixture seconds; 4x speed keeps tests short (events from 0.5 s real) yet well
/// clear of setup time on a loaded machine (events before registration are not delivered).
const SCALE: (&str, &str) = ("MUSTER_FAKE_NVML_TIME_SCALE", "4");

fn config() -> WatchConfig {
    WatchConfig {
        wait_timeout: Duration::from_millis(100),
        ..WatchConfig::default()
    }
}

/// Events until `pred` matches one (returned), failing after a deadline.
fn wait_for(
    rx: &Receiver<HealthEvent>,
    pred: impl Fn(&HealthEvent) -> bool,
) -> (HealthEvent, Vec<HealthEvent>) {
    let deadline = Instant::now() + Duration::from_secs(10);
    let mut seen = Vec::new();
    while let Some(left) = deadline.checked_duration_since(Instant::now()) {
        match rx.recv_timeout(left) {
            Ok(e) if pred(&e) => return (e, seen),
            Ok(e) => seen.push(e),
            Err(_) => break,
        }
    }
    panic!("no matching health event; saw {seen:?}");
}

#[test]
fn xid_79_makes_a_gpu_unhealthy_but_xid_13_does_not() {
    let fake = FakeNvml::new();
    // XID 13 (graphics engine exception, an application error) on GPU 1, then XID 79 (fallen off
    // the bus) on GPU 2; a marker XID on GPU 0 last to know both were processed.
    let script = json!([
        {"atSeconds": 2.0, "gpu": 1, "xid": 13},
        {"atSeconds": 4.0, "gpu": 2, "xid": 79},
        {"atSeconds": 6.0, "gpu": 0, "xid": 31}
    ]);
    let path = fake.file("xids.json", &fixture_with_script("dgx-a100", script));
    let inv = fake.inventory(path.to_str().unwrap(), &[SCALE]);
    let uuids = inv.uuids();
    let (watcher, rx) = inv.watch_health(config()).unwrap();

    let (last, before) = wait_for(&rx, |e| e.gpu_index == 0);
    assert_eq!(last.xid, Some(31));
    assert!(last.healthy, "XID 31 is an application error");
    assert_eq!(before.len(), 2, "{before:?}");
    assert_eq!(
        before[0],
        HealthEvent {
            gpu_index: 1,
            gpu_uuid: uuids[1].clone(),
            xid: Some(13),
            healthy: true,
            cause: HealthCause::Xid
        }
    );
    assert_eq!(
        before[1],
        HealthEvent {
            gpu_index: 2,
            gpu_uuid: uuids[2].clone(),
            xid: Some(79),
            healthy: false,
            cause: HealthCause::Xid
        }
    );

    let health = watcher.health();
    assert!(health[1].healthy && health[0].healthy);
    assert!(!health[2].healthy);
    assert_eq!(health[2].reason.as_deref(), Some("XID 79"));
    assert_eq!((health[1].xid_count, health[1].last_xid), (1, Some(13)));
    assert_eq!((health[2].xid_count, health[2].last_xid), (1, Some(79)));
    assert!(health.iter().skip(3).all(|h| h.healthy && h.xid_count == 0));

    let started = Instant::now();
    watcher.stop();
    assert!(
        started.elapsed() < Duration::from_secs(2),
        "stop took {:?}",
        started.elapsed()
    );
}

#[test]
fn a_lost_gpu_is_unhealthy_and_the_others_are_fine() {
    let fake = FakeNvml::new();
    let script = json!([{"atSeconds": 2.0, "gpu": 3, "lost": true}]);
    let path = fake.file("lost.json", &fixture_with_script("l4-pcie-2s", script));
    let inv = fake.inventory(path.to_str().unwrap(), &[SCALE]);
    let (watcher, rx) = inv.watch_health(config()).unwrap();

    let (event, _) = wait_for(&rx, |e| e.cause == HealthCause::GpuLost);
    assert_eq!(
        (event.gpu_index, event.healthy, event.xid),
        (3, false, None)
    );

    let sample = inv.sample().unwrap();
    for g in &sample.gpus {
        assert_eq!(g.lost, g.index == 3, "GPU {}", g.index);
        assert_eq!(g.sm_util_percent.is_some(), g.index != 3);
    }
    let snap = inv.snapshot().unwrap();
    assert!(!snap.gpus[3].health.is_healthy());
    assert_eq!(
        snap.gpus[3].uuid,
        inv.uuids()[3],
        "a lost GPU keeps its known UUID"
    );
    assert!(
        snap.gpus
            .iter()
            .filter(|g| g.index != 3)
            .all(|g| g.health.is_healthy())
    );
    let health = watcher.health();
    assert_eq!(health.iter().filter(|h| !h.healthy).count(), 1);
    watcher.stop();
}

#[test]
fn a_failing_event_wait_marks_every_gpu_unhealthy() {
    let fake = FakeNvml::new();
    let inv = fake.inventory(
        "dgx-h100",
        &[SCALE, ("MUSTER_FAKE_NVML_WAIT_ERROR_AFTER", "2")],
    );
    let (watcher, rx) = inv.watch_health(config()).unwrap();
    let mut unhealthy = std::collections::BTreeSet::new();
    while unhealthy.len() < 8 {
        let (e, _) = wait_for(&rx, |e| {
            matches!(e.cause, HealthCause::EventWaitFailed { .. })
        });
        assert!(!e.healthy);
        unhealthy.insert(e.gpu_index);
    }
    assert!(watcher.health().iter().all(|h| !h.healthy));
    watcher.stop();
}

#[test]
fn watcher_stops_promptly_when_dropped_and_inventory_reopens() {
    let fake = FakeNvml::new();
    let inv = fake.inventory("dgx1-v100", &[]);
    let (watcher, rx) = inv.watch_health(WatchConfig::default()).unwrap();
    let started = Instant::now();
    drop(watcher);
    assert!(started.elapsed() < Duration::from_millis(1500));
    assert!(
        rx.recv_timeout(Duration::from_millis(10)).is_err(),
        "no events without a script"
    );
    drop(inv);
    // NVML shut down with the last handle: a fresh open initialises again.
    assert_eq!(fake.inventory("dgx1-v100", &[]).gpu_count(), 8);
}
