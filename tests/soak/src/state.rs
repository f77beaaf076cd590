//! What the loops tell each other: which gangs the soak disturbed or retired, which GPUs it
//! marked unhealthy, whether an extender restart is deliberate, and the violations found.

use std::collections::{BTreeMap, HashMap, HashSet};
use std::sync::Mutex;
use std::time::Instant;

use serde_json::Value;

/// How many examples of each violation kind are kept.
pub const MAX_EXAMPLES: usize = 10;

#[derive(Debug, Default)]
pub struct Findings {
    /// kind -> (count, first examples).
    pub by_kind: BTreeMap<String, (u64, Vec<Value>)>,
}

impl Findings {
    pub fn add(&mut self, kind: &str, example: Value) {
        let entry = self.by_kind.entry(kind.to_string()).or_default();
        entry.0 += 1;
        if entry.1.len() < MAX_EXAMPLES {
            entry.1.push(example);
        }
    }

    pub fn total(&self) -> u64 {
        self.by_kind.values().map(|(n, _)| n).sum()
    }
}

#[derive(Debug, Default)]
struct Inner {
    /// Gang -> when the soak deleted one of its members, or a node one of them was on or
    /// headed for.
    disturbed: HashMap<String, Vec<Instant>>,
    /// Gangs the workload deleted (or is deleting) on purpose.
    retired: HashSet<String>,
    /// GPU UUID -> when the soak marked it unhealthy (removed when it is healthy again).
    unhealthy: HashMap<String, Instant>,
    /// Gang -> when its minimum was first bound at once (set by the checker).
    reached_min: HashMap<String, Instant>,
    extender_restarting: bool,
    violations: Findings,
    warnings: Findings,
}

/// Shared between the workload, the fault injector, the extender monitor and the checker.
#[derive(Debug)]
pub struct Shared {
    pub started: Instant,
    inner: Mutex<Inner>,
}

impl Default for Shared {
    fn default() -> Self {
        Shared::new()
    }
}

impl Shared {
    pub fn new() -> Shared {
        Shared {
            started: Instant::now(),
            inner: Mutex::new(Inner::default()),
        }
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, Inner> {
        self.inner.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// Seconds since the soak started (for examples).
    pub fn at(&self, t: Instant) -> f64 {
        let s = t.saturating_duration_since(self.started).as_secs_f64();
        (s * 10.0).round() / 10.0
    }

    pub fn disturb(&self, gang: &str) {
        self.lock()
            .disturbed
            .entry(gang.to_string())
            .or_default()
            .push(Instant::now());
    }

    pub fn disturbances(&self, gang: &str) -> Vec<Instant> {
        self.lock().disturbed.get(gang).cloned().unwrap_or_default()
    }

    pub fn retire(&self, gang: &str) {
        self.lock().retired.insert(gang.to_string());
    }

    pub fn is_retired(&self, gang: &str) -> bool {
        self.lock().retired.contains(gang)
    }

    pub fn mark_unhealthy(&self, uuid: &str) {
        self.lock()
            .unhealthy
            .insert(uuid.to_string(), Instant::now());
    }

    pub fn mark_healthy(&self, uuid: &str) {
        self.lock().unhealthy.remove(uuid);
    }

    pub fn unhealthy_since(&self, uuid: &str) -> Option<Instant> {
        self.lock().unhealthy.get(uuid).copied()
    }

    pub fn set_reached_min(&self, gang: &str, at: Instant) {
        self.lock()
            .reached_min
            .entry(gang.to_string())
            .or_insert(at);
    }

    pub fn reached_min(&self, gang: &str) -> Option<Instant> {
        self.lock().reached_min.get(gang).copied()
    }

    pub fn reached_min_count(&self) -> usize {
        self.lock().reached_min.len()
    }

    pub fn set_extender_restarting(&self, on: bool) {
        self.lock().extender_restarting = on;
    }

    pub fn extender_restarting(&self) -> bool {
        self.lock().extender_restarting
    }

    pub fn violation(&self, kind: &str, example: Value) {
        tracing::error!(kind, %example, "VIOLATION");
        self.lock().violations.add(kind, example);
    }

    pub fn warning(&self, kind: &str, example: Value) {
        tracing::warn!(kind, %example, "warning");
        self.lock().warnings.add(kind, example);
    }

    /// (violations, warnings), moved out at the end of the run.
    pub fn take_findings(&self) -> (Findings, Findings) {
        let mut inner = self.lock();
        (
            std::mem::take(&mut inner.violations),
            std::mem::take(&mut inner.warnings),
        )
    }
}
