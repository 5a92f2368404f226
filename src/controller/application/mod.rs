//! The Application reconciler, one file per stage, listed here in the order data flows
//! through them:
//!
//! 1. **watch** — what wakes a reconcile (changes by others, a new artifact, a new image
//!    selection, drift) and the cache it reads from.
//! 2. **reconcile** — one reconcile: gather the observations (the source's `artifact`, the
//!    `chart` version), `decide` the step (pure), run it as one `pass` and write the
//!    outcome it returns.
//! 3. **full_sync** — a sync of one revision: its rollout record, the `canary` holds, the
//!    `pipeline` (render → hooks → apply in waves → prune), with its `guards` (the planned
//!    inventory before the first write) and its `health_gate` waits, `detach`ed from the
//!    reconcile slot when they are long.
//! 4. **follow** — the health follow-up after a sync (`live_health`), the rolling update's
//!    abort (`rolling_abort`) and the canary's steps (`canary`, `canary_owner`), both ending
//!    a failed revision through one `abort` (reject, record, revert in Git); `follow_drift`
//!    and `drift_check` between revisions; `write_back` of image and chart selections.
//! 5. **record** — conditions (`reasons`), history, Events and the status patch: once per
//!    reconcile, from the step's `Outcome` (a small set's sync status is held back until
//!    its health is known, `pending`, so Ready and Healthy go in one write). A sync writes before that only through its
//!    `guards::Checkpoint` (the planned inventory before its first write, its progress while
//!    it waits, Ready before a large set's health is assessed).
//!
//! `cleanup` runs instead of all of this when the Application is being deleted.

mod abort;
pub mod artifact;
pub mod canary;
pub mod canary_owner;
pub mod chart;
pub mod cleanup;
pub mod decide;
pub mod detach;
pub mod drift_check;
#[cfg(test)]
mod fixtures;
pub mod follow;
pub mod follow_drift;
pub mod full_sync;
pub mod guards;
mod health_gate;
pub mod live_health;
pub mod memory;
mod packed_set;
mod pass;
pub mod pending;
pub mod pipeline;
/// The condition reasons are part of the API (Notifiers read them too).
pub use crate::api::reasons;
pub mod reconcile;
pub mod record;
pub mod rolling_abort;
mod source_order;
pub mod watch;
pub mod write_back;
