//! One pass of the reconciler over one Application, once it has the source's artifact and
//! a target: what every step after the decision (drift, health, canary, sync) works with.

use std::sync::Arc;
use std::time::Duration;

use super::guards::Checkpoint;
use super::memory::AppContext;
use super::pipeline::SyncInput;
use crate::api::GitRepository;
use crate::api::application::Application;
use crate::cluster::Target;

pub(super) struct Pass<'a> {
    pub ctx: &'a Arc<AppContext>,
    /// The Application as this reconcile read it.
    pub app: &'a Application,
    pub source: &'a GitRepository,
    /// Where and as whom it acts.
    pub target: &'a Target,
    /// The artifact's revision.
    pub revision: String,
    /// What renders the revision (the tree, its digest, the sync's time limit).
    pub input: SyncInput<'a>,
    /// `spec.interval`, at least `--min-interval`.
    pub interval: Duration,
    /// The status writes of a sync before its outcome.
    pub checkpoint: &'a Checkpoint<'a>,
}

impl Pass<'_> {
    /// The sync's time limit (`spec.timeout`, capped by `--max-timeout`).
    pub fn timeout(&self) -> Duration {
        self.input.timeout
    }

    pub fn generation(&self) -> Option<i64> {
        self.app.metadata.generation
    }
}
