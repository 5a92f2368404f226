//! The protocol between the CLI, the receivers and the controller: the annotations each
//! writes for another to read, and the marks left in Git. Constants only.

/// Set to ask for a reconcile now (value: an RFC 3339 timestamp); see `crate::trigger`.
pub const REQUEST_ANNOTATION: &str = "gantry.dev/requested-at";

/// Set by `gantry promote` / `gantry abort` on an Application (value `promote@<time>` /
/// `abort@<time>`).
pub const ROLLOUT_ACTION_ANNOTATION: &str = "gantry.dev/rollout-action";

/// The line `gantry rollback` puts in its revert commits; the controller knows a rollback
/// of an Application by it.
pub const ROLLBACK_NOTE: &str = "Rolled back by `gantry rollback";
