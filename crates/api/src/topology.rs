//! The GPU link model, in the legend of `nvidia-smi topo -m`.
//!
//! Scores follow NVIDIA's allocator (REFERENCE.md §4): 100 per NVLink, else PCIe closeness.

use serde::{Deserialize, Deserializer, Serialize, Serializer};
use std::fmt;

/// How far apart two GPUs are on PCIe, nearest first (NVML `nvmlGpuTopologyLevel_t`).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum PcieLevel {
    /// Same board (multi-GPU board, NVML `INTERNAL`).
    Board,
    /// One PCIe switch (`PIX`, NVML `SINGLE`).
    Pix,
    /// Several PCIe switches, no host bridge (`PXB`, NVML `MULTIPLE`).
    Pxb,
    /// Through a host bridge (`PHB`, NVML `HOSTBRIDGE`).
    Phb,
    /// Same NUMA node, across host bridges (`NODE`).
    Node,
    /// Across NUMA nodes / sockets (`SYS`, NVML `SYSTEM`).
    Sys,
}

impl PcieLevel {
    pub const ALL: [PcieLevel; 6] = [
        PcieLevel::Board,
        PcieLevel::Pix,
        PcieLevel::Pxb,
        PcieLevel::Phb,
        PcieLevel::Node,
        PcieLevel::Sys,
    ];

    /// NVIDIA allocator's pair score for this level.
    pub fn score(self) -> u32 {
        match self {
            PcieLevel::Board => 60,
            PcieLevel::Pix => 50,
            PcieLevel::Pxb => 40,
            PcieLevel::Phb => 30,
            PcieLevel::Node => 20,
            PcieLevel::Sys => 10,
        }
    }

    /// The `nvidia-smi topo -m` legend.
    pub fn legend(self) -> &'static str {
        match self {
            PcieLevel::Board => "PSB",
            PcieLevel::Pix => "PIX",
            PcieLevel::Pxb => "PXB",
            PcieLevel::Phb => "PHB",
            PcieLevel::Node => "NODE",
            PcieLevel::Sys => "SYS",
        }
    }

    /// NVML's numeric topology level (`NVML_TOPOLOGY_*`).
    pub fn nvml_level(self) -> u32 {
        match self {
            PcieLevel::Board => 0,
            PcieLevel::Pix => 10,
            PcieLevel::Pxb => 20,
            PcieLevel::Phb => 30,
            PcieLevel::Node => 40,
            PcieLevel::Sys => 50,
        }
    }

    pub fn from_nvml_level(level: u32) -> Option<PcieLevel> {
        PcieLevel::ALL.into_iter().find(|l| l.nvml_level() == level)
    }
}

/// The link between two distinct GPUs of one node.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum Link {
    /// `count` bonded NVLinks (directly or through NVSwitch).
    NvLink(u8),
    Pcie(PcieLevel),
}

impl Link {
    /// Pair score: 100 per NVLink, else the PCIe closeness score.
    pub fn score(self) -> u32 {
        match self {
            Link::NvLink(n) => 100 * u32::from(n),
            Link::Pcie(level) => level.score(),
        }
    }

    pub fn is_nvlink(self) -> bool {
        matches!(self, Link::NvLink(n) if n > 0)
    }
}

impl fmt::Display for Link {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Link::NvLink(n) => write!(f, "NV{n}"),
            Link::Pcie(level) => f.write_str(level.legend()),
        }
    }
}

#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum TopologyError {
    #[error("unknown link {0:?}: expected NV<n>, PSB, PIX, PXB, PHB, NODE or SYS")]
    UnknownLink(String),
    #[error("link matrix row {row} has {got} entries, expected {expected}")]
    NotSquare {
        row: usize,
        got: usize,
        expected: usize,
    },
    #[error("link matrix diagonal at {0} must be \"X\"")]
    Diagonal(usize),
    #[error("link matrix is not symmetric at ({0}, {1}): {2} vs {3}")]
    Asymmetric(usize, usize, String, String),
    #[error("link matrix has {got} GPUs, at most {max} are supported")]
    TooLarge { got: usize, max: usize },
}

impl std::str::FromStr for Link {
    type Err = TopologyError;
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        let t = s.trim();
        if let Some(n) = t.strip_prefix("NV") {
            return n
                .parse::<u8>()
                .ok()
                .filter(|n| *n > 0)
                .map(Link::NvLink)
                .ok_or_else(|| TopologyError::UnknownLink(s.to_string()));
        }
        PcieLevel::ALL
            .into_iter()
            .find(|l| l.legend() == t)
            .map(Link::Pcie)
            .ok_or_else(|| TopologyError::UnknownLink(s.to_string()))
    }
}

/// Symmetric pairwise link matrix of one node's GPUs, indexed by GPU index.
///
/// Serialized as rows of `nvidia-smi topo -m` strings with `"X"` on the diagonal, so objects and
/// fixtures read like the tool operators already know.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct LinkMatrix {
    size: usize,
    links: Vec<Link>,
}

impl LinkMatrix {
    /// Largest matrix accepted from outside (a GB200 tray has 4, big PCIe boxes 16).
    pub const MAX_GPUS: usize = 64;

    /// Every pair joined by the same link (e.g. an NVSwitch box, or an unknown topology).
    pub fn uniform(size: usize, link: Link) -> LinkMatrix {
        LinkMatrix {
            size,
            links: vec![link; size * size],
        }
    }

    /// Builds a matrix from a pair function; `link(i, j)` is consulted for `i < j` only.
    pub fn from_fn(size: usize, mut link: impl FnMut(usize, usize) -> Link) -> LinkMatrix {
        let mut m = LinkMatrix::uniform(size, Link::Pcie(PcieLevel::Sys));
        for i in 0..size {
            for j in i + 1..size {
                m.set(i, j, link(i, j));
            }
        }
        m
    }

    pub fn size(&self) -> usize {
        self.size
    }

    /// The link between GPUs `a` and `b` (`a != b`, both in range).
    pub fn link(&self, a: usize, b: usize) -> Link {
        self.links[a * self.size + b]
    }

    pub fn set(&mut self, a: usize, b: usize, link: Link) {
        self.links[a * self.size + b] = link;
        self.links[b * self.size + a] = link;
    }

    /// NVIDIA-allocator score of a pair.
    pub fn pair_score(&self, a: usize, b: usize) -> u32 {
        self.link(a, b).score()
    }

    /// Sum of pair scores over all pairs of `gpus`.
    pub fn set_score(&self, gpus: &[usize]) -> u32 {
        let mut total = 0;
        for (i, &a) in gpus.iter().enumerate() {
            for &b in &gpus[i + 1..] {
                total += self.pair_score(a, b);
            }
        }
        total
    }

    /// Parses rows of legend strings (`"X"` on the diagonal).
    pub fn from_rows<S: AsRef<str>>(rows: &[Vec<S>]) -> Result<LinkMatrix, TopologyError> {
        let size = rows.len();
        if size > Self::MAX_GPUS {
            return Err(TopologyError::TooLarge {
                got: size,
                max: Self::MAX_GPUS,
            });
        }
        let mut m = LinkMatrix::uniform(size, Link::Pcie(PcieLevel::Sys));
        for (i, row) in rows.iter().enumerate() {
            if row.len() != size {
                return Err(TopologyError::NotSquare {
                    row: i,
                    got: row.len(),
                    expected: size,
                });
            }
            for (j, cell) in row.iter().enumerate() {
                let cell = cell.as_ref();
                if i == j {
                    if cell.trim() != "X" {
                        return Err(TopologyError::Diagonal(i));
                    }
                    continue;
                }
                m.links[i * size + j] = cell.parse()?;
            }
        }
        for i in 0..size {
            for j in i + 1..size {
                let (a, b) = (m.link(i, j), m.link(j, i));
                if a != b {
                    return Err(TopologyError::Asymmetric(
                        i,
                        j,
                        a.to_string(),
                        b.to_string(),
                    ));
                }
            }
        }
        Ok(m)
    }

    /// Rows of legend strings, `"X"` on the diagonal.
    pub fn to_rows(&self) -> Vec<Vec<String>> {
        (0..self.size)
            .map(|i| {
                (0..self.size)
                    .map(|j| {
                        if i == j {
                            "X".to_string()
                        } else {
                            self.link(i, j).to_string()
                        }
                    })
                    .collect()
            })
            .collect()
    }
}

impl Serialize for LinkMatrix {
    fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        self.to_rows().serialize(s)
    }
}

impl<'de> Deserialize<'de> for LinkMatrix {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        let rows = Vec::<Vec<String>>::deserialize(d)?;
        LinkMatrix::from_rows(&rows).map_err(serde::de::Error::custom)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn legend_round_trips() {
        for s in [
            "NV1", "NV12", "NV18", "PSB", "PIX", "PXB", "PHB", "NODE", "SYS",
        ] {
            let link: Link = s.parse().unwrap();
            assert_eq!(link.to_string(), s);
        }
        assert!("NV0".parse::<Link>().is_err());
        assert!("QPI".parse::<Link>().is_err());
    }

    #[test]
    fn scores_follow_nvidia_allocator() {
        assert_eq!(Link::NvLink(2).score(), 200);
        assert_eq!(Link::Pcie(PcieLevel::Pix).score(), 50);
        assert_eq!(Link::Pcie(PcieLevel::Sys).score(), 10);
    }

    #[test]
    fn matrix_rejects_bad_shapes() {
        let rows = vec![vec!["X", "NV1"], vec!["NV2", "X"]];
        assert!(matches!(
            LinkMatrix::from_rows(&rows),
            Err(TopologyError::Asymmetric(0, 1, _, _))
        ));
        let rows = vec![vec!["X", "NV1"], vec!["NV1"]];
        assert!(matches!(
            LinkMatrix::from_rows(&rows),
            Err(TopologyError::NotSquare { row: 1, .. })
        ));
        let rows = vec![vec!["NV1", "NV1"], vec!["NV1", "X"]];
        assert_eq!(
            LinkMatrix::from_rows(&rows),
            Err(TopologyError::Diagonal(0))
        );
    }

    #[test]
    fn matrix_serde_round_trip() {
        let m = LinkMatrix::from_fn(3, |i, _| {
            if i == 0 {
                Link::NvLink(2)
            } else {
                Link::Pcie(PcieLevel::Sys)
            }
        });
        let json = serde_json::to_string(&m).unwrap();
        assert_eq!(
            json,
            r#"[["X","NV2","NV2"],["NV2","X","SYS"],["NV2","SYS","X"]]"#
        );
        let back: LinkMatrix = serde_json::from_str(&json).unwrap();
        assert_eq!(back, m);
        assert_eq!(m.set_score(&[0, 1, 2]), 410);
    }
}
