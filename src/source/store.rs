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

pub struct ArtifactStore {
    root: PathBuf,
    leases: Arc<Mutex<Leases>>,
}

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
        let written = artifact::write_tree(repo, commit, &tree, ignore)
            .and_then(|digest| artifact::seal_dirs(&tree).map(|_| digest));
        let digest = match written {
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
        Ok((dest, digest))
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
                artifact::remove(&path);
            }
        }
    }

    /// Removes all artifacts of a source (it was deleted).
    pub fn remove_source(&self, namespace: &str, name: &str) {
        artifact::remove(&self.source_dir(namespace, name));
    }
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

    fn repo_with(dir: &Path, files: &[(&str, &str)]) -> (git2::Repository, git2::Oid) {
        let repo = git2::Repository::init(dir).unwrap();
        for (p, c) in files {
            std::fs::create_dir_all(dir.join(p).parent().unwrap()).unwrap();
            std::fs::write(dir.join(p), c).unwrap();
        }
        let mut index = repo.index().unwrap();
        index
            .add_all(["*"], git2::IndexAddOption::DEFAULT, None)
            .unwrap();
        let tree = repo.find_tree(index.write_tree().unwrap()).unwrap();
        let sig = git2::Signature::now("t", "t@example.com").unwrap();
        let oid = repo
            .commit(Some("HEAD"), &sig, &sig, "c", &tree, &[])
            .unwrap();
        drop(tree);
        (repo, oid)
    }

    #[test]
    fn a_leased_tree_survives_collection_and_the_rest_goes() {
        let src = tempfile::tempdir().unwrap();
        let (repo, first) = repo_with(src.path(), &[("a.yaml", "1")]);
        let data = tempfile::tempdir().unwrap();
        let store = ArtifactStore::new(data.path().to_path_buf());
        let (old, old_digest) = store.write("ns", "s", &repo, first, &[]).unwrap();
        let lease = store.lease(&old);
        std::fs::write(src.path().join("a.yaml"), "2").unwrap();
        let (_, second) = {
            let mut index = repo.index().unwrap();
            index
                .add_all(["*"], git2::IndexAddOption::DEFAULT, None)
                .unwrap();
            let tree = repo.find_tree(index.write_tree().unwrap()).unwrap();
            let sig = git2::Signature::now("t", "t@example.com").unwrap();
            let parent = repo.find_commit(first).unwrap();
            let oid = repo
                .commit(Some("HEAD"), &sig, &sig, "c2", &tree, &[&parent])
                .unwrap();
            ((), oid)
        };
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
}
