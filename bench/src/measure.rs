//! Watching the benchmark's pods: when each was created and bound, which gangs are whole,
//! partially placed or broken, GPUs allocated per node; a sample every 500 ms for the plots.

use std::collections::HashMap;
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::{Duration, Instant};

use anyhow::{Result, bail};
use futures::StreamExt;
use k8s_openapi::api::core::v1::Pod;
use kube::runtime::watcher::{self, Event};
use kube::{Api, Client};
use serde::Serialize;
use tokio::task::JoinHandle;

use crate::workload::{GANG_LABEL, Gang};

/// A gang counts as partially placed once it has been so for this long: a gang scheduler binds
/// a gang's members one request after another, so an instant between two of them is not a
/// partial placement.
pub const PARTIAL_GRACE: Duration = Duration::from_secs(1);
pub const SAMPLE_EVERY: Duration = Duration::from_millis(500);

#[derive(Clone, Debug, Default)]
struct PodState {
    gang: usize,
    gpus: u32,
    created: Option<Instant>,
    bound: Option<Instant>,
    node: Option<String>,
    gone: bool,
}

#[derive(Clone, Debug)]
pub struct GangState {
    pub gang: Gang,
    pub bound: usize,
    pub partial_since: Option<Instant>,
    /// First time every member was bound.
    pub complete_at: Option<Instant>,
    /// The benchmark deleted it (finished running).
    pub finished: bool,
    /// Members lost while bound, not by the benchmark (evictions).
    pub evicted: usize,
}

/// One point of the time series.
#[derive(Clone, Debug, Default, Serialize)]
pub struct Sample {
    pub t: f64,
    pub bound_pods: usize,
    pub allocated_gpus: u64,
    /// Gangs with 0 < bound < size for at least PARTIAL_GRACE.
    pub partial_gangs: usize,
    /// GPUs held by those gangs (allocated, but the job cannot start).
    pub stranded_gpus: u64,
    /// Gangs that have run whole so far.
    pub completed_gangs: usize,
    /// Free GPUs on nodes that are partly used (fragments).
    pub fragment_gpus: u64,
}

#[derive(Default)]
pub struct State {
    pods: HashMap<String, PodState>,
    pub gangs: Vec<GangState>,
    node_used: HashMap<String, u32>,
    pub evicted_pods: usize,
    pub samples: Vec<Sample>,
    synced: bool,
}

impl State {
    pub fn bound_pods(&self) -> usize {
        self.pods.values().filter(|p| p.node.is_some()).count()
    }

    pub fn completed_gangs(&self) -> usize {
        self.gangs
            .iter()
            .filter(|g| g.complete_at.is_some())
            .count()
    }

    fn apply(&mut self, pod: &Pod, now: Instant) {
        let Some(name) = pod.metadata.name.as_deref() else {
            return;
        };
        if pod.metadata.deletion_timestamp.is_some() {
            self.remove(name);
            return;
        }
        let node = pod.spec.as_ref().and_then(|s| s.node_name.clone());
        let Some(p) = self.pods.get_mut(name) else {
            return;
        };
        if p.gone || p.node.is_some() {
            return;
        }
        let Some(node) = node else { return };
        p.bound = Some(now);
        p.node = Some(node.clone());
        let (gang, gpus) = (p.gang, p.gpus);
        *self.node_used.entry(node).or_default() += gpus;
        let g = &mut self.gangs[gang];
        g.bound += 1;
        if g.bound >= g.gang.size {
            g.partial_since = None;
            g.complete_at.get_or_insert(now);
        } else {
            g.partial_since.get_or_insert(now);
        }
    }

    fn remove(&mut self, name: &str) {
        let Some(p) = self.pods.get_mut(name) else {
            return;
        };
        if p.gone {
            return;
        }
        p.gone = true;
        let Some(node) = p.node.clone() else { return };
        let (gang, gpus) = (p.gang, p.gpus);
        if let Some(used) = self.node_used.get_mut(&node) {
            *used = used.saturating_sub(gpus);
        }
        let g = &mut self.gangs[gang];
        g.bound = g.bound.saturating_sub(1);
        if !g.finished {
            g.evicted += 1;
            self.evicted_pods += 1;
        }
        g.partial_since = if g.bound > 0 && g.bound < g.gang.size && !g.finished {
            g.partial_since.or(Some(Instant::now()))
        } else {
            None
        };
    }

    fn sample(&self, t: f64, now: Instant, gpus_per_node: u32) -> Sample {
        let mut s = Sample {
            t,
            ..Sample::default()
        };
        for p in self.pods.values() {
            if p.node.is_some() && !p.gone {
                s.bound_pods += 1;
                s.allocated_gpus += u64::from(p.gpus);
            }
        }
        for g in &self.gangs {
            if g.complete_at.is_some() {
                s.completed_gangs += 1;
            }
            if let Some(since) = g.partial_since
                && now.duration_since(since) >= PARTIAL_GRACE
            {
                s.partial_gangs += 1;
                s.stranded_gpus += g.bound as u64 * u64::from(g.gang.gpus);
            }
        }
        s.fragment_gpus = self
            .node_used
            .values()
            .filter(|&&u| u > 0 && u < gpus_per_node)
            .map(|&u| u64::from(gpus_per_node - u))
            .sum();
        s
    }
}

/// Pod watcher plus sampler for one run.
pub struct Tracker {
    state: Arc<Mutex<State>>,
    pub t0: Instant,
    tasks: Vec<JoinHandle<()>>,
}

impl Tracker {
    /// Starts watching every benchmark pod of the cluster and waits for the initial list.
    pub async fn start(client: &Client, gpus_per_node: u32) -> Result<Tracker> {
        let state: Arc<Mutex<State>> = Arc::default();
        let api: Api<Pod> = Api::all(client.clone());
        let cfg = watcher::Config::default().labels(GANG_LABEL);
        let watch_state = state.clone();
        let watch = tokio::spawn(async move {
            let mut stream = std::pin::pin!(watcher::watcher(api, cfg));
            while let Some(ev) = stream.next().await {
                let now = Instant::now();
                let mut st = lock(&watch_state);
                match ev {
                    Ok(Event::Apply(p)) | Ok(Event::InitApply(p)) => st.apply(&p, now),
                    Ok(Event::Delete(p)) => {
                        if let Some(n) = p.metadata.name.as_deref() {
                            st.remove(n);
                        }
                    }
                    Ok(Event::InitDone) => st.synced = true,
                    Ok(Event::Init) => {}
                    Err(e) => {
                        drop(st);
                        tracing::warn!("pod watch: {e}");
                        tokio::time::sleep(Duration::from_millis(500)).await;
                    }
                }
            }
        });
        let t0 = Instant::now();
        let sample_state = state.clone();
        let sampler = tokio::spawn(async move {
            let mut tick = tokio::time::interval(SAMPLE_EVERY);
            loop {
                tick.tick().await;
                let now = Instant::now();
                let mut st = lock(&sample_state);
                let s = st.sample(now.duration_since(t0).as_secs_f64(), now, gpus_per_node);
                st.samples.push(s);
            }
        });
        let tracker = Tracker {
            state,
            t0,
            tasks: vec![watch, sampler],
        };
        let started = Instant::now();
        while !tracker.lock().synced {
            if started.elapsed() > Duration::from_secs(60) {
                bail!("the pod watch did not sync within 60 s");
            }
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
        Ok(tracker)
    }

    pub fn lock(&self) -> MutexGuard<'_, State> {
        lock(&self.state)
    }

    /// Registers gangs before their pods are created; returns the index of the first.
    pub fn add_gangs(&self, gangs: &[Gang]) -> usize {
        let mut st = self.lock();
        let first = st.gangs.len();
        for (k, gang) in gangs.iter().enumerate() {
            for i in 0..gang.size {
                st.pods.insert(
                    gang.pod_name(i),
                    PodState {
                        gang: first + k,
                        gpus: gang.gpus,
                        ..PodState::default()
                    },
                );
            }
            st.gangs.push(GangState {
                gang: gang.clone(),
                bound: 0,
                partial_since: None,
                complete_at: None,
                finished: false,
                evicted: 0,
            });
        }
        first
    }

    /// Records the create time of a pod (called just before its create request).
    pub fn created(&self, name: &str) {
        if let Some(p) = self.lock().pods.get_mut(name) {
            p.created = Some(Instant::now());
        }
    }

    /// Marks gang `idx` finished (the benchmark deletes it next; its deletes are no evictions).
    pub fn finish(&self, idx: usize) {
        let mut st = self.lock();
        if let Some(g) = st.gangs.get_mut(idx) {
            g.finished = true;
            g.partial_since = None;
        }
    }

    /// Gangs whole for at least their run time and not yet finished.
    pub fn due(&self, now: Instant) -> Vec<usize> {
        self.lock()
            .gangs
            .iter()
            .enumerate()
            .filter(|(_, g)| !g.finished && g.bound >= g.gang.size)
            .filter(|(_, g)| match (g.complete_at, g.gang.run_seconds) {
                (Some(at), Some(run)) => now.duration_since(at).as_secs_f64() >= run,
                _ => false,
            })
            .map(|(i, _)| i)
            .collect()
    }

    /// Create-to-bind latencies (ms) of the pods of gangs `range`, and the span (s) from `since`
    /// to the last bind among them.
    pub fn latencies(&self, range: std::ops::Range<usize>, since: Instant) -> (Vec<f64>, f64) {
        let st = self.lock();
        let mut lat = Vec::new();
        let mut last = since;
        for p in st.pods.values().filter(|p| range.contains(&p.gang)) {
            if let (Some(c), Some(b)) = (p.created, p.bound) {
                lat.push(b.duration_since(c).as_secs_f64() * 1000.0);
                last = last.max(b);
            }
        }
        (lat, last.duration_since(since).as_secs_f64())
    }

    /// Waits until `done` holds (checked every 100 ms) or `timeout` passes; returns whether it
    /// held. `alive` is checked too, so a crashed scheduler fails the run instead of timing out.
    pub async fn wait(
        &self,
        timeout: Duration,
        mut alive: impl FnMut() -> Result<()>,
        done: impl Fn(&State) -> bool,
    ) -> Result<bool> {
        let started = Instant::now();
        loop {
            if done(&self.lock()) {
                return Ok(true);
            }
            alive()?;
            if started.elapsed() > timeout {
                return Ok(false);
            }
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
    }

    pub fn samples_since(&self, t: f64) -> Vec<Sample> {
        self.lock()
            .samples
            .iter()
            .filter(|s| s.t >= t)
            .cloned()
            .collect()
    }

    pub fn seconds(&self, at: Instant) -> f64 {
        at.duration_since(self.t0).as_secs_f64()
    }
}

impl Drop for Tracker {
    fn drop(&mut self) {
        for t in &self.tasks {
            t.abort();
        }
    }
}

fn lock(m: &Mutex<State>) -> MutexGuard<'_, State> {
    m.lock().unwrap_or_else(|e| e.into_inner())
}

/// The `q` quantile (0..=1) of `values` (nearest rank); 0 when empty.
pub fn quantile(values: &[f64], q: f64) -> f64 {
    if values.is_empty() {
        return 0.0;
    }
    let mut v = values.to_vec();
    v.sort_by(f64::total_cmp);
    let rank = ((q * v.len() as f64).ceil() as usize).clamp(1, v.len());
    v[rank - 1]
}

pub fn median(values: &[f64]) -> f64 {
    if values.is_empty() {
        return 0.0;
    }
    let mut v = values.to_vec();
    v.sort_by(f64::total_cmp);
    let n = v.len();
    if n % 2 == 1 {
        v[n / 2]
    } else {
        (v[n / 2 - 1] + v[n / 2]) / 2.0
    }
}

/// Upper bound (ms) of the bucket holding the `q` quantile of one verb of Muster's
/// `muster_extender_request_duration_seconds` histogram.
pub fn extender_quantile_ms(metrics: &str, verb: &str, q: f64) -> Option<f64> {
    let prefix = "muster_extender_request_duration_seconds_bucket{";
    let mut buckets: Vec<(f64, f64)> = metrics
        .lines()
        .filter(|l| l.starts_with(prefix) && l.contains(&format!("verb=\"{verb}\"")))
        .filter_map(|l| {
            let le = l.split("le=\"").nth(1)?.split('"').next()?;
            let le = if le == "+Inf" {
                f64::INFINITY
            } else {
                le.parse().ok()?
            };
            Some((le, l.rsplit(' ').next()?.parse().ok()?))
        })
        .collect();
    buckets.sort_by(|a, b| a.0.total_cmp(&b.0));
    let total = buckets.last()?.1;
    if total <= 0.0 {
        return None;
    }
    buckets
        .iter()
        .find(|(_, c)| *c >= total * q)
        .map(|(le, _)| le * 1000.0)
}

/// Sum of a counter's samples in a /metrics text (0 when absent).
pub fn metric_sum(metrics: &str, name: &str) -> f64 {
    metrics
        .lines()
        .filter(|l| !l.starts_with('#'))
        .filter(|l| {
            l.strip_prefix(name)
                .is_some_and(|rest| rest.starts_with('{') || rest.starts_with(' '))
        })
        .filter_map(|l| l.rsplit(' ').next()?.parse::<f64>().ok())
        .sum()
}

/// Every series of a counter by its label set (`{result="nominated"}` -> value), so a run's
/// JSON says which nominations, plan drops and attempts happened, not just how many.
pub fn metric_by_labels(metrics: &str, name: &str) -> std::collections::BTreeMap<String, f64> {
    metrics
        .lines()
        .filter(|l| !l.starts_with('#'))
        .filter_map(|l| {
            let rest = l.strip_prefix(name)?;
            let (labels, value) = rest.rsplit_once(' ')?;
            let labels = labels.trim();
            if !(labels.is_empty() || labels.starts_with('{')) {
                return None;
            }
            Some((labels.to_string(), value.parse::<f64>().ok()?))
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn quantiles_use_nearest_rank() {
        let v: Vec<f64> = (1..=100).map(f64::from).collect();
        assert_eq!(quantile(&v, 0.5), 50.0);
        assert_eq!(quantile(&v, 0.99), 99.0);
        assert_eq!(quantile(&v, 1.0), 100.0);
        assert_eq!(quantile(&[], 0.5), 0.0);
        assert_eq!(median(&[3.0, 1.0, 2.0, 10.0]), 2.5);
    }

    #[test]
    fn histogram_quantile_reads_buckets() {
        let m = "muster_extender_request_duration_seconds_bucket{verb=\"bind\",le=\"0.1\"} 50\n\
                 muster_extender_request_duration_seconds_bucket{verb=\"bind\",le=\"1\"} 99\n\
                 muster_extender_request_duration_seconds_bucket{verb=\"bind\",le=\"+Inf\"} 100\n";
        assert_eq!(extender_quantile_ms(m, "bind", 0.5), Some(100.0));
        assert_eq!(extender_quantile_ms(m, "bind", 0.99), Some(1000.0));
        assert_eq!(extender_quantile_ms(m, "filter", 0.99), None);
    }

    #[test]
    fn counters_by_labels() {
        let m = "# HELP x\nmuster_nominations_total{result=\"nominated\"} 5\nmuster_nominations_total{result=\"gone\"} 1\nmuster_nominations_total_other 9\nmuster_fast_placements_total 3\n";
        let by = metric_by_labels(m, "muster_nominations_total");
        assert_eq!(by.len(), 2);
        assert_eq!(by.get("{result=\"nominated\"}"), Some(&5.0));
        assert_eq!(
            metric_by_labels(m, "muster_fast_placements_total").get(""),
            Some(&3.0)
        );
        assert_eq!(
            metric_sum("a_total{x=\"1\"} 2\na_total{x=\"2\"} 3\nab 7\n", "a_total"),
            5.0
        );
    }

    #[test]
    fn partial_gangs_need_the_grace_period_and_evictions_count() {
        let mut st = State::default();
        let gang = Gang::new("g", 2, 4);
        st.gangs.push(GangState {
            gang,
            bound: 0,
            partial_since: None,
            complete_at: None,
            finished: false,
            evicted: 0,
        });
        for i in 0..2 {
            st.pods.insert(
                format!("g-{i}"),
                PodState {
                    gang: 0,
                    gpus: 4,
                    ..PodState::default()
                },
            );
        }
        let pod = |name: &str| -> Pod {
            serde_json::from_value(serde_json::json!({
                "metadata": {"name": name},
                "spec": {"nodeName": "n0", "containers": []}
            }))
            .unwrap_or_default()
        };
        let t = Instant::now();
        st.apply(&pod("g-0"), t);
        assert_eq!(st.sample(0.0, t, 8).partial_gangs, 0);
        let later = t + Duration::from_secs(2);
        let s = st.sample(2.0, later, 8);
        assert_eq!(
            (s.partial_gangs, s.stranded_gpus, s.fragment_gpus),
            (1, 4, 4)
        );
        st.apply(&pod("g-1"), later);
        let s = st.sample(2.0, later, 8);
        assert_eq!(
            (s.partial_gangs, s.completed_gangs, s.allocated_gpus),
            (0, 1, 8)
        );
        st.remove("g-1");
        assert_eq!(st.evicted_pods, 1);
    }
}
