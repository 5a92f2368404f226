//! Artifacts: the tree of one commit written to a directory, with a content digest.
//! Symlinks that point outside the repository are refused (TESTING.md row 1).

use std::path::{Component, Path, PathBuf};

use git2::{ObjectType, Repository, TreeWalkMode, TreeWalkResult};
use sha2::{Digest, Sha256};

#[derive(Debug, thiserror::Error)]
pub enum ArtifactError {
    #[error("symlink {path} points outside the repository ({target}); refusing the source")]
    SymlinkEscapes { path: String, target: String },
    #[error("unsafe path {0:?} in the repository tree")]
    UnsafePath(String),
    #[error("git: {0}")]
    Git(#[from] git2::Error),
    #[error("{path}: {source}")]
    Io {
        path: String,
        #[source]
        source: std::io::Error,
    },
}

fn io(path: &Path, source: std::io::Error) -> ArtifactError {
    ArtifactError::Io {
        path: path.display().to_string(),
        source,
    }
}

/// Whether `target` (a symlink's content) stays inside the repository when resolved
/// lexically from the directory `link_dir` (relative to the root).
pub fn symlink_stays_inside(link_dir: &Path, target: &str) -> bool {
    let target = Path::new(target);
    if target.is_absolute() {
        return false;
    }
    let mut depth: i64 = link_dir
        .components()
        .filter(|c| matches!(c, Component::Normal(_)))
        .count() as i64;
    for c in target.components() {
        match c {
            Component::Normal(_) => depth += 1,
            Component::ParentDir => {
                depth -= 1;
                if depth < 0 {
                    return false;
                }
            }
            Component::CurDir => {}
            Component::RootDir | Component::Prefix(_) => return false,
        }
    }
    true
}

/// A matcher for the GitRepository's gitignore-style `ignore` patterns.
pub fn ignore_matcher(patterns: &[String]) -> Result<ignore::gitignore::Gitignore, ArtifactError> {
    let mut builder = ignore::gitignore::GitignoreBuilder::new("/");
    for p in patterns {
        builder
            .add_line(None, p)
            .map_err(|e| ArtifactError::UnsafePath(format!("invalid ignore pattern {p:?}: {e}")))?;
    }
    builder
        .build()
        .map_err(|e| ArtifactError::UnsafePath(format!("invalid ignore patterns: {e}")))
}

/// Writes the tree of `commit` into `dest` (which must not exist), leaving out paths that
/// match `ignore`, and returns the digest `sha256:<hex>` of the written entries (path, mode,
/// blob id).
pub fn write_tree(
    repo: &Repository,
    commit: git2::Oid,
    dest: &Path,
    ignore: &[String],
) -> Result<String, ArtifactError> {
    let matcher = ignore_matcher(ignore)?;
    let tree = repo.find_commit(commit)?.tree()?;
    let mut entries: Vec<(String, i32, git2::Oid)> = vec![];
    let mut walk_err: Option<ArtifactError> = None;
    tree.walk(TreeWalkMode::PreOrder, |dir, entry| {
        let Ok(name) = entry.name() else {
            walk_err = Some(ArtifactError::UnsafePath(format!("{dir}<non-utf8>")));
            return TreeWalkResult::Abort;
        };
        let rel = format!("{dir}{name}");
        if name == ".." || name == "." || name.contains('\\') {
            walk_err = Some(ArtifactError::UnsafePath(rel));
            return TreeWalkResult::Abort;
        }
        let is_dir = entry.kind() == Some(ObjectType::Tree);
        if matcher
            .matched_path_or_any_parents(Path::new("/").join(&rel), is_dir)
            .is_ignore()
        {
            return if is_dir {
                TreeWalkResult::Skip
            } else {
                TreeWalkResult::Ok
            };
        }
        if entry.kind() == Some(ObjectType::Blob) {
            entries.push((rel, entry.filemode(), entry.id()));
        }
        TreeWalkResult::Ok
    })?;
    if let Some(e) = walk_err {
        return Err(e);
    }
    entries.sort();

    std::fs::create_dir_all(dest).map_err(|e| io(dest, e))?;
    let mut hasher = Sha256::new();
    for (rel, mode, oid) in &entries {
        hasher.update(rel.as_bytes());
        hasher.update([0]);
        hasher.update(mode.to_be_bytes());
        hasher.update(oid.as_bytes());
        let blob = repo.find_blob(*oid)?;
        let path: PathBuf = dest.join(rel);
        if let Some(parent) = path.parent() {
            std::fs::create_dir_all(parent).map_err(|e| io(parent, e))?;
        }
        if *mode == 0o120000 {
            let target = String::from_utf8_lossy(blob.content()).into_owned();
            let link_dir = Path::new(rel).parent().unwrap_or(Path::new(""));
            if !symlink_stays_inside(link_dir, &target) {
                return Err(ArtifactError::SymlinkEscapes {
                    path: rel.clone(),
                    target,
                });
            }
            std::os::unix::fs::symlink(&target, &path).map_err(|e| io(&path, e))?;
        } else if *mode == 0o160000 {
            continue; // submodule: not part of the artifact
        } else {
            std::fs::write(&path, blob.content()).map_err(|e| io(&path, e))?;
        }
    }
    Ok(format!("sha256:{}", hex::encode(hasher.finalize())))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn commit_files(dir: &Path, files: &[(&str, &str)]) -> (Repository, git2::Oid) {
        let repo = Repository::init(dir).unwrap();
        for (path, content) in files {
            let p = dir.join(path);
            std::fs::create_dir_all(p.parent().unwrap()).unwrap();
            std::fs::write(p, content).unwrap();
        }
        let mut index = repo.index().unwrap();
        index
            .add_all(["*"], git2::IndexAddOption::DEFAULT, None)
            .unwrap();
        let tree_id = index.write_tree().unwrap();
        let sig = git2::Signature::now("t", "t@example.com").unwrap();
        let oid = {
            let tree = repo.find_tree(tree_id).unwrap();
            repo.commit(Some("HEAD"), &sig, &sig, "c", &tree, &[])
                .unwrap()
        };
        (repo, oid)
    }

    #[test]
    fn ignore_patterns_leave_files_out_and_change_the_digest() {
        let src = tempfile::tempdir().unwrap();
        let (repo, oid) = commit_files(
            src.path(),
            &[
                ("deploy/a.yaml", "a"),
                ("README.md", "r"),
                ("drafts/x.yaml", "x"),
            ],
        );
        let all = tempfile::tempdir().unwrap();
        let d_all = write_tree(&repo, oid, &all.path().join("t"), &[]).unwrap();
        let some = tempfile::tempdir().unwrap();
        let d_some = write_tree(
            &repo,
            oid,
            &some.path().join("t"),
            &["*.md".into(), "drafts/".into()],
        )
        .unwrap();
        assert!(some.path().join("t/deploy/a.yaml").exists());
        assert!(!some.path().join("t/README.md").exists());
        assert!(!some.path().join("t/drafts/x.yaml").exists());
        assert!(all.path().join("t/drafts/x.yaml").exists());
        assert_ne!(d_all, d_some);
    }

    #[test]
    fn symlinks_inside_are_fine() {
        assert!(symlink_stays_inside(Path::new("a/b"), "../c.yaml"));
        assert!(symlink_stays_inside(Path::new(""), "dir/x"));
        assert!(symlink_stays_inside(Path::new("a"), "./b/../c"));
    }

    #[test]
    fn symlinks_that_leave_are_refused() {
        assert!(!symlink_stays_inside(Path::new(""), "../etc/passwd"));
        assert!(!symlink_stays_inside(Path::new("a"), "../../x"));
        assert!(!symlink_stays_inside(Path::new("a"), "/etc/passwd"));
        assert!(!symlink_stays_inside(Path::new("a/b"), "../../../x"));
    }
}
