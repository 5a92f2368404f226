//! One abort for rolling updates and canaries: the revision is rejected (not retried until
//! Git changes), its history entry and the rollout state say so, the metric and the Event
//! count it, and with `onFailure: revert` its commits under the Application's path are
//! reverted in Git. What returns the workloads to the last healthy revision is the
//! strategy's own part (`rolling_abort` re-applies the old templates, `canary` deletes the
//! canaries); it hands the result here.

use std::time::Duration;

use k8s_openapi::apimachinery::pkg::apis::meta::v1::Time;
use k8s_openapi::jiff::Timestamp;
use kube::ResourceExt;
use kube::api::Api;
use kube::runtime::events::EventType;

use super::memory::AppContext;
use super::reasons;
use super::record::{publish, set};
use crate::api::GitRepository;
use crate::api::application::{Application, ApplicationStatus, SyncResult};
use crate::api::conditions::{self, Status};
use crate::api::rollout::{OnFailure, RolloutPhase};
use crate::controller::context::revision_commit;
use crate::metrics::{RolloutResult, Strategy};
use crate::rollout::plan;
use crate::source::git::Reference;
use crate::writeback::revert;

/// What the strategy did with the workloads of an aborted revision.
pub(super) struct Returned {
    pub strategy: Strategy,
    /// The Ready message so far: what was aborted, why, and where the workloads are now.
    pub message: String,
    /// The revision whose templates run now, when known.
    pub running: Option<String>,
    /// Whether the workloads are unhealthy now (a rolling update's); a canary's stable
    /// Deployments kept running.
    pub unhealthy: bool,
}

/// Rejects `revision`, records the abort and, with `onFailure: revert`, reverts it in Git.
pub(super) async fn aborted(
    ctx: &AppContext,
    app: &Application,
    source: &GitRepository,
    status: &mut ApplicationStatus,
    revision: &str,
    reason: &str,
    returned: Returned,
) {
    let generation = app.metadata.generation;
    let short: String = reason.chars().take(500).collect();
    if let Some(running) = returned.running {
        status.running_revision = Some(running);
    }
    if let Some(rec) = status.history.iter_mut().find(|r| r.revision == revision) {
        rec.result = SyncResult::Aborted;
        rec.healthy = Some(false);
        rec.message = Some(short.clone());
        rec.finished_at
            .get_or_insert_with(|| Time(Timestamp::now()));
    }
    let mut rollout = status.rollout.clone().unwrap_or_default();
    plan::reject(&mut rollout.failed_revisions, revision);
    rollout.phase = RolloutPhase::Aborted;
    rollout.revision = Some(revision.to_string());
    rollout.message = Some(short);
    rollout.step_started_at = None;
    status.rollout = Some(rollout);
    ctx.metrics
        .rollout(returned.strategy, RolloutResult::Aborted);

    let mut message = returned.message;
    let wants_revert = app
        .spec
        .rollout
        .as_ref()
        .is_some_and(|r| r.on_failure == OnFailure::Revert);
    if wants_revert {
        match revert_in_git(ctx, app, source, status, revision, reason).await {
            Ok(Some(commit)) => {
                ctx.metrics
                    .rollout(returned.strategy, RolloutResult::Reverted);
                message.push_str(&format!("; reverted in Git as {}", &commit[..12]));
                if let Some(rec) = status.history.iter_mut().find(|r| r.revision == revision) {
                    rec.reverted_by = Some(commit);
                }
            }
            Ok(None) => message.push_str("; nothing to revert in Git"),
            Err(e) => message.push_str(&format!("; the Git revert failed: {e}")),
        }
    }
    tracing::warn!(namespace = %app.namespace().unwrap_or_default(), name = %app.name_any(), %message, "rollout aborted");
    publish(
        ctx,
        app,
        EventType::Warning,
        reasons::ROLLOUT_ABORTED,
        message.clone(),
    )
    .await;
    set(
        status,
        conditions::READY,
        Status::False,
        reasons::ROLLOUT_ABORTED,
        message,
        generation,
    );
    if returned.unhealthy {
        set(
            status,
            conditions::HEALTHY,
            Status::False,
            reasons::ROLLOUT_ABORTED,
            reason.to_string(),
            generation,
        );
    }
}

/// Why an aborted revision could not be reverted in Git.
#[derive(Debug, thiserror::Error)]
pub(super) enum RevertFailure {
    #[error("no earlier healthy revision to revert to")]
    NoHealthyRevision,
    #[error("the last healthy revision names no commit")]
    NoCommit,
    #[error("{0}")]
    Source(String),
    #[error(transparent)]
    Revert(#[from] revert::RevertError),
}

/// `git revert` of the commits after the last healthy revision that touched the path.
async fn revert_in_git(
    ctx: &AppContext,
    app: &Application,
    source: &GitRepository,
    status: &ApplicationStatus,
    revision: &str,
    reason: &str,
) -> std::result::Result<Option<String>, RevertFailure> {
    let good =
        plan::last_healthy(&status.history, revision).ok_or(RevertFailure::NoHealthyRevision)?;
    let to = revision_commit(&good.revision)
        .ok_or(RevertFailure::NoCommit)?
        .to_string();
    let ns = app.namespace().unwrap_or_default();
    ctx.check_file_url(&source.spec.url)
        .map_err(|e| RevertFailure::Source(e.to_string()))?;
    let creds = crate::controller::git_repository::credentials(&ctx.client, &ns, source)
        .await
        .map_err(|e| RevertFailure::Source(e.to_string()))?;
    let branch = Reference::from_spec(source.spec.git_ref.as_ref())
        .branch()
        .unwrap_or("main")
        .to_string();
    let what = match app.spec.rollout.as_ref().map(|r| r.strategy) {
        Some(crate::api::rollout::RolloutStrategy::Canary) => "the canary",
        _ => "the rollout",
    };
    // Signed as the Application's write-back commits are, when it names a key.
    let signing_key = match app
        .spec
        .image_automation
        .as_ref()
        .and_then(|a| a.write_back.signing_key.as_ref())
    {
        Some(k) => Some(
            super::write_back::signing_key(&ctx.client, &ns, &k.secret_ref.name)
                .await
                .map_err(RevertFailure::Source)?,
        ),
        None => None,
    };
    let result = revert::run(revert::Request {
        signing_key,
        cache: ctx.data_dir.join("revert").join(&ns).join(app.name_any()),
        url: source.spec.url.clone(),
        branch,
        creds,
        path: app.spec.path.clone(),
        to,
        author: ("Gantry".into(), "gantry@localhost".into()),
        note: format!("Gantry aborted {what} of {revision}: {reason}"),
        dry_run: false,
        timeout: Duration::from_secs(60),
    })
    .await?;
    if result.pushed.is_some() {
        let repos: Api<GitRepository> = Api::namespaced(ctx.client.clone(), &ns);
        let _ = crate::trigger::request_reconcile(&repos, &source.name_any()).await;
    }
    Ok(result.pushed)
}
