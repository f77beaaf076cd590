//! Property tests for queues: limits hold, reclaim never takes a victim queue below its
//! guarantee and evicts whole gangs, a queue under its guarantee gets room when reclaim can
//! free it, and an empty tree plans exactly like `plan`.

use muster_api::machines::builtin;
use muster_core::queues::Resource;
use muster_core::{
    Cluster, Gang, GangKey, NodeInfo, PlacedPod, Plan, PlannerConfig, PodId, QueueSpec, QueueTree,
    Resources,
};
use proptest::prelude::*;
use std::collections::{HashMap, HashSet};

const QUEUES: usize = 4;

#[derive(Debug, Clone)]
struct Scene {
    nodes: usize,
    /// (guaranteed, extra limit above it or none) GPUs per queue q0..q3, under root "org".
    quotas: Vec<(u32, Option<u32>)>,
    /// (queue, pods of 1 GPU, priority)
    running: Vec<(usize, u32, i32)>,
    /// (queue, pods, GPUs per pod, priority)
    pending: Vec<(usize, u32, u32, i32)>,
}

fn scene() -> impl Strategy<Value = Scene> {
    (
        1usize..5,
        prop::collection::vec((0u32..12, prop::option::of(0u32..16)), QUEUES),
        prop::collection::vec((0..QUEUES, 1u32..2, -3i32..3), 0..24),
        prop::collection::vec((0..QUEUES, 1u32..4, 1u32..3, -3i32..3), 1..8),
    )
        .prop_map(|(nodes, quotas, running, pending)| Scene {
            nodes,
            quotas,
            running,
            pending,
        })
}

fn tree(s: &Scene, capacity: u32) -> QueueTree {
    let mut specs = vec![QueueSpec::new("org")];
    // Guarantees scaled to fit the cluster together.
    let total: u32 = s.quotas.iter().map(|q| q.0).sum::<u32>().max(1);
    for (i, (g, extra)) in s.quotas.iter().enumerate() {
        let g = if total > capacity {
            g * capacity / total
        } else {
            *g
        };
        let limit = extra.map(|e| i64::from(g + e));
        specs.push(QueueSpec::new(format!("q{i}")).parent("org").quota(
            Resource::Gpu,
            i64::from(g),
            limit,
        ));
    }
    QueueTree::new(&specs).unwrap()
}

/// Running gangs of 1-GPU pods placed first fit; each gang in its queue.
fn build(s: &Scene) -> (Cluster, Vec<Gang>) {
    let spec = builtin("dgx-a100").unwrap();
    let nodes: Vec<NodeInfo> = (0..s.nodes)
        .map(|i| NodeInfo::from_machine(&format!("n{i}"), spec))
        .collect();
    let mut c = Cluster::new(nodes).unwrap();
    for (gi, (q, pods, priority)) in s.running.iter().enumerate() {
        let key = GangKey::new("run", format!("g{gi}"));
        for p in 0..*pods {
            let Some((node, gpu)) = (0..s.nodes).find_map(|n| {
                let name = format!("n{n}");
                c.free_gpus(&name)?.first().map(|&g| (name, g as u32))
            }) else {
                break;
            };
            c.add_pod(PlacedPod {
                id: PodId::new(format!("run{gi}-{p}")),
                gang: key.clone(),
                node,
                resources: Resources::new(1000, 1 << 30, 1),
                gpus: vec![gpu],
                priority: *priority,
                started_at: gi as u64,
                preemptible: true,
                terminating: false,
                ends_by: None,
            })
            .unwrap();
        }
        c.set_gang_queue(&key, format!("q{q}"));
    }
    let gangs = s
        .pending
        .iter()
        .enumerate()
        .map(|(i, (q, pods, gpus, priority))| {
            let mut g = Gang::uniform("p", &format!("g{i}"), *pods, *gpus, *priority, i as u64);
            g.queue = format!("q{q}");
            g
        })
        .collect();
    (c, gangs)
}

/// GPUs per queue after the plan: victims gone, placements and preemptors in.
fn after(c: &Cluster, gangs: &[Gang], plan: &Plan, only_reclaim: bool) -> HashMap<String, u64> {
    let mut held: HashMap<String, u64> = HashMap::new();
    let evicted: HashSet<&GangKey> = plan
        .preemptions
        .iter()
        .filter(|p| p.reclaim || !only_reclaim)
        .flat_map(|p| p.victims.iter().map(|v| &v.gang))
        .collect();
    for p in c.pods() {
        if !evicted.contains(&p.gang) {
            *held.entry(c.gang_queue(&p.gang).to_string()).or_default() +=
                u64::from(p.resources.gpus);
        }
    }
    let by_key: HashMap<&GangKey, &Gang> = gangs.iter().map(|g| (&g.key, g)).collect();
    for (k, a) in plan
        .placements
        .iter()
        .map(|p| (&p.gang, &p.assignments))
        .chain(plan.preemptions.iter().map(|p| (&p.gang, &p.assignments)))
    {
        let g = by_key[k];
        let per = g.pending.first().map_or(0, |m| u64::from(m.resources.gpus));
        *held.entry(g.queue.clone()).or_default() += per * a.len() as u64;
    }
    held
}

/// One round's effect: victims' pods leave, placed and preempting gangs' pods bind (in their
/// gang's queue), and gangs with every pending member bound leave the pending list.
fn apply(c: &mut Cluster, gangs: &mut Vec<Gang>, plan: &Plan) {
    for v in plan.preemptions.iter().flat_map(|p| &p.victims) {
        for id in &v.pods {
            c.remove_pod(id);
        }
    }
    let placed = plan
        .placements
        .iter()
        .map(|p| (&p.gang, &p.assignments))
        .chain(plan.preemptions.iter().map(|p| (&p.gang, &p.assignments)));
    let mut done = HashSet::new();
    for (key, assignments) in placed {
        let Some(g) = gangs.iter().find(|g| &g.key == key) else {
            continue;
        };
        for a in assignments {
            let Some(m) = g.pending.iter().find(|m| m.id == a.pod) else {
                continue;
            };
            c.add_pod(PlacedPod {
                id: a.pod.clone(),
                gang: key.clone(),
                node: a.node.to_string(),
                resources: m.resources,
                gpus: a.gpus.clone(),
                priority: g.priority,
                started_at: 0,
                preemptible: true,
                terminating: false,
                ends_by: None,
            })
            .unwrap();
        }
        c.set_gang_queue(key, g.queue.clone());
        done.insert(key.clone());
    }
    gangs.retain(|g| !done.contains(&g.key));
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 150, max_global_rejects: 1 << 20, ..ProptestConfig::default() })]

    #[test]
    fn queue_plans_keep_every_promise(s in scene()) {
        let (c, gangs) = build(&s);
        let t = tree(&s, (s.nodes * 8) as u32);
        let cfg = PlannerConfig::default();
        let plan = c.plan_with_queues(&gangs, 0, &cfg, &t);
        prop_assert_eq!(&plan, &c.plan_with_queues(&gangs, 0, &cfg, &t), "deterministic");
        let before: HashMap<String, (u64, u64, u64)> = plan
            .queues
            .iter()
            .map(|q| (q.name.clone(), (q.allocated.gpus, q.guaranteed.gpus, 0)))
            .collect();
        let limits: HashMap<String, u64> = s.quotas.iter().enumerate().filter_map(|(i, (g, e))| {
            let total: u32 = s.quotas.iter().map(|q| q.0).sum::<u32>().max(1);
            let cap = (s.nodes * 8) as u32;
            let g = if total > cap { g * cap / total } else { *g };
            e.map(|e| (format!("q{i}"), u64::from(g + e)))
        }).collect();
        let held = after(&c, &gangs, &plan, false);
        // No queue above its limit (unless it already was: then it grows no further).
        for (q, limit) in &limits {
            let now = held.get(q).copied().unwrap_or(0);
            prop_assert!(now <= (*limit).max(before[q].0), "{} holds {} > limit {}", q, now, limit);
        }
        // Reclaim: whole gangs, never a victim queue below its guarantee.
        let kept = after(&c, &gangs, &plan, true);
        let mut victims = HashSet::new();
        for p in plan.preemptions.iter() {
            for v in &p.victims {
                prop_assert!(victims.insert(v.gang.clone()), "victim twice");
                let pods: HashSet<PodId> = c.gang_pods(&v.gang).map(|p| p.id.clone()).collect();
                prop_assert_eq!(pods, v.pods.iter().cloned().collect::<HashSet<_>>(), "whole gang");
                let q = c.gang_queue(&v.gang).to_string();
                let (was, guaranteed, _) = before[&q];
                if p.reclaim && was >= guaranteed {
                    prop_assert!(kept.get(&q).copied().unwrap_or(0) >= guaranteed,
                        "reclaim took {} below its guarantee {}", q, guaranteed);
                }
                if p.reclaim {
                    let preemptor = gangs.iter().find(|g| g.key == p.gang).unwrap();
                    prop_assert_ne!(&preemptor.queue, &q, "reclaim inside the waiting queue");
                }
            }
        }
    }

    #[test]
    fn a_queue_under_its_guarantee_gets_room_when_reclaim_can_free_it(
        s in scene(), q in 0..QUEUES, pods in 1u32..8,
    ) {
        let (c, mut gangs) = build(&s);
        let t = tree(&s, (s.nodes * 8) as u32);
        let plan0 = c.plan_with_queues(&[], 0, &PlannerConfig::default(), &t);
        let st = plan0.queues.iter().find(|x| x.name == format!("q{q}")).unwrap();
        let fits = st.allocated.gpus + u64::from(pods) <= st.guaranteed.gpus;
        prop_assume!(fits);
        // One gang of the queue, of 1-GPU pods, fitting its guarantee; others keep theirs.
        gangs.retain(|g| g.queue != format!("q{q}"));
        let mut g = Gang::uniform("p", "mine", pods, 1, -10, 1000);
        g.queue = format!("q{q}");
        gangs.push(g);
        // Rounds as the scheduler runs them: victims leave, placed gangs bind, the rest is
        // planned again. An older gang's reclaim on the same node may hold it for a round.
        let key = GangKey::new("p", "mine");
        let mut c = c;
        let mut last = None;
        for _ in 0..4 {
            let plan = c.plan_with_queues(&gangs, 0, &PlannerConfig::default(), &t);
            if plan.waiting_for(&key).is_none() {
                last = None;
                break;
            }
            last = plan.waiting_for(&key).cloned();
            apply(&mut c, &mut gangs, &plan);
        }
        prop_assert!(last.is_none(), "{:?}", last);
    }

    #[test]
    fn equivalence_classes_change_no_queue_plan(s in scene(), now in 0u64..4000) {
        let (c, mut gangs) = build(&s);
        // Repeat shapes, so that later gangs are equivalent to earlier ones.
        let more: Vec<Gang> = gangs.iter().map(|g| {
            let mut twin = g.clone();
            twin.key = GangKey::new("twin", g.key.name.clone());
            for m in &mut twin.pending {
                m.id = PodId::new(format!("twin-{}", m.id.0));
            }
            twin.created_at = g.created_at.saturating_add(50);
            twin
        }).collect();
        gangs.extend(more);
        let t = tree(&s, (s.nodes * 8) as u32);
        let on = PlannerConfig::default();
        let off = PlannerConfig { skip_equivalent: false, ..PlannerConfig::default() };
        prop_assert_eq!(
            c.plan_with_queues(&gangs, now, &on, &t),
            c.plan_with_queues(&gangs, now, &off, &t)
        );
    }

    #[test]
    fn an_empty_tree_plans_like_plan(s in scene()) {
        let (c, gangs) = build(&s);
        let cfg = PlannerConfig::default();
        prop_assert_eq!(
            c.plan_with_queues(&gangs, 0, &cfg, &QueueTree::default()),
            c.plan(&gangs, 0, &cfg)
        );
    }
}
