//! The workload: seeded random gangs, as plain pods (a tiny controller here replaces members
//! that disappear, as a Job would) and as Indexed Jobs (the real Job controller), kept at
//! 90-120% of the cluster's GPUs and retired after they ran 10-60 s.

use std::collections::{BTreeSet, HashMap};
use std::sync::Arc;
use std::time::{Duration, Instant};

use k8s_openapi::api::batch::v1::Job;
use k8s_openapi::api::core::v1::Pod;
use kube::api::{DeleteParams, PostParams, PropagationPolicy};
use kube::{Api, Client, ResourceExt};
use rand::rngs::SmallRng;
use rand::{RngExt, SeedableRng};
use serde::Serialize;
use serde_json::{Value, json};

use crate::setup::{Env, PRIORITIES, Stores};
use crate::state::Shared;
use crate::{NAMESPACE, SoakConfig, checker};

#[derive(Clone, Debug, Default, Serialize)]
pub struct WorkloadStats {
    pub gangs_created: u64,
    pub job_gangs: u64,
    pub trickle_gangs: u64,
    pub elastic_gangs: u64,
    /// Pods the soak created itself (Job pods are created by the Job controller).
    pub pods_created: u64,
    /// Members created again after they disappeared (deleted by a fault, evicted, node gone).
    pub replacements: u64,
    pub gangs_deleted_after_running: u64,
    pub gangs_deleted_while_pending: u64,
    pub api_errors: u64,
    /// Demand (GPUs of live gangs) over capacity, sampled each second: min / mean / max.
    pub load_min: f64,
    pub load_mean: f64,
    pub load_max: f64,
}

struct Gang {
    name: String,
    job: bool,
    count: u32,
    min: u32,
    gpus: u32,
    priority: &'static str,
    created: Instant,
    /// Plain gangs: members still to trickle in, and when the next one comes.
    to_create: u32,
    next_at: Instant,
    next_index: u32,
    /// Plain gangs: pod names created and not known gone, with creation time.
    members: HashMap<String, (Instant, bool)>,
    runs_for: Duration,
}

pub struct Workload {
    client: Client,
    stores: Stores,
    shared: Arc<Shared>,
    rng: SmallRng,
    gangs: Vec<Gang>,
    seq: u32,
    pending_limit: Duration,
    stats: WorkloadStats,
}

impl Workload {
    pub fn new(config: &SoakConfig, env: &Env, shared: Arc<Shared>) -> Workload {
        Workload {
            client: env.client.clone(),
            stores: env.stores.clone(),
            shared,
            rng: SmallRng::seed_from_u64(config.seed),
            gangs: Vec::new(),
            seq: 0,
            // A pending gang stays long enough for the stuck check to judge it.
            pending_limit: config.stuck + config.fit_sustain,
            stats: WorkloadStats {
                load_min: f64::MAX,
                ..WorkloadStats::default()
            },
        }
    }

    pub async fn run(mut self, deadline: Instant) -> WorkloadStats {
        let mut tick = tokio::time::interval(Duration::from_millis(500));
        let mut samples = 0u64;
        let mut load_sum = 0.0;
        let mut last_sample = Instant::now();
        while Instant::now() < deadline {
            tick.tick().await;
            let capacity = checker::gpu_capacity(&self.stores.nodes.state());
            self.retire_finished().await;
            self.reconcile_plain().await;
            let demand: u32 = self.gangs.iter().map(|g| g.count * g.gpus).sum();
            let load = if capacity == 0 {
                0.0
            } else {
                f64::from(demand) / f64::from(capacity)
            };
            if last_sample.elapsed() >= Duration::from_secs(1) {
                last_sample = Instant::now();
                samples += 1;
                load_sum += load;
                self.stats.load_min = self.stats.load_min.min(load);
                self.stats.load_max = self.stats.load_max.max(load);
            }
            // Up to a few gangs per tick below 90% (a large cluster fills quickly), then now
            // and then up to 120%.
            let mut demand = demand;
            for _ in 0..8 {
                let load = f64::from(demand) / f64::from(capacity.max(1));
                if capacity == 0 || !(load < 0.9 || (load < 1.2 && self.rng.random_bool(0.2))) {
                    break;
                }
                demand += self.create_gang(capacity).await;
                if load >= 0.9 {
                    break;
                }
            }
        }
        if samples > 0 {
            self.stats.load_mean = (load_sum / samples as f64 * 100.0).round() / 100.0;
        } else {
            self.stats.load_min = 0.0;
        }
        self.stats
    }

    fn pick_priority(&mut self) -> &'static str {
        let mut roll = self.rng.random_range(0..100u32);
        for (name, _, share) in PRIORITIES {
            if roll < share {
                return name;
            }
            roll -= share;
        }
        PRIORITIES[0].0
    }

    /// Creates a gang; returns its GPUs.
    async fn create_gang(&mut self, capacity: u32) -> u32 {
        self.seq += 1;
        let size_class = self.rng.random_range(0..100u32);
        let mut count = match size_class {
            0..50 => self.rng.random_range(1..=4u32),
            50..80 => self.rng.random_range(5..=12u32),
            _ => self.rng.random_range(13..=32u32),
        };
        let mut gpus = [1u32, 2, 4, 8][self.rng.random_range(0..4usize)];
        // At most half the cluster, so that every gang can fit once the others leave.
        let cap = (capacity / 2).max(1);
        while count * gpus > cap && gpus > 1 {
            gpus /= 2;
        }
        count = count.min((cap / gpus).max(1));
        let min = if count >= 2 && self.rng.random_bool(0.3) {
            self.stats.elastic_gangs += 1;
            count - self.rng.random_range(1..=(count / 2).max(1))
        } else {
            count
        };
        let priority = self.pick_priority();
        let job = self.rng.random_bool(0.25);
        let runs_for = Duration::from_secs(self.rng.random_range(10..=60u64));
        let now = Instant::now();
        let name = format!("{}{:04}", if job { "j" } else { "g" }, self.seq);
        let trickle = !job && count > 1 && self.rng.random_bool(0.2);
        let mut gang = Gang {
            name: name.clone(),
            job,
            count,
            min,
            gpus,
            priority,
            created: now,
            to_create: count,
            next_at: now,
            next_index: 0,
            members: HashMap::new(),
            runs_for,
        };
        tracing::info!(gang = %name, job, count, min, gpus, priority, trickle, "new gang");
        self.stats.gangs_created += 1;
        if job {
            self.stats.job_gangs += 1;
            gang.to_create = 0;
            let job = job_object(&gang);
            let api: Api<Job> = Api::namespaced(self.client.clone(), NAMESPACE);
            if let Err(e) = api.create(&PostParams::default(), &job).await {
                tracing::warn!(gang = %name, "creating Job: {e}");
                self.stats.api_errors += 1;
                return 0;
            }
        } else if trickle {
            self.stats.trickle_gangs += 1;
        } else {
            for _ in 0..count {
                self.create_member(&mut gang).await;
            }
            gang.to_create = 0;
        }
        self.gangs.push(gang);
        count * gpus
    }

    async fn create_member(&mut self, gang: &mut Gang) {
        let name = format!("{}-m{}", gang.name, gang.next_index);
        gang.next_index += 1;
        let pod = member_pod(&name, gang);
        let api: Api<Pod> = Api::namespaced(self.client.clone(), NAMESPACE);
        match api.create(&PostParams::default(), &pod).await {
            Ok(_) => {
                self.stats.pods_created += 1;
                gang.members.insert(name, (Instant::now(), false));
            }
            Err(e) => {
                tracing::warn!(pod = %name, "creating pod: {e}");
                self.stats.api_errors += 1;
            }
        }
    }

    /// Trickling members, and replacements for members that are gone or going.
    async fn reconcile_plain(&mut self) {
        let pods: HashMap<String, Arc<Pod>> = self
            .stores
            .pods
            .state()
            .into_iter()
            .map(|p| (p.name_any(), p))
            .collect();
        let mut gangs = std::mem::take(&mut self.gangs);
        for gang in gangs.iter_mut().filter(|g| !g.job) {
            if gang.to_create > 0 {
                if Instant::now() >= gang.next_at {
                    self.create_member(gang).await;
                    gang.to_create -= 1;
                    gang.next_at =
                        Instant::now() + Duration::from_millis(self.rng.random_range(300..4000));
                }
                continue;
            }
            gang.members
                .retain(|name, (created, seen)| match pods.get(name) {
                    Some(p) => {
                        *seen = true;
                        p.metadata.deletion_timestamp.is_none() && !checker::is_terminal(p)
                    }
                    // Not yet in the store (just created) or gone.
                    None => !*seen && created.elapsed() < Duration::from_secs(30),
                });
            let missing = gang.count.saturating_sub(gang.members.len() as u32);
            for _ in 0..missing {
                self.stats.replacements += 1;
                self.create_member(gang).await;
            }
        }
        gangs.append(&mut self.gangs);
        self.gangs = gangs;
    }

    /// Deletes gangs that ran their time, and gangs pending for too long.
    async fn retire_finished(&mut self) {
        let now = Instant::now();
        let mut keep = Vec::new();
        for gang in std::mem::take(&mut self.gangs) {
            let ran = self
                .shared
                .reached_min(&gang.name)
                .is_some_and(|t| now.duration_since(t) >= gang.runs_for);
            let stale = self.shared.reached_min(&gang.name).is_none()
                && now.duration_since(gang.created) >= self.pending_limit;
            if !(ran || stale) {
                keep.push(gang);
                continue;
            }
            if ran {
                self.stats.gangs_deleted_after_running += 1;
            } else {
                self.stats.gangs_deleted_while_pending += 1;
            }
            self.delete_gang(&gang).await;
        }
        self.gangs = keep;
    }

    async fn delete_gang(&mut self, gang: &Gang) {
        self.shared.retire(&gang.name);
        tracing::info!(gang = %gang.name, "deleting gang");
        if gang.job {
            let api: Api<Job> = Api::namespaced(self.client.clone(), NAMESPACE);
            let dp = DeleteParams {
                propagation_policy: Some(PropagationPolicy::Background),
                ..DeleteParams::default()
            };
            if let Err(e) = api.delete(&gang.name, &dp).await {
                tracing::warn!(gang = %gang.name, "deleting Job: {e}");
                self.stats.api_errors += 1;
            }
        }
        // Plain members, and a Job's pods at once rather than after garbage collection.
        let api: Api<Pod> = Api::namespaced(self.client.clone(), NAMESPACE);
        let names: BTreeSet<String> = self
            .stores
            .pods
            .state()
            .iter()
            .filter(|p| checker::gang_of(p).is_some_and(|(g, _)| g == gang.name))
            .map(|p| p.name_any())
            .chain(gang.members.keys().cloned())
            .collect();
        for name in names {
            match api
                .delete(&name, &DeleteParams::default().grace_period(0))
                .await
            {
                Ok(_) => {}
                Err(kube::Error::Api(e)) if e.code == 404 => {}
                Err(e) => {
                    tracing::warn!(pod = %name, "deleting pod: {e}");
                    self.stats.api_errors += 1;
                }
            }
        }
    }
}

fn pod_spec(gang: &Gang) -> Value {
    json!({
        "schedulerName": muster_api::names::SCHEDULER_NAME,
        "priorityClassName": gang.priority,
        "terminationGracePeriodSeconds": 0,
        "restartPolicy": if gang.job { "Never" } else { "Always" },
        "containers": [{
            "name": "train",
            "image": "registry.example/train:1",
            "resources": {
                "limits": {muster_api::names::GPU_RESOURCE: gang.gpus.to_string()},
                "requests": {"cpu": "1", "memory": "1Gi"}
            }
        }]
    })
}

fn gang_annotations(gang: &Gang) -> Value {
    json!({
        muster_api::names::ANNOTATION_GANG: gang.name,
        muster_api::names::ANNOTATION_MIN_AVAILABLE: gang.min.to_string(),
    })
}

fn member_pod(name: &str, gang: &Gang) -> Pod {
    let value = json!({
        "apiVersion": "v1",
        "kind": "Pod",
        "metadata": {
            "name": name,
            "labels": {"app": "muster-soak", "soak-gang": gang.name},
            "annotations": gang_annotations(gang),
        },
        "spec": pod_spec(gang),
    });
    serde_json::from_value(value).unwrap_or_default()
}

fn job_object(gang: &Gang) -> Job {
    let value = json!({
        "apiVersion": "batch/v1",
        "kind": "Job",
        "metadata": {"name": gang.name, "labels": {"app": "muster-soak"}},
        "spec": {
            "completionMode": "Indexed",
            "completions": gang.count,
            "parallelism": gang.count,
            // Deleted members count as failures; the gang keeps being replaced.
            "backoffLimit": 100000,
            "template": {
                "metadata": {
                    "labels": {"app": "muster-soak", "soak-gang": gang.name},
                    "annotations": job_pod_annotations(gang),
                },
                "spec": pod_spec(gang),
            }
        }
    });
    serde_json::from_value(value).unwrap_or_default()
}

/// kwok completes a Job's pods as soon as they run unless told to wait: without this the
/// Job's members would succeed at once and never hold their GPUs together.
fn job_pod_annotations(gang: &Gang) -> Value {
    let mut a = gang_annotations(gang);
    a["pod-complete.stage.kwok.x-k8s.io/delay"] = json!("1h");
    a
}

#[cfg(test)]
mod tests {
    use super::*;

    fn gang(job: bool) -> Gang {
        Gang {
            name: "g0001".into(),
            job,
            count: 4,
            min: 3,
            gpus: 2,
            priority: "soak-mid",
            created: Instant::now(),
            to_create: 0,
            next_at: Instant::now(),
            next_index: 0,
            members: HashMap::new(),
            runs_for: Duration::from_secs(10),
        }
    }

    #[test]
    fn member_pods_and_jobs_carry_the_gang() {
        let pod = member_pod("g0001-m0", &gang(false));
        let ann = pod.metadata.annotations.unwrap();
        assert_eq!(ann["muster.dev/gang"], "g0001");
        assert_eq!(ann["muster.dev/min-available"], "3");
        let spec = pod.spec.unwrap();
        assert_eq!(spec.scheduler_name.as_deref(), Some("muster"));
        assert_eq!(
            spec.containers[0]
                .resources
                .as_ref()
                .unwrap()
                .limits
                .as_ref()
                .unwrap()["nvidia.com/gpu"]
                .0,
            "2"
        );
        let job = job_object(&gang(true)).spec.unwrap();
        assert_eq!(job.completion_mode.as_deref(), Some("Indexed"));
        assert_eq!(job.parallelism, Some(4));
        let t = job.template.metadata.unwrap().annotations.unwrap();
        assert_eq!(t["muster.dev/min-available"], "3");
        assert_eq!(t["pod-complete.stage.kwok.x-k8s.io/delay"], "1h");
    }
}
