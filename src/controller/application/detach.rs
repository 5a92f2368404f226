//! Long waits outside the reconcile slots. A sync may wait minutes on a tenant's hooks, a
//! wave or post-hook health (up to `spec.timeout`); had it held its slot meanwhile, 64
//! Applications with hooks that never finish would hold all `--concurrent` slots and every
//! other namespace would wait. So each Application's reconcile runs as a task of its own:
//! the slot waits for it a few seconds (the usual reconcile is done by then, and behaves
//! exactly as before), then lets go while the task goes on. Until the task ends, the
//! Application is not reconciled again — unless its spec or its source's revision changed,
//! which ends the task (the newer revision wins without waiting for the old timeout; a task
//! ended between writes is a controller killed there, which the planned inventory covers)
//! — and when it ends it asks for a reconcile, which reports and follows up.

use std::future::Future;
use std::sync::Arc;
use std::time::Duration;

use kube::ResourceExt;
use kube::runtime::controller::Action;
use kube::runtime::reflector::ObjectRef;

use super::memory::{AppContext, Running};
use crate::api::{Application, GitRepository};
use crate::error::{Error, Result};

/// How long a reconcile slot waits for an Application's task before letting go.
pub const IN_SLOT: Duration = Duration::from_secs(3);

/// Runs `work` (one reconcile of `app`) as a task, waiting for it at most [`IN_SLOT`].
pub async fn bounded<F, Fut>(app: Arc<Application>, ctx: Arc<AppContext>, work: F) -> Result<Action>
where
    F: FnOnce(Arc<Application>, Arc<AppContext>) -> Fut,
    Fut: Future<Output = Result<Action>> + Send + 'static,
{
    let key = (app.namespace().unwrap_or_default(), app.name_any());
    let busy = ctx
        .memory
        .detached
        .running
        .lock()
        .expect("detached")
        .get(&key)
        .map(|r| (r.generation, r.revision.clone()));
    if let Some((generation, revision)) = busy {
        if generation == app.metadata.generation && !source_moved(&ctx, &app, revision).await {
            // Its task asks for a reconcile when it ends; this is only a safety net.
            return Ok(Action::requeue(Duration::from_secs(30)));
        }
        tracing::info!(namespace = %key.0, name = %key.1,
            "the spec or the source changed while a sync waited; ending that sync for the newer one");
        ctx.memory.detached.end(&key.0, &key.1);
    }
    let id = ctx
        .memory
        .detached
        .next_id
        .fetch_add(1, std::sync::atomic::Ordering::Relaxed);
    let mut task = tokio::spawn(work(app.clone(), ctx.clone()));
    ctx.memory
        .detached
        .running
        .lock()
        .expect("detached")
        .insert(
            key.clone(),
            Running {
                id,
                abort: task.abort_handle(),
                generation: app.metadata.generation,
                revision: None,
            },
        );
    match tokio::time::timeout(IN_SLOT, &mut task).await {
        Ok(done) => {
            ctx.memory.detached.forget(&key, id);
            done.map_err(|e| Error::Usage(format!("reconcile task: {e}")))?
        }
        Err(_) => {
            tracing::debug!(namespace = %key.0, name = %key.1, "the reconcile goes on outside its slot");
            let wake = ObjectRef::from_obj(app.as_ref());
            tokio::spawn(async move {
                let outcome = task.await;
                ctx.memory.detached.forget(&key, id);
                match outcome {
                    Ok(Err(e)) => {
                        tracing::warn!(namespace = %key.0, name = %key.1, error = %e, "reconcile failed")
                    }
                    Err(e) if e.is_panic() => {
                        tracing::error!(namespace = %key.0, name = %key.1, "reconcile task panicked")
                    }
                    _ => {}
                }
                ctx.targets.wake(wake);
            });
            Ok(Action::requeue(Duration::from_secs(30)))
        }
    }
}

/// Whether the Application's source now has another revision than `revision` (the one its
/// running task syncs): from the watch cache of the sources (a new revision wakes the
/// Application through that watch, so the cache has it), read only when the cache does not
/// hold the source.
async fn source_moved(ctx: &AppContext, app: &Application, revision: Option<String>) -> bool {
    let Some(revision) = revision else {
        return false;
    };
    let ns = app.namespace().unwrap_or_default();
    let name = &app.spec.source_ref.name;
    let repo = match ctx.memory.cached_source(&ns, name) {
        Some(repo) => Some(GitRepository::clone(&repo)),
        None => {
            let api: kube::Api<GitRepository> = kube::Api::namespaced(ctx.client.clone(), &ns);
            api.get_opt(name).await.ok().flatten()
        }
    };
    repo.and_then(|r| r.status)
        .and_then(|s| s.artifact)
        .is_some_and(|a| a.revision != revision)
}
