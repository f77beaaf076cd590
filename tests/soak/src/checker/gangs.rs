//! The gang checks of the tick: (c) partial gangs and (d) stuck gangs.

use std::collections::HashMap;
use std::time::Instant;

use serde_json::{Value, json};

use super::{Checker, DISTURB_WINDOW, PodRec, capacity};

impl Checker {
    pub(super) fn check_partial(&mut self, name: &str, now: Instant) {
        let Some(g) = self.gangs.get(name) else {
            return;
        };
        let bound = self.live_bound_of(g);
        let bound_pods = || -> Vec<Value> {
            g.pods
                .iter()
                .filter_map(|uid| self.pods.get(uid))
                .filter(|p| p.live_bound)
                .map(|p| json!({"pod": p.name, "node": p.node}))
                .collect()
        };
        let existing = g.pods.len();
        let over = g
            .partial_since
            .is_some_and(|t| now.duration_since(t) > self.partial_bound);
        let bound_pods = if over && !g.partial_done {
            bound_pods()
        } else {
            Vec::new()
        };
        let Some(g) = self.gangs.get_mut(name) else {
            return;
        };
        self.stats.partial_gang_checks += 1;
        if g.reached_min || bound == 0 || bound >= g.min {
            g.partial_since = None;
            return;
        }
        let since = *g.partial_since.get_or_insert(now);
        if g.partial_done || now.duration_since(since) <= self.partial_bound {
            return;
        }
        g.partial_done = true;
        let first_bound = g.first_bound.unwrap_or(since);
        let disturbed = self
            .shared
            .disturbances(name)
            .into_iter()
            .any(|t| t + DISTURB_WINDOW >= first_bound);
        if disturbed {
            self.stats.partial_exempted += 1;
            return;
        }
        let example = json!({
            "gang": name, "min_available": g.min, "bound": bound, "members": existing,
            "bound_pods": bound_pods, "partial_for_s": now.duration_since(since).as_secs(),
            "at_s": self.shared.at(now),
        });
        self.shared.violation("partial-gang", example);
    }

    pub(super) fn check_liveness(&mut self, name: &str, free: &HashMap<String, u32>, now: Instant) {
        let Some(g) = self.gangs.get(name) else {
            return;
        };
        let bound = self.live_bound_of(g);
        let members: Vec<&PodRec> = g.pods.iter().filter_map(|uid| self.pods.get(uid)).collect();
        let present = members
            .iter()
            .filter(|p| !p.deleting && !p.terminal)
            .count() as u32;
        let gpus = members.iter().map(|p| p.gpus).max().unwrap_or(0);
        let (min, pending_pods) = (g.min, members.len());
        let Some(g) = self.gangs.get_mut(name) else {
            return;
        };
        self.stats.liveness_checks += 1;
        if bound >= min || present < min {
            g.pending_since = None;
            g.fits_since = None;
            g.eligible = false;
            return;
        }
        let pending_since = *g.pending_since.get_or_insert(now);
        let needed = min - bound;
        let fits = capacity::fits(free, needed, gpus);
        if fits {
            let fits_since = *g.fits_since.get_or_insert(now);
            if now.duration_since(fits_since) >= self.fit_sustain {
                g.eligible = true;
            }
        } else {
            g.fits_since = None;
        }
        if g.eligible && !g.stuck_done && now.duration_since(pending_since) > self.stuck {
            g.stuck_done = true;
            let free_total: u32 = free.values().sum();
            let example = json!({
                "gang": name, "min_available": min, "bound": bound, "members": pending_pods,
                "gpus_per_member": gpus, "pending_for_s": now.duration_since(pending_since).as_secs(),
                "free_gpus_now": free_total, "fits_now": fits, "at_s": self.shared.at(now),
            });
            self.shared.violation("stuck", example);
        }
    }
}
