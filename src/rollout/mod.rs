//! Rollouts: pure decisions (`plan`); the I/O that carries them out lives with the
//! Application reconciler (`controller::rollout`).

pub mod analysis;
pub mod plan;
pub mod template;
