//! Placeholder; replaced by its issue.
