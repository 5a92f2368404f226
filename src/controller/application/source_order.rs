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
    fn the_changed_files_of_two_commits_are_found_in_the_clone() {
        use crate::source::test_repo::{commit_files, commit_on};
        let dir = tempfile::tempdir().unwrap();
        let (repo, first) = commit_files(
            dir.path(),
            &[("apps/a/x.yaml", "1"), ("apps/b/x.yaml", "1")],
        );
        std::fs::write(dir.path().join("apps/b/x.yaml"), "2").unwrap();
        let second = commit_on(&repo, first);
        let rev = |oid: git2::Oid| format!("main@sha1:{oid}");
        let git_dir = dir.path().join(".git");
        assert_eq!(
            changed_paths(&git_dir, &rev(first), &rev(second)),
            Some(vec!["apps/b/x.yaml".to_string()])
        );
        let missing = "main@sha1:0123456789012345678901234567890123456789";
        assert_eq!(changed_paths(&git_dir, missing, &rev(second)), None);
    }
}
