//! The order among gangs of equal priority ([`GangOrder`]) and its key, [`OrderRank`]: public
//! so that callers who pre-select gangs (the simulator leaves out gangs that cannot matter)
//! select exactly the ones the planner would take first (`PlannerConfig::rank`).

use serde::{Deserialize, Serialize};
use std::cmp::Ordering;

/// How gangs of equal priority are ordered.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub enum GangOrder {
    /// Oldest first (Volcano's and Kueue's default).
    Arrival,
    /// Highest response ratio next (Brinch Hansen's HRRN): (waited + run time) / run time, the
    /// run time being the declared one (a Job's `activeDeadlineSeconds`). Short gangs go ahead
    /// of long ones that have waited less than their own length, and every gang's ratio grows
    /// while it waits, so none starves. When no gang declares a run time, every gang assumes
    /// the same one and this is exactly [`GangOrder::Arrival`].
    #[default]
    ResponseRatio,
}

impl std::str::FromStr for GangOrder {
    type Err = String;

    /// `response-ratio` (or `responseRatio`, as in YAML) and `arrival`.
    fn from_str(s: &str) -> Result<GangOrder, String> {
        match s {
            "response-ratio" | "responseRatio" => Ok(GangOrder::ResponseRatio),
            "arrival" => Ok(GangOrder::Arrival),
            other => Err(format!(
                "unknown gang order '{other}': expected response-ratio or arrival"
            )),
        }
    }
}

/// Where a gang stands among gangs of its priority: the higher response ratio first (all equal
/// under [`GangOrder::Arrival`]), then the earlier creation. Less is earlier. Equal ranks are
/// ordered by name in the plan.
#[derive(Clone, Copy, Debug)]
pub struct OrderRank {
    /// The ratio (waited + run) / run as a fraction, compared by cross-multiplication in u128:
    /// no rounding.
    waited_plus_run: u128,
    run: u128,
    created_at: u64,
}

/// Longer declared run times rank as this one.
const MAX_RUN: u64 = 1 << 62;

impl OrderRank {
    /// The rank at `now` of a gang created at `created_at` that declares `runtime` seconds;
    /// `undeclared` stands in for a missing declaration.
    pub fn of(
        order: GangOrder,
        undeclared: u64,
        created_at: u64,
        runtime: Option<u64>,
        now: u64,
    ) -> Self {
        let (waited, run) = match order {
            GangOrder::Arrival => (0, 1),
            GangOrder::ResponseRatio => (
                u128::from(now.saturating_sub(created_at)),
                // At most 2^62 s (146 billion years), so (waited + run) * run < 2^127.
                u128::from(runtime.unwrap_or(undeclared).clamp(1, MAX_RUN)),
            ),
        };
        OrderRank {
            waited_plus_run: waited + run,
            run,
            created_at,
        }
    }
}

impl Ord for OrderRank {
    fn cmp(&self, other: &Self) -> Ordering {
        (other.waited_plus_run * self.run)
            .cmp(&(self.waited_plus_run * other.run))
            .then(self.created_at.cmp(&other.created_at))
    }
}
impl PartialOrd for OrderRank {
    fn partial_cmp(&self, other: &Self) -> Option<Ordering> {
        Some(self.cmp(other))
    }
}
impl PartialEq for OrderRank {
    fn eq(&self, other: &Self) -> bool {
        self.cmp(other) == Ordering::Equal
    }
}
impl Eq for OrderRank {}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn absurd_times_compare_without_overflow() {
        let rank = |created_at, runtime| {
            OrderRank::of(
                GangOrder::ResponseRatio,
                86_400,
                created_at,
                runtime,
                u64::MAX,
            )
        };
        // Waited 2^64 s with a run of 2^64 s: (waited + run) * run needs 129 bits.
        let huge = rank(0, Some(u64::MAX));
        assert_eq!(huge.cmp(&rank(0, Some(u64::MAX))), Ordering::Equal);
        // Less is earlier: ratio ~2 before 610 / 600, which is before ~1.
        let short = rank(u64::MAX - 10, Some(600));
        assert!(huge < short);
        assert!(short < rank(u64::MAX - 10, Some(u64::MAX)));
    }
}
