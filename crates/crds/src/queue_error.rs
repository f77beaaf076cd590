//! [`QueueError`]: why a queue object cannot be used (see [`crate::queue_spec`]).

use crate::quantity::QuantityError;
use std::fmt;

/// Why a queue object cannot be used.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum QueueError {
    NoName,
    Quantity {
        queue: String,
        field: String,
        error: QuantityError,
    },
    Weight {
        queue: String,
        field: String,
        value: i64,
        range: &'static str,
    },
    /// `what` (`guaranteed`, `deserved`) is above `bound` (`limit`, `deserved`).
    Exceeds {
        queue: String,
        resource: String,
        what: &'static str,
        value: u64,
        bound: &'static str,
        bound_value: u64,
    },
    OwnParent {
        queue: String,
    },
    EmptyProduct {
        queue: String,
    },
    DuplicateProduct {
        queue: String,
        product: String,
    },
    ProductGuarantees {
        queue: String,
        sum: u64,
        total: u64,
    },
    ProductGuaranteesOverflow {
        queue: String,
    },
}

impl fmt::Display for QueueError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Self::NoName => write!(f, "queue object has no metadata.name"),
            Self::Quantity {
                queue,
                field,
                error,
            } => write!(f, "queue {queue}: {field}: {error}"),
            Self::Weight {
                queue,
                field,
                value,
                range,
            } => write!(f, "queue {queue}: {field}: {value} is not in {range}"),
            Self::Exceeds {
                queue,
                resource,
                what,
                value,
                bound,
                bound_value,
            } => write!(
                f,
                "queue {queue}: {resource}: {what} {value} is above {bound} {bound_value}"
            ),
            Self::OwnParent { queue } => write!(f, "queue {queue}: is its own parent"),
            Self::EmptyProduct { queue } => {
                write!(f, "queue {queue}: a GPU product entry has no product")
            }
            Self::DuplicateProduct { queue, product } => {
                write!(f, "queue {queue}: GPU product {product:?} is listed twice")
            }
            Self::ProductGuarantees { queue, sum, total } => write!(
                f,
                "queue {queue}: GPU product guarantees ({sum}) exceed the GPU guarantee ({total})"
            ),
            Self::ProductGuaranteesOverflow { queue } => {
                write!(f, "queue {queue}: GPU product guarantees overflow")
            }
        }
    }
}

impl std::error::Error for QueueError {}
