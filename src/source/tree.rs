//! Walking a Git tree that a tenant wrote: iteratively (an explicit stack, never recursion
//! on a worker's stack, so a tree nested 60,000 deep is an error, not a crash) and within
//! bounds on depth and entries, checked as the walk goes, before anything is written.

use git2::{ObjectType, Oid, Repository, TreeEntry};

/// Deepest directory nesting accepted. Real repositories stay far below it; paths this deep
/// approach the kernel's `PATH_MAX` anyway.
pub const MAX_DEPTH: usize = 128;
/// Most entries (files, links and directories) in one tree. The 50,000-file monorepo of the
/// benchmarks is a tenth of it.
pub const MAX_ENTRIES: usize = 500_000;

#[derive(Debug, thiserror::Error)]
pub enum TreeError {
    #[error(
        "the repository tree nests deeper than {limit} directories (at {path:?}); refusing the source"
    )]
    TooDeep { path: String, limit: usize },
    #[error("the repository tree holds more than {limit} entries; refusing the source")]
    TooManyEntries { limit: usize },
    #[error("unsafe path {0:?} in the repository tree")]
    UnsafeName(String),
    #[error("git: {0}")]
    Git(#[from] git2::Error),
}

/// Bounds of one walk.
#[derive(Debug, Clone, Copy)]
pub struct Limits {
    pub max_depth: usize,
    pub max_entries: usize,
}

impl Default for Limits {
    fn default() -> Self {
        Self {
            max_depth: MAX_DEPTH,
            max_entries: MAX_ENTRIES,
        }
    }
}

/// What the visitor wants done with a directory entry.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Visit {
    /// Walk into it (for directories; ignored for files).
    Enter,
    /// Leave it out, with everything below it.
    Skip,
}

/// Visits every entry below `root` in pre-order (directories before their contents,
/// siblings in Git's order), with its path relative to `root` (`a/b/c.yaml`). Names that
/// could climb or hide (`.`, `..`, a backslash, a slash, non-UTF-8) stop the walk.
pub fn walk(
    repo: &Repository,
    root: Oid,
    limits: Limits,
    mut visit: impl FnMut(&str, &TreeEntry<'_>) -> Visit,
) -> Result<(), TreeError> {
    // (tree, its path with a trailing slash or empty, depth of its entries)
    let mut stack: Vec<(Oid, String, usize)> = vec![(root, String::new(), 1)];
    let mut seen = 0usize;
    while let Some((oid, prefix, depth)) = stack.pop() {
        let tree = repo.find_tree(oid)?;
        let mut subtrees = vec![];
        for entry in tree.iter() {
            seen += 1;
            if seen > limits.max_entries {
                return Err(TreeError::TooManyEntries {
                    limit: limits.max_entries,
                });
            }
            let Ok(name) = entry.name() else {
                return Err(TreeError::UnsafeName(format!("{prefix}<non-utf8>")));
            };
            let rel = format!("{prefix}{name}");
            if name.is_empty() || name == "." || name == ".." || name.contains(['\\', '/']) {
                return Err(TreeError::UnsafeName(rel));
            }
            let is_dir = entry.kind() == Some(ObjectType::Tree);
            if visit(&rel, &entry) == Visit::Enter && is_dir {
                if depth + 1 > limits.max_depth {
                    return Err(TreeError::TooDeep {
                        path: shorten(&rel),
                        limit: limits.max_depth,
                    });
                }
                subtrees.push((entry.id(), format!("{rel}/"), depth + 1));
            }
        }
        // Reversed so that the first subdirectory is walked first (pre-order).
        stack.extend(subtrees.into_iter().rev());
    }
    Ok(())
}

/// A path cut to its first 200 bytes for a message (a deep path is long).
fn shorten(path: &str) -> String {
    if path.len() <= 200 {
        return path.to_string();
    }
    let mut end = 200;
    while !path.is_char_boundary(end) {
        end -= 1;
    }
    format!("{}…", &path[..end])
}

#[cfg(test)]
pub(crate) mod tests {
    use super::*;

    /// A commit whose tree nests `depth` directories named `d`, with one file at the bottom.
    /// Built bottom-up with tree builders (fast even for 60,000 levels).
    pub(crate) fn deep_commit(repo: &Repository, depth: usize) -> Oid {
        let blob = repo.blob(b"x").unwrap();
        let mut b = repo.treebuilder(None).unwrap();
        b.insert("f", blob, 0o100644).unwrap();
        let mut tree = b.write().unwrap();
        for _ in 0..depth {
            let mut b = repo.treebuilder(None).unwrap();
            b.insert("d", tree, 0o040000).unwrap();
            tree = b.write().unwrap();
        }
        let tree = repo.find_tree(tree).unwrap();
        let sig = git2::Signature::now("t", "t@example.com").unwrap();
        repo.commit(None, &sig, &sig, "deep", &tree, &[]).unwrap()
    }

    fn tree_of(repo: &Repository, commit: Oid) -> Oid {
        repo.find_commit(commit).unwrap().tree_id()
    }

    #[test]
    fn a_tree_nested_60000_deep_is_an_error_not_a_stack_overflow() {
        let dir = tempfile::tempdir().unwrap();
        let repo = Repository::init_bare(dir.path()).unwrap();
        let commit = deep_commit(&repo, 60_000);
        // On a small stack, as a worker thread would have.
        let path = dir.path().to_path_buf();
        let err = std::thread::Builder::new()
            .stack_size(256 * 1024)
            .spawn(move || {
                let repo = Repository::open_bare(&path).unwrap();
                walk(&repo, tree_of(&repo, commit), Limits::default(), |_, _| {
                    Visit::Enter
                })
                .unwrap_err()
            })
            .unwrap()
            .join()
            .unwrap();
        assert!(
            matches!(
                err,
                TreeError::TooDeep {
                    limit: MAX_DEPTH,
                    ..
                }
            ),
            "{err}"
        );
        assert!(err.to_string().len() < 400, "{err}");
    }

    #[test]
    fn walks_in_pre_order_within_the_limits_and_skips_what_is_skipped() {
        let dir = tempfile::tempdir().unwrap();
        let repo = Repository::init_bare(dir.path()).unwrap();
        let commit = deep_commit(&repo, 3);
        let mut seen = vec![];
        walk(&repo, tree_of(&repo, commit), Limits::default(), |p, _| {
            seen.push(p.to_string());
            Visit::Enter
        })
        .unwrap();
        assert_eq!(seen, ["d", "d/d", "d/d/d", "d/d/d/f"]);
        let mut seen = vec![];
        walk(&repo, tree_of(&repo, commit), Limits::default(), |p, _| {
            seen.push(p.to_string());
            if p == "d/d" {
                Visit::Skip
            } else {
                Visit::Enter
            }
        })
        .unwrap();
        assert_eq!(seen, ["d", "d/d"]);
        let tight = Limits {
            max_depth: 3,
            max_entries: 100,
        };
        assert!(matches!(
            walk(&repo, tree_of(&repo, commit), tight, |_, _| Visit::Enter),
            Err(TreeError::TooDeep { .. })
        ));
        let few = Limits {
            max_depth: 10,
            max_entries: 2,
        };
        assert!(matches!(
            walk(&repo, tree_of(&repo, commit), few, |_, _| Visit::Enter),
            Err(TreeError::TooManyEntries { limit: 2 })
        ));
    }
}
