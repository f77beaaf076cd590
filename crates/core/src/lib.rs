//! Muster's placement core (layer 2): pure, synchronous, deterministic.
pub mod gpu_choice;
pub mod model;
