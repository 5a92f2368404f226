//! Writing an Application's status: conditions, the sync history, Events, and the status
//! patch itself (only when something changed). The reconciler's helpers build on these;
//! these depend on nothing of theirs.

use k8s_openapi::jiff::Timestamp;
use kube::api::Api;
use kube::runtime::events::{Event as KubeEvent, EventType};
use kube::{Resource, ResourceExt};

use super::memory::AppContext;
use crate::api::application::{Application, ApplicationStatus, SyncRecord};
use crate::api::conditions::{self, Status};
use crate::controller::status::apply_status;
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

pub(super) async fn write_if_changed(
    api: &Api<Application>,
    app: &Application,
    status: &ApplicationStatus,
) -> Result<()> {
    if Some(status) != app.status.as_ref() {
        apply_status(api, &app.name_any(), status).await?;
    }
    Ok(())
}
