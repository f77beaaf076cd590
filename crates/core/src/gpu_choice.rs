//! Choosing which GPUs of one node a pod gets.
//!
//! A set is scored like NVIDIA's allocator (sum of pair scores: 100 per NVLink, else PCIe
//! closeness). Among equally good sets we keep the leftover GPUs useful: the leftover's best
//! 2-, 4- and 8-GPU subsets should score high, so a 2-GPU pod on an idle DGX-1 takes an NVLinked
//! pair inside one quad instead of breaking both quads.

use muster_api::{Link, LinkMatrix, PcieLevel};

/// GPU sets are bitmasks over GPU indices.
pub type GpuMask = u64;

/// Largest node for which every subset is enumerated (3^n work once per topology).
const EXHAUSTIVE_MAX: usize = 12;
/// Leftover sizes whose best subsets we try to keep well connected.
const LEFTOVER_SIZES: [u32; 3] = [2, 4, 8];

/// Precomputed scores of one node topology, shared by all nodes of that shape.
#[derive(Debug)]
pub struct GpuTable {
    matrix: LinkMatrix,
    /// `set_score[mask]` (exhaustive tables only).
    set_score: Vec<u32>,
    /// `best[mask * (n + 1) + s]`: best score of an `s`-subset of `mask` (exhaustive only).
    best: Vec<u32>,
}

impl GpuTable {
    pub fn new(matrix: LinkMatrix) -> GpuTable {
        let n = matrix.size();
        if n > EXHAUSTIVE_MAX {
            return GpuTable {
                matrix,
                set_score: Vec::new(),
                best: Vec::new(),
            };
        }
        let full = 1usize << n;
        let mut set_score = vec![0u32; full];
        for mask in 1..full {
            let low = mask.trailing_zeros() as usize;
            let rest = mask & (mask - 1);
            let mut s = set_score[rest];
            let mut r = rest;
            while r != 0 {
                let j = r.trailing_zeros() as usize;
                s += matrix.pair_score(low, j);
                r &= r - 1;
            }
            set_score[mask] = s;
        }
        let width = n + 1;
        let mut best = vec![0u32; full * width];
        for mask in 0..full {
            // Every submask of `mask`, including `mask` itself and the empty set.
            let mut sub = mask;
            loop {
                let s = sub.count_ones() as usize;
                let slot = &mut best[mask * width + s];
                *slot = (*slot).max(set_score[sub]);
                if sub == 0 {
                    break;
                }
                sub = (sub - 1) & mask;
            }
        }
        GpuTable {
            matrix,
            set_score,
            best,
        }
    }

    /// A table for a node whose links are unknown: every pair is `SYS`.
    pub fn unknown(gpus: usize) -> GpuTable {
        GpuTable::new(LinkMatrix::uniform(gpus, Link::Pcie(PcieLevel::Sys)))
    }

    pub fn matrix(&self) -> &LinkMatrix {
        &self.matrix
    }

    pub fn gpu_count(&self) -> usize {
        self.matrix.size()
    }

    fn exhaustive(&self) -> bool {
        !self.set_score.is_empty() || self.matrix.size() == 0
    }

    /// Sum of pair scores of `mask`.
    pub fn score(&self, mask: GpuMask) -> u32 {
        if self.exhaustive() {
            return self.set_score.get(mask as usize).copied().unwrap_or(0);
        }
        self.matrix.set_score(&indices(mask))
    }

    /// Best pair-score sum of any `k`-subset of `free`, normalised per pair (0 when k < 2).
    /// Lets node ranking prefer nodes where a pod would get well-linked GPUs, in O(1).
    pub fn best_per_pair(&self, free: GpuMask, k: u32) -> u32 {
        let pairs = k * k.saturating_sub(1) / 2;
        if pairs == 0 || free.count_ones() < k {
            return 0;
        }
        if self.exhaustive() {
            let width = self.matrix.size() + 1;
            return self.best[free as usize * width + k as usize] / pairs;
        }
        self.choose(free, k, 0)
            .map(|m| self.score(m) / pairs)
            .unwrap_or(0)
    }

    /// The `k` GPUs of `free` (a superset of `must`) a pod should get, or `None` if too few.
    pub fn choose(&self, free: GpuMask, k: u32, must: GpuMask) -> Option<GpuMask> {
        let available = free | must;
        if available.count_ones() < k || must.count_ones() > k {
            return None;
        }
        if k == 0 {
            return Some(0);
        }
        if must.count_ones() == k {
            return Some(must);
        }
        if available.count_ones() == k {
            return Some(available);
        }
        if self.exhaustive() {
            Some(self.choose_exhaustive(available, k, must))
        } else {
            Some(self.choose_greedy(available, k, must))
        }
    }

    fn choose_exhaustive(&self, free: GpuMask, k: u32, must: GpuMask) -> GpuMask {
        let mut best: Option<(u32, u64, GpuMask)> = None;
        let mut sub = free;
        loop {
            if sub.count_ones() == k && sub & must == must {
                let key = (
                    self.set_score[sub as usize],
                    self.leftover_quality(free & !sub),
                );
                let better = match best {
                    None => true,
                    // Ties keep the first found, i.e. the numerically largest mask; flip to
                    // prefer low GPU indices deterministically.
                    Some((s, q, m)) => key > (s, q) || (key == (s, q) && sub < m),
                };
                if better {
                    best = Some((key.0, key.1, sub));
                }
            }
            if sub == 0 {
                break;
            }
            sub = (sub - 1) & free;
        }
        best.map(|(_, _, m)| m).unwrap_or(must)
    }

    /// How useful the GPUs left over are: best 2/4/8-subsets, each normalised per pair.
    fn leftover_quality(&self, left: GpuMask) -> u64 {
        let width = self.matrix.size() + 1;
        let have = left.count_ones();
        LEFTOVER_SIZES
            .iter()
            .filter(|&&s| s <= have)
            .map(|&s| {
                let pairs = u64::from(s * (s - 1) / 2);
                u64::from(self.best[left as usize * width + s as usize]) * 1000 / pairs
            })
            .sum()
    }

    /// Large nodes: grow from the best-linked seed, adding the GPU closest to the set.
    fn choose_greedy(&self, free: GpuMask, k: u32, must: GpuMask) -> GpuMask {
        let mut chosen = must;
        if chosen == 0 {
            let free_idx = indices(free);
            let mut seed = (0u32, free_idx[0], free_idx[0]);
            for (i, &a) in free_idx.iter().enumerate() {
                for &b in &free_idx[i + 1..] {
                    let s = self.matrix.pair_score(a, b);
                    if s > seed.0 {
                        seed = (s, a, b);
                    }
                }
            }
            chosen = (1 << seed.1) | (1 << seed.2);
            if k == 1 {
                chosen = 1 << seed.1;
            }
        }
        while chosen.count_ones() < k {
            let mut pick = None;
            for c in indices(free & !chosen) {
                let gain: u32 = indices(chosen)
                    .iter()
                    .map(|&g| self.matrix.pair_score(c, g))
                    .sum();
                if pick.is_none_or(|(g, _)| gain > g) {
                    pick = Some((gain, c));
                }
            }
            match pick {
                Some((_, c)) => chosen |= 1 << c,
                None => break,
            }
        }
        chosen
    }
}

/// GPU indices of a mask, ascending.
pub fn indices(mask: GpuMask) -> Vec<usize> {
    let mut out = Vec::with_capacity(mask.count_ones() as usize);
    let mut m = mask;
    while m != 0 {
        out.push(m.trailing_zeros() as usize);
        m &= m - 1;
    }
    out
}

/// [`indices`] as the `u32`s an assignment lists, in one allocation (every placed member gets
/// its list).
pub(crate) fn indices_u32(mask: GpuMask) -> Vec<u32> {
    let mut out = Vec::with_capacity(mask.count_ones() as usize);
    let mut m = mask;
    while m != 0 {
        out.push(m.trailing_zeros());
        m &= m - 1;
    }
    out
}

/// Mask of the given indices; indices at or above 64 are ignored.
pub fn mask_of(indices: impl IntoIterator<Item = usize>) -> GpuMask {
    indices
        .into_iter()
        .filter(|&i| i < 64)
        .fold(0, |m, i| m | (1u64 << i))
}

/// One-shot choice for callers without a cached table (the device plugin's fallback).
pub fn best_gpu_set(
    matrix: &LinkMatrix,
    available: &[usize],
    must_include: &[usize],
    size: usize,
) -> Option<Vec<usize>> {
    let table = GpuTable::new(matrix.clone());
    let k = u32::try_from(size).ok()?;
    let in_range = |i: &usize| *i < matrix.size();
    if !available.iter().all(in_range) || !must_include.iter().all(in_range) {
        return None;
    }
    table
        .choose(
            mask_of(available.iter().copied()),
            k,
            mask_of(must_include.iter().copied()),
        )
        .map(indices)
}

#[cfg(test)]
mod tests {
    use super::*;
    use muster_api::machines::builtin;

    fn table(name: &str) -> GpuTable {
        GpuTable::new(builtin(name).unwrap().topology.clone())
    }

    fn fully_nvlinked(t: &GpuTable, gpus: &[usize]) -> bool {
        gpus.iter().enumerate().all(|(i, &a)| {
            gpus[i + 1..]
                .iter()
                .all(|&b| t.matrix().link(a, b).is_nvlink())
        })
    }

    #[test]
    fn dgx1_quad_is_fully_nvlinked() {
        let t = table("dgx1-v100");
        let quad = indices(t.choose(0xff, 4, 0).unwrap());
        assert!(fully_nvlinked(&t, &quad), "{quad:?}");
        assert!(
            quad == vec![0, 1, 2, 3] || quad == vec![4, 5, 6, 7],
            "{quad:?}"
        );
    }

    #[test]
    fn dgx1_pair_is_a_double_link_that_keeps_a_quad_whole() {
        let t = table("dgx1-v100");
        let pair = t.choose(0xff, 2, 0).unwrap();
        let idx = indices(pair);
        assert_eq!(t.matrix().link(idx[0], idx[1]), Link::NvLink(2), "{idx:?}");
        // The leftover still holds a fully NVLinked quad.
        let quad = indices(t.choose(0xff & !pair, 4, 0).unwrap());
        assert!(fully_nvlinked(&t, &quad), "{quad:?} after {idx:?}");
    }

    #[test]
    fn dgx1_quad_from_a_fragmented_node_avoids_sys_where_possible() {
        let t = table("dgx1-v100");
        // GPUs 1 and 6 busy: no full quad left; best is 3 NV pairs + fewest SYS hops.
        let free = 0xff & !(1 << 1) & !(1 << 6);
        let quad = indices(t.choose(free, 4, 0).unwrap());
        let nv_pairs = quad
            .iter()
            .enumerate()
            .flat_map(|(i, &a)| quad[i + 1..].iter().map(move |&b| (a, b)))
            .filter(|&(a, b)| t.matrix().link(a, b).is_nvlink())
            .count();
        assert!(nv_pairs >= 4, "{quad:?} has {nv_pairs} NVLinked pairs");
    }

    #[test]
    fn pcie_box_keeps_pairs_on_one_switch_and_quads_on_one_socket() {
        let t = table("l4-pcie-2s");
        let pair = indices(t.choose(0xff, 2, 0).unwrap());
        assert_eq!(
            t.matrix().link(pair[0], pair[1]),
            Link::Pcie(PcieLevel::Pix)
        );
        let quad = indices(t.choose(0xff, 4, 0).unwrap());
        assert!(quad.iter().all(|&g| g / 4 == quad[0] / 4), "{quad:?}");
    }

    #[test]
    fn nvswitch_any_set_is_fine_and_low_indices_win_ties() {
        let t = table("dgx-a100");
        assert_eq!(indices(t.choose(0xff, 3, 0).unwrap()), vec![0, 1, 2]);
        assert_eq!(t.best_per_pair(0xff, 4), 1200);
    }

    #[test]
    fn must_include_is_honoured_and_too_few_is_none() {
        let t = table("dgx1-v100");
        let set = t.choose(0xff, 4, 1 << 5).unwrap();
        assert!(set & (1 << 5) != 0);
        assert!(fully_nvlinked(&t, &indices(set)));
        assert_eq!(t.choose(0b11, 3, 0), None);
        assert_eq!(
            best_gpu_set(t.matrix(), &[0, 1, 2, 3, 9], &[], 2),
            None,
            "out-of-range index is refused"
        );
    }

    #[test]
    fn greedy_handles_large_nodes() {
        let m = LinkMatrix::from_fn(16, |a, b| {
            if a / 4 == b / 4 {
                Link::NvLink(4)
            } else {
                Link::Pcie(PcieLevel::Sys)
            }
        });
        let t = GpuTable::new(m);
        let set = indices(t.choose(u64::from(u16::MAX), 4, 0).unwrap());
        assert!(set.iter().all(|&g| g / 4 == set[0] / 4), "{set:?}");
    }
}
