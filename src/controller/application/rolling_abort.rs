//! RollingUpdate abort: when a revision's workloads do not become healthy, re-apply the
//! workload templates of the last healthy revision (rendered again from the source's Git
//! cache), record the revision as failed, and say why.

use std::time::Duration;

use kube::ResourceExt;
use kube::api::Api;
use kube::runtime::events::EventType;

use super::memory::AppContext;
use super::pipeline::{self, SyncInput};
use super::reasons;
use super::record::{publish, set};
use crate::api::GitRepository;
use crate::api::annotations::ROLLBACK_NOTE;
use crate::api::application::{Application, ApplicationStatus, SyncResult};
use crate::api::conditions::{self, Status};
use crate::api::rollout::{RolloutPhase, RolloutStatus};
use crate::cluster::Target;
use crate::controller::context::revision_commit;
use crate::rollout::plan;
use crate::source::artifact;
use crate::source::git::Reference;
use crate::writeback::revert;

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

/// Aborts the rollout of `revision`: back to the last healthy revision's workloads.
pub(super) async fn abort(
    ctx: &AppContext,
    target: &Target,
    app: &Application,
    source: &GitRepository,
    status: &mut ApplicationStatus,
    revision: &str,
    reason: &str,
) {
    let generation = app.metadata.generation;
    let good = plan::last_healthy(&status.history, revision).map(|r| r.revision.clone());
    let outcome = match &good {
        None => Err("no earlier healthy revision to return to".to_string()),
        Some(good) => reapply_workloads(ctx, target, app, source, good).await,
    };
    if let (Some(good), Ok(_)) = (&good, &outcome) {
        status.running_revision = Some(good.clone());
    }
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
    tracing::warn!(namespace = %app.namespace().unwrap_or_default(), name = %app.name_any(), %message, "rollout aborted");
    ctx.metrics
        .rollouts
        .with_label_values(&["rollingupdate", "aborted"])
        .inc();
    publish(
        ctx,
        app,
        EventType::Warning,
        reasons::ROLLOUT_ABORTED,
        message.clone(),
    )
    .await;
    if let Some(rec) = status.history.iter_mut().find(|r| r.revision == revision) {
        rec.result = SyncResult::Aborted;
        rec.healthy = Some(false);
        rec.message = Some(reason.chars().take(500).collect());
    }
    let mut rollout = status.rollout.clone().unwrap_or_default();
    plan::reject(&mut rollout.failed_revisions, revision);
    status.rollout = Some(RolloutStatus {
        phase: RolloutPhase::Aborted,
        revision: Some(revision.to_string()),
        message: Some(reason.chars().take(500).collect()),
        started_at: rollout.started_at.clone(),
        step_started_at: None,
        ..rollout
    });
    set(
        status,
        conditions::READY,
        Status::False,
        reasons::ROLLOUT_ABORTED,
        message.clone(),
        generation,
    );
    set(
        status,
        conditions::HEALTHY,
        Status::False,
        reasons::ROLLOUT_ABORTED,
        reason.to_string(),
        generation,
    );
}

/// `git revert` of the commits after the last healthy revision that touched the path.
pub(super) async fn revert_in_git(
    ctx: &AppContext,
    app: &Application,
    source: &GitRepository,
    status: &ApplicationStatus,
    revision: &str,
    reason: &str,
) -> std::result::Result<Option<String>, String> {
    let good = plan::last_healthy(&status.history, revision)
        .ok_or("no earlier healthy revision to revert to")?;
    let to = revision_commit(&good.revision)
        .ok_or("the last healthy revision names no commit")?
        .to_string();
    let ns = app.namespace().unwrap_or_default();
    ctx.check_file_url(&source.spec.url)
        .map_err(|e| e.to_string())?;
    let creds = crate::controller::git_repository::credentials(&ctx.client, &ns, source)
        .await
        .map_err(|e| e.to_string())?;
    let branch = Reference::from_spec(source.spec.git_ref.as_ref())
        .branch()
        .unwrap_or("main")
        .to_string();
    let result = revert::run(revert::Request {
        cache: ctx.data_dir.join("revert").join(&ns).join(app.name_any()),
        url: source.spec.url.clone(),
        branch,
        creds,
        path: app.spec.path.clone(),
        to,
        author: ("Gantry".into(), "gantry@localhost".into()),
        note: format!("Gantry aborted the canary of {revision}: {reason}"),
        dry_run: false,
        timeout: Duration::from_secs(60),
    })
    .await
    .map_err(|e| e.to_string())?;
    if result.pushed.is_some() {
        let repos: Api<GitRepository> = Api::namespaced(ctx.client.clone(), &ns);
        let _ = crate::trigger::request_reconcile(&repos, &source.name_any()).await;
    }
    Ok(result.pushed)
}
