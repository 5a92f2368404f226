//! An Application being deleted (its finalizer): the canaries it made, its write-back
//! cache, and with `prune` the objects of its inventory that still carry its label.

use std::sync::Arc;

use kube::ResourceExt;
use kube::runtime::controller::Action;

use super::context::Context;
use super::sync;
use crate::api::application::Application;
use crate::apply::inventory;
use crate::error::{Error, Result};

/// Deleting an Application with prune on removes what it applied.
pub async fn cleanup(app: Arc<Application>, ctx: Arc<Context>) -> Result<Action> {
    super::context::remove_dir(
        &ctx.writeback_cache(&app.namespace().unwrap_or_default(), &app.name_any()),
    );
    // Without a target (an identity or cluster the controller cannot act as), nothing was
    // applied for it, and nothing is deleted with the controller's own rights.
    let target = match ctx.targets.for_app(&app) {
        Ok(t) => t,
        Err(e) => {
            tracing::warn!(namespace = %app.namespace().unwrap_or_default(), name = %app.name_any(), error = %e, "deleted without cleanup");
            return Ok(Action::await_change());
        }
    };
    if let Some(r) = app.status.as_ref().and_then(|s| s.rollout.as_ref())
        && !r.canaries.is_empty()
    {
        super::canary_owner::delete_canaries(
            &target,
            &app,
            &super::canary_owner::canary_namespaces(&app),
            &r.canaries,
        )
        .await;
    }
    if !app.spec.prune || app.spec.suspend {
        return Ok(Action::await_change());
    }
    let entries = app
        .status
        .as_ref()
        .map(|s| s.inventory.clone())
        .unwrap_or_default();
    let stale = inventory::stale(&entries, &[]);
    let result = target.applier.prune(&stale, &sync::app_label(&app)).await;
    if !result.failed.is_empty() {
        return Err(Error::Cleanup(crate::apply::join_errors(
            result.failed.iter().map(|(_, m)| m),
        )));
    }
    Ok(Action::await_change())
}
