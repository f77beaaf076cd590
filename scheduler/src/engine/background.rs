//! The background loop: plans whenever the cache changes (spaced by the rounds' own cost) and
//! at least every few seconds while gangs wait, so preemptions and statuses progress even when
//! kube-scheduler is backing off or never asks (see `round_due`).

use super::{
    Engine, MIN_BACKGROUND_REPLAN, MIN_VICTIM_REPLAN, PROMPT_SPACING_FACTOR, ROUND_SPACING_FACTOR,
    SETTLE_AT_MOST, SETTLE_QUIET, State, TIMED_REPLAN,
};
use std::sync::Arc;
use std::time::Duration;
use tokio::time::Instant;

impl Engine {
    /// Re-plans in the background whenever the cache changes, so preemptions and statuses
    /// progress even when kube-scheduler is backing off.
    pub async fn run_background(self: Arc<Self>) {
        loop {
            // Only when everything seen is planned: a change that arrived while a round ran,
            // or inside the spacing, is planned without waiting for yet another change (the
            // cache's notification is not kept for a loop that is busy).
            let idle = {
                let st = self.state.lock().await;
                !self.is_leader()
                    || !self.cache.queues_known()
                    || self.cache.generation() == st.planned_generation
            };
            if idle {
                tokio::select! {
                    _ = self.cache.changed() => {}
                    _ = tokio::time::sleep(Duration::from_secs(2)) => {}
                }
                // Let bursts of events settle into one round, unless a gang waits for its
                // victims, for room that just came back, or arrived needing a round: every
                // round later is time it is kept from running.
                let prompt = {
                    let mut st = self.state.lock().await;
                    self.place_gated_arrivals(&mut st);
                    st.awaiting_victims || self.round_wanted_soon(&st)
                };
                if !prompt {
                    self.settle().await;
                }
            }
            let mut st = self.state.lock().await;
            if !self.is_leader() && !st.round_running {
                // A new leader plans from scratch; waiting binds are released with an error
                // (dropped senders) and kube-scheduler retries those pods.
                if !st.plans.is_empty() || st.base.is_some() {
                    tracing::info!(plans = st.plans.len(), "not the leader: dropping plans");
                }
                let rejected = std::mem::take(&mut st.rejected);
                *st = State::default();
                st.rejected = rejected;
                continue;
            }
            self.expire(&mut st);
            self.place_gated_arrivals(&mut st);
            let spacing = if st.awaiting_victims {
                // Still bounded by the round's own cost: victims leave one event at a time.
                MIN_VICTIM_REPLAN.max(st.last_round_took)
            } else if self.round_wanted_soon(&st) {
                MIN_VICTIM_REPLAN.max(st.last_round_took * PROMPT_SPACING_FACTOR)
            } else {
                MIN_BACKGROUND_REPLAN.max(st.last_round_took * ROUND_SPACING_FACTOR)
            };
            let changed = self.cache.generation() != st.planned_generation;
            // Waits can end with time alone (reservations, schedule timeouts).
            let waits_age = !st.verdicts.is_empty()
                && st.last_replan.is_none_or(|t| t.elapsed() >= TIMED_REPLAN);
            let since_last = st.last_replan.map(|t| t.elapsed());
            drop(st);
            if let Some(delay) = round_due(changed, since_last, spacing, waits_age) {
                if !delay.is_zero() && self.wait_placing_arrivals(delay).await {
                    // A gang arrived that needs a round: the spacing is shorter now.
                    continue;
                }
                self.round(None).await;
            }
        }
    }

    /// Capacity came back (a bound pod left or finished) since the last round, which left
    /// gangs waiting for room.
    pub(super) fn room_back(&self, st: &State) -> bool {
        st.waiting_for_room && self.cache.signals.freed() != st.planned_freed
    }

    /// The next round should come sooner than the usual spacing: capacity came back for
    /// waiting gangs, or a new gang needs a round to be placed.
    pub(super) fn round_wanted_soon(&self, st: &State) -> bool {
        st.arrival_unplaced || self.room_back(st)
    }

    /// Waits until the cache has been quiet for `SETTLE_QUIET`, at most `SETTLE_AT_MOST`: a
    /// gang's members created one after another are planned in one round, and a lone change
    /// (a high-priority gang arriving) is not kept waiting for the whole of it.
    async fn settle(&self) {
        let until = Instant::now() + SETTLE_AT_MOST;
        loop {
            let quiet = SETTLE_QUIET.min(until.saturating_duration_since(Instant::now()));
            if quiet.is_zero() {
                return;
            }
            tokio::select! {
                _ = self.cache.changed() => {}
                _ = tokio::time::sleep(quiet) => return,
            }
        }
    }

    /// Sleeps `delay` (the spacing before the next round), placing gangs that arrive behind
    /// Muster's gate meanwhile; true if one of them, or capacity coming back, wants the round
    /// sooner.
    async fn wait_placing_arrivals(self: &Arc<Self>, delay: Duration) -> bool {
        let until = Instant::now() + delay;
        loop {
            tokio::select! {
                _ = tokio::time::sleep_until(until) => return false,
                _ = self.cache.signals.signalled() => {
                    let mut st = self.state.lock().await;
                    let before = self.round_wanted_soon(&st);
                    self.place_gated_arrivals(&mut st);
                    if !before && self.round_wanted_soon(&st) {
                        return true;
                    }
                }
            }
        }
    }
}

/// How long until the background loop's next round, or None to wait for a change. A change
/// inside the spacing is planned once the spacing has passed, never dropped: nothing else may
/// change meanwhile (a high-priority gang that kube-scheduler's own filters turn down never
/// reaches the extender, so only this loop ever plans its preemption).
pub(crate) fn round_due(
    changed: bool,
    since_last: Option<Duration>,
    spacing: Duration,
    waits_age: bool,
) -> Option<Duration> {
    if waits_age {
        return Some(Duration::ZERO);
    }
    if !changed {
        return None;
    }
    Some(since_last.map_or(Duration::ZERO, |t| spacing.saturating_sub(t)))
}
