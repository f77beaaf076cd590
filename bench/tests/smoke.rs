//! Runs `muster-bench smoke` (8 kwok nodes, each scheduler on a fresh cluster) and checks its
//! JSON: every scheduler binds every pod of four interleaved gangs that exactly fill the
//! cluster; the gang schedulers bind nothing of a gang that cannot fit while plain
//! kube-scheduler binds part of it (so the check can tell them apart); Muster never leaves a
//! gang partially placed. Coscheduling is included when `tests/tools/build-bench.sh` has built
//! it, and skipped with the reason printed otherwise.

use std::process::Command;

use serde_json::Value;

#[test]
fn smoke_scenario_runs_every_scheduler() {
    let out = tempfile::tempdir().expect("temp dir");
    let status = Command::new(env!("CARGO_BIN_EXE_muster-bench"))
        .args(["smoke", "--debug-extender", "--skip-unbuilt", "--out"])
        .arg(out.path())
        .status()
        .expect("running muster-bench");
    assert!(status.success(), "muster-bench smoke failed: {status}");
    let path = out.path().join("smoke.json");
    let text = std::fs::read_to_string(&path).expect("smoke.json written");
    let report: Value = serde_json::from_str(&text).expect("smoke.json is JSON");
    assert!(out.path().join("smoke.svg").is_file(), "smoke.svg written");

    for s in report["skipped"].as_array().into_iter().flatten() {
        println!("skipped {}: {}", s["scheduler"], s["reason"]);
        assert_eq!(
            s["scheduler"], "coscheduling",
            "only coscheduling may be skipped"
        );
    }
    let runs = report["runs"].as_array().expect("runs");
    let names: Vec<&str> = runs
        .iter()
        .filter_map(|r| r["scheduler"].as_str())
        .collect();
    for wanted in ["plain", "native", "muster"] {
        assert!(names.contains(&wanted), "{wanted} did not run: {names:?}");
    }
    for r in runs {
        let name = r["scheduler"].as_str().unwrap_or("?");
        assert_eq!(r["all_bound"], true, "{name} left pods unbound: {r}");
        assert_eq!(r["bound"], r["pods"], "{name}: {r}");
        assert_eq!(r["hold_released"], true, "{name}: {r}");
        let hold = r["hold_bound"].as_u64().expect("hold_bound");
        if name == "plain" {
            assert!(
                hold > 0,
                "plain kube-scheduler bound none of the oversized gang"
            );
        } else {
            assert_eq!(hold, 0, "{name} bound part of a gang that cannot fit");
        }
    }
    let muster = runs
        .iter()
        .find(|r| r["scheduler"] == "muster")
        .expect("muster run");
    assert_eq!(
        muster["max_partial_gangs"].as_f64(),
        Some(0.0),
        "Muster left a gang partially placed: {muster}"
    );
}
