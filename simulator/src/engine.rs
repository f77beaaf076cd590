//! The event-driven simulation shared by every policy: arrivals and completions move time
//! forward (idle gaps are skipped), and after each batch of simultaneous events the policy runs
//! one scheduling cycle. Deterministic: no clocks, no hash-order dependence.

use crate::classes::{Class, ClassIndex};
use crate::metrics::{Deadlock, Integrals, PolicyReport, Sample};
use crate::policies::Policy;
use crate::queues::QueueSetup;
use crate::queues::track::QueueTrack;
use crate::slowdown::SlowdownModel;
use crate::topo::Topo;
use crate::workload::{HIGH_PRIORITY, Job};
use muster_core::{Cluster, ClusterError, Gang, GangKey, PlacedPod, PodId, PodRequest};
use std::cmp::Reverse;
use std::collections::{BTreeSet, BinaryHeap, HashMap};

#[derive(Debug, thiserror::Error)]
pub enum SimError {
    #[error("{policy}: recording a placement of job {job} at t={now}s failed: {source}")]
    Commit {
        policy: String,
        job: usize,
        now: u64,
        source: ClusterError,
    },
    #[error("{policy}: the core named unknown gang {gang} at t={now}s")]
    UnknownGang {
        policy: String,
        gang: String,
        now: u64,
    },
}

/// Queue position: priority (for priority-aware policies), then arrival, then id.
pub type QueueKey = (Reverse<i32>, u64, usize);

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Phase {
    NotArrived,
    /// In the queue (possibly with some pods placed, for per-pod policies).
    Waiting,
    Running {
        start: u64,
    },
    Done {
        end: u64,
    },
}

#[derive(Clone, Debug)]
pub struct JobRt {
    pub phase: Phase,
    /// Bumped on every eviction so pod and gang names of a new run never clash with the old.
    pub attempt: u32,
    pub pod_sizes: Vec<u32>,
    /// Pods placed so far: (pod index, node index, GPUs).
    pub placed: Vec<(usize, usize, Vec<u32>)>,
    pub first_start: Option<u64>,
    pub ever_partial: bool,
    /// Ideal-placement seconds of work saved in checkpoints by evicted runs.
    pub saved_work: u64,
    /// Slowdown factor of the current run.
    pub factor: f64,
}

/// Everything a policy may look at and change during a cycle.
pub struct Sim<'a> {
    pub policy: String,
    pub now: u64,
    pub cluster: Cluster,
    pub topo: &'a Topo,
    pub jobs: &'a [Job],
    pub rt: Vec<JobRt>,
    /// Waiting jobs in the policy's order.
    pub queue: BTreeSet<QueueKey>,
    /// The same jobs by class.
    pub classes: ClassIndex,
    /// Running jobs, by id.
    pub running: BTreeSet<usize>,
    priority_aware: bool,
    /// Free GPUs per node, mirrored from the cluster for O(1) checks.
    pub free: Vec<u32>,
    completions: BinaryHeap<Reverse<(u64, usize, u32)>>,
    gang_job: HashMap<GangKey, usize>,
    slowdown: &'a SlowdownModel,
    checkpoint_secs: u64,
    declared: DeclaredRuntimes,
    pub(crate) running_gpus: u32,
    partial_gpus: u32,
    queued_high: usize,
    queued_whole_node: usize,
    pub(crate) preemptions: u64,
    /// Gangs handed to the placement core, over all cycles (Muster's policies count them).
    pub gangs_planned: u64,
    pub(crate) lost_gpu_seconds: f64,
    pub(crate) factors: Vec<f64>,
    /// Per-queue accounting, when the run has queues (every policy is measured by them).
    pub queues: Option<QueueTrack<'a>>,
    /// Pods placed or jobs started/evicted in the current cycle.
    pub progress: bool,
}

impl<'a> Sim<'a> {
    pub fn queue_key(&self, job: usize) -> QueueKey {
        let j = &self.jobs[job];
        let p = if self.priority_aware { j.priority } else { 0 };
        (Reverse(p), j.arrival, job)
    }

    pub fn class(&self, job: usize) -> Class {
        (self.jobs[job].priority, self.jobs[job].gpus)
    }

    pub fn free_total(&self) -> u32 {
        self.free.iter().sum()
    }

    pub fn queued_high_priority(&self) -> usize {
        self.queued_high
    }

    pub fn gang_key(&self, job: usize) -> GangKey {
        GangKey::new(
            self.jobs[job].queue.clone(),
            format!("j{job}-a{}", self.rt[job].attempt),
        )
    }

    fn pod_id(&self, job: usize, pod: usize) -> PodId {
        PodId::new(format!("j{job}-a{}-p{pod}", self.rt[job].attempt))
    }

    /// The core's view of a waiting job: all of its pods, all required.
    pub fn gang(&self, job: usize) -> Gang {
        let j = &self.jobs[job];
        let sizes = &self.rt[job].pod_sizes;
        let queue = match &self.queues {
            Some(t) => t.setup.leaf_name(job).to_string(),
            None => j.queue.clone(),
        };
        Gang {
            key: self.gang_key(job),
            queue,
            priority: j.priority,
            created_at: j.arrival,
            min_member: sizes.len() as u32,
            pending: sizes
                .iter()
                .enumerate()
                .map(|(i, &g)| PodRequest::gpus(self.pod_id(job, i).0, g))
                .collect(),
            can_preempt: true,
            runtime_limit: self.declared_left(job),
        }
    }

    /// What `job` declares it still needs to run (its declared run time less the work its
    /// checkpoints saved); `None` when it declares nothing.
    pub fn declared_left(&self, job: usize) -> Option<u64> {
        self.declared
            .of(self.jobs[job].duration)
            .map(|d| d.saturating_sub(self.rt[job].saved_work).max(1))
    }

    /// When a running `job` will have ended by its declaration (never before now: a run
    /// slowed by its placement may overrun it); `None` when it declares nothing or waits.
    pub fn expected_end(&self, job: usize) -> Option<u64> {
        match self.rt[job].phase {
            Phase::Running { start } => self
                .declared_left(job)
                .map(|d| start.saturating_add(d).max(self.now)),
            _ => None,
        }
    }

    pub fn job_of(&self, gang: &GangKey) -> Result<usize, SimError> {
        self.gang_job
            .get(gang)
            .copied()
            .ok_or_else(|| SimError::UnknownGang {
                policy: self.policy.clone(),
                gang: gang.to_string(),
                now: self.now,
            })
    }

    /// Records pod `pod` of a waiting job on `node` with `gpus`.
    pub fn place_pod(
        &mut self,
        job: usize,
        pod: usize,
        node: usize,
        gpus: Vec<u32>,
    ) -> Result<(), SimError> {
        let size = self.rt[job].pod_sizes[pod];
        let placed = PlacedPod {
            id: self.pod_id(job, pod),
            gang: self.gang_key(job),
            node: self.topo.names[node].clone(),
            resources: PodRequest::gpus("", size).resources,
            gpus: gpus.clone(),
            priority: self.jobs[job].priority,
            started_at: self.now,
            preemptible: true,
            terminating: false,
            ends_by: self.declared_left(job).map(|d| self.now.saturating_add(d)),
        };
        self.cluster
            .add_pod(placed)
            .map_err(|source| SimError::Commit {
                policy: self.policy.clone(),
                job,
                now: self.now,
                source,
            })?;
        let key = self.gang_key(job);
        if let Some(t) = &mut self.queues {
            // The core counts a running gang against the queue set here (default otherwise).
            if self.rt[job].placed.is_empty() {
                self.cluster.set_gang_queue(&key, t.setup.leaf_name(job));
            }
            t.placed(job, size);
        }
        self.gang_job.insert(key, job);
        self.free[node] -= size;
        self.partial_gpus += size;
        let rt = &mut self.rt[job];
        rt.placed.push((pod, node, gpus));
        self.progress = true;
        Ok(())
    }

    /// Starts a waiting job whose pods are all placed; its run time follows the slowdown model.
    pub fn start(&mut self, job: usize) {
        let pods: Vec<(usize, Vec<u32>)> = self.rt[job]
            .placed
            .iter()
            .map(|(_, n, g)| (*n, g.clone()))
            .collect();
        let factor = self.slowdown.factor(self.topo, &pods);
        self.factors.push(factor);
        let left = self.jobs[job]
            .duration
            .saturating_sub(self.rt[job].saved_work);
        let run = (left as f64 * factor).ceil().max(1.0) as u64;
        self.rt[job].factor = factor;
        self.dequeue(job);
        let gpus = self.jobs[job].gpus;
        self.partial_gpus -= gpus;
        self.running_gpus += gpus;
        let now = self.now;
        let rt = &mut self.rt[job];
        rt.phase = Phase::Running { start: now };
        rt.first_start.get_or_insert(now);
        self.running.insert(job);
        self.completions
            .push(Reverse((now + run, job, self.rt[job].attempt)));
        self.progress = true;
    }

    /// Evicts a running job whole; it goes back to its old queue place and later resumes
    /// from its last checkpoint (taken every `checkpoint_secs` of ideal-placement work; 0 =
    /// restart from scratch). Work since that checkpoint is lost; returns it in GPU-seconds.
    pub fn evict(&mut self, job: usize) -> f64 {
        let mut lost_gpu_seconds = 0.0;
        if let Phase::Running { start } = self.rt[job].phase {
            let gpus = self.jobs[job].gpus;
            let elapsed = (self.now - start) as f64;
            let rt = &mut self.rt[job];
            let progress = (elapsed / rt.factor.max(1.0)) as u64;
            let saved = match self.checkpoint_secs {
                0 => 0,
                c => progress / c * c,
            };
            rt.saved_work = (rt.saved_work + saved).min(self.jobs[job].duration.saturating_sub(1));
            let lost = (elapsed - saved as f64 * rt.factor).max(0.0);
            lost_gpu_seconds = lost * f64::from(gpus);
            self.lost_gpu_seconds += lost_gpu_seconds;
            self.running_gpus -= gpus;
            self.partial_gpus += gpus;
        }
        self.release(job);
        self.running.remove(&job);
        self.preemptions += 1;
        self.rt[job].attempt += 1;
        self.rt[job].phase = Phase::Waiting;
        self.enqueue(job);
        self.progress = true;
        lost_gpu_seconds
    }

    /// Evicts a job for another queue's reclaim: like [`Sim::evict`], also counted per queue.
    pub fn evict_reclaimed(&mut self, job: usize) {
        let lost = self.evict(job);
        if let Some(t) = &mut self.queues {
            t.reclaimed(job, lost);
        }
    }

    fn release(&mut self, job: usize) {
        let placed = std::mem::take(&mut self.rt[job].placed);
        for (pod, node, _) in placed {
            let id = self.pod_id(job, pod);
            self.cluster.remove_pod(&id);
            let size = self.rt[job].pod_sizes[pod];
            self.free[node] += size;
            self.partial_gpus -= size;
            if let Some(t) = &mut self.queues {
                t.released(job, size);
            }
        }
        let key = self.gang_key(job);
        self.gang_job.remove(&key);
    }

    fn complete(&mut self, job: usize) {
        self.running_gpus -= self.jobs[job].gpus;
        self.partial_gpus += self.jobs[job].gpus;
        self.release(job);
        self.running.remove(&job);
        self.rt[job].phase = Phase::Done { end: self.now };
    }

    fn enqueue(&mut self, job: usize) {
        let key = self.queue_key(job);
        if let Some(t) = &mut self.queues {
            let q = t.leaf(job);
            t.lanes[q].insert(key);
        }
        self.queue.insert(key);
        self.classes.insert(self.class(job), key);
        self.queued_high += usize::from(self.jobs[job].priority >= HIGH_PRIORITY);
        self.queued_whole_node += usize::from(self.jobs[job].gpus >= self.topo.gpus_per_node);
    }

    fn dequeue(&mut self, job: usize) {
        let key = self.queue_key(job);
        if let Some(t) = &mut self.queues {
            let q = t.leaf(job);
            t.lanes[q].remove(&key);
        }
        self.classes.remove(self.class(job), &key);
        if self.queue.remove(&key) {
            self.queued_high -= usize::from(self.jobs[job].priority >= HIGH_PRIORITY);
            self.queued_whole_node -= usize::from(self.jobs[job].gpus >= self.topo.gpus_per_node);
        }
    }

    fn sample(&self) -> Sample {
        let gpn = self.topo.gpus_per_node;
        let free_total = self.free_total();
        let stranded = self.free.iter().filter(|&&f| f > 0 && f < gpn).sum();
        let whole_free = self.free.iter().any(|&f| f >= gpn);
        Sample {
            allocated: self.topo.gpu_total() as u32 - free_total,
            busy: self.running_gpus,
            stranded,
            blocked: self.queued_whole_node > 0 && free_total >= gpn && !whole_free,
            partial: self.partial_gpus,
        }
    }

    /// Partially placed jobs, with the GPUs they hold.
    fn partial_jobs(&self) -> (usize, u32) {
        self.queue
            .iter()
            .map(|k| &self.rt[k.2])
            .filter(|rt| !rt.placed.is_empty())
            .fold((0, 0), |(n, g), rt| {
                let held: u32 = rt.placed.iter().map(|(p, _, _)| rt.pod_sizes[*p]).sum();
                (n + 1, g + held)
            })
    }
}

/// Parameters of one run shared by all policies.
#[derive(Clone, Debug)]
pub struct RunLimits {
    /// Stop a policy at this simulated second even if work is left.
    pub time_bound: u64,
    /// Preempted jobs resume from checkpoints taken this often (ideal seconds); 0 = restart.
    pub checkpoint_secs: u64,
    /// Time-averaged metrics cover [first arrival, this second]: the arrival window, so that
    /// the long drain after the last arrival (equal for all policies) does not dilute them.
    pub metrics_until: u64,
    /// What jobs declare of their run time (backfilling policies read it).
    pub declared: DeclaredRuntimes,
}

/// The run time each job declares, as a Job's `activeDeadlineSeconds` would: an upper bound
/// on its ideal run, known before it starts.
#[derive(Clone, Copy, Debug, Default, PartialEq, serde::Serialize)]
#[serde(rename_all = "kebab-case")]
pub enum DeclaredRuntimes {
    /// Every job declares its ideal run time exactly.
    #[default]
    Exact,
    /// No job declares one.
    None,
    /// Every job declares this many times its ideal run time (users round limits up).
    Factor(f64),
}

impl DeclaredRuntimes {
    /// `exact`, `none`, or a factor >= 1.
    pub fn parse(text: &str) -> Result<Self, String> {
        match text {
            "exact" => Ok(DeclaredRuntimes::Exact),
            "none" => Ok(DeclaredRuntimes::None),
            other => match other.parse::<f64>() {
                Ok(f) if f.is_finite() && f >= 1.0 => Ok(DeclaredRuntimes::Factor(f)),
                _ => Err(format!(
                    "--declared-runtimes must be exact, none or a factor >= 1, got {other:?}"
                )),
            },
        }
    }

    /// The declared run time of a job whose ideal run is `duration` seconds.
    pub fn of(self, duration: u64) -> Option<u64> {
        match self {
            DeclaredRuntimes::Exact => Some(duration),
            DeclaredRuntimes::None => None,
            DeclaredRuntimes::Factor(f) => Some((duration as f64 * f).ceil() as u64),
        }
    }
}

/// What happened to one job under one policy.
#[derive(Clone, Debug, PartialEq)]
pub struct JobOutcome {
    pub job: usize,
    pub first_start: Option<u64>,
    pub end: Option<u64>,
    /// Times it was evicted.
    pub evictions: u32,
}

/// Everything the report needs from one policy's run.
pub struct RunOutput {
    pub report: PolicyReport,
    pub jobs: Vec<JobOutcome>,
    pub series: Vec<(u64, u32)>,
    pub scheduling: std::time::Duration,
}

/// Simulates `jobs` (sorted by arrival, ids = indices) under `policy`, without queues.
pub fn run(
    policy: &mut dyn Policy,
    topo: &Topo,
    jobs: &[Job],
    slowdown: &SlowdownModel,
    limits: &RunLimits,
    on_event: impl FnMut(),
) -> Result<RunOutput, SimError> {
    run_with(policy, topo, jobs, slowdown, limits, None, on_event)
}

/// [`run`], measuring (and, for queue policies, scheduling by) `queues` when given.
pub fn run_with(
    policy: &mut dyn Policy,
    topo: &Topo,
    jobs: &[Job],
    slowdown: &SlowdownModel,
    limits: &RunLimits,
    queues: Option<&QueueSetup>,
    mut on_event: impl FnMut(),
) -> Result<RunOutput, SimError> {
    let cluster = topo.cluster().map_err(|e| SimError::UnknownGang {
        policy: policy.name().to_string(),
        gang: format!("(cluster: {e})"),
        now: 0,
    })?;
    let gpn = topo.gpus_per_node;
    let mut sim = Sim {
        policy: policy.name().to_string(),
        now: 0,
        cluster,
        topo,
        jobs,
        rt: jobs
            .iter()
            .map(|j| JobRt {
                phase: Phase::NotArrived,
                attempt: 0,
                pod_sizes: j.pod_sizes(gpn),
                placed: Vec::new(),
                first_start: None,
                ever_partial: false,
                saved_work: 0,
                factor: 1.0,
            })
            .collect(),
        queue: BTreeSet::new(),
        classes: ClassIndex::default(),
        running: BTreeSet::new(),
        priority_aware: policy.priority_aware(),
        free: vec![gpn; topo.names.len()],
        completions: BinaryHeap::new(),
        gang_job: HashMap::new(),
        slowdown,
        checkpoint_secs: limits.checkpoint_secs,
        declared: limits.declared,
        running_gpus: 0,
        partial_gpus: 0,
        queued_high: 0,
        queued_whole_node: 0,
        preemptions: 0,
        gangs_planned: 0,
        lost_gpu_seconds: 0.0,
        factors: Vec::new(),
        queues: queues.map(|q| QueueTrack::new(q, limits.metrics_until)),
        progress: false,
    };
    let mut integrals = Integrals::until(limits.metrics_until);
    let mut current = Sample::default();
    let mut next_arrival = 0;
    let mut cycles = 0u64;
    let mut scheduling = std::time::Duration::ZERO;
    let mut deadlock = None;
    let mut hit_time_bound = false;
    loop {
        let t_arrival = jobs.get(next_arrival).map(|j| j.arrival);
        let t_done = sim.completions.peek().map(|r| r.0.0);
        let Some(t) = t_arrival.into_iter().chain(t_done).min() else {
            break;
        };
        if t > limits.time_bound {
            integrals.advance(limits.time_bound.max(sim.now), &current);
            if let Some(q) = &mut sim.queues {
                q.advance(limits.time_bound.max(sim.now));
            }
            hit_time_bound = true;
            break;
        }
        integrals.advance(t, &current);
        if let Some(q) = &mut sim.queues {
            q.advance(t);
        }
        sim.now = t;
        while let Some(&Reverse((at, job, attempt))) = sim.completions.peek() {
            if at != t {
                break;
            }
            sim.completions.pop();
            // Completions of evicted runs are stale.
            if sim.rt[job].attempt == attempt && matches!(sim.rt[job].phase, Phase::Running { .. })
            {
                sim.complete(job);
                on_event();
            }
        }
        while let Some(j) = jobs.get(next_arrival).filter(|j| j.arrival == t) {
            sim.rt[j.id].phase = Phase::Waiting;
            sim.enqueue(j.id);
            next_arrival += 1;
            on_event();
        }
        sim.progress = false;
        let began = std::time::Instant::now();
        policy.cycle(&mut sim)?;
        scheduling += began.elapsed();
        cycles += 1;
        // Partial means still partial when the cycle ends (pods placed one by one within a
        // cycle are fine).
        for k in &sim.queue {
            let rt = &mut sim.rt[k.2];
            rt.ever_partial |= !rt.placed.is_empty();
        }
        current = sim.sample();
        integrals.record(t, current.allocated);
        // Nothing runs, nothing moved, and partially placed jobs hold GPUs: those GPUs can
        // never come back (arrivals only add demand), so this policy is stuck for good.
        if sim.running_gpus == 0 && !sim.progress {
            let (stuck_jobs, held_gpus) = sim.partial_jobs();
            if stuck_jobs > 0 {
                deadlock = Some(Deadlock {
                    at: t,
                    stuck_jobs,
                    held_gpus,
                });
                tracing::info!(policy = %sim.policy, at = t, stuck_jobs, held_gpus, "deadlock");
                break;
            }
        }
    }
    let outcomes = sim
        .rt
        .iter()
        .enumerate()
        .map(|(job, rt)| JobOutcome {
            job,
            first_start: rt.first_start,
            end: match rt.phase {
                Phase::Done { end } => Some(end),
                _ => None,
            },
            evictions: rt.attempt,
        })
        .collect();
    Ok(RunOutput {
        jobs: outcomes,
        report: crate::metrics::summarise(&sim, &integrals, cycles, deadlock, hit_time_bound),
        series: integrals.series,
        scheduling,
    })
}
