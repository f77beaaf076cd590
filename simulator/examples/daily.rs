//! A quick look at a run without the SVG: daily GPU allocation per policy, and queueing by
//! gang size. `cargo run --release -p muster-sim --example daily -- [muster-sim options]`.
use clap::Parser;
use std::collections::BTreeMap;

fn main() {
    let args = muster_sim::Args::parse();
    let r = match muster_sim::run(&args, &indicatif::ProgressBar::hidden()) {
        Ok(r) => r,
        Err(e) => {
            eprintln!("{e}");
            std::process::exit(1);
        }
    };
    let end = r
        .series
        .iter()
        .filter_map(|(_, s)| s.last().map(|x| x.0))
        .max()
        .unwrap_or(1);
    let days = (end / 86400 + 1) as usize;
    println!("daily GPU allocation (%):");
    for (name, s) in &r.series {
        let b = muster_sim::report::plot::bin(s, days as u64 * 86400, days);
        let v: Vec<String> = b
            .iter()
            .map(|x| format!("{:.0}", 100.0 * x / r.cluster.gpus as f64))
            .collect();
        println!("{name:7} {}", v.join(" "));
    }
    println!("average queueing (h) by gang size [jobs]:");
    for (name, outcomes) in &r.outcomes {
        let mut by: BTreeMap<u32, (f64, usize)> = BTreeMap::new();
        for o in outcomes {
            let j = &r.jobs[o.job];
            if let Some(s) = o.first_start {
                let e = by.entry(j.gpus).or_default();
                e.0 += (s - j.arrival) as f64 / 3600.0;
                e.1 += 1;
            }
        }
        let v: Vec<String> = by
            .iter()
            .map(|(g, (sum, n))| format!("{g}:{:.2}[{n}]", sum / *n as f64))
            .collect();
        println!("{name:7} {}", v.join(" "));
    }
}
