//! Long waits outside the reconcile slots. A sync may wait minutes on a tenant's hooks, a
//! wave or post-hook health (up to `spec.timeout`); had it held its slot meanwhile, 64
//! Applications with hooks that never finish would hold all `--concurrent` slots and every
//! other namespace would wait. So each Application's reconcile runs as a task of its own,
//! and its slot lets go of it once the task pauses on the cluster (`apply::waiting`) and
//! has run [`IN_SLOT`] (the usual reconcile is done by then, and behaves exactly as
//! before), or after [`SLOT_AT_MOST`] whatever it does. A sync busy with requests keeps its
//! slot: under load, letting such syncs go only started more of them than the API server
//! could serve, each holding its rendered set and requests in memory while it queued.
//!
//! Until the task ends, the Application is not reconciled again — unless its spec or its
//! source's revision changed, which ends the task (the newer revision wins without waiting
//! for the old timeout; a task ended between writes is a controller killed there, which the
//! planned inventory covers) — and when it ends it asks for a reconcile, which reports and
//! follows up.

use std::future::Future;
use std::sync::Arc;
use std::time::Duration;

use kube::ResourceExt;
use kube::runtime::controller::Action;
use kube::runtime::reflector::ObjectRef;

use super::memory::{AppContext, Running};
use crate::api::{Application, GitRepository};
use crate::error::{Error, Result};

/// How long a reconcile slot waits at least for an Application's task that pauses on the
/// cluster before letting go.
pub const IN_SLOT: Duration = Duration::from_secs(3);

/// How long a reconcile slot waits at most for an Application's task (a sync slowed by
/// something that is no pause on the cluster: a target cluster that does not answer, a
/// client-side request budget).
pub const SLOT_AT_MOST: Duration = Duration::from_secs(20);

/// Runs `work` (one reconcile of `app`) as a task, waiting for it until it pauses on the
/// cluster after [`IN_SLOT`], or at most [`SLOT_AT_MOST`].
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
    let waits = Arc::new(tokio::sync::Notify::new());
    let mut task = tokio::spawn(crate::apply::waiting::told(
        waits.clone(),
        work(app.clone(), ctx.clone()),
    ));
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
    match in_slot(&mut task, &waits).await {
        Some(done) => {
            ctx.memory.detached.forget(&key, id);
            done.map_err(|e| Error::Usage(format!("reconcile task: {e}")))?
        }
        None => {
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

/// Awaits `task` in its slot: its outcome, or `None` once the slot lets go of it (after
/// [`IN_SLOT`] if it paused on the cluster, telling `waits`; after [`SLOT_AT_MOST`] if not).
async fn in_slot<T>(
    task: &mut tokio::task::JoinHandle<T>,
    waits: &tokio::sync::Notify,
) -> Option<Result<T, tokio::task::JoinError>> {
    let start = tokio::time::Instant::now();
    let let_go = async {
        tokio::select! {
            _ = waits.notified() => tokio::time::sleep_until(start + IN_SLOT).await,
            _ = tokio::time::sleep(SLOT_AT_MOST) => {}
        }
    };
    tokio::select! {
        done = task => Some(done),
        _ = let_go => None,
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

#[cfg(test)]
mod tests {
    use super::*;
    use crate::apply::waiting;
    use tokio::sync::Notify;

    /// Spawns `work` as a reconcile task and reports how long its slot held it, and whether
    /// it was done then.
    async fn held<F>(work: F) -> (Duration, bool)
    where
        F: Future<Output = ()> + Send + 'static,
    {
        let waits = Arc::new(Notify::new());
        let mut task = tokio::spawn(waiting::told(waits.clone(), work));
        let start = tokio::time::Instant::now();
        let done = in_slot(&mut task, &waits).await.is_some();
        (start.elapsed(), done)
    }

    #[tokio::test(start_paused = true)]
    async fn a_sync_busy_with_requests_keeps_its_slot_until_it_is_done() {
        // Ten seconds of requests (no pause on the cluster): held to the end.
        let (took, done) = held(tokio::time::sleep(Duration::from_secs(10))).await;
        assert!(done);
        assert_eq!(took.as_secs(), 10);
    }

    #[tokio::test(start_paused = true)]
    async fn a_sync_waiting_on_the_cluster_lets_go_of_its_slot_after_the_usual_time() {
        // Pauses from the first second on (a hook that never finishes).
        let (took, done) = held(async {
            tokio::time::sleep(Duration::from_secs(1)).await;
            loop {
                waiting::pause(Duration::from_millis(500)).await;
            }
        })
        .await;
        assert!(!done);
        assert_eq!(took, IN_SLOT);
        // A pause after the usual time lets go at once.
        let (took, done) = held(async {
            tokio::time::sleep(Duration::from_secs(5)).await;
            waiting::pause(Duration::from_secs(60)).await;
        })
        .await;
        assert!(!done);
        assert_eq!(took.as_secs(), 5);
        // A short reconcile that paused is still awaited to its end.
        let (took, done) = held(waiting::pause(Duration::from_secs(1))).await;
        assert!(done);
        assert_eq!(took.as_secs(), 1);
    }

    #[tokio::test(start_paused = true)]
    async fn a_sync_that_never_pauses_is_let_go_at_the_most() {
        let (took, done) = held(tokio::time::sleep(Duration::from_secs(600))).await;
        assert!(!done);
        assert_eq!(took, SLOT_AT_MOST);
    }
}
