//! One plain description of a queue, read from Muster's [`Queue`] or Volcano's
//! [`volcano::Queue`]: pure conversions, integer units, clear errors, no panics.
//!
//! Units: GPUs are whole counts, CPU is millicores, memory is bytes.
//!
//! | Muster `Queue` (`muster.dev/v1alpha1`)   | Volcano `Queue` (`scheduling.volcano.sh/v1beta1`) | [`QueueDefinition`] |
//! | --- | --- | --- |
//! | `metadata.name`                          | `metadata.name`                     | `name` |
//! | `spec.parent`                            | `spec.parent` (`""`: none)          | `parent` |
//! | `spec.{gpu,cpu,memory}.guaranteed`       | `spec.guarantee.resource`           | [`ResourceQuota::guaranteed`] |
//! | `spec.{gpu,cpu,memory}.limit`            | `spec.capability`                   | [`ResourceQuota::limit`] |
//! | `spec.{gpu,cpu,memory}.weight`           | `spec.weight` (one for every resource; unset or 0: 1) | [`ResourceQuota::weight`], `default_weight` |
//! | `spec.{gpu,cpu,memory}.reclaimable`      | (none: Volcano queues always reclaim up to `deserved`) | [`ResourceQuota::reclaim_lent`] |
//! | (none: always true)                      | `spec.reclaimable` (others may take back what it uses beyond `deserved`) | `borrowed_reclaimable` |
//! | (none: derived from guarantees and weights) | `spec.deserved`: the fair-share target, used instead of the weight-derived share | [`ResourceQuota::deserved`] |
//! | `spec.gpu.products[]` (node label `nvidia.com/gpu.product`) | (none) | `QueueResource::Gpu { product: Some(..) }` |
//! | (none)                                   | `spec.priority`                     | `priority` |
//! | (none)                                   | `status.state` `Closed`/`Closing`   | `closed` |
//! | (none)                                   | other resources (`pods`, MIG, ...)  | `ignored` (named, not used) |
//!
//! Volcano's `type`, `affinity`, `extendClusters` are read but not used.

use crate::compat::volcano;
use crate::quantity::{self, QuantityError};
use crate::queue::Queue;
pub use crate::queue_error::QueueError;
use k8s_openapi::apimachinery::pkg::api::resource::Quantity;
use muster_api::names::{GPU_RESOURCE, LABEL_QUEUE};
use std::collections::{BTreeMap, BTreeSet};

/// The queue of a gang that names none.
pub const DEFAULT_QUEUE: &str = "default";
/// Namespace annotation naming the queue of the namespace's gangs (same key as the pod label).
pub const ANNOTATION_NAMESPACE_QUEUE: &str = LABEL_QUEUE;

/// A gang's queue: `PodGroup.spec.queue` (Muster's or Volcano's), else the pod label
/// `muster.dev/queue`, else the namespace annotation `muster.dev/queue`, else `default`.
/// Empty values count as unset.
pub fn resolve_queue<'a>(
    group_queue: Option<&'a str>,
    pod_labels: Option<&'a BTreeMap<String, String>>,
    namespace_annotations: Option<&'a BTreeMap<String, String>>,
) -> &'a str {
    let from = |m: Option<&'a BTreeMap<String, String>>| {
        m.and_then(|m| m.get(LABEL_QUEUE)).map(String::as_str)
    };
    [group_queue, from(pod_labels), from(namespace_annotations)]
        .into_iter()
        .flatten()
        .find(|q| !q.is_empty())
        .unwrap_or(DEFAULT_QUEUE)
}

/// A resource a queue accounts.
#[derive(Clone, Debug, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum QueueResource {
    /// Whole GPUs (`nvidia.com/gpu`); with a product, those on nodes labelled
    /// `nvidia.com/gpu.product=<product>`.
    Gpu { product: Option<String> },
    /// Millicores.
    Cpu,
    /// Bytes.
    Memory,
}

impl QueueResource {
    /// `nvidia.com/gpu`, `nvidia.com/gpu/<product>`, `cpu`, `memory` (the status map keys).
    pub fn name(&self) -> String {
        match self {
            Self::Gpu { product: None } => GPU_RESOURCE.to_string(),
            Self::Gpu { product: Some(p) } => format!("{GPU_RESOURCE}/{p}"),
            Self::Cpu => "cpu".into(),
            Self::Memory => "memory".into(),
        }
    }

    /// The resource of a Kubernetes resource name, if a queue accounts it.
    pub fn from_resource_name(name: &str) -> Option<Self> {
        match name {
            GPU_RESOURCE => Some(Self::Gpu { product: None }),
            "cpu" => Some(Self::Cpu),
            "memory" => Some(Self::Memory),
            _ => None,
        }
    }

    /// A quantity in this resource's unit.
    pub fn parse(&self, q: &str) -> Result<u64, QuantityError> {
        match self {
            Self::Gpu { .. } => quantity::parse_count(q),
            Self::Cpu => quantity::parse_millis(q),
            Self::Memory => quantity::parse_bytes(q),
        }
    }
}

/// Which API object a definition was read from.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum QueueDialect {
    Muster,
    Volcano,
}

/// A queue's quota of one resource, in the resource's unit.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ResourceQuota {
    pub resource: QueueResource,
    /// Always available to the queue; lent while idle.
    pub guaranteed: u64,
    /// The most the queue may hold, borrowing included (`None`: no limit).
    pub limit: Option<u64>,
    /// Share of what is left after guarantees, relative to siblings (0: none).
    pub weight: u32,
    /// Whether the queue takes back what it lent when it needs it.
    pub reclaim_lent: bool,
    /// Volcano's `deserved`: a fixed fair-share target instead of the weight-derived one.
    pub deserved: Option<u64>,
}

/// A queue, whichever API object it came from.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct QueueDefinition {
    pub name: String,
    pub parent: Option<String>,
    pub dialect: QueueDialect,
    /// Resources the object mentions, sorted by resource, one entry each.
    pub resources: Vec<ResourceQuota>,
    /// Weight of a resource the object does not mention.
    pub default_weight: u32,
    /// Whether other queues may take back what this queue holds beyond its guarantee
    /// (Volcano: beyond `deserved`). Always true for Muster queues.
    pub borrowed_reclaimable: bool,
    /// Volcano's queue priority (higher: served first, reclaimed last); 0 for Muster queues.
    pub priority: i32,
    /// Volcano's `Closed`/`Closing` state: admit no new gangs.
    pub closed: bool,
    /// Fields naming resources a queue does not account (e.g. `spec.capability.pods`).
    pub ignored: Vec<String>,
}

impl QueueDefinition {
    /// The quota of `resource`: the object's entry, else no guarantee and no limit with the
    /// queue's weight (a GPU product: the GPU entry's weight and `reclaim_lent`).
    pub fn quota(&self, resource: &QueueResource) -> ResourceQuota {
        let find = |r: &QueueResource| self.resources.iter().find(|q| q.resource == *r);
        if let Some(q) = find(resource) {
            return q.clone();
        }
        let gpu = QueueResource::Gpu { product: None };
        let parent = match resource {
            QueueResource::Gpu { product: Some(_) } => find(&gpu),
            _ => None,
        };
        ResourceQuota {
            resource: resource.clone(),
            guaranteed: 0,
            limit: None,
            weight: parent.map_or(self.default_weight, |p| p.weight),
            reclaim_lent: parent.is_none_or(|p| p.reclaim_lent),
            deserved: None,
        }
    }
}

fn name_and_parent(
    name: Option<&String>,
    parent: Option<&String>,
) -> Result<(String, Option<String>), QueueError> {
    let name = name.filter(|n| !n.is_empty()).ok_or(QueueError::NoName)?;
    let parent = parent.filter(|p| !p.is_empty()).cloned();
    if parent.as_ref() == Some(name) {
        return Err(QueueError::OwnParent {
            queue: name.clone(),
        });
    }
    Ok((name.clone(), parent))
}

fn parse(
    queue: &str,
    resource: &QueueResource,
    field: String,
    q: Option<&Quantity>,
) -> Result<Option<u64>, QueueError> {
    q.map(|q| resource.parse(&q.0))
        .transpose()
        .map_err(|error| QueueError::Quantity {
            queue: queue.to_string(),
            field,
            error,
        })
}

/// guaranteed <= deserved <= limit, where set.
fn check(queue: &str, q: &ResourceQuota) -> Result<(), QueueError> {
    let bounds = [
        ("guaranteed", Some(q.guaranteed), "limit", q.limit),
        ("deserved", q.deserved, "limit", q.limit),
        ("guaranteed", Some(q.guaranteed), "deserved", q.deserved),
    ];
    for (what, value, bound, bound_value) in bounds {
        if let (Some(value), Some(bound_value)) = (value, bound_value)
            && value > bound_value
        {
            return Err(QueueError::Exceeds {
                queue: queue.to_string(),
                resource: q.resource.name(),
                what,
                value,
                bound,
                bound_value,
            });
        }
    }
    Ok(())
}

/// The fields every Muster quota shape has.
struct MusterQuota<'a> {
    guaranteed: Option<&'a Quantity>,
    limit: Option<&'a Quantity>,
    weight: Option<u32>,
    reclaimable: Option<bool>,
}

fn muster_quota(
    queue: &str,
    prefix: &str,
    resource: QueueResource,
    m: MusterQuota<'_>,
    inherit: (u32, bool),
) -> Result<ResourceQuota, QueueError> {
    let guaranteed = parse(
        queue,
        &resource,
        format!("{prefix}.guaranteed"),
        m.guaranteed,
    )?;
    let limit = parse(queue, &resource, format!("{prefix}.limit"), m.limit)?;
    let weight = m.weight.unwrap_or(inherit.0);
    if weight > 65535 {
        return Err(QueueError::Weight {
            queue: queue.to_string(),
            field: format!("{prefix}.weight"),
            value: i64::from(weight),
            range: "0..=65535",
        });
    }
    Ok(ResourceQuota {
        resource,
        guaranteed: guaranteed.unwrap_or(0),
        limit,
        weight,
        reclaim_lent: m.reclaimable.unwrap_or(inherit.1),
        deserved: None,
    })
}

/// Muster's `Queue` as a [`QueueDefinition`].
pub fn from_muster(q: &Queue) -> Result<QueueDefinition, QueueError> {
    let (name, parent) = name_and_parent(q.metadata.name.as_ref(), q.spec.parent.as_ref())?;
    let n = name.as_str();
    let mut resources = Vec::new();
    if let Some(gpu) = &q.spec.gpu {
        let m = MusterQuota {
            guaranteed: gpu.guaranteed.as_ref(),
            limit: gpu.limit.as_ref(),
            weight: gpu.weight,
            reclaimable: gpu.reclaimable,
        };
        let mut total = muster_quota(
            n,
            "spec.gpu",
            QueueResource::Gpu { product: None },
            m,
            (1, true),
        )?;
        let mut seen = BTreeSet::new();
        let mut sum: u64 = 0;
        for (i, p) in gpu.products.iter().enumerate() {
            if p.product.is_empty() {
                return Err(QueueError::EmptyProduct {
                    queue: name.clone(),
                });
            }
            if !seen.insert(p.product.as_str()) {
                return Err(QueueError::DuplicateProduct {
                    queue: name.clone(),
                    product: p.product.clone(),
                });
            }
            let m = MusterQuota {
                guaranteed: p.guaranteed.as_ref(),
                limit: p.limit.as_ref(),
                weight: p.weight,
                reclaimable: p.reclaimable,
            };
            let resource = QueueResource::Gpu {
                product: Some(p.product.clone()),
            };
            let inherit = (total.weight, total.reclaim_lent);
            let pq = muster_quota(n, &format!("spec.gpu.products[{i}]"), resource, m, inherit)?;
            check(n, &pq)?;
            sum = sum.checked_add(pq.guaranteed).ok_or_else(|| {
                QueueError::ProductGuaranteesOverflow {
                    queue: name.clone(),
                }
            })?;
            resources.push(pq);
        }
        if gpu.guaranteed.is_none() {
            total.guaranteed = sum;
        } else if sum > total.guaranteed {
            return Err(QueueError::ProductGuarantees {
                queue: name.clone(),
                sum,
                total: total.guaranteed,
            });
        }
        check(n, &total)?;
        resources.push(total);
    }
    for (field, resource, quota) in [
        ("spec.cpu", QueueResource::Cpu, &q.spec.cpu),
        ("spec.memory", QueueResource::Memory, &q.spec.memory),
    ] {
        if let Some(c) = quota {
            let m = MusterQuota {
                guaranteed: c.guaranteed.as_ref(),
                limit: c.limit.as_ref(),
                weight: c.weight,
                reclaimable: c.reclaimable,
            };
            let rq = muster_quota(n, field, resource, m, (1, true))?;
            check(n, &rq)?;
            resources.push(rq);
        }
    }
    resources.sort_by(|a, b| a.resource.cmp(&b.resource));
    Ok(QueueDefinition {
        name,
        parent,
        dialect: QueueDialect::Muster,
        resources,
        default_weight: 1,
        borrowed_reclaimable: true,
        priority: 0,
        closed: false,
        ignored: Vec::new(),
    })
}

/// Volcano's `Queue` as a [`QueueDefinition`] (see the module's table for the mapping).
pub fn from_volcano(q: &volcano::Queue) -> Result<QueueDefinition, QueueError> {
    let spec = &q.spec;
    let (name, parent) = name_and_parent(q.metadata.name.as_ref(), spec.parent.as_ref())?;
    let weight = match spec.weight {
        None | Some(0) => 1,
        Some(w) => u32::try_from(w)
            .ok()
            .filter(|w| (1..=65535).contains(w))
            .ok_or_else(|| QueueError::Weight {
                queue: name.clone(),
                field: "spec.weight".into(),
                value: i64::from(w),
                range: "1..=65535",
            })?,
    };
    // (guaranteed, limit, deserved) per resource.
    type Slots = (Option<u64>, Option<u64>, Option<u64>);
    let mut by_resource: BTreeMap<QueueResource, Slots> = BTreeMap::new();
    let mut ignored = Vec::new();
    let lists = [
        (
            "spec.guarantee.resource",
            spec.guarantee.as_ref().and_then(|g| g.resource.as_ref()),
            0,
        ),
        ("spec.capability", spec.capability.as_ref(), 1),
        ("spec.deserved", spec.deserved.as_ref(), 2),
    ];
    for (prefix, list, slot) in lists {
        for (key, value) in list.into_iter().flatten() {
            let field = format!("{prefix}.{key}");
            let Some(resource) = QueueResource::from_resource_name(key) else {
                ignored.push(field);
                continue;
            };
            let v = parse(&name, &resource, field, Some(value))?;
            let e = by_resource.entry(resource).or_default();
            match slot {
                0 => e.0 = v,
                1 => e.1 = v,
                _ => e.2 = v,
            }
        }
    }
    let mut resources = Vec::new();
    for (resource, (guaranteed, limit, deserved)) in by_resource {
        let rq = ResourceQuota {
            resource,
            guaranteed: guaranteed.unwrap_or(0),
            limit,
            weight,
            reclaim_lent: true,
            deserved,
        };
        check(&name, &rq)?;
        resources.push(rq);
    }
    let state = q.status.as_ref().and_then(|s| s.state.as_deref());
    Ok(QueueDefinition {
        name,
        parent,
        dialect: QueueDialect::Volcano,
        resources,
        default_weight: weight,
        borrowed_reclaimable: spec.reclaimable.unwrap_or(true),
        priority: spec.priority.unwrap_or(0),
        closed: matches!(state, Some("Closed" | "Closing")),
        ignored,
    })
}
