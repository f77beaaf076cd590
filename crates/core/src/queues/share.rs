//! Hierarchical fair share and dominant-resource share, in integers.
//!
//! Per resource, siblings split what their parent has (the cluster, for roots): first each
//! gets its guarantee, up to its demand; the rest is water-filled by weight among siblings
//! whose demand is unmet, each capped at its demand (demand: what it holds plus what its
//! pending gangs ask, capped at its limit). A queue's dominant share is the largest, over
//! resources, of what it holds divided by its fair share, in parts per million: below
//! 1,000,000 the queue is below its fair share.

use super::{Amounts, QueueTree};

pub(crate) const ONE: u64 = 1_000_000;

/// Fair share per queue. `demand` per queue; `capacity` is what the roots split.
pub(crate) fn fair_shares(tree: &QueueTree, capacity: Amounts, demand: &[Amounts]) -> Vec<Amounts> {
    let n = tree.nodes.len();
    let mut share = vec![[0u64; 3]; n];
    let roots: Vec<usize> = tree.roots().collect();
    let mut level: Vec<(Vec<usize>, Amounts)> = vec![(roots, capacity)];
    while let Some((siblings, avail)) = level.pop() {
        for k in 0..3 {
            let claims: Vec<(u64, u64, u64)> = siblings
                .iter()
                .map(|&q| {
                    let node = &tree.nodes[q];
                    let cap = demand[q][k].min(node.limit[k]);
                    (node.guaranteed[k].min(cap), cap, node.weight[k])
                })
                .collect();
            for (&q, got) in siblings.iter().zip(split(avail[k], &claims)) {
                share[q][k] = got;
            }
        }
        for &q in &siblings {
            if !tree.nodes[q].children.is_empty() {
                level.push((tree.nodes[q].children.clone(), share[q]));
            }
        }
    }
    share
}

/// Splits `avail` among claims of (guarantee, cap, weight): guarantees first (by weight if
/// they exceed `avail`), then the rest by weight up to each cap.
pub(crate) fn split(avail: u64, claims: &[(u64, u64, u64)]) -> Vec<u64> {
    let guarantees: u64 = claims.iter().fold(0, |s, c| s.saturating_add(c.0));
    let mut got = vec![0u64; claims.len()];
    if guarantees >= avail {
        let caps: Vec<(u64, u64)> = claims.iter().map(|c| (c.0, c.2)).collect();
        water_fill(&mut got, avail, &caps);
        return got;
    }
    for (g, c) in got.iter_mut().zip(claims) {
        *g = c.0;
    }
    let caps: Vec<(u64, u64)> = claims.iter().map(|c| (c.1, c.2)).collect();
    water_fill(&mut got, avail - guarantees, &caps);
    got
}

/// Adds up to `left` to `got`, by weight, each up to its cap.
fn water_fill(got: &mut [u64], mut left: u64, caps: &[(u64, u64)]) {
    loop {
        let active: Vec<usize> = (0..got.len()).filter(|&i| got[i] < caps[i].0).collect();
        if active.is_empty() || left == 0 {
            return;
        }
        let total: u128 = active.iter().map(|&i| u128::from(caps[i].1.max(1))).sum();
        let mut given = 0u64;
        for &i in &active {
            let part = u128::from(left) * u128::from(caps[i].1.max(1)) / total.max(1);
            let inc = u64::try_from(part)
                .unwrap_or(u64::MAX)
                .min(caps[i].0 - got[i]);
            got[i] += inc;
            given = given.saturating_add(inc);
        }
        if given == 0 {
            // Less left than the total weight: one unit each, in order.
            for &i in &active {
                if given >= left {
                    break;
                }
                got[i] += 1;
                given += 1;
            }
        }
        left = left.saturating_sub(given);
    }
}

/// Held over fair share, in parts per million, on the dominant resource.
pub(crate) fn ratio(alloc: &Amounts, share: &Amounts) -> u64 {
    (0..3)
        .map(|k| {
            if alloc[k] == 0 {
                0
            } else if share[k] == 0 {
                u64::MAX
            } else {
                let r = u128::from(alloc[k]) * u128::from(ONE) / u128::from(share[k]);
                u64::try_from(r).unwrap_or(u64::MAX)
            }
        })
        .max()
        .unwrap_or(0)
}

/// A ratio in parts per million as "0.9" (one decimal), "no share" when unbounded.
pub fn format_ratio(ppm: u64) -> String {
    if ppm == u64::MAX {
        return "over (no share)".into();
    }
    let tenths = ppm.saturating_add(ONE / 20) / (ONE / 10);
    format!("{}.{}", tenths / 10, tenths % 10)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::queues::{QueueSpec, Resource};

    #[test]
    fn guarantees_first_then_weight_up_to_demand() {
        // 100 to split: a guaranteed 30 wants 50; b wants 100 weight 3; c wants 5 weight 1.
        let got = split(100, &[(30, 50, 1), (0, 100, 3), (0, 5, 1)]);
        assert_eq!(got.iter().sum::<u64>(), 100);
        assert_eq!(got[2], 5, "capped at its demand");
        assert!(got[0] >= 30 && got[0] <= 50);
        assert!(got[1] > got[0] - 30, "weight 3 gets more of the rest");
        // Oversubscribed guarantees split by weight within them.
        assert_eq!(split(10, &[(10, 10, 1), (10, 10, 1)]), vec![5, 5]);
        assert_eq!(split(0, &[(1, 5, 1)]), vec![0]);
        assert_eq!(split(7, &[]), Vec::<u64>::new());
    }

    #[test]
    fn hierarchy_splits_the_parents_share() {
        let t = QueueTree::new(&[
            QueueSpec::new("org").quota(Resource::Gpu, 0, Some(40)),
            QueueSpec::new("a").parent("org").weight(Resource::Gpu, 3),
            QueueSpec::new("b").parent("org"),
            QueueSpec::new("other"),
        ])
        .unwrap();
        let i = |n: &str| t.index(n).unwrap();
        let mut demand = vec![[0u64; 3]; 4];
        demand[i("a")] = [100, 0, 0];
        demand[i("b")] = [100, 0, 0];
        demand[i("org")] = [200, 0, 0];
        demand[i("other")] = [100, 0, 0];
        let s = fair_shares(&t, [100, 0, 0], &demand);
        assert_eq!(s[i("org")][0], 40, "capped at its limit");
        assert_eq!(s[i("other")][0], 60);
        assert_eq!(s[i("a")][0], 30);
        assert_eq!(s[i("b")][0], 10);
    }

    #[test]
    fn ratio_is_the_dominant_resource() {
        assert_eq!(ratio(&[9, 1, 0], &[10, 10, 0]), 900_000);
        assert_eq!(ratio(&[0, 0, 0], &[0, 0, 0]), 0);
        assert_eq!(ratio(&[1, 0, 0], &[0, 0, 0]), u64::MAX);
        assert_eq!(format_ratio(900_000), "0.9");
        assert_eq!(format_ratio(1_449_999), "1.4");
        assert_eq!(format_ratio(0), "0.0");
    }
}
