//! Apply: discovery, normalisation and order, server-side dry-run and apply, inventory and
//! guarded prune.

pub mod concurrent;
pub mod discovery;
pub mod inventory;
pub mod normalize;
pub mod order;
pub mod plan;
pub mod prune;
pub mod ssa;

/// Label with the value `gantry` on every object Gantry applies.
pub const MANAGED_BY_LABEL: &str = "app.kubernetes.io/managed-by";
pub const MANAGED_BY_VALUE: &str = "gantry";
/// Label naming the owning Application as `<namespace>.<name>`.
pub const APPLICATION_LABEL: &str = "gantry.dev/application";
/// Annotation that protects an object from pruning when set to `disabled`.
pub const PRUNE_ANNOTATION: &str = "gantry.dev/prune";
