//! Queues: a hierarchy whose leaves hold workloads, with per-resource guarantees, limits and
//! weights. [`QueueTree::new`] validates [`QueueSpec`]s (as an adapter reads them from queue
//! objects); [`crate::Cluster::plan_with_queues`] plans with them.
//!
//! Semantics:
//! - A queue's quotas cover the resources it names (`nvidia.com/gpu`, `cpu`, `memory`); a
//!   resource it does not name is neither guaranteed nor limited, and weighs 1 in fair share.
//! - `guaranteed`: always available to the queue; lent to others while the queue leaves it
//!   idle. A parent's guarantee is at least the sum of its children's.
//! - `limit`: the most the queue may hold, borrowed capacity included. A gang enters only
//!   while its queue and every ancestor stay within their limits.
//! - `weight`: the queue's share, among its siblings, of what is left after guarantees.
//! - `reclaimable` (default true) is the lender's choice: whether what it lends may be taken
//!   back. A reclaimable queue below its guarantee whose waiting gang fits that guarantee
//!   evicts borrowers (whole gangs of other queues above their guarantee) to get room. A
//!   queue with `reclaimable: false` still lends its idle guarantee, but lends it for good:
//!   it never evicts borrowers and waits for them to finish instead.
//! - `borrowed_reclaimable` (default true) is the borrower's side (Volcano's `reclaimable`):
//!   `false` keeps what the queue holds above its guarantee from ever being reclaimed.
//! - `closed`: the queue admits no new gangs (Volcano's `Closed` state).

mod ahead;
mod plan;
mod reclaim;
mod share;
mod status;
mod usage;

pub use share::format_ratio;
pub use status::{QueueAmounts, QueueStatus, QueueWait};

use serde::{Deserialize, Serialize};
use std::collections::BTreeMap;

/// The resources queues account for, in [`Amounts`] order.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
pub enum Resource {
    Gpu,
    Cpu,
    Memory,
}

pub const RESOURCES: [Resource; 3] = [Resource::Gpu, Resource::Cpu, Resource::Memory];

impl Resource {
    /// The Kubernetes resource name.
    pub fn name(self) -> &'static str {
        match self {
            Resource::Gpu => "nvidia.com/gpu",
            Resource::Cpu => "cpu",
            Resource::Memory => "memory",
        }
    }

    pub fn parse(name: &str) -> Option<Resource> {
        RESOURCES.into_iter().find(|r| r.name() == name)
    }

    pub(crate) fn index(self) -> usize {
        self as usize
    }

    /// "64 GPUs", "16000 mCPU", "512 GiB memory".
    pub fn amount(self, v: u64) -> String {
        match self {
            Resource::Gpu => format!("{v} GPU{}", if v == 1 { "" } else { "s" }),
            Resource::Cpu => format!("{v} mCPU"),
            Resource::Memory if v.is_multiple_of(1 << 30) => format!("{} GiB memory", v >> 30),
            Resource::Memory => format!("{} MiB memory", v >> 20),
        }
    }
}

impl Resource {
    /// `held`/`limit` and `need` in one unit (the limit's: GiB only when all three are whole
    /// GiB): ("60/64 GPUs", "8 GPUs"), ("0/1536 MiB memory", "32768 MiB").
    pub fn against_limit(self, held: u64, limit: u64, need: u64) -> (String, String) {
        match self {
            Resource::Gpu => (format!("{held}/{}", self.amount(limit)), self.amount(need)),
            Resource::Cpu => (format!("{held}/{limit} mCPU"), format!("{need} mCPU")),
            Resource::Memory => {
                let gib = 1u64 << 30;
                let (div, unit) = if [held, limit, need].iter().all(|v| v.is_multiple_of(gib)) {
                    (gib, "GiB")
                } else {
                    (1 << 20, "MiB")
                };
                (
                    format!("{}/{} {unit} memory", held.div_ceil(div), limit / div),
                    format!("{} {unit}", need.div_ceil(div)),
                )
            }
        }
    }
}

/// Amounts per [`Resource`]: GPUs, CPU millis, memory bytes.
pub type Amounts = [u64; 3];

/// One resource's quota as written in a queue object. Signed so that an adapter can pass what
/// it read and get a clear error for negative values.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct QuotaSpec {
    /// `nvidia.com/gpu` (count), `cpu` (millicores) or `memory` (bytes).
    pub resource: String,
    #[serde(default)]
    pub guaranteed: i64,
    /// `None`: no limit.
    #[serde(default)]
    pub limit: Option<i64>,
    #[serde(default = "one")]
    pub weight: i64,
}

fn one() -> i64 {
    1
}

fn yes() -> bool {
    true
}

#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct QueueSpec {
    pub name: String,
    #[serde(default)]
    pub parent: Option<String>,
    #[serde(default)]
    pub quotas: Vec<QuotaSpec>,
    #[serde(default = "yes")]
    pub reclaimable: bool,
    /// Whether what this queue holds above its guarantee may be reclaimed by others (Volcano's
    /// `reclaimable`, the borrower's side). `false`: its gangs are never reclaim victims.
    #[serde(default = "yes")]
    pub borrowed_reclaimable: bool,
    /// A closed queue (Volcano's `Closed`/`Closing` state) admits no new gangs; its running
    /// gangs keep running and count as before.
    #[serde(default)]
    pub closed: bool,
}

impl QueueSpec {
    /// A root queue with no quotas.
    pub fn new(name: impl Into<String>) -> QueueSpec {
        QueueSpec {
            name: name.into(),
            parent: None,
            quotas: Vec::new(),
            reclaimable: true,
            borrowed_reclaimable: true,
            closed: false,
        }
    }

    pub fn parent(mut self, parent: impl Into<String>) -> QueueSpec {
        self.parent = Some(parent.into());
        self
    }

    /// Adds a quota (weight 1).
    pub fn quota(mut self, resource: Resource, guaranteed: i64, limit: Option<i64>) -> QueueSpec {
        self.quotas.push(QuotaSpec {
            resource: resource.name().into(),
            guaranteed,
            limit,
            weight: 1,
        });
        self
    }

    /// Sets the weight of the resource's quota (adding one with no guarantee if needed).
    pub fn weight(mut self, resource: Resource, weight: i64) -> QueueSpec {
        match self
            .quotas
            .iter_mut()
            .find(|q| q.resource == resource.name())
        {
            Some(q) => q.weight = weight,
            None => self.quotas.push(QuotaSpec {
                resource: resource.name().into(),
                guaranteed: 0,
                limit: None,
                weight,
            }),
        }
        self
    }

    pub fn reclaimable(mut self, reclaimable: bool) -> QueueSpec {
        self.reclaimable = reclaimable;
        self
    }

    pub fn borrowed_reclaimable(mut self, borrowed_reclaimable: bool) -> QueueSpec {
        self.borrowed_reclaimable = borrowed_reclaimable;
        self
    }

    pub fn closed(mut self, closed: bool) -> QueueSpec {
        self.closed = closed;
        self
    }
}

#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum QueueError {
    #[error("a queue has an empty name")]
    EmptyName,
    #[error("queue {0} is defined twice")]
    Duplicate(String),
    #[error("queue {queue} names parent {parent}, which does not exist")]
    UnknownParent { queue: String, parent: String },
    #[error("queue {0} is its own ancestor (a cycle of parents)")]
    Cycle(String),
    #[error(
        "queue {queue}: resource {resource} is not supported (nvidia.com/gpu, cpu, memory; per-GPU-product quotas are not supported yet)"
    )]
    UnknownResource { queue: String, resource: String },
    #[error("queue {queue}: resource {resource} has two quotas")]
    DuplicateResource { queue: String, resource: String },
    #[error("queue {queue}: {resource} {field} is {value}, it must not be negative")]
    Negative {
        queue: String,
        resource: String,
        field: &'static str,
        value: i64,
    },
    #[error("queue {queue}: {resource} weight is {value}, it must be at least 1")]
    Weight {
        queue: String,
        resource: String,
        value: i64,
    },
    #[error("queue {queue}: {resource} guarantee {guaranteed} is above its limit {limit}")]
    GuaranteeAboveLimit {
        queue: String,
        resource: String,
        guaranteed: u64,
        limit: u64,
    },
    #[error("queue {queue}: its children guarantee {children} {resource}, above its limit {limit}")]
    ChildrenAboveLimit {
        queue: String,
        resource: String,
        children: u64,
        limit: u64,
    },
    #[error("queue {0} does not exist")]
    UnknownQueue(String),
    #[error("queue {0} has child queues: only leaf queues hold workloads")]
    NotALeaf(String),
}

/// One validated queue.
#[derive(Clone, Debug, PartialEq, Eq)]
pub(crate) struct QueueNode {
    pub name: String,
    pub parent: Option<usize>,
    pub children: Vec<usize>,
    /// Resources the queue (or a descendant) names.
    pub named: [bool; 3],
    /// Own guarantee, or the sum of the children's if larger.
    pub guaranteed: Amounts,
    /// `u64::MAX`: no limit.
    pub limit: Amounts,
    pub weight: Amounts,
    pub reclaimable: bool,
    pub borrowed_reclaimable: bool,
    pub closed: bool,
}

/// A validated queue hierarchy. Queues are kept sorted by name, so everything derived from a
/// tree is deterministic.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct QueueTree {
    pub(crate) nodes: Vec<QueueNode>,
    by_name: BTreeMap<String, usize>,
}

impl QueueTree {
    /// Validates specs into a tree: unique non-empty names, existing parents, no cycles, known
    /// resources, no negative values, weights of at least 1, guarantees within limits.
    pub fn new(specs: &[QueueSpec]) -> Result<QueueTree, QueueError> {
        let mut sorted: Vec<&QueueSpec> = specs.iter().collect();
        sorted.sort_by(|a, b| a.name.cmp(&b.name));
        let mut by_name = BTreeMap::new();
        for (i, s) in sorted.iter().enumerate() {
            if s.name.is_empty() {
                return Err(QueueError::EmptyName);
            }
            if by_name.insert(s.name.clone(), i).is_some() {
                return Err(QueueError::Duplicate(s.name.clone()));
            }
        }
        let mut nodes = Vec::with_capacity(sorted.len());
        for s in &sorted {
            let parent = match &s.parent {
                None => None,
                Some(p) => Some(*by_name.get(p).ok_or_else(|| QueueError::UnknownParent {
                    queue: s.name.clone(),
                    parent: p.clone(),
                })?),
            };
            let mut node = QueueNode {
                name: s.name.clone(),
                parent,
                children: Vec::new(),
                named: [false; 3],
                guaranteed: [0; 3],
                limit: [u64::MAX; 3],
                weight: [1; 3],
                reclaimable: s.reclaimable,
                borrowed_reclaimable: s.borrowed_reclaimable,
                closed: s.closed,
            };
            for q in &s.quotas {
                quota(&mut node, q)?;
            }
            nodes.push(node);
        }
        // Cycles: walking up from any queue must reach a root within `len` steps.
        for start in 0..nodes.len() {
            let mut at = nodes[start].parent;
            let mut steps = 0;
            while let Some(p) = at {
                steps += 1;
                if steps > nodes.len() {
                    return Err(QueueError::Cycle(nodes[start].name.clone()));
                }
                at = nodes[p].parent;
            }
        }
        for i in 0..nodes.len() {
            if let Some(p) = nodes[i].parent {
                nodes[p].children.push(i);
            }
        }
        let mut tree = QueueTree { nodes, by_name };
        for i in tree.postorder() {
            tree.roll_up(i)?;
        }
        Ok(tree)
    }

    /// Children's guarantees and named resources roll up into their parent.
    fn roll_up(&mut self, i: usize) -> Result<(), QueueError> {
        let children = self.nodes[i].children.clone();
        for r in RESOURCES {
            let k = r.index();
            let sum = children
                .iter()
                .fold(0u64, |s, &c| s.saturating_add(self.nodes[c].guaranteed[k]));
            let named = children.iter().any(|&c| self.nodes[c].named[k]);
            let node = &mut self.nodes[i];
            node.named[k] |= named;
            if sum > node.limit[k] {
                return Err(QueueError::ChildrenAboveLimit {
                    queue: node.name.clone(),
                    resource: r.name().into(),
                    children: sum,
                    limit: node.limit[k],
                });
            }
            node.guaranteed[k] = node.guaranteed[k].max(sum);
        }
        Ok(())
    }

    /// Children before parents.
    pub(crate) fn postorder(&self) -> Vec<usize> {
        let mut out = Vec::with_capacity(self.nodes.len());
        let mut stack: Vec<(usize, bool)> = self.roots().rev().map(|r| (r, false)).collect();
        while let Some((i, done)) = stack.pop() {
            if done {
                out.push(i);
            } else {
                stack.push((i, true));
                stack.extend(self.nodes[i].children.iter().rev().map(|&c| (c, false)));
            }
        }
        out
    }

    pub(crate) fn roots(&self) -> impl DoubleEndedIterator<Item = usize> + '_ {
        (0..self.nodes.len()).filter(|&i| self.nodes[i].parent.is_none())
    }

    /// No queues at all: [`crate::Cluster::plan_with_queues`] then plans exactly like `plan`.
    pub fn is_empty(&self) -> bool {
        self.nodes.is_empty()
    }

    pub fn len(&self) -> usize {
        self.nodes.len()
    }

    pub fn contains(&self, name: &str) -> bool {
        self.by_name.contains_key(name)
    }

    /// Whether gangs may be placed in the queue: it exists and has no children.
    pub fn is_leaf(&self, name: &str) -> bool {
        self.leaf(name).is_ok()
    }

    pub(crate) fn index(&self, name: &str) -> Option<usize> {
        self.by_name.get(name).copied()
    }

    /// The leaf queue a gang may be placed in.
    pub(crate) fn leaf(&self, name: &str) -> Result<usize, QueueError> {
        let i = self
            .index(name)
            .ok_or_else(|| QueueError::UnknownQueue(name.into()))?;
        if self.nodes[i].children.is_empty() {
            Ok(i)
        } else {
            Err(QueueError::NotALeaf(name.into()))
        }
    }

    /// The queue and its ancestors, the queue first.
    pub(crate) fn chain(&self, i: usize) -> impl Iterator<Item = usize> + '_ {
        std::iter::successors(Some(i), |&n| self.nodes[n].parent)
    }
}

fn quota(node: &mut QueueNode, q: &QuotaSpec) -> Result<(), QueueError> {
    let queue = || node.name.clone();
    let r = Resource::parse(&q.resource).ok_or_else(|| QueueError::UnknownResource {
        queue: queue(),
        resource: q.resource.clone(),
    })?;
    let k = r.index();
    if node.named[k] {
        return Err(QueueError::DuplicateResource {
            queue: queue(),
            resource: q.resource.clone(),
        });
    }
    let unsigned = |field: &'static str, value: i64| {
        u64::try_from(value).map_err(|_| QueueError::Negative {
            queue: node.name.clone(),
            resource: q.resource.clone(),
            field,
            value,
        })
    };
    let guaranteed = unsigned("guaranteed", q.guaranteed)?;
    let limit = q.limit.map(|l| unsigned("limit", l)).transpose()?;
    if q.weight < 1 {
        return Err(QueueError::Weight {
            queue: queue(),
            resource: q.resource.clone(),
            value: q.weight,
        });
    }
    let limit = limit.unwrap_or(u64::MAX);
    if guaranteed > limit {
        return Err(QueueError::GuaranteeAboveLimit {
            queue: queue(),
            resource: q.resource.clone(),
            guaranteed,
            limit,
        });
    }
    node.named[k] = true;
    node.guaranteed[k] = guaranteed;
    node.limit[k] = limit;
    node.weight[k] = u64::try_from(q.weight).unwrap_or(1);
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn gpu(name: &str, guaranteed: i64, limit: Option<i64>) -> QueueSpec {
        QueueSpec::new(name).quota(Resource::Gpu, guaranteed, limit)
    }

    #[test]
    fn builds_a_hierarchy_and_rolls_guarantees_up() {
        let t = QueueTree::new(&[
            gpu("research", 0, Some(64)),
            gpu("vision", 16, None).parent("research"),
            gpu("nlp", 8, Some(32)).parent("research"),
            QueueSpec::new("team-b"),
        ])
        .unwrap();
        let r = t.index("research").unwrap();
        assert_eq!(
            t.nodes[r].guaranteed[0], 24,
            "children's guarantees roll up"
        );
        assert_eq!(t.nodes[r].limit[0], 64);
        assert!(t.nodes[t.index("team-b").unwrap()].limit[0] == u64::MAX);
        assert_eq!(
            t.leaf("research"),
            Err(QueueError::NotALeaf("research".into()))
        );
        assert_eq!(t.leaf("nope"), Err(QueueError::UnknownQueue("nope".into())));
        let v = t.leaf("vision").unwrap();
        assert_eq!(t.chain(v).count(), 2);
        let post = t.postorder();
        assert_eq!(post.len(), 4);
        assert!(post.iter().position(|&i| i == v) < post.iter().position(|&i| i == r));
    }

    #[test]
    fn rejects_bad_specs_with_clear_errors() {
        let err = |specs: &[QueueSpec]| QueueTree::new(specs).unwrap_err().to_string();
        assert_eq!(err(&[QueueSpec::new("")]), "a queue has an empty name");
        assert!(err(&[QueueSpec::new("a"), QueueSpec::new("a")]).contains("twice"));
        assert!(err(&[QueueSpec::new("a").parent("zz")]).contains("parent zz"));
        assert!(
            err(&[
                QueueSpec::new("a").parent("b"),
                QueueSpec::new("b").parent("a")
            ])
            .contains("cycle")
        );
        assert!(err(&[QueueSpec::new("a").parent("a")]).contains("cycle"));
        let mut s = QueueSpec::new("a");
        s.quotas.push(QuotaSpec {
            resource: "nvidia.com/gpu.a100".into(),
            guaranteed: 1,
            limit: None,
            weight: 1,
        });
        assert!(err(&[s]).contains("not supported"));
        assert!(err(&[gpu("a", -1, None)]).contains("guaranteed is -1"));
        assert!(err(&[gpu("a", 0, Some(-5))]).contains("limit is -5"));
        assert!(err(&[gpu("a", 9, Some(8))]).contains("above its limit 8"));
        assert!(err(&[gpu("a", 1, None).weight(Resource::Gpu, 0)]).contains("at least 1"));
        assert!(err(&[gpu("a", 1, None).quota(Resource::Gpu, 1, None)]).contains("two quotas"));
        assert!(
            err(&[gpu("p", 0, Some(10)), gpu("c", 11, None).parent("p")])
                .contains("children guarantee 11")
        );
    }

    #[test]
    fn specs_deserialize_with_defaults() {
        let s: QueueSpec = serde_json_like();
        assert!(s.reclaimable);
        assert_eq!(s.quotas[0].weight, 1);
    }

    fn serde_json_like() -> QueueSpec {
        serde_json::from_str(r#"{"name":"a","quotas":[{"resource":"cpu","guaranteed":1000}]}"#)
            .unwrap()
    }
}
