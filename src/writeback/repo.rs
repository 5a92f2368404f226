//! Commit image edits on top of the branch head and push them without force. Commits are
//! built from trees (no working copy); a non-fast-forward rejection fetches the new head,
//! re-applies the edits there and pushes again. Blocking: run on a blocking thread.

use std::cell::RefCell;
use std::path::Path;
use std::sync::LazyLock;
use std::time::{Duration, Instant};

use git2::{ErrorCode, ObjectType, Oid, PushOptions, Repository, Signature, Sort};
use regex::Regex;

use super::edit;
use super::update::{self, Update};
use crate::source::git::{self, Credentials, GitError, Reference};
use crate::source::tree::Visit;
use crate::source::url_policy;

/// Files larger than this are not considered for edits.
const MAX_FILE_BYTES: u64 = 1024 * 1024;
/// Push attempts before giving up on a busy branch.
const MAX_ATTEMPTS: u32 = 6;
/// Commits searched for the newest one that touched an edited file.
const HISTORY_DEPTH: usize = 500;

/// Trailer naming the policy of a Gantry image-bump commit.
pub const POLICY_TRAILER: &str = "Gantry-Policy";
/// Trailer naming the image a Gantry image-bump commit wrote.
pub const IMAGE_TRAILER: &str = "Gantry-Image";
/// Trailer naming the chart and version a Gantry chart-bump commit wrote
/// (`<repository>/<name>:<version>`).
pub const CHART_TRAILER: &str = "Gantry-Chart";

#[derive(Debug, Clone)]
pub struct Target<'a> {
    pub url: &'a str,
    pub branch: &'a str,
    pub creds: Option<&'a Credentials>,
    pub deadline: Instant,
}

#[derive(Debug, Clone)]
pub struct Author<'a> {
    pub name: &'a str,
    pub email: &'a str,
    /// `{{policy}}`, `{{old}}` and `{{new}}` are replaced.
    pub message_template: &'a str,
    /// Signs each commit (SSH signature) when given.
    pub signing_key: Option<&'a ssh_key::PrivateKey>,
}

/// Creates a commit on no ref, signed with `key` when given: an SSH signature of the commit
/// object in its `gpgsig` header, as `git commit -S` with `gpg.format=ssh` writes it (and
/// `git verify-commit` and `spec.verify` check it).
pub fn create_commit(
    repo: &Repository,
    sig: &Signature<'_>,
    message: &str,
    tree: &git2::Tree<'_>,
    parents: &[&git2::Commit<'_>],
    key: Option<&ssh_key::PrivateKey>,
) -> Result<Oid, git2::Error> {
    let Some(key) = key else {
        return repo.commit(None, sig, sig, message, tree, parents);
    };
    let buffer = repo.commit_create_buffer(sig, sig, message, tree, parents)?;
    let content = buffer
        .as_str()
        .map_err(|_| git2::Error::from_str("the commit is not UTF-8"))?;
    let signature = key
        .sign("git", ssh_key::HashAlg::Sha512, content.as_bytes())
        .and_then(|s| s.to_pem(ssh_key::LineEnding::LF))
        .map_err(|e| git2::Error::from_str(&format!("cannot sign the commit: {e}")))?;
    repo.commit_signed(content, &signature, None)
}

/// One image bump that was committed.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Bump {
    pub policy: String,
    pub old: String,
    pub new: String,
    pub files: Vec<String>,
}

/// A tag not written because Git reverted Gantry's bump to it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Held {
    pub policy: String,
    pub tag: String,
    /// The revert commit.
    pub revert: String,
}

#[derive(Debug, Default, Clone, PartialEq, Eq)]
pub struct Report {
    /// The pushed commit, when anything was pushed.
    pub pushed: Option<String>,
    pub bumps: Vec<Bump>,
    pub held: Vec<Held>,
    /// Policies whose image no file under the path refers to.
    pub unreferenced: Vec<String>,
    /// Push attempts (more than one after non-fast-forward rejections).
    pub attempts: u32,
}

#[derive(Debug, thiserror::Error)]
pub enum WriteBackError {
    #[error(transparent)]
    Git(#[from] GitError),
    #[error("cannot build the commit: {0}")]
    Commit(String),
    #[error("push to {url} branch {branch} was rejected: {message}")]
    Rejected {
        url: String,
        branch: String,
        message: String,
    },
    #[error(
        "push to {url} branch {branch} was rejected {attempts} times (non-fast-forward); giving up for now"
    )]
    Busy {
        url: String,
        branch: String,
        attempts: u32,
    },
}

impl From<crate::source::tree::TreeError> for WriteBackError {
    fn from(e: crate::source::tree::TreeError) -> Self {
        WriteBackError::Commit(e.to_string())
    }
}

impl From<git2::Error> for WriteBackError {
    fn from(e: git2::Error) -> Self {
        WriteBackError::Commit(e.message().to_string())
    }
}

/// Commits the updates under `path` on top of the branch and pushes.
pub fn write_back(
    cache: &Path,
    target: &Target<'_>,
    path: &str,
    updates: &[Update],
    author: &Author<'_>,
) -> Result<Report, WriteBackError> {
    let reference = Reference::Branch(target.branch.to_string());
    let mut attempts = 0;
    loop {
        attempts += 1;
        let fetched =
            git::fetch_full(cache, target.url, &reference, target.creds, target.deadline)?;
        let repo =
            Repository::open_bare(cache).map_err(|e| WriteBackError::Commit(e.to_string()))?;
        let head = Oid::from_str(&fetched.commit)?;
        let mut report = build_commits(&repo, head, path, updates, author)?;
        report.attempts = attempts;
        let Some(tip) = report.pushed.clone() else {
            return Ok(report);
        };
        match push(&repo, target, Oid::from_str(&tip)?) {
            Ok(()) => return Ok(report),
            Err(PushFailure::NonFastForward(message)) => {
                tracing::info!(branch = target.branch, attempt = attempts, %message, "write-back push rejected; rebasing the edit on the new head");
                if attempts >= MAX_ATTEMPTS || Instant::now() >= target.deadline {
                    return Err(WriteBackError::Busy {
                        url: url_policy::redact(target.url),
                        branch: target.branch.to_string(),
                        attempts,
                    });
                }
                std::thread::sleep(Duration::from_millis(100 * 2u64.pow(attempts.min(5))));
            }
            Err(PushFailure::Other(e)) => return Err(e),
        }
    }
}

/// Builds one commit per policy on top of `head`; `report.pushed` is the new tip, if any.
fn build_commits(
    repo: &Repository,
    head: Oid,
    path: &str,
    updates: &[Update],
    author: &Author<'_>,
) -> Result<Report, WriteBackError> {
    let mut report = Report::default();
    let mut tip = repo.find_commit(head)?;
    let prefix = normalize_path(path);
    for update in updates {
        let tree = tip.tree()?;
        let files = yaml_files(repo, &tree, &prefix)?;
        let mut edits: Vec<(String, String, Vec<update::Change>)> = Vec::new();
        let mut referenced = false;
        for (file, text) in &files {
            if let Some((new_text, changes)) = edit::edit_file(file, text, update) {
                edits.push((file.clone(), new_text, changes));
            } else if !referenced && edit::refers_to(file, text, update) {
                referenced = true;
            }
        }
        if edits.is_empty() {
            if !referenced {
                report.unreferenced.push(update.policy.clone());
            }
            continue;
        }
        let paths: Vec<String> = edits.iter().map(|(p, _, _)| p.clone()).collect();
        if let Some(held) = held_by_revert(repo, tip.id(), &paths, update)? {
            report.held.push(held);
            continue;
        }
        let mut new_tree = tree.id();
        for (file, text, _) in &edits {
            let blob = repo.blob(text.as_bytes())?;
            let components: Vec<&str> = file.split('/').collect();
            let base = repo.find_tree(new_tree)?;
            new_tree = replace_path(repo, Some(&base), &components, blob)?;
        }
        let old = edits
            .iter()
            .flat_map(|(_, _, c)| c.iter())
            .map(|c| c.old_value.clone())
            .find(|v| !v.is_empty())
            .unwrap_or_default();
        let new = update.written();
        let trailer = if update.chart.is_some() {
            CHART_TRAILER
        } else {
            IMAGE_TRAILER
        };
        let message = format!(
            "{}\n\n{POLICY_TRAILER}: {}\n{trailer}: {}\n",
            render_message(author.message_template, &update.policy, &old, &new).trim_end(),
            update.policy,
            update.image()
        );
        let sig = Signature::now(author.name, author.email)?;
        let tree = repo.find_tree(new_tree)?;
        let commit = create_commit(repo, &sig, &message, &tree, &[&tip], author.signing_key)?;
        tip = repo.find_commit(commit)?;
        report.bumps.push(Bump {
            policy: update.policy.clone(),
            old,
            new,
            files: paths,
        });
    }
    if tip.id() != head {
        report.pushed = Some(tip.id().to_string());
    }
    Ok(report)
}

/// `./apps/web/` → `apps/web`; `.` and `` → ``.
fn normalize_path(path: &str) -> String {
    path.split('/')
        .filter(|c| !c.is_empty() && *c != ".")
        .collect::<Vec<_>>()
        .join("/")
}

pub fn render_message(template: &str, policy: &str, old: &str, new: &str) -> String {
    template
        .replace("{{policy}}", policy)
        .replace("{{old}}", old)
        .replace("{{new}}", new)
}

/// Every `.yaml`/`.yml` (and `Kustomization`) file under `prefix`, with its text.
fn yaml_files(
    repo: &Repository,
    tree: &git2::Tree<'_>,
    prefix: &str,
) -> Result<Vec<(String, String)>, WriteBackError> {
    let root = if prefix.is_empty() {
        tree.clone()
    } else {
        match tree.get_path(Path::new(prefix)) {
            Ok(entry) if entry.kind() == Some(ObjectType::Tree) => repo.find_tree(entry.id())?,
            _ => return Ok(Vec::new()),
        }
    };
    let mut out = Vec::new();
    crate::source::tree::walk(repo, root.id(), Default::default(), |rel, entry| {
        if entry.kind() != Some(ObjectType::Blob) {
            return Visit::Enter;
        }
        let name = entry.name().unwrap_or_default();
        if !(name.ends_with(".yaml") || name.ends_with(".yml") || name == "Kustomization") {
            return Visit::Enter;
        }
        if let Ok(blob) = repo.find_blob(entry.id())
            && (blob.size() as u64) <= MAX_FILE_BYTES
            && let Ok(text) = std::str::from_utf8(blob.content())
        {
            let full = if prefix.is_empty() {
                rel.to_string()
            } else {
                format!("{prefix}/{rel}")
            };
            out.push((full, text.to_string()));
        }
        Visit::Enter
    })?;
    Ok(out)
}

/// A copy of `tree` with the blob at `components` replaced (file modes kept).
fn replace_path(
    repo: &Repository,
    tree: Option<&git2::Tree<'_>>,
    components: &[&str],
    blob: Oid,
) -> Result<Oid, WriteBackError> {
    let mut builder = repo.treebuilder(tree)?;
    let name = components[0];
    let existing = tree.and_then(|t| t.get_name(name));
    if components.len() == 1 {
        let mode = existing.map(|e| e.filemode()).unwrap_or(0o100644);
        builder.insert(name, blob, mode)?;
    } else {
        let sub = existing
            .filter(|e| e.kind() == Some(ObjectType::Tree))
            .map(|e| repo.find_tree(e.id()))
            .transpose()?;
        let oid = replace_path(repo, sub.as_ref(), &components[1..], blob)?;
        builder.insert(name, oid, 0o040000)?;
    }
    Ok(builder.write()?)
}

static REVERTS: LazyLock<Regex> =
    LazyLock::new(|| Regex::new(r"This reverts commit ([0-9a-f]{40})").expect("revert regex"));

/// The value of a trailer in a commit message.
fn trailer<'a>(message: &'a str, key: &str) -> Option<&'a str> {
    message
        .lines()
        .rev()
        .find_map(|l| l.strip_prefix(key)?.strip_prefix(':').map(str::trim))
}

/// When the newest commit that touched any of `paths` reverts a Gantry bump of this
/// policy to exactly `update.tag`, that tag is held.
fn held_by_revert(
    repo: &Repository,
    head: Oid,
    paths: &[String],
    update: &Update,
) -> Result<Option<Held>, WriteBackError> {
    let mut walk = repo.revwalk()?;
    walk.push(head)?;
    walk.set_sorting(Sort::TOPOLOGICAL | Sort::TIME)?;
    for oid in walk.take(HISTORY_DEPTH) {
        let commit = repo.find_commit(oid?)?;
        let tree = commit.tree()?;
        let parent_tree = match commit.parent(0) {
            Ok(p) => Some(p.tree()?),
            Err(_) => None,
        };
        let blob_at = |t: Option<&git2::Tree<'_>>, p: &str| {
            t.and_then(|t| t.get_path(Path::new(p)).ok())
                .map(|e| e.id())
        };
        let touched = paths
            .iter()
            .any(|p| blob_at(Some(&tree), p) != blob_at(parent_tree.as_ref(), p));
        if !touched {
            continue;
        }
        let message = commit.message().unwrap_or_default();
        let Some(reverted) = REVERTS
            .captures(message)
            .and_then(|c| Oid::from_str(&c[1]).ok())
        else {
            return Ok(None);
        };
        let Ok(original) = repo.find_commit(reverted) else {
            return Ok(None);
        };
        let original_message = original.message().unwrap_or_default();
        if trailer(original_message, POLICY_TRAILER) != Some(update.policy.as_str()) {
            return Ok(None);
        }
        let tag = trailer(original_message, IMAGE_TRAILER)
            .or_else(|| trailer(original_message, CHART_TRAILER))
            .and_then(|image| edit::split_image(image).tag.map(str::to_string));
        return Ok(tag.filter(|t| *t == update.tag).map(|tag| Held {
            policy: update.policy.clone(),
            tag,
            revert: commit.id().to_string(),
        }));
    }
    Ok(None)
}

/// Pushes `commit` to the target branch without force; `Ok(false)` on a non-fast-forward.
pub fn push_commit(
    repo: &Repository,
    target: &Target<'_>,
    commit: Oid,
) -> Result<bool, WriteBackError> {
    match push(repo, target, commit) {
        Ok(()) => Ok(true),
        Err(PushFailure::NonFastForward(_)) => Ok(false),
        Err(PushFailure::Other(e)) => Err(e),
    }
}

enum PushFailure {
    NonFastForward(String),
    Other(WriteBackError),
}

/// Pushes `commit` to the branch. Never forced: the refspec has no `+`.
fn push(repo: &Repository, target: &Target<'_>, commit: Oid) -> Result<(), PushFailure> {
    let other = |e: WriteBackError| PushFailure::Other(e);
    url_policy::check(
        target.url,
        matches!(target.creds, Some(Credentials::Basic { .. })),
    )
    .map_err(|e| other(GitError::from(e).into()))?;
    let local = "refs/gantry/write-back";
    repo.reference(local, commit, true, "gantry write-back")
        .map_err(|e| other(e.into()))?;
    let mut remote = repo
        .remote_anonymous(target.url)
        .map_err(|e| other(e.into()))?;
    let rejected: RefCell<Option<String>> = RefCell::new(None);
    let note: git::HostKeyNote = Default::default();
    let mut cb = git::callbacks(
        target.creds,
        target.deadline,
        git::ssh_port(target.url),
        note,
    );
    cb.push_update_reference(|_refname, status| {
        if let Some(s) = status {
            *rejected.borrow_mut() = Some(s.to_string());
        }
        Ok(())
    });
    let headers: Vec<String> = match target.creds {
        Some(Credentials::Bearer { token }) => vec![format!("Authorization: Bearer {token}")],
        _ => vec![],
    };
    let header_refs: Vec<&str> = headers.iter().map(String::as_str).collect();
    let mut opts = PushOptions::new();
    opts.remote_callbacks(cb);
    opts.custom_headers(&header_refs);
    let refspec = format!("{local}:refs/heads/{}", target.branch);
    let result = remote.push(&[refspec.as_str()], Some(&mut opts));
    drop(opts);
    if let Err(e) = result {
        let msg = e.message().to_ascii_lowercase();
        if e.code() == ErrorCode::NotFastForward
            || msg.contains("non-fast-forward")
            || msg.contains("not present locally")
            || msg.contains("fetch first")
        {
            return Err(PushFailure::NonFastForward(e.message().to_string()));
        }
        return Err(other(git::classify(target.url, target.deadline, e).into()));
    }
    if let Some(status) = rejected.into_inner() {
        let lower = status.to_ascii_lowercase();
        if lower.contains("non-fast-forward")
            || lower.contains("fetch first")
            || lower.contains("failed to update ref")
            || lower.contains("failed to lock")
            || lower.contains("stale info")
        {
            return Err(PushFailure::NonFastForward(status));
        }
        return Err(other(WriteBackError::Rejected {
            url: url_policy::redact(target.url),
            branch: target.branch.to_string(),
            message: status,
        }));
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn author() -> Author<'static> {
        Author {
            signing_key: None,
            name: "Gantry",
            email: "gantry@example.test",
            message_template: "Update {{policy}} from {{old}} to {{new}}",
        }
    }

    fn update(tag: &str) -> Update {
        Update {
            policy: "web".into(),
            repository: "127.0.0.1:5000/team/web".into(),
            tag: tag.into(),
            digest: None,
            chart: None,
        }
    }

    /// A bare "remote" with one commit, and its file:// URL.
    fn remote_with(files: &[(&str, &str)]) -> (tempfile::TempDir, String) {
        let dir = tempfile::tempdir().unwrap();
        let repo = Repository::init_bare(dir.path()).unwrap();
        let mut tree = repo.treebuilder(None).unwrap().write().unwrap();
        for (path, text) in files {
            let blob = repo.blob(text.as_bytes()).unwrap();
            let parts: Vec<&str> = path.split('/').collect();
            let base = repo.find_tree(tree).unwrap();
            tree = replace_path(&repo, Some(&base), &parts, blob).unwrap();
        }
        let sig = Signature::now("t", "t@t").unwrap();
        let tree = repo.find_tree(tree).unwrap();
        repo.commit(Some("refs/heads/main"), &sig, &sig, "init", &tree, &[])
            .unwrap();
        let url = format!("file://{}", dir.path().display());
        (dir, url)
    }

    fn head_file(remote: &Path, path: &str) -> String {
        let repo = Repository::open_bare(remote).unwrap();
        let commit = repo
            .find_reference("refs/heads/main")
            .unwrap()
            .peel_to_commit()
            .unwrap();
        let entry = commit.tree().unwrap().get_path(Path::new(path)).unwrap();
        String::from_utf8(repo.find_blob(entry.id()).unwrap().content().to_vec()).unwrap()
    }

    const DEPLOY: &str = "kind: Deployment\nspec:\n  template:\n    spec:\n      containers:\n        - image: 127.0.0.1:5000/team/web:1.3.0 # keep\n";

    #[test]
    fn commits_and_pushes_the_edit_then_is_a_no_op() {
        let (remote, url) = remote_with(&[("apps/web/deploy.yaml", DEPLOY), ("README.md", "hi")]);
        let cache = tempfile::tempdir().unwrap();
        let target = Target {
            url: &url,
            branch: "main",
            creds: None,
            deadline: Instant::now() + Duration::from_secs(30),
        };
        let report = write_back(
            &cache.path().join("c"),
            &target,
            "./apps/web",
            &[update("1.4.0")],
            &author(),
        )
        .unwrap();
        assert!(report.pushed.is_some());
        assert_eq!(report.bumps[0].old, "127.0.0.1:5000/team/web:1.3.0");
        assert_eq!(
            head_file(remote.path(), "apps/web/deploy.yaml"),
            DEPLOY.replace("1.3.0", "1.4.0")
        );
        assert_eq!(head_file(remote.path(), "README.md"), "hi");
        let again = write_back(
            &cache.path().join("c"),
            &target,
            "apps/web",
            &[update("1.4.0")],
            &author(),
        )
        .unwrap();
        assert_eq!(again.pushed, None);
        assert!(again.unreferenced.is_empty());

        let other = write_back(
            &cache.path().join("c"),
            &target,
            "apps/web",
            &[Update {
                repository: "127.0.0.1:5000/team/api".into(),
                ..update("9.9.9")
            }],
            &author(),
        )
        .unwrap();
        assert_eq!(other.unreferenced, vec!["web".to_string()]);
    }

    #[test]
    fn messages_and_trailers() {
        assert_eq!(
            render_message("bump {{policy}}: {{old}} -> {{new}}", "web", "a:1", "a:2"),
            "bump web: a:1 -> a:2"
        );
        let m = "Update\n\nGantry-Policy: web\nGantry-Image: r/web:1.4.0\n";
        assert_eq!(trailer(m, POLICY_TRAILER), Some("web"));
        assert_eq!(trailer(m, IMAGE_TRAILER), Some("r/web:1.4.0"));
        assert_eq!(normalize_path("./apps//web/"), "apps/web");
        assert_eq!(normalize_path("."), "");
    }

    const UMBRELLA: &str = "apiVersion: v2\nname: shop\nversion: 0.1.0\ndependencies:\n  - name: web\n    repository: https://charts.example.com\n    version: 1.0.0 # gantry bumps this\n";

    fn chart_update(version: &str) -> Update {
        Update {
            policy: "web-chart".into(),
            repository: "https://charts.example.com/web".into(),
            tag: version.into(),
            digest: None,
            chart: Some(update::ChartName {
                repository: "https://charts.example.com".into(),
                name: "web".into(),
            }),
        }
    }

    #[test]
    fn a_chart_bump_names_its_version_and_a_revert_of_it_holds_that_version() {
        let (remote, url) = remote_with(&[("shop/Chart.yaml", UMBRELLA)]);
        let cache = tempfile::tempdir().unwrap();
        let target = Target {
            url: &url,
            branch: "main",
            creds: None,
            deadline: Instant::now() + Duration::from_secs(30),
        };
        let report = write_back(
            &cache.path().join("c"),
            &target,
            "shop",
            &[chart_update("1.1.0")],
            &author(),
        )
        .unwrap();
        let bump = report.pushed.clone().expect("pushed");
        assert_eq!(
            (report.bumps[0].old.as_str(), report.bumps[0].new.as_str()),
            ("1.0.0", "1.1.0")
        );
        assert_eq!(
            head_file(remote.path(), "shop/Chart.yaml"),
            UMBRELLA.replace("1.0.0 #", "1.1.0 #")
        );
        let repo = Repository::open_bare(remote.path()).unwrap();
        let message = repo
            .find_commit(Oid::from_str(&bump).unwrap())
            .unwrap()
            .message()
            .unwrap()
            .to_string();
        assert!(
            message.starts_with("Update web-chart from 1.0.0 to 1.1.0"),
            "{message}"
        );
        assert_eq!(
            trailer(&message, CHART_TRAILER),
            Some("https://charts.example.com/web:1.1.0")
        );

        // `git revert` of the bump, as a team would do it.
        let commit = repo.find_commit(Oid::from_str(&bump).unwrap()).unwrap();
        let mut index = repo.revert_commit(&commit, &commit, 0, None).unwrap();
        let tree = repo.find_tree(index.write_tree_to(&repo).unwrap()).unwrap();
        let sig = Signature::now("t", "t@t").unwrap();
        let revert = repo
            .commit(
                Some("refs/heads/main"),
                &sig,
                &sig,
                &format!("Revert\n\nThis reverts commit {bump}.\n"),
                &tree,
                &[&commit],
            )
            .unwrap();
        let again = write_back(
            &cache.path().join("c"),
            &target,
            "shop",
            &[chart_update("1.1.0")],
            &author(),
        )
        .unwrap();
        assert_eq!(
            again.pushed, None,
            "a reverted version is not written again"
        );
        assert_eq!(
            again.held,
            vec![Held {
                policy: "web-chart".into(),
                tag: "1.1.0".into(),
                revert: revert.to_string()
            }]
        );
        let newer = write_back(
            &cache.path().join("c"),
            &target,
            "shop",
            &[chart_update("1.2.0")],
            &author(),
        )
        .unwrap();
        assert!(newer.pushed.is_some(), "a newer version is written");
        assert_eq!(
            head_file(remote.path(), "shop/Chart.yaml"),
            UMBRELLA.replace("1.0.0 #", "1.2.0 #")
        );
    }
}
