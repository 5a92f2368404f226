//! The artifact store: checked-out trees of GitRepositories on disk, one directory per
//! (commit, digest), written once into a temporary directory, sealed read-only and renamed
//! into place, so a reader sees a whole tree or none. A tree in use by a render holds a
//! lease and outlives the next fetch; unleased old trees are removed by the next fetch
//! (TESTING.md row 28).

use std::collections::HashMap;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};

use super::artifact::{self, ArtifactError};

#[derive(Default)]
struct Leases {
    counts: HashMap<PathBuf, usize>,
}

/// Cheap to clone: clones share the leases and the checked trees.
#[derive(Clone)]
pub struct ArtifactStore {
    root: PathBuf,
    leases: Arc<Mutex<Leases>>,
    checked: Arc<Checked>,
}

/// Trees whose entries this process wrote from Git or checked against their digest, so a
/// render that reads one directory checks that directory, not the whole tree again (a
/// fleet of Applications on paths of one repository would otherwise hash the whole tree
/// once per render).
#[derive(Default)]
struct Checked {
    trees: Mutex<HashMap<PathBuf, Arc<(String, artifact::Entries)>>>,
    /// Held while a whole tree is hashed, so concurrent renders hash it once.
    whole: Mutex<()>,
}

/// Most trees whose entries are kept (a few per source; older ones are dropped first when
/// their directory is gone).
const CHECKED_TREES: usize = 256;

/// Keeps one artifact directory from being removed while it is held.
pub struct Lease {
    path: PathBuf,
    leases: Arc<Mutex<Leases>>,
}

impl Lease {
    pub fn path(&self) -> &Path {
        &self.path
    }
}

impl Drop for Lease {
    fn drop(&mut self) {
        let mut l = self.leases.lock().expect("artifact leases");
        if let Some(n) = l.counts.get_mut(&self.path) {
            *n -= 1;
            if *n == 0 {
                l.counts.remove(&self.path);
            }
        }
    }
}

/// How long an unfinished `.tmp-` directory may sit before a collection removes it (a
/// crash while writing leaves one behind).
const STALE_TMP: std::time::Duration = std::time::Duration::from_secs(600);

impl ArtifactStore {
    pub fn new(root: PathBuf) -> Self {
        Self {
            root,
            leases: Default::default(),
            checked: Default::default(),
        }
    }

    /// The directory holding every artifact of one GitRepository.
    pub fn source_dir(&self, namespace: &str, name: &str) -> PathBuf {
        self.root.join(namespace).join(name)
    }

    /// The tree of `commit` whose content has `digest` (`sha256:<hex>`).
    pub fn dir(&self, namespace: &str, name: &str, commit: &str, digest: &str) -> PathBuf {
        let hex = digest.strip_prefix("sha256:").unwrap_or(digest);
        let short: String = hex.chars().take(16).collect();
        self.source_dir(namespace, name)
            .join(format!("{commit}-{short}"))
    }

    /// Holds `path` until the lease is dropped.
    pub fn lease(&self, path: &Path) -> Lease {
        let mut l = self.leases.lock().expect("artifact leases");
        *l.counts.entry(path.to_path_buf()).or_default() += 1;
        Lease {
            path: path.to_path_buf(),
            leases: self.leases.clone(),
        }
    }

    fn leased(&self, path: &Path) -> bool {
        self.leases
            .lock()
            .expect("artifact leases")
            .counts
            .contains_key(path)
    }

    /// Writes the tree of `commit` from `repo` (leaving out `ignore`) and moves it into
    /// place; returns its directory and digest. Blocking.
    pub fn write(
        &self,
        namespace: &str,
        name: &str,
        repo: &git2::Repository,
        commit: git2::Oid,
        ignore: &[String],
    ) -> Result<(PathBuf, String), ArtifactError> {
        let parent = self.source_dir(namespace, name);
        std::fs::create_dir_all(&parent).map_err(|e| ArtifactError::Io {
            path: parent.display().to_string(),
            source: e,
        })?;
        let tmp = tempfile::Builder::new()
            .prefix(&format!(".tmp-{commit}-"))
            .tempdir_in(&parent)
            .map_err(|e| ArtifactError::Io {
                path: parent.display().to_string(),
                source: e,
            })?
            .keep();
        let tree = tmp.join("tree");
        // The newest tree of this source whose entries are known shares its files.
        let previous = self.newest_known(&parent);
        let previous = previous.as_ref().map(|(d, known)| (d.as_path(), &known.1));
        let written = artifact::write_tree_entries(repo, commit, &tree, ignore, previous)
            .and_then(|written| artifact::seal_dirs(&tree).map(|_| written));
        let (digest, entries) = match written {
            Ok(d) => d,
            Err(e) => {
                artifact::remove(&tmp);
                return Err(e);
            }
        };
        let dest = self.dir(namespace, name, &commit.to_string(), &digest);
        // Content-addressed: a tree already in place has the same content (a reader
        // verifies it before use), so the new copy is dropped.
        if !dest.exists()
            && let Err(e) = move_sealed(&tree, &dest)
            && !dest.exists()
        {
            artifact::remove(&tmp);
            return Err(ArtifactError::Io {
                path: dest.display().to_string(),
                source: e,
            });
        }
        artifact::remove(&tmp);
        self.remember(&dest, &digest, entries);
        Ok((dest, digest))
    }

    /// The most recently written tree under `parent` whose entries this process knows.
    fn newest_known(&self, parent: &Path) -> Option<(PathBuf, Arc<(String, artifact::Entries)>)> {
        let trees = self.checked.trees.lock().expect("checked trees");
        trees
            .iter()
            .filter(|(d, _)| d.parent() == Some(parent) && d.is_dir())
            .max_by_key(|(d, _)| d.metadata().and_then(|m| m.modified()).ok())
            .map(|(d, known)| (d.clone(), known.clone()))
    }

    fn remember(&self, dir: &Path, digest: &str, entries: artifact::Entries) {
        let mut trees = self.checked.trees.lock().expect("checked trees");
        if trees.len() >= CHECKED_TREES {
            trees.retain(|d, _| d.is_dir());
            if trees.len() >= CHECKED_TREES {
                trees.clear();
            }
        }
        trees.insert(dir.to_path_buf(), Arc::new((digest.to_string(), entries)));
    }

    fn forget(&self, dir: &Path) {
        self.checked
            .trees
            .lock()
            .expect("checked trees")
            .retain(|d, _| !d.starts_with(dir));
    }

    /// Checks that the tree at `dir` is still what was written for `digest`: when `scope`
    /// (a directory relative to the tree) is given and the tree's entries are known, only
    /// the files under it are read and compared with those entries; otherwise the whole
    /// tree is hashed (once, however many renders ask at the same time). A scope holding a
    /// symlink is checked as a whole tree (the link may lead anywhere in it). A tree that
    /// changed is removed and marked, so the next reader writes it again from Git.
    /// Blocking.
    pub fn verify(
        &self,
        dir: &Path,
        digest: &str,
        scope: Option<&Path>,
    ) -> Result<(), ArtifactError> {
        let checked = self.verify_inner(dir, digest, scope);
        if let Err(ArtifactError::DigestMismatch { .. }) = &checked {
            tracing::warn!(path = %dir.display(), "artifact changed on disk; removing it to check it out again");
            self.forget(dir);
            artifact::remove(dir);
            mark_tampered(dir);
        }
        checked
    }

    fn known(&self, dir: &Path, digest: &str) -> Option<Arc<(String, artifact::Entries)>> {
        self.checked
            .trees
            .lock()
            .expect("checked trees")
            .get(dir)
            .filter(|known| known.0 == digest)
            .cloned()
    }

    fn verify_inner(
        &self,
        dir: &Path,
        digest: &str,
        scope: Option<&Path>,
    ) -> Result<(), ArtifactError> {
        // Normal components only; anything else is checked as a whole tree.
        let scope = scope.and_then(scope_key);
        let Some(scope) = scope else {
            return artifact::verified_entries(dir, digest).map(|_| ());
        };
        let scoped = |known: &(String, artifact::Entries)| {
            check_scope(dir, &known.1, digest, &scope)
                .unwrap_or_else(|| artifact::verified_entries(dir, digest).map(|_| ()))
        };
        if let Some(known) = self.known(dir, digest) {
            return scoped(&known);
        }
        // Hash the whole tree once, whoever asks meanwhile; later scopes are checked alone.
        let _whole = self.checked.whole.lock().expect("whole-tree check");
        if let Some(known) = self.known(dir, digest) {
            return scoped(&known);
        }
        let entries = artifact::verified_entries(dir, digest)?;
        self.remember(dir, digest, entries);
        Ok(())
    }

    /// Removes every artifact of the source but `keep` and those under a lease.
    pub fn collect(&self, namespace: &str, name: &str, keep: &Path) {
        let Ok(entries) = std::fs::read_dir(self.source_dir(namespace, name)) else {
            return;
        };
        for entry in entries.flatten() {
            let path = entry.path();
            if path == keep || self.leased(&path) {
                continue;
            }
            let file_name = entry.file_name().to_string_lossy().into_owned();
            let is_tmp = file_name.starts_with(".tmp-") || file_name.ends_with(".tampered");
            let young = entry
                .metadata()
                .and_then(|m| m.modified())
                .ok()
                .and_then(|t| t.elapsed().ok())
                .is_some_and(|age| age < STALE_TMP);
            if is_tmp && young {
                continue;
            }
            if path.is_file() {
                let _ = std::fs::remove_file(&path);
            } else {
                self.forget(&path);
                artifact::remove(&path);
            }
        }
    }

    /// Removes all artifacts of a source (it was deleted).
    pub fn remove_source(&self, namespace: &str, name: &str) {
        self.forget(&self.source_dir(namespace, name));
        artifact::remove(&self.source_dir(namespace, name));
    }
}

/// `a/./b/` as `a/b`; `None` for an empty scope or one with `..` or a root.
fn scope_key(scope: &Path) -> Option<String> {
    let mut parts = vec![];
    for c in scope.components() {
        match c {
            std::path::Component::Normal(p) => parts.push(p.to_string_lossy().into_owned()),
            std::path::Component::CurDir => {}
            _ => return None,
        }
    }
    (!parts.is_empty()).then(|| parts.join("/"))
}

/// Compares the files under `scope` with the known entries of the tree; `None` when the
/// scope cannot be judged alone (a symlink in it or on the way to it).
fn check_scope(
    dir: &Path,
    known: &artifact::Entries,
    digest: &str,
    scope: &str,
) -> Option<Result<(), ArtifactError>> {
    // Every directory on the way must be a real directory on disk and in Git.
    let mut on_the_way = PathBuf::new();
    for part in Path::new(scope).components() {
        on_the_way.push(part);
        let meta = std::fs::symlink_metadata(dir.join(&on_the_way)).ok()?;
        if !meta.is_dir() {
            return None;
        }
        let rel = on_the_way.to_string_lossy();
        if known.binary_search_by(|e| e.0.as_str().cmp(&rel)).is_ok() {
            return None; // a file or link in Git where a directory is on disk
        }
    }
    let prefix = format!("{scope}/");
    let start = known.partition_point(|e| e.0.as_str() < prefix.as_str());
    let expected: Vec<_> = known[start..]
        .iter()
        .take_while(|e| e.0.starts_with(&prefix))
        .cloned()
        .collect();
    if expected.iter().any(|e| artifact::is_link(e.1)) {
        return None;
    }
    let found = match artifact::entries_under(dir, &dir.join(scope)) {
        Ok(found) => found,
        Err(e) => return Some(Err(e)),
    };
    Some(if found == expected {
        Ok(())
    } else {
        Err(ArtifactError::DigestMismatch {
            path: dir.display().to_string(),
            expected: digest.to_string(),
            found: format!("other files under {scope}"),
        })
    })
}

/// Moves a sealed tree to another parent directory. Moving a directory to a new parent
/// rewrites its `..` entry, which needs write permission on the directory itself (root
/// skips that check, a non-root controller does not): the top is unsealed for the move
/// and sealed again in place.
fn move_sealed(from: &Path, to: &Path) -> std::io::Result<()> {
    use std::os::unix::fs::PermissionsExt;
    std::fs::set_permissions(from, std::fs::Permissions::from_mode(0o755))?;
    std::fs::rename(from, to)?;
    std::fs::set_permissions(to, std::fs::Permissions::from_mode(0o555))
}

/// The marker left beside a tree removed because it changed on disk.
fn tampered_marker(dir: &Path) -> PathBuf {
    let mut name = dir.file_name().unwrap_or_default().to_os_string();
    name.push(".tampered");
    dir.with_file_name(name)
}

/// Notes that the tree at `dir` was removed because it no longer matched its digest: the
/// next reader checks it out again at once instead of waiting for the source's next fetch.
pub fn mark_tampered(dir: &Path) {
    let _ = std::fs::write(tampered_marker(dir), b"");
}

/// Whether the tree at `dir` was removed for a digest mismatch (and clears the note).
pub fn take_tampered(dir: &Path) -> bool {
    std::fs::remove_file(tampered_marker(dir)).is_ok()
}

#[cfg(test)]
mod tests {
    use super::*;

    use crate::source::test_repo::{commit_files as repo_with, commit_on};

    #[test]
    fn a_leased_tree_survives_collection_and_the_rest_goes() {
        let src = tempfile::tempdir().unwrap();
        let (repo, first) = repo_with(src.path(), &[("a.yaml", "1")]);
        let data = tempfile::tempdir().unwrap();
        let store = ArtifactStore::new(data.path().to_path_buf());
        let (old, old_digest) = store.write("ns", "s", &repo, first, &[]).unwrap();
        let lease = store.lease(&old);
        std::fs::write(src.path().join("a.yaml"), "2").unwrap();
        let second = commit_on(&repo, first);
        let (new, _) = store.write("ns", "s", &repo, second, &[]).unwrap();
        store.collect("ns", "s", &new);
        assert!(old.is_dir(), "a tree being rendered is kept");
        artifact::verify(&old, &old_digest).unwrap();
        drop(lease);
        store.collect("ns", "s", &new);
        assert!(!old.exists());
        assert!(new.is_dir());
        // writing the same commit again keeps the tree in place
        let (again, _) = store.write("ns", "s", &repo, second, &[]).unwrap();
        assert_eq!(again, new);
        assert_eq!(
            std::fs::read_dir(store.source_dir("ns", "s"))
                .unwrap()
                .count(),
            1
        );
    }

    /// Makes a file of a sealed tree writable and removes it (what a disk cleaner or an
    /// intruder would do).
    fn remove_sealed(path: &Path) {
        use std::os::unix::fs::PermissionsExt;
        let parent = path.parent().unwrap();
        std::fs::set_permissions(parent, std::fs::Permissions::from_mode(0o755)).unwrap();
        std::fs::remove_file(path).unwrap();
    }

    #[test]
    fn a_render_scope_is_checked_alone_once_the_tree_is_known() {
        let src = tempfile::tempdir().unwrap();
        let files = [
            ("apps/a/objects.yaml", "a: 1"),
            ("apps/b/objects.yaml", "b: 1"),
            ("README.md", "r"),
        ];
        let (repo, commit) = repo_with(src.path(), &files);
        let data = tempfile::tempdir().unwrap();
        let store = ArtifactStore::new(data.path().to_path_buf());
        let (dir, digest) = store.write("ns", "s", &repo, commit, &[]).unwrap();
        // Written by this process: its entries are known, a scope is checked alone.
        store
            .verify(&dir, &digest, Some(Path::new("apps/a")))
            .unwrap();
        store
            .verify(&dir, &digest, Some(Path::new("./apps/b/")))
            .unwrap();
        // A file removed outside the scope is not this render's concern...
        remove_sealed(&dir.join("apps/b/objects.yaml"));
        store
            .verify(&dir, &digest, Some(Path::new("apps/a")))
            .unwrap();
        // ...but it is found by the render that reads it, and the tree is removed.
        let err = store
            .verify(&dir, &digest, Some(Path::new("apps/b")))
            .unwrap_err();
        assert!(matches!(err, ArtifactError::DigestMismatch { .. }), "{err}");
        assert!(!dir.exists());
        assert!(take_tampered(&dir));
    }

    #[test]
    fn an_unknown_tree_is_hashed_whole_even_for_a_scope() {
        let src = tempfile::tempdir().unwrap();
        let (repo, commit) = repo_with(src.path(), &[("apps/a/x.yaml", "1"), ("b.yaml", "2")]);
        let data = tempfile::tempdir().unwrap();
        let (dir, digest) = ArtifactStore::new(data.path().to_path_buf())
            .write("ns", "s", &repo, commit, &[])
            .unwrap();
        // A restarted controller knows no entries: the first check hashes everything.
        let restarted = ArtifactStore::new(data.path().to_path_buf());
        remove_sealed(&dir.join("b.yaml"));
        let err = restarted
            .verify(&dir, &digest, Some(Path::new("apps/a")))
            .unwrap_err();
        assert!(matches!(err, ArtifactError::DigestMismatch { .. }), "{err}");
    }

    #[test]
    fn a_scope_with_a_link_or_a_wrong_digest_is_checked_whole() {
        let src = tempfile::tempdir().unwrap();
        let (repo, commit) = repo_with(src.path(), &[("apps/a/x.yaml", "1"), ("shared.yaml", "2")]);
        std::os::unix::fs::symlink("../../shared.yaml", src.path().join("apps/a/link.yaml"))
            .unwrap();
        let commit = commit_on(&repo, commit);
        let data = tempfile::tempdir().unwrap();
        let store = ArtifactStore::new(data.path().to_path_buf());
        let (dir, digest) = store.write("ns", "s", &repo, commit, &[]).unwrap();
        store
            .verify(&dir, &digest, Some(Path::new("apps/a")))
            .unwrap();
        // The link's target lies outside the scope: its removal is found all the same.
        remove_sealed(&dir.join("shared.yaml"));
        assert!(
            store
                .verify(&dir, &digest, Some(Path::new("apps/a")))
                .is_err()
        );
        // A digest other than the known one is never taken on trust.
        let (dir, digest) = store.write("ns", "s", &repo, commit, &[]).unwrap();
        assert!(
            store
                .verify(&dir, "sha256:00", Some(Path::new("apps/a")))
                .is_err()
        );
        let _ = digest;
    }

    #[test]
    fn a_new_tree_shares_the_unchanged_files_of_the_last_one() {
        use std::os::unix::fs::MetadataExt;
        let src = tempfile::tempdir().unwrap();
        let (repo, first) = repo_with(src.path(), &[("a/x.yaml", "1"), ("b/y.yaml", "2")]);
        let data = tempfile::tempdir().unwrap();
        let store = ArtifactStore::new(data.path().to_path_buf());
        let (old, _) = store.write("ns", "s", &repo, first, &[]).unwrap();
        std::fs::write(src.path().join("b/y.yaml"), "3").unwrap();
        let second = commit_on(&repo, first);
        let (new, digest) = store.write("ns", "s", &repo, second, &[]).unwrap();
        let ino = |p: &Path| std::fs::metadata(p).unwrap().ino();
        assert_eq!(ino(&old.join("a/x.yaml")), ino(&new.join("a/x.yaml")));
        assert_ne!(ino(&old.join("b/y.yaml")), ino(&new.join("b/y.yaml")));
        assert_eq!(std::fs::read_to_string(new.join("b/y.yaml")).unwrap(), "3");
        // The shared tree is whole: a fresh process hashes it to the same digest, and
        // removing the old tree leaves it intact.
        store.collect("ns", "s", &new);
        assert!(!old.exists());
        artifact::verify(&new, &digest).unwrap();
    }
}
