//! Application reconciler: source artifact → sync pipeline → status, history and events.
//! A no-op reconcile (same revision, same generation, healthy) makes no request but reads.

use std::sync::Arc;
use std::time::Duration;

use futures::StreamExt;
use k8s_openapi::apimachinery::pkg::apis::meta::v1::Time;
use k8s_openapi::jiff::Timestamp;
use kube::ResourceExt;
use kube::api::Api;
use kube::runtime::controller::{Action, Controller};
use kube::runtime::events::EventType;
use kube::runtime::finalizer::{Event, finalizer};
use kube::runtime::reflector::ObjectRef;
use kube::runtime::{WatchStreamExt, watcher};

use super::app_drift::{check_drift, ensure_watches};
use super::app_record::{publish, record, set, write_if_changed};
use super::app_status::follow_health;
use super::canary;
use super::context::{Context, FINALIZER};
use super::drift_check;
use super::image_automation;
use super::sync::{self, SyncError, SyncInput};
use crate::api::application::{Application, SyncPolicy, SyncRecord, SyncResult};
use crate::api::conditions::{self, Status};
use crate::api::{GitRepository, ImagePolicy};
use crate::error::{Error, Result};
use crate::health::Health;

/// Annotation set by `gantry sync` to ask for a sync (value: a timestamp).
pub use super::trigger::REQUEST_ANNOTATION;

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
    let interval = ctx.interval(&app.spec.interval, Duration::from_secs(300));
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

    // Fields whose promise the controller cannot keep yet stop the Application, rather
    // than deploying with the controller's own rights or into the wrong cluster.
    if let Some(message) = super::guards::unsupported_fields(&app) {
        set(
            &mut status,
            conditions::READY,
            Status::False,
            "Unsupported",
            message,
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
    let source = repos.get_opt(source_name).await?;
    let artifact = match &source {
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
    // The tree stays on disk (leased) while this reconcile renders it, whatever the source
    // does meanwhile.
    let checked = match (artifact, source) {
        (Ok(a), Some(s)) => match super::artifact::checkout(&ctx, &ns, &s, &a).await {
            super::artifact::Checkout::Ready(lease) => Ok((a, s, lease)),
            // The source controller writes it again (e.g. after a restart); come back soon.
            super::artifact::Checkout::NotYet => {
                return Ok(Action::requeue(Duration::from_secs(2)));
            }
            super::artifact::Checkout::Failed(message) => Err(message),
        },
        (result, _) => Err(result
            .err()
            .unwrap_or_else(|| format!("GitRepository {source_name} not found"))),
    };
    let (artifact, source, lease) = match checked {
        Ok(found) => found,
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
            return Ok(Action::requeue(Duration::from_secs(5)));
        }
    };
    let revision = artifact.revision.clone();
    let artifact_root = lease.path().to_path_buf();

    // Image automation first: a new image goes to Git, and from there to the cluster.
    image_automation::run(&ctx, &app, &source, &artifact_root, &mut status).await;

    let requested = app.annotations().get(REQUEST_ANNOTATION).cloned();
    let sync_requested = requested.is_some() && requested != status.last_handled_request;
    let up_to_date = status.last_applied_revision.as_deref() == Some(revision.as_str())
        && previous_generation == generation
        && conditions::find(&status.conditions, conditions::READY)
            .is_some_and(|c| c.status == "True" || c.reason == "HealthCheckFailed");

    // A revision whose rollout was aborted is not applied again until Git (or the spec)
    // changes, or someone asks with `gantry sync`; meanwhile report how the workloads that
    // run (the last healthy revision's) are doing.
    if crate::rollout::plan::is_rejected(&status, &revision)
        && !sync_requested
        && previous_generation == generation
    {
        let (health, message) =
            sync::assess_health(&ctx.client, &ctx.discovery, &status.inventory).await;
        let healthy = matches!(health, Health::Healthy | Health::Suspended);
        let (s, reason, message) = match health {
            Health::Healthy | Health::Suspended => (
                Status::True,
                "Healthy",
                "the workloads of the last healthy revision are running".to_string(),
            ),
            Health::Degraded => (Status::False, "HealthCheckFailed", message),
            _ => (Status::Unknown, "Progressing", message),
        };
        set(
            &mut status,
            conditions::HEALTHY,
            s,
            reason,
            message,
            generation,
        );
        write_if_changed(&api, &app, &status).await?;
        return Ok(Action::requeue(if healthy {
            interval
        } else {
            Duration::from_secs(2)
        }));
    }

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
    // Drift checks and canary steps see the whole rendered set; a sync adds its holds.
    let input = SyncInput {
        client: &ctx.client,
        discovery: &ctx.discovery,
        app: &app,
        artifact_root: &artifact_root,
        artifact_digest: Some(&artifact.digest),
        concurrency: ctx.apply_concurrency,
        hold: None,
        record_planned: None,
    };
    if up_to_date && !sync_requested {
        check_drift(&ctx, &app, &mut status, &revision, &input, interval, &[]).await;
        return follow_health(&ctx, &api, &app, &source, status, interval, timeout, false).await;
    }

    // A canary of this revision is running: carry it on. Drift checks go on for everything
    // but the stable Deployments, whose held template is expected to differ from Git.
    if canary::active(status.rollout.as_ref(), &revision)
        && previous_generation == generation
        && status.last_applied_revision.as_deref() == Some(revision.as_str())
    {
        let held = status
            .rollout
            .as_ref()
            .map(|r| r.canaries.clone())
            .unwrap_or_default();
        check_drift(&ctx, &app, &mut status, &revision, &input, interval, &held).await;
        return canary::drive(
            &ctx, &api, &app, &source, status, &revision, &input, interval,
        )
        .await;
    }

    // A full sync of this revision.
    let previous_canaries = status
        .rollout
        .as_ref()
        .map(|r| r.canaries.clone())
        .unwrap_or_default();
    status.last_attempted_revision = Some(revision.clone());
    if let Some(rollout) = status.rollout.as_mut() {
        rollout.failed_revisions.retain(|f| f != &revision);
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
    if sync_requested {
        status.last_handled_request = requested;
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
    let recorder = super::guards::StatusRecorder::new(&api, &name, status.clone());
    let input = SyncInput {
        hold: Some(&hold),
        record_planned: Some(&recorder),
        ..input
    };
    let result = sync::sync(&input).await;
    if result.is_err()
        && let Some(entries) = recorder.recorded()
    {
        status.inventory = entries;
    }
    match result {
        Ok(outcome) => {
            let summary = format!(
                "{} created, {} configured, {} unchanged, {} pruned",
                outcome.created, outcome.configured, outcome.unchanged, outcome.pruned
            );
            status.inventory = outcome.inventory.clone();
            status.last_applied_revision = Some(revision.clone());
            // Recorded now (they count only once the revision is healthy), so a controller
            // restarted before the health check still knows the templates of this revision.
            let hashes = canary::template_hashes(&outcome.desired);
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
            let result = if super::rollout::is_rollback(&ctx, &ns, source_name, &revision).await {
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
                },
            );
            let held: Vec<String> = outcome.held.iter().map(|k| k.name.clone()).collect();
            if canary::after_sync(
                &ctx,
                &app,
                &mut status,
                &revision,
                &previous_canaries,
                &held,
                !outcome.prune_failed,
            )
            .await
            {
                write_if_changed(&api, &app, &status).await?;
                return Ok(Action::requeue(Duration::from_millis(500)));
            }
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
            // Ready is written as soon as the revision is applied; health follows (its first
            // assessment lists every workload, which can take a while on large sets).
            write_if_changed(&api, &app, &status).await?;
            tracing::debug!(namespace = %ns, name = %name, "status written: applied");
            let mut written = app.clone();
            written.status = Some(status.clone());
            let action = follow_health(
                &ctx, &api, &written, &source, status, interval, timeout, true,
            )
            .await?;
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
                    healthy: None,
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
            let retry = if matches!(e, SyncError::Artifact(_)) {
                // the tree is checked out again at once
                Duration::from_secs(2)
            } else if matches!(e, SyncError::Kube(_)) {
                Duration::from_secs(5)
            } else {
                Duration::from_secs(30)
            };
            Ok(Action::requeue(retry.min(interval)))
        }
    }
}

fn o_gen(app: Option<&Application>) -> Option<i64> {
    app.and_then(|a| a.metadata.generation)
}

async fn reconcile(app: Arc<Application>, ctx: Arc<Context>) -> Result<Action> {
    let ns = app.namespace().unwrap_or_default();
    let api: Api<Application> = Api::namespaced(ctx.client.clone(), &ns);
    finalizer(&api, FINALIZER, app, |event| async {
        match event {
            Event::Apply(a) => apply(a, ctx.clone()).await,
            Event::Cleanup(a) => super::app_cleanup::cleanup(a, ctx.clone()).await,
        }
    })
    .await
    .map_err(|e| Error::Finalizer(Box::new(e)))
}

pub async fn run(
    ctx: Arc<Context>,
    apps: Api<Application>,
    repos: Api<GitRepository>,
    policies: Api<ImagePolicy>,
    drift_events: futures::channel::mpsc::Receiver<ObjectRef<Application>>,
) {
    let controller = Controller::new(apps, watcher::Config::default().any_semantic());
    let store = controller.store();
    let states = store.clone();
    ctx.metrics.set_application_states(Box::new(move || {
        states
            .state()
            .iter()
            .map(|a| {
                crate::server::metrics::APPLICATION_CONDITIONS.map(|c| {
                    a.status
                        .as_ref()
                        .and_then(|s| conditions::find(&s.conditions, c))
                        .map(|c| c.status.clone())
                        .unwrap_or_else(|| "Unknown".into())
                })
            })
            .collect()
    }));
    let policy_store = store.clone();
    // Only a change of what a policy selected (or holds) concerns the Applications; a
    // rescan that found the same image does not wake them.
    let selections = watcher(policies, watcher::Config::default())
        .default_backoff()
        .applied_objects()
        .predicate_filter(
            |p: &ImagePolicy| {
                use std::hash::{Hash, Hasher};
                let mut h = std::collections::hash_map::DefaultHasher::new();
                if let Some(s) = &p.status {
                    s.latest_image.hash(&mut h);
                    s.latest_digest.hash(&mut h);
                    for t in &s.held_tags {
                        t.tag.hash(&mut h);
                    }
                }
                Some(h.finish())
            },
            Default::default(),
        );
    controller
        .watches_stream(selections, move |policy: ImagePolicy| {
            let ns = policy.namespace();
            let name = policy.name_any();
            policy_store
                .state()
                .into_iter()
                .filter(|a| {
                    a.namespace() == ns
                        && a.spec
                            .image_automation
                            .as_ref()
                            .is_some_and(|ia| ia.policies.contains(&name))
                })
                .map(|a| ObjectRef::from_obj(a.as_ref()))
                .collect::<Vec<_>>()
        })
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
        .run(
            |obj, ctx| super::measured(obj, ctx, reconcile),
            super::error_policy,
            ctx,
        )
        .for_each(|_| futures::future::ready(()))
        .await;
}
