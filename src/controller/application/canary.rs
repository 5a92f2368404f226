//! The canary of an Application's revision: the stable Deployments keep their template while
//! `<name>-canary` Deployments run the new one at the step's weight; analysis every
//! interval; promotion applies the new template to the stable Deployments (and waits for
//! them) before deleting the canaries; abort deletes the canaries, rejects the revision and,
//! with `onFailure: revert`, reverts it in Git. All state lives in `status.rollout`, so a
//! restarted controller carries on at the same step.

use std::sync::Arc;
use std::time::Duration;

use k8s_openapi::apimachinery::pkg::apis::meta::v1::Time;
use k8s_openapi::jiff::Timestamp;
use kube::ResourceExt;
use kube::runtime::controller::Action;
use kube::runtime::events::EventType;

use super::canary_owner::{
    CanaryConflict, canary_namespaces, check_canary_ownership, delete_canaries,
};
use super::drift_check;
use super::memory::AppContext;
use super::pass::Pass;
use super::reasons;
use super::record::{Outcome, publish, set};
use crate::api::annotations::ROLLOUT_ACTION_ANNOTATION;
use crate::api::application::{Application, ApplicationStatus, SyncResult};
use crate::api::conditions::{self, Status};
use crate::api::rollout::{RolloutPhase, RolloutStatus};
use crate::apply::normalize::Desired;
use crate::cluster::Target;
use crate::error::Result;
use crate::health::{self, Health};
use crate::rollout::plan::{self, CanaryDecision, Observation, Step};
use crate::rollout::{analysis, template};

/// Analysis never runs more often than this, whatever `analysis.interval` says.
const MIN_ANALYSIS_INTERVAL: Duration = Duration::from_secs(1);

/// Check results kept in status.
const MAX_CHECKS: usize = 20;

/// Whether `rollout` is a canary of `revision` still to be carried on.
pub fn active(rollout: Option<&RolloutStatus>, revision: &str) -> bool {
    rollout.is_some_and(|r| {
        matches!(
            r.phase,
            RolloutPhase::Progressing | RolloutPhase::Paused | RolloutPhase::Promoting
        ) && r.revision.as_deref() == Some(revision)
            && !r.canaries.is_empty()
    })
}

/// After a sync: deletes the canaries this revision no longer needs, and (when `start`)
/// starts canaries for the `held` Deployments at step 0 of the rollout status the sync
/// opened for this revision (a newer revision restarts the steps). Returns whether a
/// canary started.
#[allow(clippy::too_many_arguments)]
pub(super) async fn after_sync(
    ctx: &AppContext,
    target: &Target,
    app: &Application,
    status: &mut ApplicationStatus,
    revision: &str,
    previous: &[String],
    held: &[String],
    start: bool,
) -> bool {
    let gone: Vec<String> = previous
        .iter()
        .filter(|c| !held.contains(c))
        .cloned()
        .collect();
    if !gone.is_empty() {
        delete_canaries(target, app, &canary_namespaces(app), &gone).await;
    }
    if held.is_empty() || !start {
        return false;
    }
    if let Some(r) = status.rollout.as_mut() {
        r.canaries = held.to_vec();
        // A request made before this canary existed is not for it.
        r.last_action = app.annotations().get(ROLLOUT_ACTION_ANNOTATION).cloned();
    }
    let message = format!(
        "applied revision {revision} except the templates of {}, which start as canaries",
        held.join(", ")
    );
    set(
        status,
        conditions::READY,
        Status::Unknown,
        reasons::ROLLOUT_PROGRESSING,
        message.clone(),
        app.metadata.generation,
    );
    publish(
        ctx,
        app,
        EventType::Normal,
        reasons::CANARY_STARTED,
        message,
    )
    .await;
    true
}

fn stables<'a>(desired: &'a [Desired], canaries: &[String]) -> Vec<&'a Desired> {
    desired
        .iter()
        .filter(|d| {
            d.key.group == "apps" && d.key.kind == "Deployment" && canaries.contains(&d.key.name)
        })
        .collect()
}

fn namespace_of(d: &Desired) -> String {
    d.key.namespace.clone().unwrap_or_default()
}

/// Applies Deployments (forced); returns them as the API server answered, status included,
/// in the order given.
async fn apply_objects(
    target: &Target,
    objects: &[Desired],
) -> std::result::Result<Vec<serde_json::Value>, String> {
    let applier = &target.applier;
    let resolved = applier
        .resolve("apps", "v1", "Deployment")
        .await
        .map_err(|e| e.to_string())?
        .ok_or("the API server has no apps/v1 Deployment")?;
    let items: Vec<_> = objects.iter().map(|d| (d, &resolved)).collect();
    applier
        .apply(&items, true)
        .await
        .into_iter()
        .collect::<Result<Vec<_>, _>>()
        .map_err(|e| e.to_string())
}

/// The canary Deployments at `weight`; returns whether each is ready at its count.
async fn run_canaries(
    target: &Target,
    stables: &[&Desired],
    weight: u32,
) -> std::result::Result<bool, String> {
    let mut objects = vec![];
    let mut wanted = vec![];
    for d in stables {
        // Of the live stable Deployment (HPA-scaled), not only of what Git declares.
        let live = match target.applier.resolve_key(&d.key).await {
            Ok(Some(resolved)) => target
                .applier
                .live(&resolved, &d.key)
                .await
                .map_err(|e| e.to_string())?,
            Ok(None) => None,
            Err(e) => return Err(e.to_string()),
        };
        let stable = template::stable_replicas(&d.object, live.as_ref());
        let replicas = template::replicas_for(stable, weight);
        let object = template::canary_object(&d.object, replicas);
        let mut key = d.key.clone();
        key.name = template::canary_name(&d.key.name);
        objects.push(Desired {
            key,
            object,
            namespaced: true,
        });
        wanted.push(replicas as i64);
    }
    // The apply answers with the live objects: their status says whether they are ready.
    let applied = apply_objects(target, &objects).await?;
    Ok(applied.iter().zip(wanted).all(|(d, replicas)| {
        let st = &d["status"];
        st["observedGeneration"].as_i64() >= d["metadata"]["generation"].as_i64()
            && st["readyReplicas"].as_i64().unwrap_or(0) >= replicas
            && st["updatedReplicas"].as_i64().unwrap_or(0) >= replicas
    }))
}

/// Takes a `gantry promote` / `gantry abort` not handled yet: (promote, abort).
fn take_request(app: &Application, rollout: &mut RolloutStatus) -> (bool, bool) {
    let Some(action) = pending_action(app, rollout) else {
        return (false, false);
    };
    let asked = (action.starts_with("promote"), action.starts_with("abort"));
    rollout.last_action = Some(action);
    asked
}

/// The canary weight of the current step (0 without steps).
fn current_weight(steps: &[Step], rollout: &RolloutStatus) -> u32 {
    if steps.is_empty() {
        0
    } else {
        plan::weight_at(steps, (rollout.step as usize).min(steps.len() - 1))
    }
}

/// A `gantry promote` / `gantry abort` not handled yet.
fn pending_action(app: &Application, rollout: &RolloutStatus) -> Option<String> {
    let action = app.annotations().get(ROLLOUT_ACTION_ANNOTATION)?;
    (Some(action) != rollout.last_action.as_ref()).then(|| action.clone())
}

/// The Ready reason and message of a running canary at weight `w` (pure).
fn progress(
    app: &Application,
    rollout: &RolloutStatus,
    revision: &str,
    total: usize,
    w: u32,
) -> (&'static str, String) {
    if rollout.phase == RolloutPhase::Paused {
        (
            reasons::ROLLOUT_PAUSED,
            format!(
                "canary of {revision} paused at step {}/{total} ({w}%); `gantry promote {}/{}` to continue",
                rollout.step + 1,
                app.namespace().unwrap_or_default(),
                app.name_any()
            ),
        )
    } else {
        (
            reasons::ROLLOUT_PROGRESSING,
            format!(
                "canary of {revision} at step {}/{total} ({w}% of the stable replicas)",
                (rollout.step as usize + 1).min(total)
            ),
        )
    }
}

/// Runs the analysis when one interval went by since the last; keeps the newest checks.
async fn analyse_if_due(
    target: &Target,
    rollout: &mut RolloutStatus,
    stables: &[&Desired],
    spec: &crate::api::rollout::Analysis,
    every: Duration,
    now: Timestamp,
) -> Option<std::result::Result<(), String>> {
    let due = rollout
        .checks
        .iter()
        .map(|c| c.time.0)
        .max()
        .is_none_or(|t| now.duration_since(t).unsigned_abs() >= every);
    if !due {
        return None;
    }
    let ns = stables.first().map(|d| namespace_of(d)).unwrap_or_default();
    let (verdict, results) =
        analysis::run(target.applier.client(), &ns, &rollout.canaries, spec).await;
    rollout.checks.extend(results);
    let excess = rollout.checks.len().saturating_sub(MAX_CHECKS);
    rollout.checks.drain(..excess);
    Some(verdict)
}

/// Carries the canary of the pass' revision one step further.
pub(super) async fn drive(pass: &Pass<'_>, mut status: ApplicationStatus) -> Outcome {
    let (ctx, target, app) = (pass.ctx, pass.target, pass.app);
    let revision = pass.revision.as_str();
    let generation = app.metadata.generation;
    let desired = match drift_check::desired_for(ctx, app, revision, &pass.input).await {
        Ok(d) => d,
        Err(e) => {
            tracing::warn!(namespace = %app.namespace().unwrap_or_default(), name = %app.name_any(), error = %e, "cannot render the canary's revision");
            return Outcome::requeue(Action::requeue(Duration::from_secs(10)));
        }
    };
    let mut rollout = status.rollout.clone().unwrap_or_default();
    let stable_objects = stables(&desired, &rollout.canaries);
    let Some(spec) = app.spec.rollout.clone() else {
        // The rollout settings were removed mid-canary: finish as a plain update.
        rollout.phase = RolloutPhase::Promoting;
        status.rollout = Some(rollout);
        return promote(pass, status, &desired).await;
    };
    let (promote_asked, abort_asked) = take_request(app, &mut rollout);
    if rollout.phase == RolloutPhase::Promoting && !abort_asked {
        status.rollout = Some(rollout);
        return promote(pass, status, &desired).await;
    }
    let analysis_spec = analysis::effective(spec.analysis.as_ref());
    let analysis_interval = analysis_spec
        .interval
        .parse()
        .unwrap_or(Duration::from_secs(30))
        .max(MIN_ANALYSIS_INTERVAL);
    let steps = Step::from_spec(&spec.steps);
    let weight = current_weight(&steps, &rollout);
    if let Err(CanaryConflict(message)) = check_canary_ownership(target, app, &stable_objects).await
    {
        rollout.message = Some(message.clone());
        status.rollout = Some(rollout);
        let why = reasons::CANARY_BLOCKED;
        set(
            &mut status,
            conditions::READY,
            Status::False,
            why,
            message,
            generation,
        );
        return Outcome::write(status, Action::requeue(Duration::from_secs(10)));
    }
    let canary_ready = match run_canaries(target, &stable_objects, weight).await {
        Ok(r) => r,
        Err(e) => {
            tracing::warn!(namespace = %app.namespace().unwrap_or_default(), name = %app.name_any(), error = %e, "cannot apply the canary");
            false
        }
    };
    let now = Timestamp::now();
    let analysis_result = analyse_if_due(
        target,
        &mut rollout,
        &stable_objects,
        &analysis_spec,
        analysis_interval,
        now,
    )
    .await;
    let decision = plan::advance(
        &mut rollout,
        &steps,
        analysis_interval,
        analysis_spec.failure_limit,
        &Observation {
            now,
            canary_ready,
            analysis: analysis_result,
            promote: promote_asked,
            abort: abort_asked,
        },
    );
    match decision {
        CanaryDecision::Run { weight: w, recheck } => {
            if w != weight
                && let Err(e) = run_canaries(target, &stable_objects, w).await
            {
                tracing::warn!(error = %e, "cannot scale the canary");
            }
            let (reason, message) = progress(app, &rollout, revision, steps.len(), w);
            rollout.message = Some(message.clone());
            status.rollout = Some(rollout);
            set(
                &mut status,
                conditions::READY,
                Status::Unknown,
                reason,
                message,
                generation,
            );
            Outcome::write(
                status,
                Action::requeue(recheck.max(Duration::from_millis(500))),
            )
        }
        CanaryDecision::Promote => {
            status.rollout = Some(rollout);
            promote(pass, status, &desired).await
        }
        CanaryDecision::Abort { reason } => {
            status.rollout = Some(rollout);
            abort(pass, &mut status, &reason).await;
            Outcome::write(status, Action::requeue(super::follow::AFTER_ABORT))
        }
    }
}

/// Applies the new template to the stable Deployments, waits for them, then deletes the
/// canaries.
async fn promote(
    pass: &Pass<'_>,
    mut status: ApplicationStatus,
    desired: &Arc<Vec<Desired>>,
) -> Outcome {
    let (ctx, target, app) = (pass.ctx, pass.target, pass.app);
    let (revision, interval) = (pass.revision.as_str(), pass.interval);
    let generation = app.metadata.generation;
    let mut rollout = status.rollout.clone().unwrap_or_default();
    let stable_objects: Vec<Desired> = stables(desired, &rollout.canaries)
        .into_iter()
        .cloned()
        .collect();
    let applied = match apply_objects(target, &stable_objects).await {
        Ok(applied) => applied,
        Err(e) => {
            set(
                &mut status,
                conditions::READY,
                Status::Unknown,
                reasons::ROLLOUT_PROMOTING,
                format!("cannot update the stable Deployments: {e}"),
                generation,
            );
            return Outcome::write(status, Action::requeue(Duration::from_secs(5)));
        }
    };
    // The apply answers with the live Deployments: their health decides.
    let waiting: Vec<String> = stable_objects
        .iter()
        .zip(&applied)
        .filter(|(_, live)| health::deployment(live).health != Health::Healthy)
        .map(|(d, _)| d.key.name.clone())
        .collect();
    if !waiting.is_empty() {
        rollout.phase = RolloutPhase::Promoting;
        rollout.message = Some(format!(
            "promoting {revision}: waiting for {}",
            waiting.join(", ")
        ));
        status.rollout = Some(rollout);
        set(
            &mut status,
            conditions::READY,
            Status::Unknown,
            reasons::ROLLOUT_PROMOTING,
            format!(
                "promoting {revision}: the stable Deployments {} are rolling out",
                waiting.join(", ")
            ),
            generation,
        );
        return Outcome::write(status, Action::requeue(Duration::from_secs(1)));
    }
    delete_canaries(target, app, &canary_namespaces(app), &rollout.canaries).await;
    let message = format!(
        "revision {revision} promoted: {} updated",
        rollout.canaries.join(", ")
    );
    rollout.phase = RolloutPhase::Succeeded;
    rollout.canaries.clear();
    rollout.message = Some(message.clone());
    status.rollout = Some(rollout);
    let hashes = template::template_hashes(desired);
    if let Some(rec) = status.history.iter_mut().find(|r| r.revision == revision) {
        // The sync held the stable Deployments back; the promotion configured them.
        if rec.result != SyncResult::Promoted {
            rec.configured += stable_objects.len() as u32;
        }
        rec.result = SyncResult::Promoted;
        rec.healthy = Some(true);
        rec.template_hashes = hashes;
        rec.finished_at = Some(Time(Timestamp::now()));
    }
    publish(
        ctx,
        app,
        EventType::Normal,
        reasons::ROLLOUT_PROMOTED,
        message.clone(),
    )
    .await;
    ctx.metrics.rollout(
        crate::metrics::Strategy::Canary,
        crate::metrics::RolloutResult::Promoted,
    );
    set(
        &mut status,
        conditions::READY,
        Status::True,
        reasons::PROMOTED,
        message,
        generation,
    );
    set(
        &mut status,
        conditions::HEALTHY,
        Status::True,
        reasons::HEALTHY,
        "all workloads are healthy",
        generation,
    );
    Outcome::write(status, Action::requeue(interval))
}

/// Deletes the canaries, then the abort shared with rolling updates (which rejects the
/// revision and, with `onFailure: revert`, reverts it in Git).
async fn abort(pass: &Pass<'_>, status: &mut ApplicationStatus, reason: &str) {
    let (ctx, target, app, source) = (pass.ctx, pass.target, pass.app, pass.source);
    let revision = pass.revision.as_str();
    let rollout = status.rollout.get_or_insert_with(Default::default);
    delete_canaries(target, app, &canary_namespaces(app), &rollout.canaries).await;
    let canaries = std::mem::take(&mut rollout.canaries);
    // The stable Deployments kept the last healthy revision's templates.
    let running = plan::last_healthy(&status.history, revision).map(|r| r.revision.clone());
    let message = format!(
        "canary of {revision} aborted: {reason}; {} {} the last healthy template; not retried until Git changes",
        canaries.join(", "),
        crate::text::agree(canaries.len(), "keeps", "keep")
    );
    let returned = super::abort::Returned {
        strategy: crate::metrics::Strategy::Canary,
        message,
        running,
        unhealthy: false,
    };
    super::abort::aborted(ctx, app, source, status, revision, reason, returned).await;
}
