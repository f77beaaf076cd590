//! `make demo`, non-interactively: `muster-cluster demo --once` brings Muster up whole (control
//! plane, kube-scheduler's `muster` profile, extender, node agent and device plugin per kwok node
//! on the fake NVML), submits the examples with the real kubectl and exits. What it prints must
//! show the gangs bound, the waiting one explained, a whole-gang preemption and the export line.

mod muster;

use std::process::Command;

/// Builds (a no-op when fresh) everything the demo runs, next to `muster-cluster`.
fn build_demo() -> std::path::PathBuf {
    let status = Command::new(env!("CARGO"))
        .args(["build", "-q"])
        .args(["-p", "muster-testcluster", "-p", "muster-scheduler"])
        .args(["-p", "muster-node-agent", "-p", "muster-device-plugin"])
        .args(["-p", "kubectl-muster", "-p", "muster-fake-nvml"])
        .current_dir(muster::repo_root())
        .status()
        .expect("running cargo build");
    assert!(
        status.success(),
        "cargo build of the demo's binaries failed"
    );
    muster::workspace_binary("muster-testcluster", "muster-cluster")
}

/// The output from the line `$ kubectl <command>...`, up to the next command.
fn section<'a>(out: &'a str, command: &str) -> &'a str {
    let start = out
        .find(&format!("$ kubectl {command}"))
        .unwrap_or_else(|| panic!("no `kubectl {command}` in the demo's output:\n{out}"));
    let rest = &out[start..];
    let end = rest[1..].find("\n$ kubectl").map_or(rest.len(), |i| i + 1);
    &rest[..end]
}

#[test]
fn make_demo_runs_muster_whole_and_says_how_to_drive_it() {
    let bin = build_demo();
    let out = Command::new(&bin)
        .args(["demo", "--once"])
        .output()
        .expect("running muster-cluster demo");
    let stdout = String::from_utf8_lossy(&out.stdout).into_owned();
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(
        out.status.success(),
        "demo failed: {}\n{stdout}\n{stderr}",
        out.status
    );
    println!("{stdout}");

    // Three kwok nodes of mixed shapes, each with its agent and device plugin.
    for node in ["dgx-a100-0", "dgx1-v100-0", "l4-pcie-2s-0"] {
        assert!(
            section(&stdout, "muster top nodes").contains(node),
            "{stdout}"
        );
    }
    // The gangs that run are Running on nodes, their pods allocated by the device plugins.
    let jobs = section(&stdout, "muster top jobs");
    let row = |name: &str| {
        jobs.lines()
            .find(|l| l.starts_with(&format!("{name} ")))
            .unwrap_or_else(|| panic!("no {name} in top jobs:\n{jobs}"))
            .to_string()
    };
    assert!(row("urgent-train").contains("Running"), "{jobs}");
    assert!(row("urgent-train").contains("2/2/2"), "{jobs}");
    assert!(row("llm-finetune").contains("Running"), "{jobs}");
    // The one that waits holds nothing, and explain says it waits for capacity.
    assert!(row("pretrain").contains("Pending"), "{jobs}");
    assert!(row("pretrain").contains("0/16"), "{jobs}");
    let explain = section(&stdout, "muster explain pretrain");
    assert!(explain.contains("waiting (capacity)"), "{explain}");
    // A lower-priority gang was preempted whole by the urgent one.
    let events = section(&stdout, "get events --field-selector reason=Preempted");
    assert!(
        events.contains("preempted whole by higher-priority gang default/urgent-train"),
        "{events}"
    );
    let pods = section(&stdout, "get pods");
    let running: Vec<&str> = pods.lines().filter(|l| l.contains(" Running ")).collect();
    assert_eq!(
        running.len(),
        4,
        "urgent-train and llm-finetune run:\n{pods}"
    );
    assert!(
        running.iter().all(|l| l.trim_end().ends_with("allocated")),
        "the device plugins allocated every running pod:\n{pods}"
    );
    // kubectl shows the PodGroup CRD's printer columns.
    let groups = section(&stdout, "get podgroups");
    assert!(
        groups.contains("MIN   RUNNING   PHASE     QUEUE"),
        "{groups}"
    );
    // The one line to drive the cluster, naming a kubeconfig and a PATH with both binaries.
    let export = stdout
        .lines()
        .find(|l| l.trim_start().starts_with("export KUBECONFIG="))
        .unwrap_or_else(|| panic!("no export line:\n{stdout}"));
    assert!(
        export.contains(" PATH=") && export.ends_with(":$PATH"),
        "{export}"
    );
}
