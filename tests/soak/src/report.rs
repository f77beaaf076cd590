//! The outcome of a run: printed as a table, written as JSON.

use std::collections::BTreeMap;
use std::fmt::Write as _;
use std::path::Path;

use serde::Serialize;
use serde_json::Value;

use crate::SoakConfig;
use crate::checker::CheckStats;
use crate::extender::ExtenderStats;
use crate::faults::FaultStats;
use crate::state::{Findings, Shared};
use crate::workload::WorkloadStats;

#[derive(Clone, Debug, Serialize)]
pub struct Kind {
    pub count: u64,
    pub examples: Vec<Value>,
}

#[derive(Clone, Debug, Serialize)]
pub struct Summary {
    pub duration_secs: u64,
    pub wall_secs: f64,
    pub nodes: u32,
    pub fixture: String,
    pub seed: u64,
    pub cluster_dir: String,
    pub workload: WorkloadStats,
    pub faults: FaultStats,
    pub checks: CheckStats,
    pub extender: ExtenderStats,
    pub violations: BTreeMap<String, Kind>,
    pub warnings: BTreeMap<String, Kind>,
}

fn kinds(f: Findings) -> BTreeMap<String, Kind> {
    f.by_kind
        .into_iter()
        .map(|(k, (count, examples))| (k, Kind { count, examples }))
        .collect()
}

impl Summary {
    pub fn build(
        config: &SoakConfig,
        cluster_dir: &Path,
        workload: WorkloadStats,
        faults: FaultStats,
        checks: CheckStats,
        extender: ExtenderStats,
        shared: &Shared,
    ) -> Summary {
        let (violations, warnings) = shared.take_findings();
        Summary {
            duration_secs: config.duration.as_secs(),
            wall_secs: (shared.started.elapsed().as_secs_f64() * 10.0).round() / 10.0,
            nodes: config.nodes,
            fixture: config.fixture.clone(),
            seed: config.seed,
            cluster_dir: cluster_dir.display().to_string(),
            workload,
            faults,
            checks,
            extender,
            violations: kinds(violations),
            warnings: kinds(warnings),
        }
    }

    pub fn violation_count(&self) -> u64 {
        self.violations.values().map(|k| k.count).sum()
    }

    pub fn write_json(&self, path: &Path) -> anyhow::Result<()> {
        use anyhow::Context as _;
        if let Some(dir) = path.parent().filter(|d| !d.as_os_str().is_empty()) {
            std::fs::create_dir_all(dir).with_context(|| format!("creating {}", dir.display()))?;
        }
        let text = serde_json::to_string_pretty(self)?;
        std::fs::write(path, text + "\n").with_context(|| format!("writing {}", path.display()))
    }

    /// The human-readable summary.
    pub fn render(&self) -> String {
        let mut s = String::new();
        let w = &self.workload;
        let c = &self.checks;
        let _ = writeln!(
            s,
            "muster-soak: {} s ({} s wall), {} x {} nodes, seed {}",
            self.duration_secs, self.wall_secs, self.nodes, self.fixture, self.seed
        );
        let _ = writeln!(
            s,
            "  gangs: {} created ({} Indexed Jobs, {} trickled, {} elastic), {} bound, {} deleted after running, {} deleted while pending",
            w.gangs_created,
            w.job_gangs,
            w.trickle_gangs,
            w.elastic_gangs,
            c.gangs_bound,
            w.gangs_deleted_after_running,
            w.gangs_deleted_while_pending
        );
        let _ = writeln!(
            s,
            "  pods: {} created by the soak ({} replacements), {} seen in all, at most {} live and bound; load {:.2}..{:.2} (mean {:.2})",
            w.pods_created,
            w.replacements,
            c.pods_seen,
            c.max_live_bound_pods,
            w.load_min,
            w.load_max,
            w.load_mean
        );
        let injected: Vec<String> = self
            .faults
            .injected
            .iter()
            .map(|(k, n)| format!("{k} {n}"))
            .collect();
        let _ = writeln!(s, "  faults: {}", injected.join(", "));
        let undone: Vec<String> = self
            .faults
            .undone
            .iter()
            .map(|(k, n)| format!("{k} {n}"))
            .collect();
        let _ = writeln!(
            s,
            "  follow-ups: {}; {} skipped (nothing to act on), {} errors",
            undone.join(", "),
            self.faults.skipped,
            self.faults.errors
        );
        let _ = writeln!(
            s,
            "  checks: {} pod events, {} GPU-exclusivity, {} partial-gang, {} liveness ({} ticks, {} watch restarts); {} partial gangs exempted (soak-disturbed)",
            c.pod_events,
            c.gpu_exclusivity_checks,
            c.partial_gang_checks,
            c.liveness_checks,
            c.ticks,
            c.watch_restarts,
            c.partial_exempted
        );
        let r = &self.extender;
        let _ = writeln!(
            s,
            "  extender: {} starts, RSS KiB first {:?} last {:?} max {:?} growth {:?}; log: {} preemptions, {} evictions, {} plans dropped, {} WARN, {} ERROR",
            r.extender_starts,
            r.first_kib,
            r.last_kib,
            r.max_kib,
            r.growth,
            r.log_preemptions,
            r.log_evictions,
            r.log_plans_dropped,
            r.log_warnings,
            r.log_errors
        );
        for (title, map) in [
            ("VIOLATIONS", &self.violations),
            ("warnings", &self.warnings),
        ] {
            if map.is_empty() {
                let _ = writeln!(s, "  {title}: none");
                continue;
            }
            let _ = writeln!(s, "  {title}:");
            for (kind, k) in map {
                let _ = writeln!(s, "    {kind}: {}", k.count);
                for e in &k.examples {
                    let _ = writeln!(s, "      {e}");
                }
            }
        }
        s
    }
}
