//! An Application being deleted (its finalizer): the canaries it made, its write-back
//! cache, and with `prune` the objects of its inventory that still carry its label.

use std::sync::Arc;

use kube::ResourceExt;
use kube::runtime::controller::Action;

use super::memory::AppContext;
use super::pipeline;
use crate::api::application::Application;
use crate::apply::inventory;
use crate::error::{Error, Result};

/// Deleting an Application with prune on removes what it applied.
pub async fn cleanup(app: Arc<Application>, ctx: Arc<AppContext>) -> Result<Action> {
    ctx.memory
        .status_writes
        .forget(&app.namespace().unwrap_or_default(), &app.name_any());
    ctx.memory
        .pending
        .forget(&app.namespace().unwrap_or_default(), &app.name_any());
    crate::controller::context::remove_dir(
        &ctx.writeback_cache(&app.namespace().unwrap_or_default(), &app.name_any()),
    );
    // Objects are deleted as the Application's identity on its cluster, never with the
    // controller's own rights instead. A cluster that does not answer keeps the finalizer
    // (retried, the objects are still there); an identity or kubeconfig that is gone or
    // refused ends the cleanup with a warning, leaving the objects.
    let target = match ctx.targets.for_app(&app).await {
        Ok(t) => t,
        Err(e) if e.is_transient() => return Err(Error::Cleanup(e.to_string())),
        Err(e) => {
            tracing::warn!(namespace = %app.namespace().unwrap_or_default(), name = %app.name_any(), error = %e, "deleted without pruning: no target to prune as");
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
    let result = target
        .applier
        .prune(&stale, &pipeline::app_label(&app))
        .await;
    if !result.failed.is_empty() {
        return Err(Error::Cleanup(crate::apply::join_errors(
            result.failed.iter().map(|(_, m)| m),
        )));
    }
    Ok(Action::await_change())
}
