//! Which gated members' `PodScheduled` conditions to (re)write this round (see
//! `gate::explain_gated`): each write is a pod status update on the API server.

use std::collections::{HashMap, HashSet};
use std::time::{Duration, Instant};

/// A gated member's explanation is rewritten at most this often (its figures change with
/// every round; what it waits for rarely does).
pub(super) const EXPLAIN_EVERY: Duration = Duration::from_secs(15);

/// Explanation writes allowed per second on average, and at once after a quiet spell: a
/// fraction of a scheduler's usual client budget (kube-scheduler's default is 50 queries/s,
/// burst 100), so that thousands of gated pods never saturate the API server with status
/// writes while gangs wait to be bound.
pub(super) const EXPLAIN_PER_SEC: u32 = 20;
pub(super) const EXPLAIN_BURST: u32 = 100;

/// One waiting gated member and what its condition should say.
pub(super) struct GatedWait {
    pub uid: String,
    pub namespace: String,
    pub name: String,
    pub message: String,
}

/// What each gated member's condition last said, and when; and the write budget left.
pub(super) struct Explanations {
    said: HashMap<String, (String, Instant)>,
    /// Writes allowed now (a token bucket of [`EXPLAIN_BURST`], refilled at
    /// [`EXPLAIN_PER_SEC`]), as of `refilled`.
    tokens: f64,
    refilled: Option<Instant>,
}

impl Default for Explanations {
    fn default() -> Self {
        Explanations {
            said: HashMap::new(),
            tokens: f64::from(EXPLAIN_BURST),
            refilled: None,
        }
    }
}

impl Explanations {
    /// The members whose condition to write now: never explained, or saying something else
    /// for at least [`EXPLAIN_EVERY`], within the write budget: members never explained
    /// first (in the order given: the round's), then those explained longest ago. The rest
    /// wait for a later round. Recorded as written.
    pub fn due(&mut self, waits: Vec<GatedWait>, now: Instant) -> Vec<GatedWait> {
        self.refill(now);
        let mut fresh = Vec::new();
        let mut changed = Vec::new();
        for w in waits {
            match self.said.get(&w.uid) {
                None => fresh.push(w),
                Some((said, at))
                    if *said != w.message && now.duration_since(*at) >= EXPLAIN_EVERY =>
                {
                    changed.push((*at, w));
                }
                Some(_) => {}
            }
        }
        changed.sort_by_key(|(at, _)| *at);
        // Whole tokens only: the bucket never goes below zero.
        let allowed = self.tokens.floor() as usize;
        let out: Vec<GatedWait> = fresh
            .into_iter()
            .chain(changed.into_iter().map(|(_, w)| w))
            .take(allowed)
            .collect();
        self.tokens -= out.len() as f64;
        for w in &out {
            self.said.insert(w.uid.clone(), (w.message.clone(), now));
        }
        out
    }

    fn refill(&mut self, now: Instant) {
        let elapsed = self
            .refilled
            .map_or(0.0, |at| now.saturating_duration_since(at).as_secs_f64());
        self.tokens =
            (self.tokens + elapsed * f64::from(EXPLAIN_PER_SEC)).min(f64::from(EXPLAIN_BURST));
        self.refilled = Some(now);
    }

    /// Forgets pods no longer in the cache.
    pub fn retain(&mut self, seen: &HashSet<String>) {
        self.said.retain(|uid, _| seen.contains(uid));
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn waits(n: usize, message: &str) -> Vec<GatedWait> {
        (0..n)
            .map(|i| GatedWait {
                uid: format!("uid-{i}"),
                namespace: "ns".into(),
                name: format!("pod-{i}"),
                message: message.into(),
            })
            .collect()
    }

    #[test]
    fn a_member_is_rewritten_only_when_its_message_changed_and_not_too_often() {
        let mut e = Explanations::default();
        let t0 = Instant::now();
        assert_eq!(e.due(waits(3, "a"), t0).len(), 3);
        assert!(e.due(waits(3, "a"), t0 + EXPLAIN_EVERY * 2).is_empty());
        assert!(e.due(waits(3, "b"), t0 + Duration::from_secs(1)).is_empty());
        assert_eq!(e.due(waits(3, "b"), t0 + EXPLAIN_EVERY).len(), 3);
    }

    /// Thousands of gated pods (a contention burst at 10,000 nodes) must not turn into
    /// thousands of status writes a second on an API server already saturated: writes are
    /// paced, members never explained first.
    #[test]
    fn writes_are_paced_never_explained_members_first() {
        let mut e = Explanations::default();
        let t0 = Instant::now();
        let first = e.due(waits(50, "a"), t0);
        assert_eq!(first.len(), 50);
        // 5,000 members wait; the first 50 changed their message long enough ago.
        let later = t0 + EXPLAIN_EVERY;
        let now = e.due(waits(5_000, "b"), later);
        assert!(
            now.len() <= EXPLAIN_BURST as usize,
            "{} writes at once",
            now.len()
        );
        assert!(
            now.iter().all(|w| w
                .uid
                .trim_start_matches("uid-")
                .parse::<usize>()
                .unwrap_or(0)
                >= 50),
            "members never explained come first"
        );
        // A second later, about a second's worth more.
        let next = e.due(waits(5_000, "b"), later + Duration::from_secs(1));
        assert!(
            (1..=EXPLAIN_PER_SEC as usize).contains(&next.len()),
            "{} writes a second later",
            next.len()
        );
        // Eventually every member is explained, none twice for the same message.
        let mut t = later + Duration::from_secs(1);
        let mut written = now.len() + next.len();
        for _ in 0..100 {
            t += Duration::from_secs(10);
            written += e.due(waits(5_000, "b"), t).len();
        }
        assert_eq!(written, 5_000);
    }
}
