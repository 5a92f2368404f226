//! Artifacts: the tree of one commit written to a directory, with a content digest.
//! Symlinks whose resolution leaves the repository are refused, following links through
//! links (TESTING.md rows 1 and 24). Artifacts are written once into a temporary directory,
//! made read-only and renamed into place; `verify` recomputes the digest from disk before a
//! render (row 28).

use std::path::{Path, PathBuf};

use git2::{ObjectType, Repository};

use super::tree::{TreeError, Visit};
use sha2::{Digest, Sha256};

#[derive(Debug, thiserror::Error)]
pub enum ArtifactError {
    #[error("symlink {path} points outside the repository ({target}); refusing the source")]
    SymlinkEscapes { path: String, target: String },
    #[error("symlink {path} ({target}) leads through too many links (a loop); refusing the source")]
    SymlinkLoop { path: String, target: String },
    #[error("artifact {path} does not match its digest (expected {expected}, found {found})")]
    DigestMismatch {
        path: String,
        expected: String,
        found: String,
    },
    #[error("unsafe path {0:?} in the repository tree")]
    UnsafePath(String),
    #[error("git: {0}")]
    Git(#[from] git2::Error),
    #[error("{0}")]
    Tree(#[from] TreeError),
    #[error(
        "the repository's files add up to more than {limit} bytes (at {path:?}); refusing the source"
    )]
    TooLarge { path: String, limit: u64 },
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

/// Most links followed while resolving one path (the kernel's limit is 40).
const MAX_LINK_HOPS: u32 = 40;

/// Why a symlink of the tree is refused.
#[derive(Debug, PartialEq, Eq)]
pub enum LinkProblem {
    /// Its resolution, following every link on the way, leaves the repository.
    Escapes,
    /// More than `MAX_LINK_HOPS` links on the way (a loop).
    Loop,
}

/// Resolves `target` (a link's content) from the directory `start` (components relative to
/// the root, already free of links), following every link of `links` on the way as the
/// kernel would; any step above the root is an escape, so a chain of links that are each
/// lexically inside but together lead outside is caught.
fn resolve(
    links: &std::collections::HashMap<String, String>,
    start: Vec<String>,
    target: &str,
    hops: &mut u32,
) -> Result<Vec<String>, LinkProblem> {
    if target.starts_with('/') {
        return Err(LinkProblem::Escapes);
    }
    let mut cur = start;
    for part in target.split('/') {
        match part {
            "" | "." => {}
            ".." => {
                if cur.pop().is_none() {
                    return Err(LinkProblem::Escapes);
                }
            }
            name => {
                cur.push(name.to_string());
                if let Some(next) = links.get(&cur.join("/")) {
                    *hops += 1;
                    if *hops > MAX_LINK_HOPS {
                        return Err(LinkProblem::Loop);
                    }
                    cur.pop();
                    cur = resolve(links, cur, next, hops)?;
                }
            }
        }
    }
    Ok(cur)
}

/// Checks every symlink of a tree (`path` relative to the root → link content): each must
/// resolve inside the root after following all links, directory links included. Returns
/// the first offending link, in path order.
pub fn check_links(
    links: &std::collections::HashMap<String, String>,
) -> Result<(), (String, String, LinkProblem)> {
    let mut paths: Vec<&String> = links.keys().collect();
    paths.sort();
    for path in paths {
        let target = &links[path];
        let dir: Vec<String> = match path.rsplit_once('/') {
            Some((d, _)) => d.split('/').map(str::to_string).collect(),
            None => vec![],
        };
        // The directory holding the link may itself sit behind links.
        let mut hops = 0;
        let real_dir = resolve(links, vec![], &dir.join("/"), &mut hops)
            .and_then(|d| resolve(links, d, target, &mut hops));
        if let Err(problem) = real_dir {
            return Err((path.clone(), target.clone(), problem));
        }
    }
    Ok(())
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

/// Checks out `commit` (a hex id) of the bare repository at `cache` into `dest`, leaving out
/// `ignore`d paths, with every link checked; returns the tree's digest. Used wherever a
/// commit other than the source's current artifact is needed (rollout abort, `gantry
/// diff`), so each goes through the same checks as the artifact store.
pub async fn checkout_commit(
    cache: &Path,
    commit: &str,
    dest: &Path,
    ignore: &[String],
) -> Result<String, ArtifactError> {
    let (cache, commit, dest, ignore) = (
        cache.to_path_buf(),
        commit.to_string(),
        dest.to_path_buf(),
        ignore.to_vec(),
    );
    tokio::task::spawn_blocking(move || {
        let repo = Repository::open_bare(&cache)?;
        let oid = git2::Oid::from_str(&commit)?;
        write_tree(&repo, oid, &dest, &ignore)
    })
    .await
    .map_err(|e| ArtifactError::Io {
        path: "checkout task".into(),
        source: std::io::Error::other(e.to_string()),
    })?
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
    write_tree_entries(repo, commit, dest, ignore, None).map(|(digest, _)| digest)
}

/// A tree written before, whose files a new tree may share: its directory and entries.
pub type Previous<'a> = (&'a Path, &'a Entries);

/// The entries of a tree as its digest sees them: (path relative to the root, mode, blob
/// id), sorted by path.
pub type Entries = Vec<(String, i32, git2::Oid)>;

/// Like [`write_tree`], also returning the entries written (what the digest covers). A file
/// whose path, mode and blob are the same in `previous` is hard-linked from it rather than
/// written again (both trees are read-only; a render checks the files it reads against
/// Git's entries either way), so a commit that changes one file of a large repository
/// writes one file.
pub fn write_tree_entries(
    repo: &Repository,
    commit: git2::Oid,
    dest: &Path,
    ignore: &[String],
    previous: Option<Previous<'_>>,
) -> Result<(String, Entries), ArtifactError> {
    let matcher = ignore_matcher(ignore)?;
    let tree = repo.find_commit(commit)?.tree_id();
    let mut entries: Vec<(String, i32, git2::Oid)> = vec![];
    super::tree::walk(repo, tree, Default::default(), |rel, entry| {
        let is_dir = entry.kind() == Some(ObjectType::Tree);
        if matcher
            .matched_path_or_any_parents(Path::new("/").join(rel), is_dir)
            .is_ignore()
        {
            return Visit::Skip;
        }
        if entry.kind() == Some(ObjectType::Blob) {
            entries.push((rel.to_string(), entry.filemode(), entry.id()));
        }
        Visit::Enter
    })?;
    entries.sort();

    // Every link is judged against the whole tree before anything is written.
    let mut links = std::collections::HashMap::new();
    for (rel, mode, oid) in &entries {
        if *mode == LINK_MODE {
            let blob = repo.find_blob(*oid)?;
            links.insert(
                rel.clone(),
                String::from_utf8_lossy(blob.content()).into_owned(),
            );
        }
    }
    if let Err((path, target, problem)) = check_links(&links) {
        return Err(match problem {
            LinkProblem::Escapes => ArtifactError::SymlinkEscapes { path, target },
            LinkProblem::Loop => ArtifactError::SymlinkLoop { path, target },
        });
    }

    std::fs::create_dir_all(dest).map_err(|e| io(dest, e))?;
    let odb = repo.odb()?;
    let mut written_bytes = 0u64;
    // Directories made so far (entries are sorted, so most files share their parent's).
    let mut made: std::collections::HashSet<PathBuf> = Default::default();
    for (rel, mode, oid) in &entries {
        let mode = normal_mode(*mode);
        let path: PathBuf = dest.join(rel);
        if let Some(parent) = path.parent()
            && !made.contains(parent)
        {
            std::fs::create_dir_all(parent).map_err(|e| io(parent, e))?;
            made.insert(parent.to_path_buf());
        }
        let shared = mode != LINK_MODE
            && previous.is_some_and(|(dir, entries)| {
                entries
                    .binary_search_by(|e| (e.0.as_str(), e.1, e.2).cmp(&(rel.as_str(), mode, *oid)))
                    .is_ok()
                    && std::fs::hard_link(dir.join(rel), &path).is_ok()
            });
        if shared {
            continue;
        }
        if mode == LINK_MODE {
            std::os::unix::fs::symlink(&links[rel], &path).map_err(|e| io(&path, e))?;
        } else {
            // The size from the object's header, before its content is read into memory.
            let (size, _) = odb.read_header(*oid)?;
            let size = size as u64;
            written_bytes = written_bytes.saturating_add(size);
            if size > MAX_FILE_BYTES || written_bytes > MAX_TREE_BYTES {
                return Err(ArtifactError::TooLarge {
                    path: rel.clone(),
                    limit: if size > MAX_FILE_BYTES {
                        MAX_FILE_BYTES
                    } else {
                        MAX_TREE_BYTES
                    },
                });
            }
            let blob = repo.find_blob(*oid)?;
            std::fs::write(&path, blob.content()).map_err(|e| io(&path, e))?;
            let perm = if mode == EXEC_MODE { 0o555 } else { 0o444 };
            set_mode(&path, perm)?;
        }
    }
    let written: Entries = entries
        .into_iter()
        .map(|(rel, mode, oid)| (rel, normal_mode(mode), oid))
        .collect();
    Ok((digest_of_entries(&written), written))
}

/// Largest file written into an artifact (a file is read whole into memory to be written).
pub const MAX_FILE_BYTES: u64 = 64 << 20;
/// Most bytes one artifact writes (files shared with the previous tree do not count).
pub const MAX_TREE_BYTES: u64 = 1 << 30;

const LINK_MODE: i32 = 0o120000;
const EXEC_MODE: i32 = 0o100755;
const FILE_MODE: i32 = 0o100644;

/// Git blob modes as a checkout sees them: a link, an executable or a plain file.
fn normal_mode(mode: i32) -> i32 {
    match mode {
        LINK_MODE | EXEC_MODE => mode,
        _ => FILE_MODE,
    }
}

fn hash_entry(hasher: &mut Sha256, rel: &str, mode: i32, oid: &git2::Oid) {
    hasher.update(rel.as_bytes());
    hasher.update([0]);
    hasher.update(mode.to_be_bytes());
    hasher.update(oid.as_bytes());
}

fn set_mode(path: &Path, mode: u32) -> Result<(), ArtifactError> {
    use std::os::unix::fs::PermissionsExt;
    std::fs::set_permissions(path, std::fs::Permissions::from_mode(mode)).map_err(|e| io(path, e))
}

/// Makes every directory of a written tree read-only (deepest first); files are written
/// read-only already. [`remove`] undoes it.
pub fn seal_dirs(dir: &Path) -> Result<(), ArtifactError> {
    for entry in std::fs::read_dir(dir).map_err(|e| io(dir, e))? {
        let entry = entry.map_err(|e| io(dir, e))?;
        if entry
            .file_type()
            .map_err(|e| io(&entry.path(), e))?
            .is_dir()
        {
            seal_dirs(&entry.path())?;
        }
    }
    set_mode(dir, 0o555)
}

/// The entries on disk under `dir` (a directory inside `root`), paths relative to `root`,
/// sorted: what `write_tree` wrote there.
pub fn entries_under(root: &Path, dir: &Path) -> Result<Entries, ArtifactError> {
    use std::os::unix::fs::PermissionsExt;
    fn walk(root: &Path, dir: &Path, out: &mut Entries) -> Result<(), ArtifactError> {
        for entry in std::fs::read_dir(dir).map_err(|e| io(dir, e))? {
            let entry = entry.map_err(|e| io(dir, e))?;
            let path = entry.path();
            let rel = path
                .strip_prefix(root)
                .unwrap_or(&path)
                .to_string_lossy()
                .into_owned();
            let meta = std::fs::symlink_metadata(&path).map_err(|e| io(&path, e))?;
            if meta.file_type().is_symlink() {
                let target = std::fs::read_link(&path).map_err(|e| io(&path, e))?;
                let oid = git2::Oid::hash_object(
                    ObjectType::Blob,
                    target.as_os_str().as_encoded_bytes(),
                )?;
                out.push((rel, LINK_MODE, oid));
            } else if meta.is_dir() {
                walk(root, &path, out)?;
            } else {
                let content = std::fs::read(&path).map_err(|e| io(&path, e))?;
                let oid = git2::Oid::hash_object(ObjectType::Blob, &content)?;
                let mode = if meta.permissions().mode() & 0o100 != 0 {
                    EXEC_MODE
                } else {
                    FILE_MODE
                };
                out.push((rel, mode, oid));
            }
        }
        Ok(())
    }
    let mut entries = vec![];
    walk(root, dir, &mut entries)?;
    entries.sort();
    Ok(entries)
}

/// The digest of sorted entries.
pub fn digest_of_entries(entries: &[(String, i32, git2::Oid)]) -> String {
    let mut hasher = Sha256::new();
    for (rel, mode, oid) in entries {
        hash_entry(&mut hasher, rel, *mode, oid);
    }
    format!("sha256:{}", hex::encode(hasher.finalize()))
}

/// The digest of a tree on disk, computed as `write_tree` computes it from Git.
pub fn digest_of_dir(dir: &Path) -> Result<String, ArtifactError> {
    Ok(digest_of_entries(&entries_under(dir, dir)?))
}

/// Whether `mode` is a symlink's mode.
pub fn is_link(mode: i32) -> bool {
    mode == LINK_MODE
}

/// Checks that the tree at `dir` is still what was written for `expected`; its entries
/// when it is.
pub fn verified_entries(dir: &Path, expected: &str) -> Result<Entries, ArtifactError> {
    let entries = entries_under(dir, dir)?;
    let found = digest_of_entries(&entries);
    if found != expected {
        return Err(ArtifactError::DigestMismatch {
            path: dir.display().to_string(),
            expected: expected.to_string(),
            found,
        });
    }
    Ok(entries)
}

/// Checks that the tree at `dir` is still what was written for `expected`.
pub fn verify(dir: &Path, expected: &str) -> Result<(), ArtifactError> {
    verified_entries(dir, expected).map(|_| ())
}

/// Removes an artifact tree (its directories are read-only), ignoring "not found".
pub fn remove(dir: &Path) {
    fn unseal(dir: &Path) {
        use std::os::unix::fs::PermissionsExt;
        let _ = std::fs::set_permissions(dir, std::fs::Permissions::from_mode(0o755));
        for entry in std::fs::read_dir(dir).into_iter().flatten().flatten() {
            if entry.file_type().is_ok_and(|t| t.is_dir()) {
                unseal(&entry.path());
            }
        }
    }
    if std::fs::symlink_metadata(dir).is_ok_and(|m| m.is_dir()) {
        unseal(dir);
    }
    if let Err(e) = std::fs::remove_dir_all(dir)
        && e.kind() != std::io::ErrorKind::NotFound
    {
        tracing::warn!(path = %dir.display(), error = %e, "cannot remove artifact");
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    use crate::source::test_repo::commit_files;

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

    fn links(pairs: &[(&str, &str)]) -> std::collections::HashMap<String, String> {
        pairs
            .iter()
            .map(|(a, b)| (a.to_string(), b.to_string()))
            .collect()
    }

    #[test]
    fn symlinks_inside_are_fine() {
        assert!(check_links(&links(&[("a/b/l", "../c.yaml")])).is_ok());
        assert!(check_links(&links(&[("l", "dir/x")])).is_ok());
        assert!(check_links(&links(&[("a/l", "./b/../c")])).is_ok());
        // a link to a link to a directory, all inside
        assert!(check_links(&links(&[("d", "x/y"), ("a/l", "../d/z")])).is_ok());
    }

    #[test]
    fn symlinks_that_leave_are_refused() {
        for (path, target) in [
            ("l", "../etc/passwd"),
            ("a/l", "../../x"),
            ("a/l", "/etc/passwd"),
            ("a/b/l", "../../../x"),
        ] {
            let err = check_links(&links(&[(path, target)])).unwrap_err();
            assert_eq!(err, (path.into(), target.into(), LinkProblem::Escapes));
        }
    }

    #[test]
    fn a_chain_of_links_each_inside_is_refused_when_it_leads_outside() {
        let chain = links(&[
            ("x/a/b/c/d/e/f/deep", "../../../../../../.."),
            (
                "chart/files/k",
                "../../x/a/b/c/d/e/f/deep/../../../../../../../../etc/hostname",
            ),
        ]);
        let (path, _, problem) = check_links(&chain).unwrap_err();
        assert_eq!(path, "chart/files/k");
        assert_eq!(problem, LinkProblem::Escapes);
        // a directory link that climbs through another directory link
        let dirs = links(&[("up", "sub/.."), ("sub/l", "../up/..")]);
        assert!(check_links(&dirs).is_err());
    }

    #[test]
    fn link_loops_are_refused() {
        let err = check_links(&links(&[("a", "b"), ("b", "a")])).unwrap_err();
        assert_eq!(err.2, LinkProblem::Loop);
    }

    #[test]
    fn the_digest_from_disk_matches_and_catches_a_removed_file() {
        let src = tempfile::tempdir().unwrap();
        let (repo, oid) = commit_files(src.path(), &[("deploy/a.yaml", "a"), ("b.yaml", "b")]);
        let out = tempfile::tempdir().unwrap();
        let dest = out.path().join("t");
        let digest = write_tree(&repo, oid, &dest, &[]).unwrap();
        seal_dirs(&dest).unwrap();
        verify(&dest, &digest).unwrap();
        // read-only on disk
        assert!(std::fs::write(dest.join("b.yaml"), "x").is_err() || is_root());
        remove(&dest);
        write_tree(&repo, oid, &dest, &[]).unwrap();
        {
            use std::os::unix::fs::PermissionsExt;
            std::fs::set_permissions(dest.join("deploy"), std::fs::Permissions::from_mode(0o755))
                .unwrap();
        }
        std::fs::remove_file(dest.join("deploy/a.yaml")).unwrap();
        let err = verify(&dest, &digest).unwrap_err();
        assert!(matches!(err, ArtifactError::DigestMismatch { .. }), "{err}");
        remove(&dest);
        assert!(!dest.exists());
    }

    fn is_root() -> bool {
        std::fs::read_to_string("/proc/self/status")
            .unwrap_or_default()
            .lines()
            .any(|l| l.starts_with("Uid:") && l.split_whitespace().nth(1) == Some("0"))
    }
}
