//! Deploy plans: what merging a Git revision would do to each Application of a source —
//! rendered as a sync renders it, dry-run by the live API server as the Application's own
//! identity — as text, Markdown or JSON. The model and its formats, pure; the reads and
//! dry-runs that compute a plan are the controller's (`controller::revision_plan`), as they
//! render exactly as its Application reconciler does.

pub mod format;
pub mod model;

pub use model::{Plan, Verdict};
