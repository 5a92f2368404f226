//! An Application's view of its source's artifact: where the source comes from (the watch
//! cache, or the API server), the tree on disk, leased for one reconcile, extracted again
//! from the Git cache when it is missing.

use std::sync::Arc;

use kube::ResourceExt;
use kube::api::Api;

use super::decide::ArtifactSeen;
use super::memory::AppContext;
use crate::api::conditions::{self, Status};
use crate::api::git_repository::Artifact;
use crate::api::{Application, GitRepository};
use crate::controller::context::revision_commit;
use crate::error::Result;
use crate::source::store::Lease;

/// What an Application finds of its source's artifact.
pub enum Checkout {
    Ready(Lease),
    /// Not on disk yet (a restarted controller whose source has not fetched again, or a
    /// status about to name a newer revision): come back shortly, nothing is wrong.
    NotYet,
    Failed(String),
}

/// The leased tree of `artifact`. A tree removed after a digest mismatch is written again
/// from the source's Git cache; one not written yet is `NotYet`.
pub async fn checkout(
    ctx: &Arc<AppContext>,
    ns: &str,
    source: &GitRepository,
    artifact: &Artifact,
) -> Checkout {
    match checkout_inner(ctx, ns, source, artifact).await {
        Ok(Some(lease)) => Checkout::Ready(lease),
        Ok(None) => Checkout::NotYet,
        Err(message) => Checkout::Failed(message),
    }
}

async fn checkout_inner(
    ctx: &Arc<AppContext>,
    ns: &str,
    source: &GitRepository,
    artifact: &Artifact,
) -> Result<Option<Lease>, String> {
    let name = source.name_any();
    let commit = revision_commit(&artifact.revision)
        .ok_or_else(|| format!("revision {} names no commit", artifact.revision))?
        .to_string();
    let dir = ctx.artifacts.dir(ns, &name, &commit, &artifact.digest);
    let lease = ctx.artifacts.lease(&dir);
    if dir.is_dir() {
        return Ok(Some(lease));
    }
    // Missing after a restart, or not written yet: the source controller writes it (the
    // status may be about to name a newer revision). Missing because this controller
    // removed a tree that changed on disk: check it out again now.
    if !crate::source::store::take_tampered(&dir) {
        return Ok(None);
    }
    let (ctx2, ns2, ignore) = (ctx.clone(), ns.to_string(), source.spec.ignore.clone());
    let written = tokio::task::spawn_blocking(move || {
        let cache = ctx2.git_cache(&ns2, &name);
        let Ok(repo) = git2::Repository::open_bare(&cache) else {
            return Ok(None);
        };
        let oid = git2::Oid::from_str(&commit).map_err(|e| e.to_string())?;
        if repo.find_commit(oid).is_err() {
            return Ok(None);
        }
        ctx2.artifacts
            .write(&ns2, &name, &repo, oid, &ignore)
            .map(Some)
            .map_err(|e| e.to_string())
    })
    .await
    .map_err(|e| format!("checkout task failed: {e}"))?;
    match written {
        Ok(None) => Ok(None),
        Ok(Some((path, _))) if path == dir => Ok(Some(lease)),
        Ok(Some((_, digest))) => Err(format!(
            "the artifact of {} has digest {digest}, not {} as the source reports; waiting for \
             the source to fetch again",
            artifact.revision, artifact.digest
        )),
        Err(e) => Err(format!(
            "cannot check out {} from the Git cache: {e}",
            artifact.revision
        )),
    }
}

pub(super) type Found = (GitRepository, Artifact, crate::source::store::Lease);

/// The source, its artifact and the leased tree, or why there is none.
pub(super) async fn find_artifact(
    ctx: &Arc<AppContext>,
    ns: &str,
    app: &Application,
) -> Result<(ArtifactSeen, Option<Found>)> {
    let repos: Api<GitRepository> = Api::namespaced(ctx.client.clone(), ns);
    let source_name = &app.spec.source_ref.name;
    // From the watch of this shard's sources (a new artifact wakes the Application after
    // the watch cache has it). The API server is asked when the cache does not have it
    // (not listed yet, or of another shard, which the message below names) or when what
    // the cache says leads to no artifact (it may lag, e.g. after an API server restart).
    let cached = ctx.memory.cached_source(ns, source_name);
    let app_name = app.name_any();
    if let Some(source) = cached {
        let seen = artifact_of(ctx, ns, GitRepository::clone(&source)).await;
        match seen.0 {
            ArtifactSeen::Ready { .. } => {
                ctx.memory.source_waits.done(ns, &app_name);
                return Ok(seen);
            }
            // The first fetch is under way: its artifact wakes the Application. The cache
            // is trusted (nothing read, nothing written: a source and its Applications
            // created together would each write "waiting"), but for one read every 10 s.
            ArtifactSeen::Waiting(_) if ctx.memory.source_waits.fresh(ns, &app_name) => {
                return Ok((ArtifactSeen::NotYet, None));
            }
            ref other => {
                tracing::debug!(namespace = %ns, name = %app_name, seen = ?other, "the cached source leads to no artifact: asking the API server");
            }
        }
    }
    let Some(source) = repos.get_opt(source_name).await? else {
        let m = format!("GitRepository {source_name} not found");
        return Ok((ArtifactSeen::Failed(m), None));
    };
    let seen = artifact_of(ctx, ns, source).await;
    if matches!(seen.0, ArtifactSeen::Ready { .. }) {
        ctx.memory.source_waits.done(ns, &app_name);
    }
    Ok(seen)
}

/// What `source` offers the Application: its artifact's tree, leased, or why not.
async fn artifact_of(
    ctx: &Arc<AppContext>,
    ns: &str,
    source: GitRepository,
) -> (ArtifactSeen, Option<Found>) {
    let source_name = source.name_any();
    // Artifacts live with the controller that fetched them: a source of another shard is
    // never checked out here.
    if !ctx.shard.owns(source.labels()) {
        let m = format!(
            "GitRepository {source_name} belongs to {}, this Application to {}: give both the same {} label",
            crate::controller::shard::Shard::describe(source.labels()),
            ctx.shard,
            crate::controller::shard::SHARD_LABEL,
        );
        return (ArtifactSeen::Failed(m), None);
    }
    let Some(artifact) = source.status.as_ref().and_then(|s| s.artifact.clone()) else {
        let ready = source
            .status
            .as_ref()
            .and_then(|s| conditions::find(&s.conditions, conditions::READY));
        return match ready {
            Some(c) if conditions::is(c, Status::False) => {
                let m = format!("GitRepository {source_name} has no artifact: {}", c.message);
                (ArtifactSeen::Failed(m), None)
            }
            _ => {
                let m = format!("waiting for the first artifact of GitRepository {source_name}");
                (ArtifactSeen::Waiting(m), None)
            }
        };
    };
    match super::artifact::checkout(ctx, ns, &source, &artifact).await {
        Checkout::Ready(lease) => (
            ArtifactSeen::Ready {
                revision: artifact.revision.clone(),
            },
            Some((source, artifact, lease)),
        ),
        Checkout::NotYet => (ArtifactSeen::NotYet, None),
        Checkout::Failed(m) => (ArtifactSeen::Failed(m), None),
    }
}
