//! An Application being deleted (its finalizer): the canaries it made, its write-back
//! cache, and with `prune` the objects of its inventory that still carry its label.

use std::sync::Arc;

use kube::ResourceExt;
use kube::runtime::controller::Action;

use super::context::Context;
use super::sync;
use crate::api::application::Application;
use crate::apply::{inventory, prune};
use crate::error::{Error, Result};

/// Deleting an Application with prune on removes what it applied.
pub async fn cleanup(app: Arc<Application>, ctx: Arc<Context>) -> Result<Action> {
    if let Some(r) = app.status.as_ref().and_then(|s| s.rollout.as_ref())
        && !r.canaries.is_empty()
    {
        super::canary_owner::delete_canaries(
            &ctx,
            &app,
            &super::canary_owner::canary_namespaces(&app),
            &r.canaries,
        )
        .await;
    }
    super::context::remove_dir(
        &ctx.writeback_cache(&app.namespace().unwrap_or_default(), &app.name_any()),
    );
    if !app.spec.prune || app.spec.suspend {
        return Ok(Action::await_change());
    }
    let entries = app
        .status
        .as_ref()
        .map(|s| s.inventory.clone())
        .unwrap_or_default();
    let stale = inventory::stale(&entries, &[]);
    let result = prune::prune(&ctx.client, &ctx.discovery, &stale, &sync::app_label(&app)).await;
    if !result.failed.is_empty() {
        let msgs: Vec<String> = result.failed.iter().map(|(_, m)| m.clone()).collect();
        return Err(Error::Usage(format!(
            "cannot delete every object of the Application: {}",
            msgs.join("; ")
        )));
    }
    Ok(Action::await_change())
}
