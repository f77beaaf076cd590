//! A short soak (16 nodes, 90 s, fixed seed, every fault kind) that fails on any violation of
//! Muster's promises. `muster-soak` runs the same entry point for as long as you like.

use std::time::Duration;

use muster_soak::SoakConfig;

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn short_soak_finds_no_violation() {
    let _ = tracing_subscriber::fmt()
        .with_env_filter(
            tracing_subscriber::EnvFilter::try_from_default_env()
                .unwrap_or_else(|_| "warn,kube_client=off,muster_soak=info".into()),
        )
        .with_test_writer()
        .try_init();
    let mut config = SoakConfig::new(16, Duration::from_secs(90), 7);
    // About 20 faults, every kind at least twice.
    config.fault_interval = Duration::from_secs(4);
    // Shorter than the binary's defaults so that liveness is judged within 90 s; still far
    // beyond what placing a fitting gang takes (seconds).
    config.stuck = Duration::from_secs(60);
    config.fit_sustain = Duration::from_secs(30);
    // A prebuilt extender (e.g. a release build); default: `cargo build -p muster-scheduler`.
    config.extender_bin = std::env::var_os("MUSTER_SOAK_EXTENDER_BIN").map(Into::into);
    let summary = muster_soak::run(config).await.expect("the soak ran");
    let text = summary.render();
    println!("{text}");
    let out = std::path::Path::new(env!("CARGO_TARGET_TMPDIR")).join("short-soak-summary.json");
    summary.write_json(&out).expect("writing the summary");
    println!("summary written to {}", out.display());
    assert!(
        summary.faults.injected.len() >= 6,
        "most fault kinds should have been injected: {:?}",
        summary.faults.injected
    );
    assert!(
        summary.checks.gangs_bound > 0,
        "no gang was bound at all:\n{text}"
    );
    assert_eq!(summary.violation_count(), 0, "violations found:\n{text}");
}
