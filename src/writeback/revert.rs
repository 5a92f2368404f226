//! `git revert` of the commits after a revision that touched a path, as new commits on the
//! branch, pushed without force (rebuilt on the new head after a non-fast-forward).
//! Blocking: run on a blocking thread.

use std::path::Path;
use std::time::{Duration, Instant};

use git2::{DiffFormat, DiffOptions, Oid, Repository, Signature, Sort};

use super::repo::{self, Target, WriteBackError};
use crate::source::git::{self, Reference};

/// Commits walked back from the head to find the target revision.
const MAX_COMMITS: usize = 1000;

/// A commit to revert.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Reverted {
    pub id: String,
    pub summary: String,
}

/// What a rollback does (or did).
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Plan {
    pub head: String,
    /// Newest first.
    pub commits: Vec<Reverted>,
    /// Unified diff of `path` from the head back to the target (what the reverts undo).
    pub diff: String,
    /// The pushed tip, when pushed.
    pub pushed: Option<String>,
}

#[derive(Debug, thiserror::Error)]
pub enum RevertError {
    #[error(transparent)]
    WriteBack(#[from] WriteBackError),
    #[error(transparent)]
    Git(#[from] git::GitError),
    #[error("{0}")]
    Repo(String),
    #[error("commit {0} is not an ancestor of the branch head (within {MAX_COMMITS} commits)")]
    NotAncestor(String),
    #[error("reverting {commit} conflicts with later changes in {paths}; revert by hand")]
    Conflict { commit: String, paths: String },
    #[error("revert task failed: {0}")]
    Task(String),
}

impl From<git2::Error> for RevertError {
    fn from(e: git2::Error) -> Self {
        RevertError::Repo(e.message().to_string())
    }
}

fn normalize(path: &str) -> String {
    path.split('/')
        .filter(|c| !c.is_empty() && *c != ".")
        .collect::<Vec<_>>()
        .join("/")
}

fn touches(commit: &git2::Commit<'_>, prefix: &str) -> Result<bool, RevertError> {
    let tree = commit.tree()?;
    let parent = match commit.parent(0) {
        Ok(p) => Some(p.tree()?),
        Err(_) => None,
    };
    if prefix.is_empty() {
        return Ok(parent.map(|p| p.id()) != Some(tree.id()));
    }
    let at = |t: Option<&git2::Tree<'_>>| {
        t.and_then(|t| t.get_path(Path::new(prefix)).ok())
            .map(|e| e.id())
    };
    Ok(at(Some(&tree)) != at(parent.as_ref()))
}

/// The commits after `to` (exclusive) up to `head` that touched `path`, newest first.
fn commits_after(
    repo: &Repository,
    head: Oid,
    to: Oid,
    prefix: &str,
) -> Result<Vec<Reverted>, RevertError> {
    let mut walk = repo.revwalk()?;
    walk.push(head)?;
    walk.simplify_first_parent()?;
    walk.set_sorting(Sort::TOPOLOGICAL)?;
    let mut out = Vec::new();
    for oid in walk.take(MAX_COMMITS) {
        let oid = oid?;
        if oid == to {
            return Ok(out);
        }
        let commit = repo.find_commit(oid)?;
        if touches(&commit, prefix)? {
            out.push(Reverted {
                id: oid.to_string(),
                summary: commit
                    .summary()
                    .ok()
                    .flatten()
                    .unwrap_or_default()
                    .to_string(),
            });
        }
    }
    Err(RevertError::NotAncestor(to.to_string()))
}

fn diff_text(repo: &Repository, from: Oid, to: Oid, prefix: &str) -> Result<String, RevertError> {
    let a = repo.find_commit(from)?.tree()?;
    let b = repo.find_commit(to)?.tree()?;
    let mut opts = DiffOptions::new();
    if !prefix.is_empty() {
        opts.pathspec(prefix);
    }
    let diff = repo.diff_tree_to_tree(Some(&a), Some(&b), Some(&mut opts))?;
    let mut text = String::new();
    diff.print(DiffFormat::Patch, |_, _, line| {
        let origin = line.origin();
        if matches!(origin, '+' | '-' | ' ') {
            text.push(origin);
        }
        text.push_str(&String::from_utf8_lossy(line.content()));
        true
    })?;
    Ok(text)
}

/// The subtree at `prefix` of `tree`, or the empty tree when there is none.
fn subtree(repo: &Repository, tree: &git2::Tree<'_>, prefix: &str) -> Result<Oid, RevertError> {
    if prefix.is_empty() {
        return Ok(tree.id());
    }
    match tree.get_path(Path::new(prefix)) {
        Ok(e) if e.kind() == Some(git2::ObjectType::Tree) => Ok(e.id()),
        _ => Ok(repo.treebuilder(None)?.write()?),
    }
}

/// The tree of `tip` with the changes `commit` made under `prefix` undone (a three-way
/// merge of that subtree alone, as `git revert` does for the whole tree); everything outside
/// `prefix` stays as it is on `tip`, so a commit that also changed other paths keeps those
/// changes.
fn revert_under(
    repo: &Repository,
    commit: &git2::Commit<'_>,
    tip: &git2::Commit<'_>,
    prefix: &str,
) -> Result<Oid, RevertError> {
    let parent_tree = match commit.parent(0) {
        Ok(p) => p.tree()?,
        Err(_) => repo.find_tree(repo.treebuilder(None)?.write()?)?,
    };
    let tip_tree = tip.tree()?;
    let ancestor = repo.find_tree(subtree(repo, &commit.tree()?, prefix)?)?;
    let ours = repo.find_tree(subtree(repo, &tip_tree, prefix)?)?;
    let theirs = repo.find_tree(subtree(repo, &parent_tree, prefix)?)?;
    let mut index = repo.merge_trees(&ancestor, &ours, &theirs, None)?;
    if index.has_conflicts() {
        let paths: Vec<String> = index
            .conflicts()?
            .filter_map(|c| c.ok())
            .filter_map(|c| c.our.or(c.their).or(c.ancestor))
            .map(|e| {
                let p = String::from_utf8_lossy(&e.path).into_owned();
                if prefix.is_empty() {
                    p
                } else {
                    format!("{prefix}/{p}")
                }
            })
            .collect();
        return Err(RevertError::Conflict {
            commit: commit.id().to_string(),
            paths: paths.join(", "),
        });
    }
    let reverted = index.write_tree_to(repo)?;
    if prefix.is_empty() {
        return Ok(reverted);
    }
    let mut update = git2::build::TreeUpdateBuilder::new();
    if repo.find_tree(reverted)?.is_empty() {
        update.remove(prefix);
    } else {
        update.upsert(prefix, reverted, git2::FileMode::Tree);
    }
    Ok(update.create_updated(repo, &tip_tree)?)
}

/// A revert to plan or push, owned so it runs on a blocking thread: the one entry point of
/// `gantry rollback` and of a canary's `onFailure: revert`.
pub struct Request {
    /// The clone to fetch into (full history, bare; created when missing).
    pub cache: std::path::PathBuf,
    pub url: String,
    pub branch: String,
    pub creds: Option<git::Credentials>,
    /// The Application's path: only changes under it are reverted.
    pub path: String,
    /// The commit to return the path to.
    pub to: String,
    /// (name, email) of the revert commits.
    pub author: (String, String),
    /// Signs the revert commits (an SSH signature) when given.
    pub signing_key: Option<ssh_key::PrivateKey>,
    /// A paragraph added to each commit message.
    pub note: String,
    pub dry_run: bool,
    pub timeout: Duration,
}

/// Runs [`rollback`] for `req` on a blocking thread.
pub async fn run(req: Request) -> Result<Plan, RevertError> {
    tokio::task::spawn_blocking(move || {
        if let Some(parent) = req.cache.parent() {
            let _ = std::fs::create_dir_all(parent);
        }
        let target = Target {
            url: &req.url,
            branch: &req.branch,
            creds: req.creds.as_ref(),
            deadline: Instant::now() + req.timeout,
        };
        rollback(
            &req.cache,
            &target,
            &req.path,
            &req.to,
            (&req.author.0, &req.author.1, req.signing_key.as_ref()),
            &req.note,
            req.dry_run,
        )
    })
    .await
    .map_err(|e| RevertError::Task(e.to_string()))?
}

/// Plans (and unless `dry_run`, pushes) revert commits bringing `path` back to `to`.
pub fn rollback(
    cache: &Path,
    target: &Target<'_>,
    path: &str,
    to: &str,
    author: (&str, &str, Option<&ssh_key::PrivateKey>),
    note: &str,
    dry_run: bool,
) -> Result<Plan, RevertError> {
    let prefix = normalize(path);
    let reference = Reference::Branch(target.branch.to_string());
    let to_oid =
        Oid::from_str(to).map_err(|_| RevertError::Repo(format!("{to} is not a commit id")))?;
    for attempt in 1..=6u32 {
        let fetched =
            git::fetch_full(cache, target.url, &reference, target.creds, target.deadline)?;
        let repo = Repository::open_bare(cache)?;
        let head = Oid::from_str(&fetched.commit)?;
        let commits = commits_after(&repo, head, to_oid, &prefix)?;
        let mut plan = Plan {
            head: head.to_string(),
            diff: diff_text(&repo, head, to_oid, &prefix)?,
            commits,
            pushed: None,
        };
        if dry_run || plan.commits.is_empty() {
            return Ok(plan);
        }
        let sig = Signature::now(author.0, author.1)?;
        let mut tip = repo.find_commit(head)?;
        for c in &plan.commits {
            let commit = repo.find_commit(Oid::from_str(&c.id)?)?;
            let tree = repo.find_tree(revert_under(&repo, &commit, &tip, &prefix)?)?;
            let message = if prefix.is_empty() {
                format!(
                    "Revert \"{}\"\n\nThis reverts commit {}.\n\n{note}\n",
                    c.summary, c.id
                )
            } else {
                format!(
                    "Revert \"{}\"\n\nThis reverts commit {}, under {prefix}/ only: its changes \
                     to other paths are kept.\n\n{note}\n",
                    c.summary, c.id
                )
            };
            let oid = super::repo::create_commit(&repo, &sig, &message, &tree, &[&tip], author.2)?;
            tip = repo.find_commit(oid)?;
        }
        match repo::push_commit(&repo, target, tip.id()) {
            Ok(true) => {
                plan.pushed = Some(tip.id().to_string());
                return Ok(plan);
            }
            Ok(false) => {
                std::thread::sleep(Duration::from_millis(100 * 2u64.pow(attempt.min(5))));
                if Instant::now() >= target.deadline {
                    break;
                }
            }
            Err(e) => return Err(e.into()),
        }
    }
    Err(WriteBackError::Busy {
        url: crate::source::url_policy::redact(target.url),
        branch: target.branch.to_string(),
        attempts: 6,
    }
    .into())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn commit_file(
        repo: &Repository,
        parent: Option<Oid>,
        path: &str,
        text: &str,
        msg: &str,
    ) -> Oid {
        let mut builder = match parent {
            Some(p) => repo
                .treebuilder(Some(&repo.find_commit(p).unwrap().tree().unwrap()))
                .unwrap(),
            None => repo.treebuilder(None).unwrap(),
        };
        let (dir, file) = path.split_once('/').unwrap();
        let blob = repo.blob(text.as_bytes()).unwrap();
        let existing = parent.and_then(|p| {
            repo.find_commit(p)
                .unwrap()
                .tree()
                .unwrap()
                .get_name(dir)
                .map(|e| e.id())
        });
        let mut sub = repo
            .treebuilder(existing.map(|id| repo.find_tree(id).unwrap()).as_ref())
            .unwrap();
        sub.insert(file, blob, 0o100644).unwrap();
        builder.insert(dir, sub.write().unwrap(), 0o040000).unwrap();
        let tree = repo.find_tree(builder.write().unwrap()).unwrap();
        let sig = Signature::now("t", "t@t").unwrap();
        let parents: Vec<git2::Commit> = parent
            .map(|p| repo.find_commit(p).unwrap())
            .into_iter()
            .collect();
        let refs: Vec<&git2::Commit> = parents.iter().collect();
        repo.commit(Some("refs/heads/main"), &sig, &sig, msg, &tree, &refs)
            .unwrap()
    }

    #[test]
    fn a_commit_touching_two_paths_is_reverted_under_the_path_only() {
        let remote = tempfile::tempdir().unwrap();
        let repo = Repository::init_bare(remote.path()).unwrap();
        let a = commit_file(&repo, None, "app/deploy.yaml", "image: v1\n", "v1");
        let b = commit_file(
            &repo,
            Some(a),
            "other/other.yaml",
            "team: b v1\n",
            "other v1",
        );
        // one commit changes both the Application's path and another team's
        let both = {
            let c = commit_file(&repo, Some(b), "app/deploy.yaml", "image: v2\n", "tmp");
            let tree = repo.find_commit(c).unwrap().tree().unwrap();
            let mut root = repo.treebuilder(Some(&tree)).unwrap();
            let mut other = repo
                .treebuilder(Some(
                    &repo
                        .find_tree(tree.get_name("other").unwrap().id())
                        .unwrap(),
                ))
                .unwrap();
            other
                .insert("other.yaml", repo.blob(b"team: b v2\n").unwrap(), 0o100644)
                .unwrap();
            root.insert("other", other.write().unwrap(), 0o040000)
                .unwrap();
            let tree = repo.find_tree(root.write().unwrap()).unwrap();
            let sig = Signature::now("t", "t@t").unwrap();
            let parent = repo.find_commit(b).unwrap();
            // replace the temporary commit by one with both changes
            repo.reference("refs/heads/main", b, true, "reset").unwrap();
            repo.commit(
                Some("refs/heads/main"),
                &sig,
                &sig,
                "v2 and other v2",
                &tree,
                &[&parent],
            )
            .unwrap()
        };
        let url = format!("file://{}", remote.path().display());
        let cache = tempfile::tempdir().unwrap();
        let target = Target {
            url: &url,
            branch: "main",
            creds: None,
            deadline: Instant::now() + Duration::from_secs(30),
        };
        // Signed, as with writeBack.signingKey.
        let key =
            ssh_key::PrivateKey::from_openssh(crate::source::verify::test_keys::TEST_KEY).unwrap();
        let done = rollback(
            &cache.path().join("c"),
            &target,
            "app",
            &b.to_string(),
            ("G", "g@g", Some(&key)),
            "n",
            false,
        )
        .unwrap();
        assert_eq!(done.commits.len(), 1);
        assert_eq!(done.commits[0].id, both.to_string());
        let pushed = Oid::from_str(done.pushed.as_deref().unwrap()).unwrap();
        let signer = crate::source::verify::check_commit(
            &repo,
            pushed,
            &crate::source::verify::test_keys::trusted(),
        )
        .unwrap();
        assert!(signer.contains("gantry-test"), "{signer}");
        let head = repo
            .find_reference("refs/heads/main")
            .unwrap()
            .target()
            .unwrap();
        let tree = repo.find_commit(head).unwrap().tree().unwrap();
        let read = |p: &str| {
            repo.find_blob(tree.get_path(Path::new(p)).unwrap().id())
                .unwrap()
                .content()
                .to_vec()
        };
        assert_eq!(read("app/deploy.yaml"), b"image: v1\n");
        assert_eq!(
            read("other/other.yaml"),
            b"team: b v2\n",
            "the other team's change stays"
        );
    }

    #[test]
    fn reverts_only_the_commits_that_touched_the_path() {
        let remote = tempfile::tempdir().unwrap();
        let repo = Repository::init_bare(remote.path()).unwrap();
        let a = commit_file(&repo, None, "app/deploy.yaml", "image: v1\n", "v1");
        let b = commit_file(&repo, Some(a), "app/deploy.yaml", "image: v2\n", "v2");
        let c = commit_file(&repo, Some(b), "docs/readme.md", "hello\n", "docs");
        let d = commit_file(&repo, Some(c), "app/deploy.yaml", "image: v3\n", "v3");
        let url = format!("file://{}", remote.path().display());
        let cache = tempfile::tempdir().unwrap();
        let target = Target {
            url: &url,
            branch: "main",
            creds: None,
            deadline: Instant::now() + Duration::from_secs(30),
        };
        let cache_dir = cache.path().join("c");
        let plan = rollback(
            &cache_dir,
            &target,
            "./app",
            &a.to_string(),
            ("G", "g@g", None),
            "n",
            true,
        )
        .unwrap();
        assert_eq!(
            plan.commits
                .iter()
                .map(|c| c.id.clone())
                .collect::<Vec<_>>(),
            vec![d.to_string(), b.to_string()]
        );
        assert!(
            plan.diff.contains("-image: v3") && plan.diff.contains("+image: v1"),
            "{}",
            plan.diff
        );
        assert!(plan.pushed.is_none());

        let done = rollback(
            &cache_dir,
            &target,
            "app",
            &a.to_string(),
            ("G", "g@g", None),
            "rolled back",
            false,
        )
        .unwrap();
        let tip = Oid::from_str(done.pushed.as_ref().unwrap()).unwrap();
        let head = repo
            .find_reference("refs/heads/main")
            .unwrap()
            .target()
            .unwrap();
        assert_eq!(head, tip);
        let tree = repo.find_commit(head).unwrap().tree().unwrap();
        let blob = repo
            .find_blob(tree.get_path(Path::new("app/deploy.yaml")).unwrap().id())
            .unwrap();
        assert_eq!(blob.content(), b"image: v1\n");
        assert!(
            tree.get_path(Path::new("docs/readme.md")).is_ok(),
            "other paths untouched"
        );
        let msg = repo
            .find_commit(head)
            .unwrap()
            .message()
            .unwrap()
            .to_string();
        assert!(
            msg.contains(&format!("This reverts commit {b}, under app/ only")),
            "{msg}"
        );
        assert!(matches!(
            rollback(
                &cache_dir,
                &target,
                "app",
                &"1".repeat(40),
                ("G", "g@g", None),
                "",
                true
            ),
            Err(RevertError::NotAncestor(_))
        ));
    }
}
