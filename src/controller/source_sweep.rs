//! The local state of GitRepositories that are gone (the bare clone, the artifacts, the
//! last fetch): removed when the watch sees a deletion, and at every (re)list for the ones
//! deleted while it did not watch (the controller was down, the watch was expired, or the
//! source moved to another shard).
//!
//! No finalizer holds a GitRepository for this: everything removed is this process's own
//! cache, rebuilt by the next fetch. A finalizer would cost every source a PATCH and a watch
//! event at creation, and would leave sources (and their namespaces) stuck in deletion for
//! as long as no controller runs. Sources that still carry the finalizer of earlier
//! versions have it taken off once.

use std::collections::HashSet;
use std::path::Path;
use std::sync::Arc;

use kube::ResourceExt;
use kube::api::{Api, Patch, PatchParams};
use kube::runtime::reflector::Store;
use kube::runtime::watcher;

use super::context::{Context, FINALIZER, remove_dir};
use crate::api::GitRepository;

/// Follows the GitRepository watch (after its store is updated): a deleted source's state
/// goes with it, and a finished list sweeps away the state of the sources it lacks.
pub(crate) async fn follow(
    ctx: &Arc<Context>,
    store: &Store<GitRepository>,
    scope: Option<&str>,
    event: &watcher::Event<GitRepository>,
) {
    match event {
        watcher::Event::Delete(repo) => {
            let (ns, name) = (repo.namespace().unwrap_or_default(), repo.name_any());
            let ctx = ctx.clone();
            let _ = tokio::task::spawn_blocking(move || forget(&ctx, &ns, &name)).await;
        }
        watcher::Event::InitDone => {
            let live: HashSet<(String, String)> = store
                .state()
                .iter()
                .map(|r| (r.namespace().unwrap_or_default(), r.name_any()))
                .collect();
            let (ctx, scope) = (ctx.clone(), scope.map(str::to_string));
            let _ = tokio::task::spawn_blocking(move || sweep(&ctx, scope.as_deref(), &live)).await;
        }
        _ => {}
    }
}

/// Removes what this process keeps of one source.
pub(crate) fn forget(ctx: &Context, ns: &str, name: &str) {
    remove_dir(&ctx.git_cache(ns, name));
    ctx.last_fetches.forget(ns, name);
    ctx.artifacts.remove_source(ns, name);
    ctx.fetch_gate.forget(ns, name);
}

/// Forgets every source with state on disk (in `scope`'s namespace, or in all) that is not
/// among `live`.
fn sweep(ctx: &Context, scope: Option<&str>, live: &HashSet<(String, String)>) {
    let mut kept = Vec::new();
    for root in [ctx.data_dir.join("git"), ctx.data_dir.join("artifacts")] {
        kept.extend(on_disk(&root, scope));
    }
    kept.sort();
    kept.dedup();
    for (ns, name) in gone(kept, live) {
        tracing::info!(namespace = %ns, name = %name, "removing the local state of a GitRepository that is gone");
        forget(ctx, &ns, &name);
    }
}

/// The `(namespace, name)` directories under `root` (only `scope`'s namespace when given).
fn on_disk(root: &Path, scope: Option<&str>) -> Vec<(String, String)> {
    let names = |dir: &Path| -> Vec<String> {
        std::fs::read_dir(dir)
            .into_iter()
            .flatten()
            .flatten()
            .filter(|e| e.file_type().is_ok_and(|t| t.is_dir()))
            .filter_map(|e| e.file_name().into_string().ok())
            .collect()
    };
    let namespaces = match scope {
        Some(ns) => vec![ns.to_string()],
        None => names(root),
    };
    namespaces
        .into_iter()
        .flat_map(|ns| {
            names(&root.join(&ns))
                .into_iter()
                .map(move |name| (ns.clone(), name))
        })
        .collect()
}

/// Of the sources with state on disk, those that are not live. A directory whose name no
/// Kubernetes object can have (a fetch's fresh clone beside the cache) is not a source's.
fn gone(on_disk: Vec<(String, String)>, live: &HashSet<(String, String)>) -> Vec<(String, String)> {
    on_disk
        .into_iter()
        .filter(|(ns, name)| object_name(ns) && object_name(name))
        .filter(|key| !live.contains(key))
        .collect()
}

/// A DNS subdomain name, as namespaces and GitRepositories have.
fn object_name(s: &str) -> bool {
    !s.is_empty()
        && s.len() <= 253
        && s.bytes()
            .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'-' || b == b'.')
        && s.starts_with(|c: char| c.is_ascii_alphanumeric())
        && s.ends_with(|c: char| c.is_ascii_alphanumeric())
}

/// Takes off the finalizer earlier versions put on every GitRepository (nothing else holds
/// a source in deletion); true when it was there.
pub(crate) async fn drop_old_finalizer(
    api: &Api<GitRepository>,
    repo: &GitRepository,
) -> crate::error::Result<bool> {
    let Some(i) = repo.finalizers().iter().position(|f| f == FINALIZER) else {
        return Ok(false);
    };
    // The test makes the removal refuse, not remove another finalizer, when the list
    // changed since this copy was read.
    let patch = serde_json::from_value(serde_json::json!([
        {"op": "test", "path": format!("/metadata/finalizers/{i}"), "value": FINALIZER},
        {"op": "remove", "path": format!("/metadata/finalizers/{i}")},
    ]))
    .map_err(|source| crate::error::Error::Serialize {
        what: "finalizer patch",
        source,
    })?;
    api.patch(
        &repo.name_any(),
        &PatchParams::default(),
        &Patch::<()>::Json(patch),
    )
    .await?;
    Ok(true)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn key(ns: &str, name: &str) -> (String, String) {
        (ns.into(), name.into())
    }

    #[test]
    fn only_sources_that_are_not_live_are_gone() {
        let live: HashSet<_> = [key("a", "web"), key("b", "api")].into();
        let on_disk = vec![
            key("a", "web"),
            key("a", "old"),
            key("b", "api"),
            key("b", "web"),
            key("a", "web_reclone"),
            key("a", "Upper"),
        ];
        assert_eq!(gone(on_disk, &live), vec![key("a", "old"), key("b", "web")]);
    }

    #[test]
    fn the_directories_on_disk_are_read_per_namespace_and_scoped() {
        let root = tempfile::tempdir().unwrap();
        for (ns, name) in [("a", "web"), ("a", "api"), ("b", "web")] {
            std::fs::create_dir_all(root.path().join(ns).join(name)).unwrap();
        }
        std::fs::write(root.path().join("a").join("a-file"), "").unwrap();
        let mut all = on_disk(root.path(), None);
        all.sort();
        assert_eq!(all, vec![key("a", "api"), key("a", "web"), key("b", "web")]);
        assert_eq!(on_disk(root.path(), Some("b")), vec![key("b", "web")]);
        assert!(on_disk(&root.path().join("missing"), None).is_empty());
    }

    #[test]
    fn object_names() {
        assert!(object_name("web-1.prod"));
        assert!(!object_name("web_reclone"));
        assert!(!object_name("-web"));
        assert!(!object_name(""));
    }
}
