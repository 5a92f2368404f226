//! An Application's view of its source's artifact: the tree on disk, leased for one
//! reconcile, extracted again from the Git cache when it is missing.

use std::sync::Arc;

use kube::ResourceExt;

use super::context::{Context, revision_commit};
use crate::api::GitRepository;
use crate::api::git_repository::Artifact;
use crate::source::store::Lease;

/// The leased tree of `artifact`. A tree that is gone (removed after a digest mismatch, or
/// not written yet after a restart) is written again from the source's Git cache.
pub async fn checkout(
    ctx: &Arc<Context>,
    ns: &str,
    source: &GitRepository,
    artifact: &Artifact,
) -> Result<Lease, String> {
    let name = source.name_any();
    let commit = revision_commit(&artifact.revision)
        .ok_or_else(|| format!("revision {} names no commit", artifact.revision))?
        .to_string();
    let dir = ctx.artifacts.dir(ns, &name, &commit, &artifact.digest);
    let lease = ctx.artifacts.lease(&dir);
    if dir.is_dir() {
        return Ok(lease);
    }
    let (ctx2, ns2, ignore) = (ctx.clone(), ns.to_string(), source.spec.ignore.clone());
    let written = tokio::task::spawn_blocking(move || {
        let cache = ctx2.git_cache(&ns2, &name);
        let repo = git2::Repository::open_bare(&cache).map_err(|e| e.to_string())?;
        let oid = git2::Oid::from_str(&commit).map_err(|e| e.to_string())?;
        ctx2.artifacts
            .write(&ns2, &name, &repo, oid, &ignore)
            .map_err(|e| e.to_string())
    })
    .await
    .map_err(|e| format!("checkout task failed: {e}"))?;
    match written {
        Ok((path, _)) if path == dir => Ok(lease),
        Ok((_, digest)) => Err(format!(
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
