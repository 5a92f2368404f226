//! Writing an Application's status: conditions, the sync history, Events, and the one
//! status patch of a reconcile, its [`Outcome`] (only when something changed). The reconciler's helpers build on these;
//! these depend on nothing of theirs.

use k8s_openapi::jiff::Timestamp;
use kube::api::Api;
use kube::runtime::controller::Action;
use kube::runtime::events::{Event as KubeEvent, EventType};
use kube::{Resource, ResourceExt};

use super::memory::AppContext;
use super::memory::StatusWrites;
use crate::api::application::{Application, ApplicationStatus, SyncRecord};
use crate::api::conditions::{self, Status};
use crate::controller::status::apply_status_at;
use crate::error::Result;

const HISTORY_LIMIT: usize = 10;

pub(super) fn set(
    status: &mut ApplicationStatus,
    type_: &str,
    s: Status,
    reason: &str,
    message: impl Into<String>,
    generation: Option<i64>,
) {
    conditions::set_condition(
        &mut status.conditions,
        conditions::new_condition(type_, s, reason, message, generation, Timestamp::now()),
    );
}

pub(super) fn record(status: &mut ApplicationStatus, rec: SyncRecord) {
    // The same outcome again (a retried failure) updates the newest entry instead of
    // pushing the rest of the history out.
    if let Some(first) = status.history.first_mut()
        && first.revision == rec.revision
        && first.result == rec.result
        && first.message == rec.message
    {
        first.finished_at = rec.finished_at;
        return;
    }
    status.history.insert(0, rec);
    status.history.truncate(HISTORY_LIMIT);
}

pub(super) async fn publish(
    ctx: &AppContext,
    app: &Application,
    type_: EventType,
    reason: &str,
    note: String,
) {
    let note: String = note.chars().take(1000).collect();
    let recorder = ctx.recorders.for_note(
        app.metadata.uid.as_deref().unwrap_or_default(),
        reason,
        &note,
        type_,
    );
    let ev = KubeEvent {
        type_,
        reason: reason.into(),
        note: Some(note),
        action: "Sync".into(),
        secondary: None,
    };
    if let Err(e) = recorder.publish(&ev, &app.object_ref(&())).await {
        tracing::debug!(error = %e, "cannot publish event");
    }
}

/// What a step of the reconcile leaves: the status to write and when to look again. The
/// reconciler writes it, once, at the end ([`write_outcome`]).
#[must_use]
#[derive(Debug)]
pub(super) struct Outcome {
    /// `None` leaves the status as it is.
    pub status: Option<ApplicationStatus>,
    pub action: Action,
}

impl Outcome {
    pub fn write(status: ApplicationStatus, action: Action) -> Self {
        Self {
            status: Some(status),
            action,
        }
    }

    /// Nothing to write: only look again.
    pub fn requeue(action: Action) -> Self {
        Self {
            status: None,
            action,
        }
    }
}

/// The reconcile's status write: the outcome's status, when it differs from what the API
/// server holds (`held`: as the reconcile read it, or as a sync's checkpoint last wrote it).
pub(super) async fn write_outcome(
    api: &Api<Application>,
    app: &Application,
    writes: &StatusWrites,
    held: Option<ApplicationStatus>,
    outcome: Outcome,
) -> Result<Action> {
    if let Some(status) = &outcome.status {
        let held = held.or_else(|| app.status.clone());
        if Some(status) != held.as_ref() {
            write_status(api, &app.name_any(), writes, status).await?;
        }
    }
    Ok(outcome.action)
}

/// Writes an Application's status and remembers the version it produced (see
/// [`StatusWrites`]); every status write of the Application reconciler goes through here.
pub(super) async fn write_status(
    api: &Api<Application>,
    name: &str,
    writes: &StatusWrites,
    status: &ApplicationStatus,
) -> Result<()> {
    let ns = api.namespace().unwrap_or_default();
    match apply_status_at(api, name, status).await {
        Ok(version) => {
            writes.wrote(ns, name, version);
            Ok(())
        }
        Err(e) => {
            writes.wrote(ns, name, None);
            Err(e)
        }
    }
}
