//! RollingUpdate abort: when a revision's workloads do not become healthy, re-apply the
//! workload templates of the last healthy revision (rendered again from the source's Git
//! cache), then the abort shared with canaries (`abort`); and whether a revision is a
//! `gantry rollback`.

use kube::ResourceExt;

use super::abort::{Returned, aborted};
use super::memory::AppContext;
use super::pipeline::{self, SyncInput};
use crate::api::GitRepository;
use crate::api::annotations::ROLLBACK_NOTE;
use crate::api::application::{Application, ApplicationStatus};
use crate::cluster::Target;
use crate::controller::context::revision_commit;
use crate::rollout::plan;
use crate::source::artifact;

const WORKLOAD_KINDS: &[&str] = &["Deployment", "StatefulSet", "DaemonSet"];

/// Renders `revision` from the Git cache of the Application's source and re-applies its
/// workloads. Returns the workloads applied.
async fn reapply_workloads(
    ctx: &AppContext,
    target: &Target,
    app: &Application,
    source: &GitRepository,
    revision: &str,
) -> Result<Vec<String>, String> {
    let ns = app.namespace().unwrap_or_default();
    let commit =
        revision_commit(revision).ok_or_else(|| format!("revision {revision} names no commit"))?;
    let cache = ctx.git_cache(&ns, &source.name_any());
    let scratch = tempfile::tempdir_in(&ctx.data_dir).map_err(|e| e.to_string())?;
    let tree = scratch.path().join("tree");
    artifact::checkout_commit(&cache, commit, &tree, &source.spec.ignore)
        .await
        .map_err(|e| format!("cannot check out {commit} from the Git cache: {e}"))?;
    let input = SyncInput {
        target,
        local: &ctx.client,
        app,
        artifact_root: &tree,
        artifact_check: None,
        hold: None,
        record_planned: None,
        timeout: ctx.app_timeout(app),
    };
    let desired = pipeline::desired_set(&input)
        .await
        .map_err(|e| format!("cannot render {revision}: {e}"))?;
    let applier = &target.applier;
    let mut items = vec![];
    for d in desired
        .iter()
        .filter(|d| WORKLOAD_KINDS.contains(&d.key.kind.as_str()))
    {
        if let Ok(Some(r)) = applier.resolve_key(&d.key).await {
            items.push((d, r));
        }
    }
    let names: Vec<String> = items
        .iter()
        .map(|(d, _)| format!("{} {}", d.key.kind, d.key.name))
        .collect();
    let items: Vec<_> = items.iter().map(|(d, r)| (*d, r)).collect();
    // Forced: the failed revision's apply owns these fields now.
    let errors: Vec<_> = applier
        .apply(&items, true)
        .await
        .into_iter()
        .filter_map(|r| r.err())
        .collect();
    if errors.is_empty() {
        Ok(names)
    } else {
        Err(crate::apply::join_errors(errors))
    }
}

/// Whether the commit of `revision` is a revert made by `gantry rollback` of the
/// Application `ns/app` (read from the source's Git cache); another Application on the same
/// source only sees a new revision.
pub(super) async fn is_rollback(
    ctx: &AppContext,
    ns: &str,
    app: &str,
    source: &str,
    revision: &str,
) -> bool {
    let Some(commit) = revision_commit(revision).map(str::to_string) else {
        return false;
    };
    let note = format!("{ROLLBACK_NOTE} {ns}/{app}`");
    let cache = ctx.git_cache(ns, source);
    tokio::task::spawn_blocking(move || {
        let repo = git2::Repository::open_bare(&cache).ok()?;
        let c = repo.find_commit(git2::Oid::from_str(&commit).ok()?).ok()?;
        Some(c.message().unwrap_or_default().contains(&note))
    })
    .await
    .ok()
    .flatten()
    .unwrap_or(false)
}

/// Aborts the rollout of `revision`: back to the last healthy revision's workloads, then
/// the abort shared with canaries.
pub(super) async fn abort(
    ctx: &AppContext,
    target: &Target,
    app: &Application,
    source: &GitRepository,
    status: &mut ApplicationStatus,
    revision: &str,
    reason: &str,
) {
    let good = plan::last_healthy(&status.history, revision).map(|r| r.revision.clone());
    let outcome = match &good {
        None => Err("no earlier healthy revision to return to".to_string()),
        Some(good) => reapply_workloads(ctx, target, app, source, good).await,
    };
    let message = match (&good, &outcome) {
        (Some(good), Ok(workloads)) => format!(
            "revision {revision} aborted: {reason}; returned {} to revision {good}; not retried until Git changes",
            workloads.join(", ")
        ),
        (_, Err(e)) => format!(
            "revision {revision} aborted: {reason}; could not return to the last healthy revision: {e}; not retried until Git changes"
        ),
        (None, Ok(_)) => unreachable!("no target means an error outcome"),
    };
    let running = good.filter(|_| outcome.is_ok());
    let returned = Returned {
        strategy: crate::metrics::Strategy::RollingUpdate,
        message,
        running,
        unhealthy: true,
    };
    aborted(ctx, app, source, status, revision, reason, returned).await;
}
