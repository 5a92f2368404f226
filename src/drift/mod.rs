//! Drift: compare what Git declares with what runs, report or heal, and show unified diffs.

pub mod compare;
pub mod diff;
pub mod view;
pub mod watch;
