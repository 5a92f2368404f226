//! Deploy plans: what merging a Git revision would do to each Application of a source —
//! rendered as a sync renders it, dry-run by the live API server as the Application's own
//! identity — as text, Markdown or JSON. The model and its formats are pure; `compute` makes
//! the reads and dry-runs.

pub mod compute;
pub mod format;
pub mod model;

pub use model::{Plan, Verdict};
