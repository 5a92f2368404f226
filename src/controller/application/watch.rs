//! The Application controller's wiring: what wakes a reconcile of an Application (changes
//! made by others, a new artifact of its source, a new image selection, drift) and the
//! cache it reads from. The reconcile itself is `application.rs`.

use std::sync::Arc;

use futures::StreamExt;
use kube::ResourceExt;
use kube::api::Api;
use kube::runtime::controller::Controller;
use kube::runtime::reflector::ObjectRef;
use kube::runtime::{WatchStreamExt, watcher};

use super::memory::AppContext;
use super::reconcile::reconcile;
use super::source_order;
use crate::api::application::Application;
use crate::api::conditions;
use crate::api::{GitRepository, ImagePolicy};
use crate::controller::hash_of;

pub async fn run(
    ctx: Arc<AppContext>,
    apps: Api<Application>,
    repos: Api<GitRepository>,
    policies: Api<ImagePolicy>,
    drift_events: futures::channel::mpsc::Receiver<ObjectRef<Application>>,
) {
    // Reconciled when someone changes an Application (spec, annotations such as `gantry
    // sync`, labels, finalizers, deletion), not when this controller writes its status: the
    // reconcile that wrote it already acts on it, and at fleet scale each self-triggered
    // reconcile is two more reads per Application. managedFields are not kept in the cache.
    let (reader, writer) = kube::runtime::reflector::store();
    // Each watch backs off its own errors and the controller none over them all (see
    // `EachWatchBacksOff`): drift triggers are never held back by this watch's recovery.
    let app_changes = watcher(apps, ctx.watch())
        .default_backoff()
        .modify(|a: &mut Application| a.managed_fields_mut().clear())
        .reflect(writer)
        .applied_objects()
        .predicate_filter(
            |a: &Application| {
                Some(hash_of(&(
                    &a.metadata.uid,
                    a.metadata.generation,
                    &a.metadata.annotations,
                    &a.metadata.labels,
                    &a.metadata.finalizers,
                    a.metadata
                        .deletion_timestamp
                        .as_ref()
                        .map(|t| t.0.to_string()),
                )))
            },
            Default::default(),
        );
    let controller = Controller::for_stream(app_changes, reader)
        .with_config(ctx.controller_config())
        .trigger_backoff(crate::controller::EachWatchBacksOff);
    let store = controller.store();
    let states = store.clone();
    ctx.metrics.set_application_states(Box::new(move || {
        states
            .state()
            .iter()
            .map(|a| {
                crate::metrics::APPLICATION_CONDITIONS.map(|c| {
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
    // rescan that found the same image does not wake them. Policies of every shard are
    // watched: an Application reads a policy's status, whichever shard scans it.
    let selections = watcher(policies, watcher::Config::default())
        .default_backoff()
        .applied_objects()
        .predicate_filter(
            |p: &ImagePolicy| {
                Some(hash_of(&p.status.as_ref().map(|s| {
                    (
                        &s.latest_image,
                        &s.latest_digest,
                        s.held_tags.iter().map(|t| &t.tag).collect::<Vec<_>>(),
                    )
                })))
            },
            Default::default(),
        );
    // A source concerns its Applications when its artifact changes (a new revision, or the
    // same one written again), not at every status write of its own.
    let (sources, sources_writer) = kube::runtime::reflector::store();
    let _ = ctx.memory.sources.set(sources);
    let source_changes = watcher(repos, ctx.shard.watch())
        .default_backoff()
        .modify(|r: &mut GitRepository| r.managed_fields_mut().clear())
        .reflect(sources_writer)
        .applied_objects()
        .predicate_filter(
            |r: &GitRepository| {
                let artifact = r.status.as_ref().and_then(|s| s.artifact.as_ref());
                Some(hash_of(&(
                    &r.metadata.uid,
                    artifact.map(|a| (&a.revision, &a.digest)),
                )))
            },
            Default::default(),
        );
    // A new artifact of a source shared by many Applications wakes the ones it changed
    // first and the others a moment later (see `source_order`).
    let (later_tx, later_rx) = futures::channel::mpsc::unbounded();
    let last_revisions: std::sync::Mutex<std::collections::HashMap<(String, String), String>> =
        Default::default();
    let order_ctx = ctx.clone();
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
        .watches_stream(source_changes, move |repo: GitRepository| {
            let ns = repo.namespace();
            let name = repo.name_any();
            let apps: Vec<_> = store
                .state()
                .into_iter()
                .filter(|a| a.namespace() == ns && a.spec.source_ref.name == name)
                .collect();
            let revision = repo
                .status
                .as_ref()
                .and_then(|s| s.artifact.as_ref())
                .map(|a| a.revision.clone());
            let ns = ns.unwrap_or_default();
            let changed = first_concerned(&order_ctx, &last_revisions, &ns, &name, revision, apps.len());
            let Some(changed) = changed else {
                return apps.iter().map(|a| ObjectRef::from_obj(a.as_ref())).collect();
            };
            let (first, later): (Vec<_>, Vec<_>) = apps
                .iter()
                .map(|a| (source_order::concerns(&a.spec.path, &changed), ObjectRef::from_obj(a.as_ref())))
                .partition(|(concerned, _)| *concerned);
            tracing::debug!(namespace = %ns, source = %name, first = first.len(), later = later.len(), "a new artifact: the Applications it changed first");
            if !later.is_empty() {
                let tx = later_tx.clone();
                tokio::spawn(async move {
                    tokio::time::sleep(LATER).await;
                    for (_, r) in later {
                        let _ = tx.unbounded_send(r);
                    }
                });
            }
            first.into_iter().map(|(_, r)| r).collect::<Vec<_>>()
        })
        .reconcile_on(futures::stream::select(drift_events, later_rx))
        .graceful_shutdown_on(crate::controller::shutdown_signal())
        .run(
            |obj, ctx| crate::controller::measured(obj, ctx, reconcile),
            crate::controller::error_policy,
            ctx,
        )
        .for_each(|_| futures::future::ready(()))
        .await;
}

/// Sources with more Applications than this have the ones a new commit changed woken first.
const ORDER_ABOVE: usize = 20;

/// How much later the Applications a new commit did not change are woken.
const LATER: std::time::Duration = std::time::Duration::from_secs(1);

/// The files a source's new revision changed, when its Applications are many enough to be
/// woken in order and the previous revision is known (and still in the source's clone).
fn first_concerned(
    ctx: &AppContext,
    last: &std::sync::Mutex<std::collections::HashMap<(String, String), String>>,
    ns: &str,
    name: &str,
    revision: Option<String>,
    apps: usize,
) -> Option<Vec<String>> {
    let revision = revision?;
    let previous = last
        .lock()
        .expect("last revisions")
        .insert((ns.to_string(), name.to_string()), revision.clone())?;
    if previous == revision || apps <= ORDER_ABOVE {
        return None;
    }
    source_order::changed_paths(&ctx.git_cache(ns, name), &previous, &revision)
}
