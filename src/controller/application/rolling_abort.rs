//! RollingUpdate abort: when a revision's workloads do not become healthy, re-apply the
//! workload templates of the last healthy revision (rendered again from the source's Git
//! cache), then the abort shared with canaries (`abort`); and whether a revision is a
//! `gantry rollback`.

use kube::ResourceExt;

use super::abort::{Returned, aborted};
use super::memory::AppContext;
use super::pass::Pass;
use super::pipeline;
use crate::api::GitRepository;
use crate::api::annotations::ROLLBACK_NOTE;
use crate::api::application::{Application, ApplicationStatus};
use crate::apply::set::SetOptions;
use crate::cluster::Target;
use crate::controller::context::revision_commit;
use crate::rollout::plan;

const WORKLOAD_KINDS: &[&str] = &["Deployment", "StatefulSet", "DaemonSet"];

/// Why the last healthy revision's workloads could not be re-applied.
#[derive(Debug, thiserror::Error)]
pub(super) enum ReapplyFailure {
    #[error("no earlier healthy revision to return to")]
    NoHealthyRevision,
    #[error("revision {0} names no commit")]
    NoCommit(String),
    #[error(transparent)]
    Render(#[from] pipeline::RenderCommitError),
    #[error(transparent)]
    Apply(#[from] crate::apply::set::SetError),
}

/// Renders `revision` from the Git cache of the Application's source and re-applies its
/// workloads through the staged apply. Returns the workloads applied.
async fn reapply_workloads(
    ctx: &AppContext,
    target: &Target,
    app: &Application,
    source: &GitRepository,
    revision: &str,
) -> Result<Vec<String>, ReapplyFailure> {
    let ns = app.namespace().unwrap_or_default();
    let commit =
        revision_commit(revision).ok_or_else(|| ReapplyFailure::NoCommit(revision.to_string()))?;
    let at = pipeline::CachedCommit {
        cache: &ctx.git_cache(&ns, &source.name_any()),
        commit,
        ignore: &source.spec.ignore,
    };
    let timeout = ctx.app_timeout(app);
    let (desired, _, _) =
        pipeline::render_commit(at, &ctx.data_dir, target, &ctx.client, app, timeout).await?;
    let workloads: Vec<_> = desired
        .into_iter()
        .filter(|d| WORKLOAD_KINDS.contains(&d.key.kind.as_str()))
        .collect();
    let names: Vec<String> = workloads
        .iter()
        .map(|d| format!("{} {}", d.key.kind, d.key.name))
        .collect();
    // Through the staged apply and its guards, as a sync: the whole subset is validated by
    // dry-run first (nothing is written when one is refused), and an object labelled for
    // another Application is not taken unless the spec allows it. Forced: the failed
    // revision's apply owns these fields now.
    let owner = pipeline::app_label(app);
    target
        .applier
        .apply_set(
            &workloads,
            &SetOptions {
                force: true,
                take_ownership: app.spec.take_ownership,
                owner: &owner,
                recreate_on_immutable: app.spec.recreate_on_immutable,
                ..SetOptions::default()
            },
        )
        .await?;
    Ok(names)
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
    pass: &Pass<'_>,
    status: &mut ApplicationStatus,
    revision: &str,
    reason: &str,
) {
    let (ctx, target, app, source) = (pass.ctx, pass.target, pass.app, pass.source);
    let good = plan::last_healthy(&status.history, revision).map(|r| r.revision.clone());
    let outcome = match &good {
        None => Err(ReapplyFailure::NoHealthyRevision),
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
