//! Which Applications a new artifact of a shared source concerns first: those whose path
//! holds a file the new commit changed. They are woken at once; the others (a commit
//! elsewhere: recorded as applied, one status write each) a moment later, so that at
//! thousands of Applications per repository the one a commit changed is not queued behind
//! all the others. Only the order changes: every Application is still reconciled.

use std::path::Path;

/// The commit id of a revision `name@sha1:<hex>`.
fn commit_of(revision: &str) -> Option<&str> {
    revision.rsplit_once("sha1:").map(|(_, c)| c)
}

/// The paths (files) that differ between the trees of two revisions in the bare clone at
/// `git_dir`; `None` when either commit is not there (the diff then orders nothing).
pub fn changed_paths(git_dir: &Path, old: &str, new: &str) -> Option<Vec<String>> {
    let repo = git2::Repository::open_bare(git_dir).ok()?;
    let tree = |revision: &str| {
        let oid = git2::Oid::from_str(commit_of(revision)?).ok()?;
        repo.find_commit(oid).ok()?.tree().ok()
    };
    let (old, new) = (tree(old)?, tree(new)?);
    let diff = repo.diff_tree_to_tree(Some(&old), Some(&new), None).ok()?;
    let mut paths = vec![];
    for delta in diff.deltas() {
        for file in [delta.old_file(), delta.new_file()] {
            if let Some(p) = file.path().and_then(Path::to_str) {
                paths.push(p.to_string());
            }
        }
    }
    paths.sort();
    paths.dedup();
    Some(paths)
}

/// Whether a change of `changed` files concerns an Application rendering `app_path` (pure).
/// The repository's root concerns every change.
pub fn concerns(app_path: &str, changed: &[String]) -> bool {
    let dir = app_path.trim_start_matches("./").trim_matches('/');
    if dir.is_empty() || dir == "." {
        return true;
    }
    changed.iter().any(|p| {
        p == dir
            || p.strip_prefix(dir)
                .is_some_and(|rest| rest.starts_with('/'))
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn an_application_is_concerned_by_changes_under_its_path_only() {
        let changed = vec!["apps/a00042/objects.yaml".to_string()];
        assert!(concerns("apps/a00042", &changed));
        assert!(concerns("./apps/a00042/", &changed));
        assert!(
            !concerns("apps/a0004", &changed),
            "a prefix of a name is another path"
        );
        assert!(!concerns("apps/a00043", &changed));
        assert!(concerns("", &changed), "the root");
        assert!(concerns("./", &changed));
        assert!(concerns("apps", &changed));
        assert!(!concerns("apps/a00043", &[]));
    }

    #[test]
    fn the_changed_files_of_two_commits_are_found_in_the_bare_clone() {
        let dir = tempfile::tempdir().unwrap();
        let repo = git2::Repository::init_bare(dir.path()).unwrap();
        let sig = git2::Signature::now("t", "t@example.com").unwrap();
        let commit = |files: &[(&str, &str)], parent: Option<git2::Oid>| {
            let mut index = git2::Index::new().unwrap();
            for (path, content) in files {
                let blob = repo.blob(content.as_bytes()).unwrap();
                let entry = git2::IndexEntry {
                    ctime: git2::IndexTime::new(0, 0),
                    mtime: git2::IndexTime::new(0, 0),
                    dev: 0,
                    ino: 0,
                    mode: 0o100644,
                    uid: 0,
                    gid: 0,
                    file_size: content.len() as u32,
                    id: blob,
                    flags: 0,
                    flags_extended: 0,
                    path: path.as_bytes().to_vec(),
                };
                index.add(&entry).unwrap();
            }
            let tree = repo.find_tree(index.write_tree_to(&repo).unwrap()).unwrap();
            let parents: Vec<git2::Commit> = parent
                .iter()
                .map(|p| repo.find_commit(*p).unwrap())
                .collect();
            let parents: Vec<&git2::Commit> = parents.iter().collect();
            repo.commit(None, &sig, &sig, "c", &tree, &parents).unwrap()
        };
        let first = commit(&[("apps/a/x.yaml", "1"), ("apps/b/x.yaml", "1")], None);
        let second = commit(
            &[("apps/a/x.yaml", "1"), ("apps/b/x.yaml", "2")],
            Some(first),
        );
        let rev = |oid: git2::Oid| format!("main@sha1:{oid}");
        assert_eq!(
            changed_paths(dir.path(), &rev(first), &rev(second)),
            Some(vec!["apps/b/x.yaml".to_string()])
        );
        let missing = "main@sha1:0123456789012345678901234567890123456789";
        assert_eq!(changed_paths(dir.path(), missing, &rev(second)), None);
    }
}
