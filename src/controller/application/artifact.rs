//! An Application's view of its source's artifact: the tree on disk, leased for one
//! reconcile, extracted again from the Git cache when it is missing.

use std::sync::Arc;

use kube::ResourceExt;

use super::memory::AppContext;
use crate::api::GitRepository;
use crate::api::git_repository::Artifact;
use crate::controller::context::revision_commit;
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
