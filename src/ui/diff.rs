//! An Application's difference from Git, asked for from its page: the revision it last
//! applied is rendered as a sync renders it and each object dry-run against the live one
//! (the deploy plan's machinery), with the viewer's own connection — their rights read the
//! source's credentials and make the dry-runs. Secret values are masked. Nothing is written.

use std::time::Duration;

use crate::api::{Application, GitRepository};
use crate::cluster::{ClientLimits, Targets};
use crate::controller::revision_plan::{self, Request};
use crate::plan::model::AppPlan;

/// The longest a diff may take (fetch and render included).
const TIMEOUT: Duration = Duration::from_secs(120);

/// The plan of `app` at the commit it last applied: its objects' diffs from the live ones.
pub async fn of(
    config: &kube::Config,
    client: &kube::Client,
    app: &Application,
    source: &GitRepository,
) -> Result<AppPlan, String> {
    let status = app.status.clone().unwrap_or_default();
    let revision = status
        .last_applied_revision
        .ok_or("nothing is applied yet: there is nothing to compare")?;
    let commit = crate::api::git_repository::revision_commit(&revision)
        .ok_or_else(|| format!("revision {revision} names no commit"))?
        .to_string();
    let (targets, _) = Targets::new(
        config.clone(),
        ClientLimits {
            concurrency: 8,
            ..Default::default()
        },
        None,
        Default::default(),
    )
    .map_err(|e| e.to_string())?;
    let work = tempfile::tempdir().map_err(|e| format!("a scratch directory: {e}"))?;
    let name = app.metadata.name.clone().unwrap_or_default();
    let plan = revision_plan::plan(Request {
        client,
        targets: &targets,
        source,
        reference: &commit,
        base: Some(&commit),
        also_fetch: &[],
        only: std::slice::from_ref(&name),
        work: work.path(),
        timeout: TIMEOUT,
    })
    .await
    .map_err(|e| e.to_string())?;
    plan.applications
        .into_iter()
        .find(|a| a.name == name)
        .ok_or_else(|| "the plan holds no entry for it".to_string())
}
