//! Reading Philly traces: errors with line numbers, windows, and a run on the real trace when
//! `../shared/traces` is present.

mod common;

use muster_sim::workload::philly::{TraceWindow, parse_text};

const GOOD: &str = "timestamp,duration,num_gpus,gpu_time,cluster
2017-10-09 07:01:55,66.0,1,66.0,11cb48
2017-10-09 06:13:03,2951.0,8,23608.0,6214e9
2017-10-10 06:13:03,100.0,2,200.0,6214e9
";

fn window() -> TraceWindow {
    TraceWindow {
        time_scale: 1.0,
        ..TraceWindow::default()
    }
}

#[test]
fn rows_are_sorted_by_submission_and_windowed() {
    let w = parse_text("t.csv", GOOD, &window()).unwrap();
    let got: Vec<(u64, u32, &str)> = w
        .jobs
        .iter()
        .map(|j| (j.arrival, j.gpus, j.queue.as_str()))
        .collect();
    assert_eq!(
        got,
        vec![
            (0, 8, "vc-6214e9"),
            (2932, 1, "vc-11cb48"),
            (86400, 2, "vc-6214e9")
        ]
    );
    let (start, end) = TraceWindow::parse_range("1h..").unwrap();
    let later = parse_text(
        "t.csv",
        GOOD,
        &TraceWindow {
            start,
            end,
            ..window()
        },
    )
    .unwrap();
    assert_eq!(later.jobs.len(), 1);
    assert_eq!(later.jobs[0].arrival, 0, "arrivals restart at the window");
    let fast = parse_text(
        "t.csv",
        GOOD,
        &TraceWindow {
            time_scale: 0.5,
            max_jobs: Some(2),
            ..window()
        },
    )
    .unwrap();
    assert_eq!(fast.jobs.len(), 2);
    assert_eq!(fast.jobs[1].arrival, 1466);
}

#[test]
fn bad_rows_name_their_line() {
    let cases = [
        ("2017-10-09 07:01:55,66.0,one,66.0,11cb48", "num_gpus"),
        ("2017-10-09 07:01:55,-3,1,66.0,11cb48", "duration"),
        ("2017/10/09,66.0,1,66.0,11cb48", "timestamp"),
        ("2017-10-09 07:01:55,66.0,1", "columns"),
        ("2017-10-09 07:01:55,66.0,0,0,11cb48", "num_gpus"),
    ];
    for (row, what) in cases {
        let text = format!("{GOOD}{row}\n");
        let err = parse_text("t.csv", &text, &window())
            .unwrap_err()
            .to_string();
        assert!(err.starts_with("t.csv:5: "), "{err}");
        assert!(err.contains(what), "{err}");
        let skipped = parse_text(
            "t.csv",
            &text,
            &TraceWindow {
                skip_bad_rows: true,
                ..window()
            },
        )
        .unwrap();
        assert_eq!(skipped.jobs.len(), 3);
        assert!(skipped.source.contains("1 bad rows skipped"));
    }
    let err = parse_text("t.csv", "a,b\n1,2\n", &window()).unwrap_err();
    assert!(err.to_string().contains("unknown header"), "{err}");
}

#[test]
fn bad_rows_stop_the_cli_run_with_the_line_number() {
    let path = std::env::temp_dir().join(format!("muster-sim-bad-{}.csv", std::process::id()));
    std::fs::write(
        &path,
        format!("{GOOD}2017-10-09 07:01:55,x,1,66.0,11cb48\n"),
    )
    .unwrap();
    let args = common::args(&["--trace", path.to_str().unwrap()]);
    let err = muster_sim::run(&args, &indicatif::ProgressBar::hidden())
        .err()
        .unwrap()
        .to_string();
    std::fs::remove_file(&path).unwrap();
    assert!(err.contains(":5: duration"), "{err}");
}

#[test]
fn pollux_workload_samples_are_read_with_drawn_durations() {
    let text = "name,time,application,num_replicas,batch_size
cifar10-0,53,cifar10,6,2048
deepspeech2-2,326,deepspeech2,8,320
";
    let w = parse_text("w.csv", text, &window()).unwrap();
    assert_eq!(w.jobs.len(), 2);
    assert_eq!((w.jobs[1].arrival, w.jobs[1].gpus), (273, 8));
    assert!(w.jobs.iter().all(|j| j.duration >= 1));
    assert!(w.source.contains("durations drawn"));
}

/// Runs two days of the real Philly trace when `../shared/traces` is beside the project
/// (never committed); otherwise runs the synthetic workload and says so. 24 nodes, so that
/// the window starts on a busy cluster (64 empty nodes would not queue within two days).
#[test]
fn real_trace_window_or_synthetic_stand_in() {
    let dir = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("../../shared/traces");
    let trace = dir.join("philly-jobs.csv");
    let r = if trace.exists() {
        let path = trace.to_str().unwrap();
        let r = common::run(&["--trace", path, "--window", "40d..42d", "--nodes", "24"]);
        println!("used the real trace {}", trace.display());
        assert!(r.workload.source.contains("philly-jobs.csv"));
        assert!(r.workload.jobs > 500, "two days hold ~1,500 jobs");
        r
    } else {
        println!(
            "{} is absent: used the synthetic workload instead of the real trace",
            trace.display()
        );
        common::run(&["--jobs", "1500", "--nodes", "24"])
    };
    println!("{}", muster_sim::report::table::render(&r));
    for p in &r.policies {
        assert!(p.completed > 0, "{}", p.policy);
        assert!(p.allocation_ratio > 0.0 && p.allocation_ratio <= 1.0);
    }
}
