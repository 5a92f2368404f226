//! Application reconciler: source artifact → sync pipeline → status, history and events.
//! A no-op reconcile (same revision, same generation, healthy) makes no request but reads.

use crate::health::rules::Rules;
use std::sync::Arc;
use std::time::Duration;

use kube::ResourceExt;
use kube::api::Api;
use kube::runtime::controller::Action;
use kube::runtime::finalizer::{Event, finalizer};

use super::artifact::{Found, find_artifact};
use super::canary;
use super::decide::{self, ArtifactSeen, Observations, Step};
use super::follow::{follow_health, health_condition};
use super::follow_drift::check_drift;
use super::full_sync::{SameSet, full_sync, same_set_as_applied};
use super::guards::Checkpoint;
use super::live_health;
use super::memory::{AppContext, Cached, WATCH_LAG_RETRY};
use super::pass::Pass;
use super::pending::HOLD_POLL;
use super::pipeline::SyncInput;
use super::reasons;
use super::record::{Outcome, set, write_outcome};
use super::write_back;
use crate::api::application::{Application, ApplicationStatus, SyncPolicy};
use crate::api::conditions::{self, Status};
use crate::cluster::{Target, TargetError};
use crate::controller::context::FINALIZER;
use crate::error::{Error, Result};
use crate::health::Health;

/// Annotation set by `gantry sync` to ask for a sync (value: a timestamp).
use crate::api::annotations::REQUEST_ANNOTATION;

/// What one reconcile of an Application found before deciding.
struct Gathered {
    observations: Observations,
    found: Option<Found>,
    target: std::result::Result<Arc<Target>, TargetError>,
    revision: String,
    /// The `gantry sync` request not handled yet.
    request: Option<String>,
}

async fn gather(
    ctx: &Arc<AppContext>,
    api: &Api<Application>,
    app: &Application,
    previous_generation: Option<i64>,
) -> Result<Gathered> {
    let ns = app.namespace().unwrap_or_default();
    let status = app.status.clone().unwrap_or_default();
    let unready_dependency = first_unready_dependency(api, app).await?;
    // The tree stays on disk (leased) while this reconcile renders it, whatever the source
    // does meanwhile.
    let (artifact_seen, found) = find_artifact(ctx, &ns, app).await?;
    let revision = match &artifact_seen {
        ArtifactSeen::Ready { revision } => revision.clone(),
        _ => String::new(),
    };
    // Where and as whom the Application acts; a target the controller cannot act as stops
    // it, rather than deploying with the controller's own rights or into the wrong cluster.
    let target = ctx.targets.for_app(app).await;
    let requested = app.annotations().get(REQUEST_ANNOTATION).cloned();
    let sync_requested = requested.is_some() && requested != status.last_handled_request;
    let mut observations = Observations {
        suspended: app.spec.suspend,
        invalid: Rules::compile(&app.spec.health_checks).err(),
        no_target: target.as_ref().err().map(|e| (e.reason(), e.to_string())),
        unready_dependency,
        artifact: artifact_seen,
        generation_changed: previous_generation != app.metadata.generation,
        sync_requested,
        manual: app.spec.sync_policy == SyncPolicy::Manual,
        last_applied_revision: status.last_applied_revision.clone(),
        ready: conditions::find(&status.conditions, conditions::READY)
            .map(|c| (c.status.clone(), c.reason.clone())),
        rejected: crate::rollout::plan::is_rejected(&status, &revision),
        canary_active: canary::active(status.rollout.as_ref(), &revision),
        retry_in: ctx.memory.sync_retry_in(
            &ns,
            &app.name_any(),
            &revision,
            app.metadata.generation,
        ),
        chart_moved: false,
    };
    // A chart version published inside `spec.render.helm.chart.version`'s range is a new
    // revision of the Application although Git did not change. Asked only when the revision
    // is otherwise up to date (a sync renders the newest version in range anyway), and
    // without a request for Applications without a chart range.
    if found.is_some() && decide::up_to_date(&observations, &revision) {
        let moved = super::chart::chart_moved(&ctx.client, app).await;
        if let Some(version) = &moved {
            tracing::info!(namespace = %ns, name = %app.name_any(), version, "a new chart version in range");
        }
        observations.chart_moved = moved.is_some();
    }
    Ok(Gathered {
        observations,
        found,
        target,
        revision,
        request: sync_requested.then_some(requested).flatten(),
    })
}

/// The steps that end the reconcile before the artifact is used: the condition they write
/// and when to look again; `None` for the steps that act on the artifact.
fn stop_early(step: &Step) -> Option<(Status, &'static str, String, Option<Action>)> {
    Some(match step {
        Step::Suspended => (
            Status::Unknown,
            reasons::SUSPENDED,
            "reconciliation is suspended".into(),
            Some(Action::await_change()),
        ),
        // The spec must change first.
        Step::InvalidSpec(m) => (
            Status::False,
            reasons::INVALID_HEALTH_CHECK,
            m.clone(),
            Some(Action::await_change()),
        ),
        // Retried: a ServiceAccount or a Secret may be created, a cluster may come back
        // (unreachable clusters with backoff, see `apply`).
        Step::NoTarget(why, m) => (
            Status::False,
            why,
            m.clone(),
            Some(Action::requeue(Duration::from_secs(10))),
        ),
        Step::WaitForDependency(d) => (
            Status::False,
            reasons::DEPENDENCY_NOT_READY,
            format!("waiting for Application {d} to be Ready"),
            Some(Action::requeue(Duration::from_secs(5))),
        ),
        // The source controller writes it again (e.g. after a restart); come back soon,
        // writing nothing.
        Step::ArtifactNotYet => (Status::Unknown, "", String::new(), None),
        // Not a failure: the source's first fetch is under way.
        Step::ArtifactWaiting(m) => (
            Status::Unknown,
            reasons::PROGRESSING,
            m.clone(),
            Some(Action::requeue(Duration::from_secs(5))),
        ),
        Step::ArtifactFailed(m) => (
            Status::False,
            reasons::ARTIFACT_FAILED,
            m.clone(),
            Some(Action::requeue(Duration::from_secs(5))),
        ),
        _ => return None,
    })
}

async fn apply(cached: Arc<Application>, ctx: Arc<AppContext>) -> Result<Action> {
    let ns = cached.namespace().unwrap_or_default();
    let name = cached.name_any();
    let api: Api<Application> = Api::namespaced(ctx.client.clone(), &ns);
    // The watch cache can lag behind the status this controller wrote a moment ago; acting on
    // a stale status would re-sync a revision or drop drift findings. The cache is used when
    // it holds the last status write; one that lags a write of a moment ago is looked at
    // again shortly (reading nothing); else one GET makes it exact.
    let version = cached.metadata.resource_version.as_deref();
    let app = match ctx.memory.status_writes.cached(&ns, &name, version) {
        Cached::Current => Application::clone(&cached),
        Cached::Lagging => return Ok(Action::requeue(WATCH_LAG_RETRY)),
        Cached::Read => match api.get_opt(&name).await? {
            Some(app) => app,
            None => return Ok(Action::await_change()),
        },
    };
    // A sync's status held back until its health is known: the reconcile goes on from it,
    // and compares what it writes with what the API server holds.
    let on_server = app.status.clone().unwrap_or_default();
    let uid = app.uid().unwrap_or_default();
    let mut app = app;
    let held_since = ctx
        .memory
        .pending
        .take(&ns, &name, &uid, app.metadata.generation)
        .map(|held| {
            app.status = Some(held.status);
            held.since
        });
    let generation = app.metadata.generation;
    let interval = ctx.interval(&app.spec.interval, Duration::from_secs(300));
    let mut status = app.status.clone().unwrap_or_default();
    let previous_generation = status.observed_generation;
    status.observed_generation = generation;

    // Gather what the decision needs, `decide`, act, and write what the step leaves.
    let gathered = gather(&ctx, &api, &app, previous_generation).await?;
    let step = decide::next_step(&gathered.observations);
    let revision = gathered.revision;
    ctx.memory.detached.note_revision(&ns, &name, &revision);
    tracing::debug!(namespace = %ns, name = %name, ?step, revision = %revision, "reconcile");
    // A cluster that does not answer is looked at again with backoff.
    let unreachable = matches!(step, Step::NoTarget(..))
        && gathered.target.as_ref().is_err_and(|e| e.is_transient());
    let action = ctx.memory.target_backoff(&ns, &name, unreachable);
    if let Some((s, why, message, step_action)) = stop_early(&step) {
        let Some(step_action) = step_action else {
            return Ok(Action::requeue(Duration::from_secs(2)));
        };
        set(&mut status, conditions::READY, s, why, message, generation);
        let outcome = Outcome::write(status, action.unwrap_or(step_action));
        return write_outcome(
            &api,
            &app,
            &ctx.memory.status_writes,
            Some(on_server),
            outcome,
        )
        .await;
    }
    let (Some((source, artifact, lease)), Ok(target)) = (gathered.found, gathered.target) else {
        return Err(Error::Usage(format!(
            "internal: step {step:?} without an artifact or a target"
        )));
    };
    let artifact_root = lease.path().to_path_buf();
    status.cluster = Some(target.cluster.clone());

    // Image automation first: a new image goes to Git, and from there to the cluster.
    write_back::run(&ctx, &app, &source, &artifact_root, &mut status).await;

    let checkpoint = Checkpoint::new(
        &api,
        &name,
        &ctx.memory.status_writes,
        &revision,
        generation,
    );
    let pass = Pass {
        ctx: &ctx,
        app: &app,
        source: &source,
        target: &target,
        revision,
        // Drift checks and canary steps see the whole rendered set; a sync adds its holds.
        input: SyncInput {
            target: &target,
            local: &ctx.client,
            app: &app,
            artifact_root: &artifact_root,
            artifact_check: Some((&ctx.artifacts, &artifact.digest)),
            hold: None,
            record_planned: None,
            timeout: ctx.app_timeout(&app),
        },
        interval,
        checkpoint: &checkpoint,
    };
    let outcome = act(step, &pass, status, gathered.request).await?;
    let on_server = checkpoint.held().unwrap_or(on_server);
    let outcome = match &outcome.status {
        Some(status)
            if ctx
                .memory
                .pending
                .hold(&app, &on_server, held_since, status) =>
        {
            Outcome::requeue(Action::requeue(HOLD_POLL))
        }
        _ => outcome,
    };
    write_outcome(
        &api,
        &app,
        &ctx.memory.status_writes,
        Some(on_server),
        outcome,
    )
    .await
}

/// Carries out the decided step, once the early stops are behind: report, wait, check
/// drift and health, drive a canary, or sync.
async fn act(
    step: Step,
    pass: &Pass<'_>,
    mut status: ApplicationStatus,
    request: Option<String>,
) -> Result<Outcome> {
    let (app, interval) = (pass.app, pass.interval);
    let revision = &pass.revision;
    match step {
        // A revision whose rollout was aborted is not applied again until Git (or the spec)
        // changes, or someone asks with `gantry sync`; meanwhile report how the workloads
        // that run (the last healthy revision's) are doing.
        Step::RejectedRevision => Ok(report_rejected(pass, status).await),
        Step::ManualSyncRequired => {
            let (ns, name) = (app.namespace().unwrap_or_default(), app.name_any());
            let m = format!("revision {revision} is waiting for `gantry sync {ns}/{name}`");
            let why = reasons::MANUAL_SYNC_REQUIRED;
            set(
                &mut status,
                conditions::READY,
                Status::Unknown,
                why,
                m,
                pass.generation(),
            );
            Ok(Outcome::write(status, Action::requeue(interval)))
        }
        // A status write (the failure's own) or another event came before the backoff ran
        // out: the sync is not retried yet.
        Step::BackOff(wait) => Ok(Outcome::write(status, Action::requeue(wait))),
        Step::UpToDate => up_to_date(pass, status).await,
        // A canary of this revision is running: carry it on. Drift checks go on for
        // everything but the stable Deployments, whose held template is expected to differ
        // from Git.
        Step::CarryOnCanary => {
            let held = status
                .rollout
                .as_ref()
                .map(|r| r.canaries.clone())
                .unwrap_or_default();
            let input = &pass.input;
            check_drift(pass.ctx, app, &mut status, revision, input, interval, &held).await;
            Ok(canary::drive(pass, status).await)
        }
        // A new revision that renders the same objects as the applied one (a commit
        // elsewhere in the repository) is recorded as applied, with no dry-run: then it is
        // up to date. Otherwise the sync uses the render made to compare.
        Step::Sync if request.is_none() => {
            match same_set_as_applied(pass.ctx, app, &mut status, revision, &pass.input).await {
                SameSet::Recorded => up_to_date(pass, status).await,
                SameSet::Differs(rendered) => full_sync(pass, status, None, rendered).await,
            }
        }
        _ => full_sync(pass, status, request, None).await,
    }
}

/// The revision is applied: check drift, follow health.
async fn up_to_date(pass: &Pass<'_>, mut status: ApplicationStatus) -> Result<Outcome> {
    let (ctx, app, revision) = (pass.ctx, pass.app, &pass.revision);
    check_drift(
        ctx,
        app,
        &mut status,
        revision,
        &pass.input,
        pass.interval,
        &[],
    )
    .await;
    follow_health(pass, status, false).await
}

/// The first `dependsOn` Application that is not Ready at its current generation.
async fn first_unready_dependency(
    api: &Api<Application>,
    app: &Application,
) -> Result<Option<String>> {
    for dep in &app.spec.depends_on {
        let other = api.get_opt(&dep.name).await?;
        let ready = other
            .as_ref()
            .and_then(|o| o.status.as_ref())
            .is_some_and(|s| {
                conditions::find(&s.conditions, conditions::READY).is_some_and(|c| {
                    conditions::is(c, Status::True)
                        && c.observed_generation == o_gen(other.as_ref())
                })
            });
        if !ready {
            return Ok(Some(dep.name.clone()));
        }
    }
    Ok(None)
}

/// A rejected revision: the workloads of the last healthy one run; say how they are, and
/// that Git's revision is not what runs (Drifted).
async fn report_rejected(pass: &Pass<'_>, mut status: ApplicationStatus) -> Outcome {
    let (app, generation) = (pass.app, pass.generation());
    let (drift_status, drift_message) = rejected_drift(&status.history, &pass.revision);
    set(
        &mut status,
        conditions::DRIFTED,
        drift_status,
        reasons::ROLLOUT_ABORTED,
        drift_message,
        generation,
    );
    let (health, message) = live_health::assess(
        &pass.target.applier,
        &status.inventory,
        &Rules::compile(&app.spec.health_checks).unwrap_or_default(),
    )
    .await;
    let healthy = matches!(health, Health::Healthy | Health::Suspended);
    let running = "the workloads of the last healthy revision are running";
    let (s, reason, message) = health_condition(health, &message, running, None);
    set(
        &mut status,
        conditions::HEALTHY,
        s,
        reason,
        message,
        generation,
    );
    let again = if healthy {
        pass.interval
    } else {
        Duration::from_secs(2)
    };
    Outcome::write(status, Action::requeue(again))
}

/// The Drifted condition while Git's `revision` is rejected: its workloads do not run.
fn rejected_drift(
    history: &[crate::api::application::SyncRecord],
    revision: &str,
) -> (Status, String) {
    match crate::rollout::plan::last_healthy(history, revision) {
        Some(good) => (
            Status::True,
            format!(
                "Git's revision {revision} was aborted: its workloads run the templates of revision {}; the rest of it is applied",
                good.revision
            ),
        ),
        None => (
            Status::True,
            format!("Git's revision {revision} was aborted: its workloads are not running it"),
        ),
    }
}

fn o_gen(app: Option<&Application>) -> Option<i64> {
    app.and_then(|a| a.metadata.generation)
}

pub(super) async fn reconcile(app: Arc<Application>, ctx: Arc<AppContext>) -> Result<Action> {
    let ns = app.namespace().unwrap_or_default();
    let api: Api<Application> = Api::namespaced(ctx.client.clone(), &ns);
    let uid = app.uid().unwrap_or_default();
    let has_finalizer = app.finalizers().iter().any(|f| f == FINALIZER);
    if !has_finalizer && app.metadata.deletion_timestamp.is_none() {
        // This controller added it already and the watch cache has not caught up: adding
        // it again would fail its test (the 422 a fleet's first syncs logged).
        if ctx.memory.finalizers.contains(&uid) {
            return super::detach::bounded(app, ctx.clone(), apply).await;
        }
        // Added here, and the sync goes on at once with the object the API server answered,
        // rather than a second reconcile when the watch brings the change back.
        let added = add_finalizer(&api, &app).await?;
        ctx.memory.finalizers.insert(&uid);
        ctx.memory.status_writes.wrote(
            &ns,
            &added.name_any(),
            added.metadata.resource_version.clone(),
        );
        return super::detach::bounded(Arc::new(added), ctx.clone(), apply).await;
    }
    finalizer(&api, FINALIZER, app, |event| async {
        match event {
            Event::Apply(a) => super::detach::bounded(a, ctx.clone(), apply).await,
            Event::Cleanup(a) => {
                ctx.memory
                    .detached
                    .end(&a.namespace().unwrap_or_default(), &a.name_any());
                ctx.memory.finalizers.remove(&a.uid().unwrap_or_default());
                super::cleanup::cleanup(a, ctx.clone()).await
            }
        }
    })
    .await
    .map_err(|e| Error::Finalizer(Box::new(e)))
}

/// Adds this controller's finalizer to `app`, as kube's finalizer helper does: a JSON patch
/// that first tests the finalizers are as the cache shows them (Kubernetes does not
/// deduplicate finalizers, so a concurrent change fails the patch and is retried).
async fn add_finalizer(api: &Api<Application>, app: &Application) -> Result<Application> {
    let patch = if app.finalizers().is_empty() {
        serde_json::json!([
            {"op": "test", "path": "/metadata/finalizers", "value": null},
            {"op": "add", "path": "/metadata/finalizers", "value": [FINALIZER]}
        ])
    } else {
        serde_json::json!([
            {"op": "test", "path": "/metadata/finalizers", "value": app.finalizers()},
            {"op": "add", "path": "/metadata/finalizers/-", "value": FINALIZER}
        ])
    };
    let patch = serde_json::from_value(patch).map_err(|source| Error::Serialize {
        what: "finalizer patch",
        source,
    })?;
    Ok(api
        .patch(
            &app.name_any(),
            &kube::api::PatchParams::default(),
            &kube::api::Patch::<()>::Json(patch),
        )
        .await?)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn only_the_steps_before_the_artifact_stop_early() {
        for step in [
            Step::Suspended,
            Step::NoTarget("ServiceAccountNotFound", "x".into()),
            Step::WaitForDependency("db".into()),
            Step::ArtifactFailed("gone".into()),
        ] {
            let (_, why, _, action) = stop_early(&step).expect("stops");
            assert!(!why.is_empty() && action.is_some(), "{step:?}");
        }
        // Not yet written by the source: nothing is written, and the reconcile comes back.
        assert!(stop_early(&Step::ArtifactNotYet).is_some_and(|(.., a)| a.is_none()));
        for step in [
            Step::RejectedRevision,
            Step::ManualSyncRequired,
            Step::UpToDate,
            Step::CarryOnCanary,
            Step::Sync,
        ] {
            assert!(stop_early(&step).is_none(), "{step:?}");
            assert!(step.has_artifact());
        }
    }
}

/// One test per outcome of a reconcile, against a fake API server.
#[cfg(test)]
mod outcomes;
