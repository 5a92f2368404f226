//! The health follow-up of an Application after a sync, until its workloads are healthy
//! (or a rollout aborts).

use std::time::Duration;

use k8s_openapi::jiff::Timestamp;
use kube::ResourceExt;
use kube::api::Api;
use kube::runtime::controller::Action;

use super::app_record::{set, write_if_changed};
use super::context::Context;
use super::status::with_jitter;
use super::sync;
use crate::api::GitRepository;
use crate::api::application::{Application, ApplicationStatus};
use crate::api::conditions::{self, Status};
use crate::error::Result;
use crate::health::Health;
use crate::rollout::plan;

const HEALTH_POLL: Duration = Duration::from_secs(2);

#[allow(clippy::too_many_arguments)]
pub(super) async fn follow_health(
    ctx: &Context,
    api: &Api<Application>,
    app: &Application,
    source: &GitRepository,
    mut status: ApplicationStatus,
    interval: Duration,
    timeout: Duration,
    after_sync: bool,
) -> Result<Action> {
    let generation = app.metadata.generation;
    let healthy_already = conditions::find(&status.conditions, conditions::HEALTHY)
        .is_some_and(|c| c.status == "True");
    if healthy_already && !after_sync {
        write_if_changed(api, app, &status).await?;
        return Ok(Action::requeue(with_jitter(interval, &app.name_any())));
    }
    let (health, message) =
        sync::assess_health(&ctx.client, &ctx.discovery, &status.inventory).await;
    let since = status
        .history
        .first()
        .and_then(|h| h.finished_at.clone())
        .map(|t| t.0)
        .unwrap_or_else(Timestamp::now);
    let waited = Timestamp::now().duration_since(since).unsigned_abs();
    let revision = status.last_applied_revision.clone().unwrap_or_default();
    let first_healthy = matches!(health, Health::Healthy | Health::Suspended)
        && status
            .history
            .first()
            .is_some_and(|r| r.revision == revision && r.healthy.is_none());
    // RollingUpdate with HTTP / Prometheus checks: a healthy revision must also pass them
    // before it counts as healthy; `failureLimit` consecutive failures abort it.
    if first_healthy
        && let Some(rollout) = &app.spec.rollout
        && rollout.strategy == crate::api::rollout::RolloutStrategy::RollingUpdate
        && let Some(spec) = &rollout.analysis
        && (!spec.http.is_empty() || !spec.prometheus.is_empty())
    {
        let (verdict, results) = crate::rollout::analysis::run(&ctx.client, "", &[], spec).await;
        let state = status.rollout.get_or_insert_with(Default::default);
        state.checks.extend(results);
        let excess = state.checks.len().saturating_sub(20);
        state.checks.drain(..excess);
        match verdict {
            Ok(()) => state.consecutive_failures = 0,
            Err(e) => {
                state.consecutive_failures += 1;
                let failures = state.consecutive_failures;
                if failures >= spec.failure_limit.max(1) {
                    let reason = format!("{e} ({failures} consecutive failed analyses)");
                    super::rollout::abort(ctx, app, source, &mut status, &revision, &reason).await;
                    write_if_changed(api, app, &status).await?;
                    return Ok(Action::requeue(with_jitter(interval, &app.name_any())));
                }
                set(
                    &mut status,
                    conditions::HEALTHY,
                    Status::Unknown,
                    "Analysing",
                    format!("analysis {failures}/{}: {e}", spec.failure_limit),
                    generation,
                );
                write_if_changed(api, app, &status).await?;
                return Ok(Action::requeue(
                    spec.interval.parse().unwrap_or(Duration::from_secs(30)),
                ));
            }
        }
    }
    if first_healthy && let Some(rec) = status.history.first_mut() {
        rec.healthy = Some(true);
        if app.spec.rollout.is_some() {
            ctx.metrics
                .rollouts
                .with_label_values(&["rollingupdate", "succeeded"])
                .inc();
        }
        // What ran healthy: the known-good templates of the canary fast path (recorded at
        // sync time; filled from the rendered set for records written before that).
        if rec.template_hashes.is_empty()
            && let Some(desired) = super::drift_check::cached(ctx, app, &revision)
        {
            rec.template_hashes = super::canary::template_hashes(&desired);
        }
        if let Some(rollout) = status.rollout.as_mut()
            && rollout.revision.as_deref() == Some(revision.as_str())
            && rollout.phase == crate::api::rollout::RolloutPhase::Progressing
        {
            rollout.phase = crate::api::rollout::RolloutPhase::Succeeded;
        }
    }
    if let Some(rollout) = &app.spec.rollout {
        let deadline = rollout
            .progress_deadline
            .parse()
            .unwrap_or(Duration::from_secs(600));
        if let plan::Verdict::Abort { reason } =
            plan::rolling_update(health, &message, waited, deadline)
        {
            super::rollout::abort(ctx, app, source, &mut status, &revision, &reason).await;
            write_if_changed(api, app, &status).await?;
            return Ok(Action::requeue(with_jitter(interval, &app.name_any())));
        }
    }
    let action = match health {
        Health::Healthy | Health::Suspended => {
            set(
                &mut status,
                conditions::HEALTHY,
                Status::True,
                "Healthy",
                "all workloads are healthy",
                generation,
            );
            if conditions::find(&status.conditions, conditions::READY)
                .is_some_and(|c| c.reason == "HealthCheckFailed")
            {
                set(
                    &mut status,
                    conditions::READY,
                    Status::True,
                    "Succeeded",
                    format!("revision {revision} is applied and healthy"),
                    generation,
                );
            }
            Action::requeue(with_jitter(interval, &app.name_any()))
        }
        Health::Degraded => {
            set(
                &mut status,
                conditions::HEALTHY,
                Status::False,
                "HealthCheckFailed",
                message.clone(),
                generation,
            );
            set(
                &mut status,
                conditions::READY,
                Status::False,
                "HealthCheckFailed",
                format!("revision {revision}: {message}"),
                generation,
            );
            Action::requeue(Duration::from_secs(10).min(interval))
        }
        Health::Progressing | Health::Unknown if waited > timeout => {
            let msg = format!("not healthy after {}s: {message}", timeout.as_secs());
            set(
                &mut status,
                conditions::HEALTHY,
                Status::False,
                "HealthCheckFailed",
                msg.clone(),
                generation,
            );
            set(
                &mut status,
                conditions::READY,
                Status::False,
                "HealthCheckFailed",
                format!("revision {revision}: {msg}"),
                generation,
            );
            Action::requeue(Duration::from_secs(10).min(interval))
        }
        Health::Progressing | Health::Unknown => {
            set(
                &mut status,
                conditions::HEALTHY,
                Status::Unknown,
                "Progressing",
                message,
                generation,
            );
            Action::requeue(HEALTH_POLL)
        }
    };
    write_if_changed(api, app, &status).await?;
    Ok(action)
}
