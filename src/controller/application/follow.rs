//! The health follow-up of an Application after a sync, until its workloads are healthy
//! (or a rollout aborts). The mapping from assessed health to conditions is pure
//! ([`health_condition`]) and shared with the report of a rejected revision.

use crate::health::rules::Rules;
use std::time::Duration;

use k8s_openapi::jiff::Timestamp;
use kube::ResourceExt;
use kube::runtime::controller::Action;

use super::live_health;
use super::memory::AppContext;
use super::pass::Pass;
use super::reasons;
use super::record::{Outcome, set};
use crate::api::application::{Application, ApplicationStatus};
use crate::api::conditions::{self, Status, is};
use crate::api::rollout::{Analysis, RolloutPhase, RolloutStrategy};
use crate::controller::status::with_jitter;
use crate::error::Result;
use crate::health::Health;
use crate::rollout::plan::{self, Analysed};

const HEALTH_POLL: Duration = Duration::from_secs(2);

/// The Healthy condition for an assessed health: `healthy` is the message when all is
/// well; `timed_out` when the workloads had their time to become healthy (pure).
pub fn health_condition(
    health: Health,
    message: &str,
    healthy: &str,
    timed_out: Option<Duration>,
) -> (Status, &'static str, String) {
    match health {
        Health::Healthy | Health::Suspended => (Status::True, reasons::HEALTHY, healthy.into()),
        Health::Degraded => (
            Status::False,
            reasons::HEALTH_CHECK_FAILED,
            message.to_string(),
        ),
        Health::Unknown => (
            Status::Unknown,
            reasons::HEALTH_UNKNOWN,
            message.to_string(),
        ),
        Health::Progressing => match timed_out {
            Some(t) => (
                Status::False,
                reasons::HEALTH_CHECK_FAILED,
                format!("not healthy after {}s: {message}", t.as_secs()),
            ),
            None => (Status::Unknown, reasons::PROGRESSING, message.to_string()),
        },
    }
}

/// When an Application is looked at again after a rollout was aborted: from then on the
/// reconcile reports the health of the workloads that run (the last healthy revision's).
/// Its own status write does not wake it, so the abort asks for it.
pub(super) const AFTER_ABORT: Duration = Duration::from_secs(2);

/// Assesses the inventory's health and writes Healthy (and Ready when health fails or
/// recovers); RollingUpdate aborts on a failed check or at its deadline.
pub(super) async fn follow_health(
    pass: &Pass<'_>,
    mut status: ApplicationStatus,
    after_sync: bool,
) -> Result<Outcome> {
    let (ctx, target, app) = (pass.ctx, pass.target, pass.app);
    let (interval, timeout) = (pass.interval, pass.timeout());
    let generation = app.metadata.generation;
    let healthy_already = conditions::find(&status.conditions, conditions::HEALTHY)
        .is_some_and(|c| is(c, Status::True));
    if healthy_already && !after_sync {
        let again = Action::requeue(with_jitter(interval, &app.name_any()));
        return Ok(Outcome::write(status, again));
    }
    let (health, message) = live_health::assess(
        &target.applier,
        &status.inventory,
        &Rules::compile(&app.spec.health_checks).unwrap_or_default(),
    )
    .await;
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
        && rollout.strategy == RolloutStrategy::RollingUpdate
        && let Some(spec) = &rollout.analysis
        && (!spec.http.is_empty() || !spec.prometheus.is_empty())
        && let Some(action) = analyse(pass, &mut status, &revision, spec).await
    {
        return Ok(Outcome::write(status, action));
    }
    if first_healthy {
        mark_healthy(ctx, app, &mut status, &revision);
    }
    if let Some(rollout) = &app.spec.rollout {
        let deadline = rollout
            .progress_deadline
            .parse()
            .unwrap_or(Duration::from_secs(600));
        if let plan::Verdict::Abort { reason } =
            plan::rolling_update(health, &message, waited, deadline)
        {
            super::rolling_abort::abort(pass, &mut status, &revision, &reason).await;
            return Ok(Outcome::write(status, Action::requeue(AFTER_ABORT)));
        }
    }
    let timed_out = (waited > timeout).then_some(timeout);
    let (s, why, m) = health_condition(health, &message, "all workloads are healthy", timed_out);
    set(
        &mut status,
        conditions::HEALTHY,
        s,
        why,
        m.clone(),
        generation,
    );
    let action = match s {
        Status::True => {
            if conditions::find(&status.conditions, conditions::READY)
                .is_some_and(|c| c.reason == reasons::HEALTH_CHECK_FAILED)
            {
                let m = format!("revision {revision} is applied and healthy");
                let succeeded = reasons::SUCCEEDED;
                set(
                    &mut status,
                    conditions::READY,
                    Status::True,
                    succeeded,
                    m,
                    generation,
                );
            }
            Action::requeue(with_jitter(interval, &app.name_any()))
        }
        Status::False => {
            let m = format!("revision {revision}: {m}");
            set(
                &mut status,
                conditions::READY,
                Status::False,
                why,
                m,
                generation,
            );
            Action::requeue(Duration::from_secs(10).min(interval))
        }
        Status::Unknown => Action::requeue(HEALTH_POLL),
    };
    Ok(Outcome::write(status, action))
}

/// Runs the RollingUpdate's checks once; an action when they failed (abort, or wait for
/// the next analysis), `None` when they passed.
async fn analyse(
    pass: &Pass<'_>,
    status: &mut ApplicationStatus,
    revision: &str,
    spec: &Analysis,
) -> Option<Action> {
    let (target, app) = (pass.target, pass.app);
    let (verdict, results) =
        crate::rollout::analysis::run(target.applier.client(), "", &[], spec).await;
    let state = status.rollout.get_or_insert_with(Default::default);
    state.checks.extend(results);
    let excess = state.checks.len().saturating_sub(20);
    state.checks.drain(..excess);
    let action = match plan::count_analysis(state, &verdict, spec.failure_limit) {
        Analysed::Passed => return None,
        Analysed::Abort { reason } => {
            super::rolling_abort::abort(pass, status, revision, &reason).await;
            Action::requeue(AFTER_ABORT)
        }
        Analysed::Failed { failures } => {
            let e = verdict.err().unwrap_or_default();
            let m = format!("analysis {failures}/{}: {e}", spec.failure_limit);
            let generation = app.metadata.generation;
            set(
                status,
                conditions::HEALTHY,
                Status::Unknown,
                reasons::ANALYSING,
                m,
                generation,
            );
            Action::requeue(spec.interval.parse().unwrap_or(Duration::from_secs(30)))
        }
    };
    Some(action)
}

/// The revision just became healthy: its history record says so, with the templates that
/// ran healthy (the canary fast path compares against them), and its rollout succeeded.
fn mark_healthy(
    ctx: &AppContext,
    app: &Application,
    status: &mut ApplicationStatus,
    revision: &str,
) {
    let Some(rec) = status.history.first_mut() else {
        return;
    };
    rec.healthy = Some(true);
    if app.spec.rollout.is_some() {
        ctx.metrics.rollout(
            crate::metrics::Strategy::RollingUpdate,
            crate::metrics::RolloutResult::Promoted,
        );
    }
    // Recorded at sync time; filled from the rendered set for records written before that.
    if rec.template_hashes.is_empty()
        && let Some(desired) = super::drift_check::cached(ctx, app, revision)
    {
        rec.template_hashes = crate::rollout::template::template_hashes(&desired);
    }
    if let Some(rollout) = status.rollout.as_mut()
        && rollout.revision.as_deref() == Some(revision)
        && rollout.phase == RolloutPhase::Progressing
    {
        rollout.phase = RolloutPhase::Succeeded;
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn health_maps_to_one_condition_each() {
        let ok = health_condition(Health::Healthy, "", "all good", None);
        assert_eq!(ok, (Status::True, reasons::HEALTHY, "all good".into()));
        let bad = health_condition(Health::Degraded, "Deployment a/b: crash", "", None);
        assert_eq!(
            bad,
            (
                Status::False,
                reasons::HEALTH_CHECK_FAILED,
                "Deployment a/b: crash".into()
            )
        );
        let slow = health_condition(Health::Progressing, "1/2 ready", "", None);
        assert_eq!(
            slow,
            (Status::Unknown, reasons::PROGRESSING, "1/2 ready".into())
        );
        let unknown = health_condition(
            Health::Unknown,
            "Widget a/w: no health signal",
            "",
            Some(Duration::from_secs(60)),
        );
        assert_eq!(
            unknown,
            (
                Status::Unknown,
                reasons::HEALTH_UNKNOWN,
                "Widget a/w: no health signal".into()
            )
        );
        let late = health_condition(
            Health::Progressing,
            "1/2 ready",
            "",
            Some(Duration::from_secs(60)),
        );
        assert_eq!(
            late,
            (
                Status::False,
                reasons::HEALTH_CHECK_FAILED,
                "not healthy after 60s: 1/2 ready".into()
            )
        );
    }
}
