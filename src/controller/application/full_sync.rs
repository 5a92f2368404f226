//! A full sync of one revision: open its rollout record, hold the Deployments that start
//! as canaries, run the `pipeline`, then write the outcome: inventory,
//! history, conditions, Events, and the health follow-up.

use std::time::Duration;

use k8s_openapi::apimachinery::pkg::apis::meta::v1::Time;
use k8s_openapi::jiff::Timestamp;
use kube::ResourceExt;
use kube::runtime::controller::Action;
use kube::runtime::events::EventType;

use super::canary;
use super::drift_check;
use super::follow::follow_health;
use super::follow_drift::ensure_watches;
use super::memory::AppContext;
use super::pass::Pass;
use super::pipeline::{self, SyncError, SyncInput};
use super::reasons;
use super::record::{Outcome, publish, record, set};
use crate::api::application::{Application, ApplicationStatus, SyncRecord, SyncResult};
use crate::api::conditions::{self, Status, is};
use crate::cluster::Target;
use crate::error::Result;

use super::pending::EARLY_READY_ABOVE;

pub(super) async fn full_sync(
    pass: &Pass<'_>,
    mut status: ApplicationStatus,
    request: Option<String>,
    rendered: Option<pipeline::Rendered>,
) -> Result<Outcome> {
    let (app, revision) = (pass.app, &pass.revision);
    // A full sync of this revision.
    let previous_canaries = status
        .rollout
        .as_ref()
        .map(|r| r.canaries.clone())
        .unwrap_or_default();
    status.last_attempted_revision = Some(revision.clone());
    if let Some(rollout) = status.rollout.as_mut() {
        rollout.failed_revisions.retain(|f| f != revision);
    }
    if app.spec.rollout.is_some() {
        let failed = status
            .rollout
            .take()
            .map(|r| r.failed_revisions)
            .unwrap_or_default();
        status.rollout = Some(crate::api::rollout::RolloutStatus {
            phase: crate::api::rollout::RolloutPhase::Progressing,
            revision: Some(revision.clone()),
            started_at: Some(Time(Timestamp::now())),
            failed_revisions: failed,
            ..Default::default()
        });
    }
    if request.is_some() {
        status.last_handled_request = request;
    }
    let started = Time(Timestamp::now());
    let canary_strategy = app
        .spec
        .rollout
        .as_ref()
        .is_some_and(|r| r.strategy == crate::api::rollout::RolloutStrategy::Canary);
    let history = status.history.clone();
    let hold = move |d: &crate::apply::normalize::Desired| {
        canary_strategy
            && d.key.group == "apps"
            && d.key.kind == "Deployment"
            && crate::rollout::plan::needs_canary(
                &crate::rollout::plan::template_key(
                    d.key.namespace.as_deref().unwrap_or_default(),
                    &d.key.name,
                ),
                &crate::rollout::template::template_hash(&d.object),
                &history,
            )
    };
    // The planned inventory is written before anything is applied, and kept on failure.
    pass.checkpoint.begin(status.clone());
    let input = SyncInput {
        hold: Some(&hold),
        record_planned: Some(pass.checkpoint),
        ..pass.input
    };
    let result = pipeline::sync(&input, rendered).await;
    if result.is_err()
        && let Some(entries) = pass.checkpoint.recorded()
    {
        status.inventory = entries;
    }
    let begun = Begun {
        ready_before: app
            .status
            .as_ref()
            .and_then(|s| conditions::find(&s.conditions, conditions::READY))
            .map(|c| c.message.clone()),
        started,
        previous_canaries,
    };
    match result {
        Ok(outcome) => succeeded(pass, &begun, status, outcome).await,
        Err(e) => Ok(failed(pass, &begun, status, e).await),
    }
}

/// What the sync knew when it began.
struct Begun {
    /// Ready's message before the sync (a failure that repeats it is not announced again).
    ready_before: Option<String>,
    started: Time,
    previous_canaries: Vec<String>,
}

/// The revision is applied: inventory, history, Ready, Events; canaries start; health
/// follows.
async fn succeeded(
    pass: &Pass<'_>,
    begun: &Begun,
    mut status: ApplicationStatus,
    outcome: pipeline::SyncOutcome,
) -> Result<Outcome> {
    let (ctx, target, app, revision) = (pass.ctx, pass.target, pass.app, &pass.revision);
    let (ns, name) = (app.namespace().unwrap_or_default(), app.name_any());
    let source_name = &app.spec.source_ref.name;
    let generation = app.metadata.generation;
    let started = begun.started.clone();
    let mut summary = format!(
        "{} created, {} configured, {} unchanged, {} pruned",
        outcome.created, outcome.configured, outcome.unchanged, outcome.pruned
    );
    if !outcome.overwritten.is_empty() {
        const NAMED: usize = 10;
        let more = outcome.overwritten.len().saturating_sub(NAMED);
        summary.push_str(&format!(
            "; overwrote hand edits: {}{}",
            outcome.overwritten[..outcome.overwritten.len().min(NAMED)].join("; "),
            if more > 0 {
                format!(" and {more} more")
            } else {
                String::new()
            }
        ));
    }
    status.inventory = outcome.inventory.clone();
    status.last_applied_revision = Some(revision.clone());
    status.running_revision = Some(revision.clone());
    // Recorded now (they count only once the revision is healthy), so a controller
    // restarted before the health check still knows the templates of this revision.
    let hashes = crate::rollout::template::template_hashes(&outcome.desired);
    drift_check::remember(ctx, app, revision, &outcome.desired, outcome.hooks_digest);
    matches_git(ctx, target, app, &mut status).await;
    if let Some(chart) = &outcome.chart {
        let before = status.chart.as_ref().map(|c| c.version.as_str());
        summary.push_str(&match before {
            Some(v) if v != chart.version => {
                format!("; chart {} {v} → {}", chart.source, chart.version)
            }
            _ => format!("; chart {} {}", chart.source, chart.version),
        });
    }
    let mut message = format!("applied revision {revision}: {summary}");
    if !outcome.prune_messages.is_empty() {
        message.push_str(&format!("; prune: {}", outcome.prune_messages.join("; ")));
    }
    ctx.memory.forget_sync_failures(&ns, &name);
    ctx.metrics
        .sync(crate::metrics::SyncResult::Succeeded, reasons::SUCCEEDED);
    let result = if super::rolling_abort::is_rollback(ctx, &ns, &name, source_name, revision).await
    {
        SyncResult::RolledBack
    } else {
        SyncResult::Succeeded
    };
    record(
        &mut status,
        SyncRecord {
            revision: revision.clone(),
            started_at: started,
            finished_at: Some(Time(Timestamp::now())),
            result,
            message: Some(summary.clone()),
            created: outcome.created,
            configured: outcome.configured,
            unchanged: outcome.unchanged,
            pruned: outcome.pruned,
            template_hashes: hashes,
            healthy: None,
            chart_version: outcome.chart.as_ref().map(|c| c.version.clone()),
            reverted_by: None,
        },
    );
    status.chart = outcome.chart.clone();
    let held: Vec<String> = outcome.held.iter().map(|k| k.name.clone()).collect();
    if canary::after_sync(
        ctx,
        target,
        app,
        &mut status,
        revision,
        &begun.previous_canaries,
        &held,
        !outcome.prune_failed,
    )
    .await
    {
        return Ok(Outcome::write(
            status,
            Action::requeue(Duration::from_millis(500)),
        ));
    }
    announce(ctx, app, &mut status, &outcome, revision, message).await;
    set(
        &mut status,
        conditions::HEALTHY,
        Status::Unknown,
        "Progressing",
        "checking health",
        generation,
    );
    // On large sets (or with a rollout strategy), Ready is written as soon as the revision
    // is applied and health follows: its first assessment lists every workload, which can
    // take a while. A small set's health is a LIST or two away, so Ready and Healthy go in
    // one status write (at fleet scale, one write less per Application and sync).
    if status.inventory.len() > EARLY_READY_ABOVE || app.spec.rollout.is_some() {
        pass.checkpoint.write(&status).await?;
        tracing::debug!(namespace = %ns, name = %name, "status written: applied");
    }
    let mut followed = follow_health(pass, status, true).await?;
    // Objects whose delete failed stay in the inventory and are retried soon.
    if outcome.prune_failed {
        followed.action = Action::requeue(Duration::from_secs(10));
    }
    Ok(followed)
}

/// A revision just applied matches Git: the drift watches cover its inventory, what they
/// saw before is dropped, the next full check is an interval away, and Drifted is False.
async fn matches_git(
    ctx: &AppContext,
    target: &Target,
    app: &Application,
    status: &mut ApplicationStatus,
) {
    let (ns, name) = (app.namespace().unwrap_or_default(), app.name_any());
    ensure_watches(target, &status.inventory).await;
    target.drift.take_dirty(&ns, &name);
    ctx.memory
        .last_full_check
        .lock()
        .expect("full check map")
        .insert((ns, name), std::time::Instant::now());
    // (Also after an aborted revision, whose Drifted said that Git's workloads did not run.)
    if status.drift.as_ref().is_some_and(|d| !d.objects.is_empty())
        || conditions::find(&status.conditions, conditions::DRIFTED).is_none_or(|c| {
            c.reason == reasons::ROLLOUT_ABORTED || c.reason == reasons::REVISION_NOT_APPLIED
        })
    {
        super::follow_drift::matches_git(status, app.metadata.generation);
    }
}

/// Ready and the Events of an applied revision.
async fn announce(
    ctx: &AppContext,
    app: &Application,
    status: &mut ApplicationStatus,
    outcome: &pipeline::SyncOutcome,
    revision: &str,
    message: String,
) {
    let generation = app.metadata.generation;
    if outcome.prune_failed {
        let m = message.clone();
        set(
            status,
            conditions::READY,
            Status::False,
            reasons::PRUNE_FAILED,
            m,
            generation,
        );
        publish(ctx, app, EventType::Warning, reasons::PRUNE_FAILED, message).await;
    } else {
        let m = message.clone();
        set(
            status,
            conditions::READY,
            Status::True,
            reasons::SUCCEEDED,
            m,
            generation,
        );
        publish(ctx, app, EventType::Normal, reasons::SYNCED, message).await;
    }
    if outcome.pruned > 0 {
        let note = format!(
            "pruned {} no longer in revision {revision}",
            crate::text::counted(outcome.pruned as usize, "object")
        );
        publish(ctx, app, EventType::Normal, reasons::PRUNED, note).await;
    }
}

/// The sync stopped: Ready says why, the history records it, and it is retried.
async fn failed(
    pass: &Pass<'_>,
    begun: &Begun,
    mut status: ApplicationStatus,
    e: SyncError,
) -> Outcome {
    let (ctx, app, revision, interval) = (pass.ctx, pass.app, &pass.revision, pass.interval);
    let ready_before = &begun.ready_before;
    let (ns, name) = (app.namespace().unwrap_or_default(), app.name_any());
    let generation = app.metadata.generation;
    let started = begun.started.clone();
    let reason = e.reason();
    let message = format!("revision {revision}: {e}");
    tracing::warn!(namespace = %ns, name = %name, reason, error = %e, "sync failed");
    ctx.metrics.sync(crate::metrics::SyncResult::Failed, reason);
    set(
        &mut status,
        conditions::READY,
        Status::False,
        reason,
        message.clone(),
        generation,
    );
    record(
        &mut status,
        SyncRecord {
            revision: revision.clone(),
            started_at: started,
            finished_at: Some(Time(Timestamp::now())),
            result: SyncResult::Failed,
            message: Some(format!("{reason}: {e}").chars().take(2000).collect()),
            created: 0,
            configured: 0,
            unchanged: 0,
            pruned: 0,
            template_hashes: Default::default(),
            healthy: None,
            chart_version: None,
            reverted_by: None,
        },
    );
    // Git's revision is not what the cluster has (whatever the drift check of the last
    // applied revision says).
    if status.last_applied_revision.as_deref() != Some(revision.as_str()) {
        let has = match &status.last_applied_revision {
            Some(applied) => format!("the cluster has revision {applied}"),
            None => "nothing of it is applied".to_string(),
        };
        set(
            &mut status,
            conditions::DRIFTED,
            Status::True,
            reasons::REVISION_NOT_APPLIED,
            format!("Git's revision {revision} is not applied ({reason}); {has}"),
            generation,
        );
    }
    if ready_before.as_deref() != Some(message.as_str()) {
        publish(ctx, app, EventType::Warning, reason, message).await;
    }
    let base = if matches!(e, SyncError::Artifact(_)) {
        // the tree is checked out again at once
        Duration::from_secs(2)
    } else if e.is_transient() {
        Duration::from_secs(5)
    } else {
        Duration::from_secs(30)
    };
    // Failures of the same revision back off (a new commit or a spec change is reconciled
    // at once through the watches, whatever the wait).
    let retry = ctx
        .memory
        .sync_backoff(&ns, &name, revision, app.metadata.generation, base);
    Outcome::write(status, Action::requeue(retry.min(interval.max(base))))
}

/// A new revision whose rendered set is exactly the one applied at the last revision (a
/// commit elsewhere in a shared repository): it is recorded as applied, with no dry-run
/// and no write to the cluster; drift and health are followed as for an applied revision.
/// Only for Applications without a rollout strategy (whose history drives canaries),
/// without hooks (which run at every sync) and without reported drift, after a sync that
/// ended Ready.
pub(super) enum SameSet {
    /// Recorded as applied: the revision is up to date.
    Recorded,
    /// A sync is needed; the render made to compare, if any, for it to use.
    Differs(Option<pipeline::Rendered>),
}

pub(super) async fn same_set_as_applied(
    ctx: &AppContext,
    app: &Application,
    status: &mut ApplicationStatus,
    revision: &str,
    input: &SyncInput<'_>,
) -> SameSet {
    let Some(applied) = status.last_applied_revision.clone() else {
        return SameSet::Differs(None);
    };
    let ready = conditions::find(&status.conditions, conditions::READY)
        .is_some_and(|c| is(c, Status::True) && c.reason == reasons::SUCCEEDED);
    // Drift that audit mode reports is left to the full sync (which applies what differs).
    let drifted = status.drift.as_ref().is_some_and(|d| !d.objects.is_empty());
    if applied == revision || !ready || drifted || app.spec.rollout.is_some() {
        return SameSet::Differs(None);
    }
    let Some((before, hooks_before)) = drift_check::cached_with_hooks(ctx, app, &applied) else {
        return SameSet::Differs(None);
    };
    let (desired, hooks, chart) = match pipeline::desired_and_hooks(input).await {
        Ok(rendered) => rendered,
        Err(_) => return SameSet::Differs(None), // the full sync reports it
    };
    // Hooks run when what the Application renders changed (objects or hooks), as Helm and
    // Argo CD run them on a sync of a change; a commit elsewhere in the repository runs none.
    let hooks_now = pipeline::hooks_digest(&hooks);
    if hooks_now != hooks_before || desired != *before {
        return SameSet::Differs(Some((desired, hooks, chart)));
    }
    status.chart = chart;
    // The history says the revision is applied; its objects are those of the last one, so
    // that one's health verdict carries over.
    let now = Time(Timestamp::now());
    record(
        status,
        SyncRecord {
            revision: revision.to_string(),
            started_at: now.clone(),
            finished_at: Some(now),
            result: SyncResult::Succeeded,
            message: Some(format!("the same objects as revision {applied}")),
            created: 0,
            configured: 0,
            unchanged: desired.len() as u32,
            pruned: 0,
            template_hashes: crate::rollout::template::template_hashes(&desired),
            healthy: status.history.first().and_then(|h| h.healthy),
            chart_version: status.chart.as_ref().map(|c| c.version.clone()),
            reverted_by: None,
        },
    );
    drift_check::remember(ctx, app, revision, &desired, hooks_now);
    status.last_attempted_revision = Some(revision.to_string());
    status.last_applied_revision = Some(revision.to_string());
    status.running_revision = Some(revision.to_string());
    let m = format!("applied revision {revision}: the same objects as revision {applied}");
    set(
        status,
        conditions::READY,
        Status::True,
        reasons::SUCCEEDED,
        m,
        app.metadata.generation,
    );
    tracing::debug!(namespace = ?app.metadata.namespace, name = ?app.metadata.name, revision, "same set as applied");
    SameSet::Recorded
}
