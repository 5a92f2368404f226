//! Application reconciler: source artifact → sync pipeline → status, history and events.
//! A no-op reconcile (same revision, same generation, healthy) makes no request but reads.

use std::sync::Arc;
use std::time::Duration;

use futures::StreamExt;
use k8s_openapi::apimachinery::pkg::apis::meta::v1::Time;
use k8s_openapi::jiff::Timestamp;
use kube::api::Api;
use kube::runtime::controller::{Action, Controller};
use kube::runtime::events::{Event as KubeEvent, EventType};
use kube::runtime::finalizer::{Event, finalizer};
use kube::runtime::reflector::ObjectRef;
use kube::runtime::watcher;
use kube::{Resource, ResourceExt};

use super::context::{Context, FINALIZER, revision_commit};
use super::drift_check;
use super::status::{apply_status, with_jitter};
use super::sync::{self, SyncError, SyncInput};
use crate::api::GitRepository;
use crate::api::application::{
    Application, ApplicationStatus, DriftMode, DriftStatus, DriftedObject, InventoryEntry,
    SyncPolicy, SyncRecord, SyncResult,
};
use crate::api::conditions::{self, Status};
use crate::apply::{inventory, prune};
use crate::error::{Error, Result};
use crate::health::Health;

/// Annotation set by `gantry sync` to ask for a sync (value: a timestamp).
pub const REQUEST_ANNOTATION: &str = "gantry.dev/requested-at";
const HISTORY_LIMIT: usize = 10;
const HEALTH_POLL: Duration = Duration::from_secs(2);

fn set(
    status: &mut ApplicationStatus,
    type_: &str,
    s: Status,
    reason: &str,
    message: impl Into<String>,
    generation: Option<i64>,
) {
    conditions::set_condition(
        &mut status.conditions,
        conditions::new_condition(type_, s, reason, message, generation, Timestamp::now()),
    );
}

fn record(status: &mut ApplicationStatus, rec: SyncRecord) {
    // The same outcome again (a retried failure) updates the newest entry instead of
    // pushing the rest of the history out.
    if let Some(first) = status.history.first_mut()
        && first.revision == rec.revision
        && first.result == rec.result
        && first.message == rec.message
    {
        first.finished_at = rec.finished_at;
        return;
    }
    status.history.insert(0, rec);
    status.history.truncate(HISTORY_LIMIT);
}

async fn publish(ctx: &Context, app: &Application, type_: EventType, reason: &str, note: String) {
    let ev = KubeEvent {
        type_,
        reason: reason.into(),
        note: Some(note.chars().take(1000).collect()),
        action: "Sync".into(),
        secondary: None,
    };
    if let Err(e) = ctx.recorder.publish(&ev, &app.object_ref(&())).await {
        tracing::debug!(error = %e, "cannot publish event");
    }
}

async fn write_if_changed(
    api: &Api<Application>,
    app: &Application,
    status: &ApplicationStatus,
) -> Result<()> {
    if Some(status) != app.status.as_ref() {
        apply_status(api, &app.name_any(), status).await?;
    }
    Ok(())
}

async fn apply(cached: Arc<Application>, ctx: Arc<Context>) -> Result<Action> {
    let ns = cached.namespace().unwrap_or_default();
    let name = cached.name_any();
    let api: Api<Application> = Api::namespaced(ctx.client.clone(), &ns);
    // The watch cache can lag behind the status this controller wrote a moment ago; acting on
    // a stale status would re-sync a revision or drop drift findings. One GET makes it exact.
    let Some(app) = api.get_opt(&name).await? else {
        return Ok(Action::await_change());
    };
    let generation = app.metadata.generation;
    let interval = app
        .spec
        .interval
        .parse()
        .unwrap_or(Duration::from_secs(300));
    let timeout = app.spec.timeout.parse().unwrap_or(Duration::from_secs(300));
    let mut status = app.status.clone().unwrap_or_default();
    let previous_generation = status.observed_generation;
    status.observed_generation = generation;

    if app.spec.suspend {
        set(
            &mut status,
            conditions::READY,
            Status::Unknown,
            "Suspended",
            "reconciliation is suspended",
            generation,
        );
        write_if_changed(&api, &app, &status).await?;
        return Ok(Action::await_change());
    }

    // dependsOn: every named Application must be Ready at its current revision.
    for dep in &app.spec.depends_on {
        let other = api.get_opt(&dep.name).await?;
        let ready = other
            .as_ref()
            .and_then(|o| o.status.as_ref())
            .is_some_and(|s| {
                conditions::find(&s.conditions, conditions::READY).is_some_and(|c| {
                    c.status == "True" && c.observed_generation == o_gen(other.as_ref())
                })
            });
        if !ready {
            set(
                &mut status,
                conditions::READY,
                Status::False,
                "DependencyNotReady",
                format!("waiting for Application {} to be Ready", dep.name),
                generation,
            );
            write_if_changed(&api, &app, &status).await?;
            return Ok(Action::requeue(Duration::from_secs(5)));
        }
    }

    // The source artifact.
    let repos: Api<GitRepository> = Api::namespaced(ctx.client.clone(), &ns);
    let source_name = &app.spec.source_ref.name;
    let artifact = match repos.get_opt(source_name).await? {
        None => Err(format!("GitRepository {source_name} not found")),
        Some(repo) => match repo.status.as_ref().and_then(|s| s.artifact.clone()) {
            Some(a) => Ok(a),
            None => {
                let why = repo
                    .status
                    .as_ref()
                    .and_then(|s| conditions::find(&s.conditions, conditions::READY))
                    .map(|c| c.message.clone())
                    .unwrap_or_else(|| "not fetched yet".into());
                Err(format!(
                    "GitRepository {source_name} has no artifact: {why}"
                ))
            }
        },
    };
    let artifact = match artifact {
        Ok(a) => a,
        Err(message) => {
            set(
                &mut status,
                conditions::READY,
                Status::False,
                "ArtifactFailed",
                message,
                generation,
            );
            write_if_changed(&api, &app, &status).await?;
            return Ok(Action::requeue(Duration::from_secs(10)));
        }
    };
    let revision = artifact.revision.clone();
    let artifact_root = ctx.artifact_dir(
        &ns,
        source_name,
        revision_commit(&revision).unwrap_or_default(),
    );
    if !artifact_root.is_dir() {
        // The source controller re-creates it (e.g. after a restart); come back shortly.
        return Ok(Action::requeue(Duration::from_secs(2)));
    }

    let requested = app.annotations().get(REQUEST_ANNOTATION).cloned();
    let sync_requested = requested.is_some() && requested != status.last_handled_request;
    let up_to_date = status.last_applied_revision.as_deref() == Some(revision.as_str())
        && previous_generation == generation
        && conditions::find(&status.conditions, conditions::READY)
            .is_some_and(|c| c.status == "True" || c.reason == "HealthCheckFailed");

    if app.spec.sync_policy == SyncPolicy::Manual && !sync_requested && !up_to_date {
        set(
            &mut status,
            conditions::READY,
            Status::Unknown,
            "ManualSyncRequired",
            format!("revision {revision} is waiting for `gantry sync {ns}/{name}`"),
            generation,
        );
        write_if_changed(&api, &app, &status).await?;
        return Ok(Action::requeue(interval));
    }

    tracing::debug!(namespace = %ns, name = %name, up_to_date, sync_requested, revision = %revision, "reconcile");
    if up_to_date && !sync_requested {
        let input = SyncInput {
            client: &ctx.client,
            discovery: &ctx.discovery,
            app: &app,
            artifact_root: &artifact_root,
            concurrency: ctx.apply_concurrency,
        };
        ensure_watches(&ctx, &status.inventory).await;
        let key = (ns.clone(), name.clone());
        let full = ctx
            .last_full_check
            .lock()
            .expect("full check map")
            .get(&key)
            .is_none_or(|t| t.elapsed() >= interval);
        let dirty = ctx.drift.take_dirty(&ns, &name);
        let candidates: Vec<InventoryEntry> = if full {
            status.inventory.clone()
        } else {
            status
                .inventory
                .iter()
                .filter(|e| dirty.iter().any(|d| same_object(d, e)))
                .cloned()
                .collect()
        };
        if full {
            ctx.last_full_check
                .lock()
                .expect("full check map")
                .insert(key, std::time::Instant::now());
        }
        if !candidates.is_empty() {
            match drift_check::desired_for(&ctx, &app, &revision, &input).await {
                Ok(desired) => match drift_check::check(&ctx, &app, &desired, &candidates).await {
                    Ok(findings) => {
                        tracing::debug!(namespace = %ns, name = %name, full, candidates = candidates.len(), drifted = findings.len(), "drift check");
                        report_drift(&ctx, &app, &mut status, findings, &candidates, generation)
                            .await
                    }
                    Err(e) => {
                        tracing::warn!(namespace = %ns, name = %name, error = %e, "drift check failed")
                    }
                },
                Err(e) => {
                    tracing::warn!(namespace = %ns, name = %name, error = %e, "cannot render for the drift check")
                }
            }
        }
        return follow_health(&ctx, &api, &app, status, interval, timeout, &[]).await;
    }

    // A full sync of this revision.
    status.last_attempted_revision = Some(revision.clone());
    if sync_requested {
        status.last_handled_request = requested;
    }
    let started = Time(Timestamp::now());
    let input = SyncInput {
        client: &ctx.client,
        discovery: &ctx.discovery,
        app: &app,
        artifact_root: &artifact_root,
        concurrency: ctx.apply_concurrency,
    };
    match sync::sync(&input).await {
        Ok(outcome) => {
            let summary = format!(
                "{} created, {} configured, {} unchanged, {} pruned",
                outcome.created, outcome.configured, outcome.unchanged, outcome.pruned
            );
            status.inventory = outcome.inventory.clone();
            status.last_applied_revision = Some(revision.clone());
            drift_check::remember(&ctx, &app, &revision, Arc::new(outcome.desired));
            ensure_watches(&ctx, &status.inventory).await;
            ctx.drift.take_dirty(&ns, &name);
            ctx.last_full_check
                .lock()
                .expect("full check map")
                .insert((ns.clone(), name.clone()), std::time::Instant::now());
            if status.drift.as_ref().is_some_and(|d| !d.objects.is_empty())
                || conditions::find(&status.conditions, conditions::DRIFTED).is_none()
            {
                status.drift = None;
                set(
                    &mut status,
                    conditions::DRIFTED,
                    Status::False,
                    "NoDrift",
                    "the cluster matches Git",
                    generation,
                );
            }
            let mut message = format!("applied revision {revision}: {summary}");
            if !outcome.prune_messages.is_empty() {
                message.push_str(&format!("; prune: {}", outcome.prune_messages.join("; ")));
            }
            record(
                &mut status,
                SyncRecord {
                    revision: revision.clone(),
                    started_at: started,
                    finished_at: Some(Time(Timestamp::now())),
                    result: SyncResult::Succeeded,
                    message: Some(summary.clone()),
                    created: outcome.created,
                    configured: outcome.configured,
                    unchanged: outcome.unchanged,
                    pruned: outcome.pruned,
                    template_hashes: Default::default(),
                },
            );
            if outcome.prune_failed {
                set(
                    &mut status,
                    conditions::READY,
                    Status::False,
                    "PruneFailed",
                    message.clone(),
                    generation,
                );
                publish(&ctx, &app, EventType::Warning, "PruneFailed", message).await;
            } else {
                set(
                    &mut status,
                    conditions::READY,
                    Status::True,
                    "Succeeded",
                    message.clone(),
                    generation,
                );
                publish(&ctx, &app, EventType::Normal, "Synced", message).await;
            }
            if outcome.pruned > 0 {
                publish(
                    &ctx,
                    &app,
                    EventType::Normal,
                    "Pruned",
                    format!(
                        "pruned {} objects no longer in revision {revision}",
                        outcome.pruned
                    ),
                )
                .await;
            }
            set(
                &mut status,
                conditions::HEALTHY,
                Status::Unknown,
                "Progressing",
                "checking health",
                generation,
            );
            let applied = outcome.applied;
            let action =
                follow_health(&ctx, &api, &app, status, interval, timeout, &applied).await?;
            // Objects whose delete failed stay in the inventory and are retried soon.
            Ok(if outcome.prune_failed {
                Action::requeue(Duration::from_secs(10))
            } else {
                action
            })
        }
        Err(e) => {
            let reason = e.reason();
            let message = format!("revision {revision}: {e}");
            tracing::warn!(namespace = %ns, name = %name, reason, error = %e, "sync failed");
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
                },
            );
            if app
                .status
                .as_ref()
                .and_then(|s| conditions::find(&s.conditions, conditions::READY))
                .is_none_or(|c| c.message != message)
            {
                publish(&ctx, &app, EventType::Warning, reason, message).await;
            }
            write_if_changed(&api, &app, &status).await?;
            let retry = if matches!(e, SyncError::Kube(_)) {
                Duration::from_secs(5)
            } else {
                Duration::from_secs(30)
            };
            Ok(Action::requeue(retry.min(interval)))
        }
    }
}

fn same_object(a: &InventoryEntry, b: &InventoryEntry) -> bool {
    a.group == b.group && a.kind == b.kind && a.namespace == b.namespace && a.name == b.name
}

async fn ensure_watches(ctx: &Context, inventory: &[InventoryEntry]) {
    let mut resources = std::collections::HashMap::new();
    for e in inventory {
        if let Ok(Some(r)) = ctx
            .discovery
            .resolve(&ctx.client, &e.group, &e.version, &e.kind)
            .await
        {
            resources.insert(
                (e.group.clone(), e.version.clone(), e.kind.clone()),
                r.resource,
            );
        }
    }
    ctx.drift.ensure(inventory, |e| {
        resources
            .get(&(e.group.clone(), e.version.clone(), e.kind.clone()))
            .cloned()
    });
}

/// Heals or reports drift and updates status (written by the caller only when it changed).
async fn report_drift(
    ctx: &Context,
    app: &Application,
    status: &mut ApplicationStatus,
    findings: Vec<drift_check::Finding>,
    checked: &[InventoryEntry],
    generation: Option<i64>,
) {
    let previous: Vec<DriftedObject> = status
        .drift
        .as_ref()
        .map(|d| d.objects.clone())
        .unwrap_or_default();
    // Objects not checked this time keep their earlier verdict; checked ones get the new one.
    let mut objects: Vec<DriftedObject> = previous
        .iter()
        .filter(|o| !checked.iter().any(|c| same_object(c, &o.object)))
        .cloned()
        .collect();
    objects.extend(findings.iter().map(|f| f.report()));
    objects.sort_by(|a, b| a.object.cmp(&b.object));
    let describe_all = |objs: &[DriftedObject]| {
        objs.iter()
            .map(|o| {
                format!(
                    "{} ({})",
                    crate::apply::normalize::describe(&o.object),
                    o.paths.join(", ")
                )
            })
            .collect::<Vec<_>>()
            .join("; ")
    };
    match app.spec.drift.mode {
        DriftMode::Heal if !findings.is_empty() => {
            let errors = drift_check::heal(ctx, app, &findings).await;
            let healed: Vec<DriftedObject> = findings.iter().map(|f| f.report()).collect();
            if errors.is_empty() {
                publish(
                    ctx,
                    app,
                    EventType::Normal,
                    "DriftHealed",
                    format!("re-applied {}", describe_all(&healed)),
                )
                .await;
                status.drift = None;
                set(
                    status,
                    conditions::DRIFTED,
                    Status::False,
                    "DriftHealed",
                    format!("re-applied {} drifted objects", healed.len()),
                    generation,
                );
            } else {
                publish(
                    ctx,
                    app,
                    EventType::Warning,
                    "DriftHealFailed",
                    errors.join("; "),
                )
                .await;
                status.drift = Some(DriftStatus {
                    checked_at: Some(Time(Timestamp::now())),
                    objects: healed,
                });
                set(
                    status,
                    conditions::DRIFTED,
                    Status::True,
                    "DriftHealFailed",
                    errors.join("; "),
                    generation,
                );
            }
        }
        DriftMode::Heal => {}
        DriftMode::Audit => {
            let changed = objects != previous;
            if !changed {
                return;
            }
            if objects.is_empty() {
                publish(
                    ctx,
                    app,
                    EventType::Normal,
                    "DriftCleared",
                    "the cluster matches Git again".into(),
                )
                .await;
                status.drift = None;
                set(
                    status,
                    conditions::DRIFTED,
                    Status::False,
                    "NoDrift",
                    "the cluster matches Git",
                    generation,
                );
            } else {
                publish(
                    ctx,
                    app,
                    EventType::Warning,
                    "DriftDetected",
                    describe_all(&objects),
                )
                .await;
                set(
                    status,
                    conditions::DRIFTED,
                    Status::True,
                    "DriftDetected",
                    format!(
                        "{} objects differ from Git: {}",
                        objects.len(),
                        describe_all(&objects)
                    ),
                    generation,
                );
                status.drift = Some(DriftStatus {
                    checked_at: Some(Time(Timestamp::now())),
                    objects,
                });
            }
        }
    }
}

fn o_gen(app: Option<&Application>) -> Option<i64> {
    app.and_then(|a| a.metadata.generation)
}

/// Checks health after a sync and on later no-op reconciles until healthy.
async fn follow_health(
    ctx: &Context,
    api: &Api<Application>,
    app: &Application,
    mut status: ApplicationStatus,
    interval: Duration,
    timeout: Duration,
    known: &[(crate::api::application::InventoryEntry, serde_json::Value)],
) -> Result<Action> {
    let generation = app.metadata.generation;
    let healthy_already = conditions::find(&status.conditions, conditions::HEALTHY)
        .is_some_and(|c| c.status == "True");
    if healthy_already && known.is_empty() {
        write_if_changed(api, app, &status).await?;
        return Ok(Action::requeue(with_jitter(interval, &app.name_any())));
    }
    let (health, message) =
        sync::assess_health(&ctx.client, &ctx.discovery, &status.inventory, known).await;
    let since = status
        .history
        .first()
        .and_then(|h| h.finished_at.clone())
        .map(|t| t.0)
        .unwrap_or_else(Timestamp::now);
    let waited = Timestamp::now().duration_since(since).unsigned_abs();
    let revision = status.last_applied_revision.clone().unwrap_or_default();
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

/// Deleting an Application with prune on removes what it applied.
async fn cleanup(app: Arc<Application>, ctx: Arc<Context>) -> Result<Action> {
    if !app.spec.prune || app.spec.suspend {
        return Ok(Action::await_change());
    }
    let entries = app
        .status
        .as_ref()
        .map(|s| s.inventory.clone())
        .unwrap_or_default();
    let stale = inventory::stale(&entries, &[]);
    let result = prune::prune(&ctx.client, &ctx.discovery, &stale, &sync::app_label(&app)).await;
    if !result.failed.is_empty() {
        let msgs: Vec<String> = result.failed.iter().map(|(_, m)| m.clone()).collect();
        return Err(Error::Usage(format!(
            "cannot delete every object of the Application: {}",
            msgs.join("; ")
        )));
    }
    Ok(Action::await_change())
}

async fn reconcile(app: Arc<Application>, ctx: Arc<Context>) -> Result<Action> {
    let ns = app.namespace().unwrap_or_default();
    let api: Api<Application> = Api::namespaced(ctx.client.clone(), &ns);
    finalizer(&api, FINALIZER, app, |event| async {
        match event {
            Event::Apply(a) => apply(a, ctx.clone()).await,
            Event::Cleanup(a) => cleanup(a, ctx.clone()).await,
        }
    })
    .await
    .map_err(|e| Error::Finalizer(Box::new(e)))
}

fn error_policy(app: Arc<Application>, err: &Error, _ctx: Arc<Context>) -> Action {
    tracing::warn!(namespace = %app.namespace().unwrap_or_default(), name = %app.name_any(), category = err.category(), error = %err, "Application reconcile failed");
    Action::requeue(Duration::from_secs(5))
}

pub async fn run(
    ctx: Arc<Context>,
    apps: Api<Application>,
    repos: Api<GitRepository>,
    drift_events: futures::channel::mpsc::Receiver<ObjectRef<Application>>,
) {
    let controller = Controller::new(apps, watcher::Config::default().any_semantic());
    let store = controller.store();
    controller
        .watches(
            repos,
            watcher::Config::default(),
            move |repo: GitRepository| {
                let ns = repo.namespace();
                let name = repo.name_any();
                store
                    .state()
                    .into_iter()
                    .filter(|a| a.namespace() == ns && a.spec.source_ref.name == name)
                    .map(|a| ObjectRef::from_obj(a.as_ref()))
                    .collect::<Vec<_>>()
            },
        )
        .reconcile_on(drift_events)
        .graceful_shutdown_on(super::shutdown_signal())
        .run(reconcile, error_policy, ctx)
        .for_each(|_| futures::future::ready(()))
        .await;
}
