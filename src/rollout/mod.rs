//! Rollouts: pure decisions (`plan`); the I/O that carries them out lives with the
//! Application reconciler (`controller::application::rolling_abort` and `canary`).

pub mod analysis;
pub mod plan;
pub mod template;
