//! `muster-sim`: the trace simulator (Muster's main job, `make run`).

use clap::Parser;
use indicatif::{ProgressBar, ProgressStyle};
use muster_sim::{Args, report};
use std::io::Write;
use std::process::ExitCode;

fn main() -> ExitCode {
    tracing_subscriber::fmt()
        .with_env_filter(
            tracing_subscriber::EnvFilter::try_from_default_env()
                .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("warn")),
        )
        .with_writer(std::io::stderr)
        .init();
    let args = Args::parse();
    // indicatif draws only on a terminal (stderr); piped runs stay clean.
    let progress = ProgressBar::new(0);
    if let Ok(style) = ProgressStyle::with_template(
        "{spinner} simulating {wide_bar} {pos}/{len} events ({elapsed}, eta {eta})",
    ) {
        progress.set_style(style);
    }
    let began = std::time::Instant::now();
    let results = match muster_sim::run(&args, &progress) {
        Ok(r) => r,
        Err(e) => {
            eprintln!("muster-sim: {e}");
            return ExitCode::FAILURE;
        }
    };
    // A closed pipe (`| head`) is not an error worth a panic.
    let mut out = std::io::stdout().lock();
    let _ = write!(out, "{}", report::table::render(&results));
    let queues = report::queues::render(&results);
    if !queues.is_empty() {
        let _ = write!(out, "\n{queues}");
    }
    let _ = writeln!(out, "\n{}", report::table::timings(&results));
    match report::write(&args.out, &results) {
        Ok(paths) => {
            let shown: Vec<String> = paths.iter().map(|p| p.display().to_string()).collect();
            let _ = writeln!(
                out,
                "wrote {} in {:.1} s",
                shown.join(", "),
                began.elapsed().as_secs_f64()
            );
            ExitCode::SUCCESS
        }
        Err(e) => {
            eprintln!("muster-sim: {e}");
            ExitCode::FAILURE
        }
    }
}
