//! The static filters of a shape (schedulable, node selector and affinity, taints): which
//! nodes could ever take it, whatever is free. Computed once per cluster state and shared by
//! rounds (`Cluster::static_fits`); each round keeps the few it uses at hand as well, since
//! asking the shared cache takes a lock and hashing the key, once per placement.

use crate::model::{LabelRequirement, PodRequest, TaintEffect, Toleration};
use crate::placement::Work;
use std::cell::RefCell;
use std::sync::Arc;

/// Nodes that pass a shape's static filters (schedulable, selector, taints), with counts of
/// the rest by reason, for explanations.
#[derive(Debug, Default)]
pub(crate) struct StaticFit {
    pub nodes: Vec<u32>,
    /// By node: whether it is in `nodes` (the fit index's candidates are checked against it).
    pub member: Vec<bool>,
    pub unschedulable: usize,
    pub selector: usize,
    pub taints: usize,
}

pub(crate) type StaticKey = (
    Vec<LabelRequirement>,
    Vec<Vec<LabelRequirement>>,
    Vec<Toleration>,
);

/// The static fits a round has used, by key (few: one per distinct selector, affinity and
/// tolerations).
#[derive(Clone, Debug, Default)]
pub(crate) struct LocalFits(RefCell<Vec<(StaticKey, Arc<StaticFit>)>>);

/// Keys kept per round; past that, lookups go to the shared cache.
const LOCAL_FITS: usize = 16;

impl LocalFits {
    fn get(&self, req: &PodRequest) -> Option<Arc<StaticFit>> {
        let kept = self.0.try_borrow().ok()?;
        kept.iter()
            .find(|(k, _)| k.0 == req.selector && k.1 == req.node_terms && k.2 == req.tolerations)
            .map(|(_, f)| f.clone())
    }

    fn keep(&self, key: StaticKey, fit: &Arc<StaticFit>) {
        if let Ok(mut kept) = self.0.try_borrow_mut()
            && kept.len() < LOCAL_FITS
        {
            kept.push((key, fit.clone()));
        }
    }
}

impl Work<'_> {
    pub fn static_fit(&self, req: &PodRequest) -> Arc<StaticFit> {
        if let Some(f) = self.local_fits.get(req) {
            return f;
        }
        let key = (
            req.selector.clone(),
            req.node_terms.clone(),
            req.tolerations.clone(),
        );
        let tolerations = &req.tolerations;
        if let Some(f) = self
            .cluster
            .static_fits
            .lock()
            .ok()
            .and_then(|c| c.get(&key).cloned())
        {
            self.local_fits.keep(key, &f);
            return f;
        }
        let mut fit = StaticFit {
            member: vec![false; self.cluster.nodes.len()],
            ..StaticFit::default()
        };
        for (i, slot) in self.cluster.nodes.iter().enumerate() {
            if !slot.present {
                continue;
            }
            let info = &slot.info;
            if !info.schedulable {
                fit.unschedulable += 1;
            } else if !req.node_matches(&info.name, &info.labels) {
                fit.selector += 1;
            } else if !info.taints.iter().all(|t| {
                t.effect == TaintEffect::PreferNoSchedule
                    || tolerations.iter().any(|tol| tol.tolerates(t))
            }) {
                fit.taints += 1;
            } else {
                fit.nodes.push(u32::try_from(i).unwrap_or(u32::MAX));
                fit.member[i] = true;
            }
        }
        let fit = Arc::new(fit);
        self.local_fits.keep(key.clone(), &fit);
        if let Ok(mut cache) = self.cluster.static_fits.lock() {
            cache.insert(key, fit.clone());
        }
        fit
    }
}
