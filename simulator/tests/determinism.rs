//! Same options and seed give the same results (timings aside), whatever the thread schedule.

mod common;

#[test]
fn same_seed_same_json() {
    let flags = ["--jobs", "1500", "--nodes", "16", "--seed", "11"];
    let a = common::run(&flags);
    let b = common::run(&flags);
    assert_eq!(
        common::deterministic_json(&a),
        common::deterministic_json(&b)
    );
    let mut seq = flags.to_vec();
    seq.push("--sequential");
    let c = common::run(&seq);
    assert_eq!(
        common::deterministic_json(&a),
        common::deterministic_json(&c)
    );
    let other = common::run(&["--jobs", "1500", "--nodes", "16", "--seed", "12"]);
    assert_ne!(
        common::deterministic_json(&a),
        common::deterministic_json(&other)
    );
}

#[test]
fn json_and_svg_are_written() {
    let dir = std::env::temp_dir().join(format!("muster-sim-test-{}", std::process::id()));
    let r = common::run(&["--jobs", "300", "--nodes", "8"]);
    let paths = muster_sim::report::write(&dir, &r).unwrap();
    let json: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(&paths[0]).unwrap()).unwrap();
    assert_eq!(json["policies"].as_array().unwrap().len(), 5);
    assert!(json["timings"].is_array());
    let svg = std::fs::read_to_string(&paths[1]).unwrap();
    assert!(svg.starts_with("<svg") && svg.trim_end().ends_with("</svg>"));
    assert_eq!(svg.matches("<polyline").count(), 5, "one line per policy");
    let csv = std::fs::read_to_string(&paths[2]).unwrap();
    let mut lines = csv.lines();
    assert!(lines.next().unwrap().ends_with("greedy_evictions"));
    assert_eq!(lines.count(), r.workload.jobs);
    std::fs::remove_dir_all(&dir).unwrap();
}
