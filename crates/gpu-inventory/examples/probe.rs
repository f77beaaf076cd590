//! Opens NVML, prints the GPUs and an `nvidia-smi topo -m`-style matrix, and measures the cost of
//! open / snapshot / sample.
//!
//! ```text
//! cargo run --release -p muster-gpu-inventory --example probe -- --fixture dgx-a100
//! cargo run --release -p muster-gpu-inventory --example probe -- --lib /usr/lib/x86_64-linux-gnu/libnvidia-ml.so.1
//! ```
//! `--fixture` loads the fake NVML built beside this binary; `--node NAME` derives per-node UUIDs;
//! `--samples N` times N metrics samples; `--json` prints the snapshot and a sample as JSON;
//! `--soak SECS` then runs the health watcher plus one sample a second, like the agent, and
//! reports the CPU time and peak RSS of that period.

use muster_gpu_inventory::{Discovery, Inventory, NodeInventory};
use std::path::PathBuf;
use std::time::{Duration, Instant};

struct Args {
    fixture: Option<String>,
    node: Option<String>,
    lib: Option<PathBuf>,
    samples: u32,
    json: bool,
    soak_secs: u64,
}

fn parse_args() -> Result<Args, String> {
    let mut args = Args {
        fixture: None,
        node: None,
        lib: None,
        samples: 100,
        json: false,
        soak_secs: 0,
    };
    let mut it = std::env::args().skip(1);
    while let Some(flag) = it.next() {
        let mut value = || it.next().ok_or_else(|| format!("{flag} needs a value"));
        match flag.as_str() {
            "--fixture" => args.fixture = Some(value()?),
            "--node" => args.node = Some(value()?),
            "--lib" => args.lib = Some(PathBuf::from(value()?)),
            "--samples" => {
                args.samples = value()?.parse().map_err(|e| format!("--samples: {e}"))?
            }
            "--json" => args.json = true,
            "--soak" => args.soak_secs = value()?.parse().map_err(|e| format!("--soak: {e}"))?,
            other => return Err(format!("unknown argument {other}")),
        }
    }
    Ok(args)
}

/// `target/<profile>/{deps/,}libmuster_fake_nvml.so` next to this example binary, newest first.
fn fake_lib() -> Option<PathBuf> {
    let exe = std::env::current_exe().ok()?;
    let profile = exe.parent()?.parent()?;
    [
        profile.join("libmuster_fake_nvml.so"),
        profile.join("deps/libmuster_fake_nvml.so"),
    ]
    .into_iter()
    .filter_map(|p| Some((std::fs::metadata(&p).ok()?.modified().ok()?, p)))
    .max()
    .map(|(_, p)| p)
}

/// (current, peak) resident set size in KiB, from /proc.
fn rss_kib() -> (u64, u64) {
    let status = std::fs::read_to_string("/proc/self/status").unwrap_or_default();
    let field = |name: &str| {
        status
            .lines()
            .find_map(|l| l.strip_prefix(name))
            .and_then(|v| v.trim().trim_end_matches("kB").trim().parse().ok())
            .unwrap_or(0)
    };
    (field("VmRSS:"), field("VmHWM:"))
}

/// On-CPU time of this process's live threads, in ns precision (`/proc/self/task/*/schedstat`;
/// `/proc/self/stat` counts 10 ms ticks, too coarse for a sampler this cheap).
fn cpu_time() -> Duration {
    let Ok(tasks) = std::fs::read_dir("/proc/self/task") else {
        return Duration::ZERO;
    };
    let ns: u64 = tasks
        .filter_map(|t| std::fs::read_to_string(t.ok()?.path().join("schedstat")).ok())
        .filter_map(|s| s.split_whitespace().next()?.parse::<u64>().ok())
        .sum();
    Duration::from_nanos(ns)
}

fn print_topology(snap: &NodeInventory) {
    let n = snap.gpus.len();
    print!("{:<8}", "");
    for j in 0..n {
        print!("{:<7}", format!("GPU{j}"));
    }
    println!("NUMA");
    let rows = snap.links.to_rows();
    for (i, row) in rows.iter().enumerate() {
        print!("{:<8}", format!("GPU{i}"));
        for cell in row {
            print!("{cell:<7}");
        }
        println!(
            "{}",
            snap.gpus[i]
                .numa_node
                .map_or("N/A".to_string(), |n| n.to_string())
        );
    }
}

fn main() {
    if let Err(e) = run() {
        eprintln!("probe: {e}");
        std::process::exit(1);
    }
}

fn run() -> Result<(), String> {
    let args = parse_args()?;
    let lib = match (&args.lib, &args.fixture) {
        (Some(lib), _) => Some(lib.clone()),
        (None, Some(_)) => {
            Some(fake_lib().ok_or("fake NVML not built: cargo build -p muster-fake-nvml")?)
        }
        (None, None) => None,
    };
    // SAFETY: single-threaded here; the fake reads these at nvmlInit, below.
    unsafe {
        if let Some(f) = &args.fixture {
            std::env::set_var("MUSTER_FAKE_NVML_FIXTURE", f);
        }
        if let Some(n) = &args.node {
            std::env::set_var("MUSTER_FAKE_NVML_NODE", n);
        }
    }
    let rss_before = rss_kib();
    let t0 = Instant::now();
    let inv = match Inventory::open(lib.as_deref()).map_err(|e| e.to_string())? {
        Discovery::Ready(inv) => inv,
        Discovery::NoDriver { reason } => {
            println!("no GPUs: {reason}");
            return Ok(());
        }
    };
    let t_open = t0.elapsed();
    let t1 = Instant::now();
    let snap = inv.snapshot().map_err(|e| e.to_string())?;
    let t_snap = t1.elapsed();
    let t2 = Instant::now();
    let sample = inv.sample().map_err(|e| e.to_string())?;
    let t_sample = t2.elapsed();
    let t3 = Instant::now();
    for _ in 0..args.samples {
        inv.sample().map_err(|e| e.to_string())?;
    }
    let t_many = t3.elapsed();
    let rss = rss_kib();

    if args.json {
        let out = serde_json::json!({ "inventory": snap, "sample": sample });
        println!(
            "{}",
            serde_json::to_string_pretty(&out).map_err(|e| e.to_string())?
        );
    } else {
        println!(
            "driver {}  CUDA {}",
            snap.driver_version,
            snap.cuda_version.as_deref().unwrap_or("?")
        );
        for g in &snap.gpus {
            let m = &sample.gpus[g.index as usize];
            println!(
                "GPU{} {} {} {} MiB  bus {}  util {}%  {}C  {:.0}W  MIG {:?}{}",
                g.index,
                g.model,
                g.uuid,
                g.memory_total_mib,
                g.pci_bus_id,
                m.sm_util_percent.unwrap_or(0),
                m.temperature_c.unwrap_or(0),
                m.power_watts.unwrap_or(0.0),
                g.mig.mode,
                if g.mig.instances.is_empty() {
                    String::new()
                } else {
                    format!(" x{}", g.mig.instances.len())
                },
            );
        }
        println!();
        print_topology(&snap);
    }
    let per_sample = t_many.checked_div(args.samples.max(1)).unwrap_or_default();
    eprintln!();
    let lib_name = lib
        .as_deref()
        .map_or_else(|| "default".to_string(), |p| p.display().to_string());
    eprintln!("lib               {lib_name}");
    eprintln!("open (init+topo)  {t_open:?}");
    eprintln!("snapshot          {t_snap:?}");
    eprintln!("first sample      {t_sample:?}");
    eprintln!("sample (mean/{})  {per_sample:?}", args.samples);
    eprintln!("rss before open   {} KiB", rss_before.0);
    eprintln!("rss now / peak    {} / {} KiB", rss.0, rss.1);
    if args.soak_secs > 0 {
        soak(&inv, args.soak_secs)?;
    }
    Ok(())
}

/// The agent's steady state: watcher thread + one snapshot-free sample per second.
fn soak(inv: &Inventory, secs: u64) -> Result<(), String> {
    let (watcher, _events) = inv
        .watch_health(muster_gpu_inventory::WatchConfig::default())
        .map_err(|e| e.to_string())?;
    let cpu0 = cpu_time();
    let start = Instant::now();
    for tick in 1..=secs {
        inv.sample().map_err(|e| e.to_string())?;
        let next = Duration::from_secs(tick);
        std::thread::sleep(next.saturating_sub(start.elapsed()));
    }
    let cpu = cpu_time().saturating_sub(cpu0);
    let wall = start.elapsed();
    watcher.stop();
    let pct = 100.0 * cpu.as_secs_f64() / wall.as_secs_f64();
    eprintln!(
        "soak {wall:.1?}: cpu {cpu:?} ({pct:.2}% of a core), peak rss {} KiB",
        rss_kib().1
    );
    Ok(())
}
