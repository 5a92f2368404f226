//! Fetching from Git with `git2`: a cached bare clone per GitRepository, shallow where the
//! transport allows it, credentials from a Secret, a deadline on every network operation.

use std::path::Path;
use std::time::Instant;

use git2::{
    AutotagOption, Cred, CredentialType, Direction, ErrorClass, ErrorCode, FetchOptions,
    RemoteCallbacks, Repository,
};

use super::url_policy::{self, UrlRefused};

/// What to check out.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Reference {
    Branch(String),
    Tag(String),
    /// Newest tag within a semver range.
    Semver(String),
    /// An exact commit, optionally looked up on a branch.
    Commit {
        branch: Option<String>,
        commit: String,
    },
    /// A full ref name outside branches and tags, e.g. a pull request's head
    /// (`refs/pull/7/head`, `refs/merge-requests/7/head`).
    Full(String),
}

impl Reference {
    pub fn from_spec(r: Option<&crate::api::git_repository::GitRef>) -> Self {
        let Some(r) = r else {
            return Reference::Branch("main".into());
        };
        if let Some(c) = &r.commit {
            return Reference::Commit {
                branch: r.branch.clone(),
                commit: c.clone(),
            };
        }
        if let Some(t) = &r.tag {
            return Reference::Tag(t.clone());
        }
        if let Some(s) = &r.semver {
            return Reference::Semver(s.clone());
        }
        Reference::Branch(r.branch.clone().unwrap_or_else(|| "main".into()))
    }

    /// The branch the commits come from, when one is named (a followed branch, or the
    /// branch an exact commit is looked up on).
    pub fn branch(&self) -> Option<&str> {
        match self {
            Reference::Branch(b) => Some(b),
            Reference::Commit {
                branch: Some(b), ..
            } => Some(b),
            _ => None,
        }
    }
}

/// Credentials from the GitRepository's Secret. Never printed.
#[derive(Clone)]
pub enum Credentials {
    Basic {
        username: String,
        password: String,
    },
    Bearer {
        token: String,
    },
    /// SSH: a private key and the mandatory known_hosts.
    Ssh {
        identity: String,
        known_hosts: String,
    },
}

impl std::fmt::Debug for Credentials {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Credentials::Basic { .. } => f.write_str("Basic(***)"),
            Credentials::Bearer { .. } => f.write_str("Bearer(***)"),
            Credentials::Ssh { .. } => f.write_str("Ssh(***)"),
        }
    }
}

#[derive(Debug, thiserror::Error)]
pub enum GitError {
    #[error("{0}")]
    Refused(#[from] UrlRefused),
    #[error("authentication failed for {url}: {message}")]
    Auth { url: String, message: String },
    #[error("reference {reference} not found in {url}")]
    RefNotFound { url: String, reference: String },
    #[error("fetch from {url} timed out")]
    Timeout { url: String },
    #[error("fetch from {url} failed: {message}")]
    Fetch { url: String, message: String },
    #[error("invalid semver range {0:?}")]
    BadRange(String),
    #[error(
        "ssh:// needs a Secret with `identity` and `known_hosts` (known_hosts is mandatory; unknown hosts are never trusted)"
    )]
    SshNeedsKnownHosts,
    #[error("host key of {host} {why}; refusing to connect")]
    HostKey { host: String, why: &'static str },
}

impl GitError {
    /// The condition reason for this failure.
    pub fn reason(&self) -> &'static str {
        use crate::api::reasons::git_repository as reasons;
        match self {
            GitError::Refused(_) => reasons::URL_REFUSED,
            GitError::Auth { .. } => reasons::AUTHENTICATION_FAILED,
            GitError::RefNotFound { .. } | GitError::BadRange(_) => reasons::REF_NOT_FOUND,
            GitError::Timeout { .. } => reasons::TIMEOUT,
            GitError::Fetch { .. } => reasons::FETCH_FAILED,
            GitError::SshNeedsKnownHosts => reasons::AUTHENTICATION_FAILED,
            GitError::HostKey { .. } => reasons::HOST_KEY_REJECTED,
        }
    }
}

/// The commit that was fetched, and how to name it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Fetched {
    pub commit: String,
    /// `main@sha1:<40 hex>`
    pub revision: String,
}

/// Picks the newest tag within `range` (a leading `v` is ignored; pre-releases only when
/// the range names one, as the semver crate does).
pub fn newest_matching_tag<'a>(
    tags: impl IntoIterator<Item = &'a str>,
    range: &str,
) -> Result<Option<&'a str>, GitError> {
    let range = super::tag_policy::Range::parse(range)
        .map_err(|_| GitError::BadRange(range.to_string()))?;
    Ok(tags
        .into_iter()
        .filter_map(|t| {
            let v = super::tag_policy::parse_version(t)?;
            range.matches(&v).then_some((v, t))
        })
        .max_by(|a, b| a.0.cmp(&b.0))
        .map(|(_, t)| t))
}

pub(crate) fn classify(url: &str, deadline: Instant, e: git2::Error) -> GitError {
    let url = url_policy::redact(url);
    if Instant::now() >= deadline {
        return GitError::Timeout { url };
    }
    let message = scrub(e.message());
    let lower = message.to_ascii_lowercase();
    if e.code() == ErrorCode::Auth
        || lower.contains("authentication")
        || lower.contains("401")
        || lower.contains("credentials")
        || (e.class() == ErrorClass::Http && lower.contains("403"))
    {
        GitError::Auth { url, message }
    } else {
        GitError::Fetch { url, message }
    }
}

/// Removes anything that looks like a URL's userinfo from a libgit2 message.
fn scrub(message: &str) -> String {
    message
        .split(' ')
        .map(|w| {
            if w.contains("://") {
                url_policy::redact(w)
            } else {
                w.to_string()
            }
        })
        .collect::<Vec<_>>()
        .join(" ")
}

/// The host key verdict of the last SSH connection, for a clear error.
pub(crate) type HostKeyNote = std::sync::Arc<std::sync::Mutex<Option<(String, &'static str)>>>;

pub(crate) fn callbacks<'a>(
    creds: Option<&'a Credentials>,
    deadline: Instant,
    port: u16,
    note: HostKeyNote,
) -> RemoteCallbacks<'a> {
    let mut cb = RemoteCallbacks::new();
    let mut attempts = 0;
    if let Some(Credentials::Ssh { known_hosts, .. }) = creds {
        cb.certificate_check(move |cert, host| {
            let Some(key) = cert.as_hostkey().and_then(|h| h.hostkey()) else {
                return Ok(git2::CertificateCheckStatus::CertificatePassthrough);
            };
            match super::known_hosts::verify(known_hosts, host, port, key) {
                super::known_hosts::Verdict::Trusted => {
                    Ok(git2::CertificateCheckStatus::CertificateOk)
                }
                verdict => {
                    let why = if verdict == super::known_hosts::Verdict::Changed {
                        "changed (it differs from known_hosts)"
                    } else {
                        "is not in known_hosts"
                    };
                    *note.lock().expect("host key note") = Some((host.to_string(), why));
                    Err(git2::Error::new(
                        ErrorCode::Certificate,
                        ErrorClass::Ssh,
                        "host key rejected",
                    ))
                }
            }
        });
    }
    cb.credentials(move |_url, user, allowed| {
        attempts += 1;
        match creds {
            Some(Credentials::Ssh { identity, .. })
                if attempts == 1 && allowed.contains(CredentialType::SSH_KEY) =>
            {
                Cred::ssh_key_from_memory(user.unwrap_or("git"), None, identity, None)
            }
            Some(Credentials::Basic { username, password })
                if attempts == 1 && allowed.contains(CredentialType::USER_PASS_PLAINTEXT) =>
            {
                Cred::userpass_plaintext(username, password)
            }
            _ => Err(git2::Error::new(
                ErrorCode::Auth,
                ErrorClass::Http,
                "authentication required or refused",
            )),
        }
    });
    cb.transfer_progress(move |_| Instant::now() < deadline);
    cb.sideband_progress(move |_| Instant::now() < deadline);
    cb
}

/// Proxy options toward `proxy` (a [`super::deadline_proxy`]), or none.
fn proxy_options(proxy: Option<&str>) -> Option<git2::ProxyOptions<'_>> {
    proxy.map(|url| {
        let mut p = git2::ProxyOptions::new();
        p.url(url);
        p
    })
}

fn fetch_options<'a>(
    creds: Option<&'a Credentials>,
    deadline: Instant,
    shallow: bool,
    headers: &'a [String],
    port: u16,
    note: HostKeyNote,
    proxy: Option<&'a str>,
) -> FetchOptions<'a> {
    let mut fo = FetchOptions::new();
    if let Some(p) = proxy_options(proxy) {
        fo.proxy_options(p);
    }
    fo.remote_callbacks(callbacks(creds, deadline, port, note));
    fo.download_tags(AutotagOption::None);
    fo.custom_headers(&headers.iter().map(String::as_str).collect::<Vec<_>>());
    if shallow {
        fo.depth(1);
    }
    fo
}

/// Fetches `reference` from `url` into the bare repository at `cache` (created when
/// missing) and returns the commit. Blocking: run it on a blocking thread.
pub fn fetch(
    cache: &Path,
    url: &str,
    reference: &Reference,
    creds: Option<&Credentials>,
    deadline: Instant,
) -> Result<Fetched, GitError> {
    fetch_with_depth(cache, url, reference, creds, deadline, true, None)
}

/// Like [`fetch`], with HTTP(S) connections through `proxy` (a loopback
/// [`super::deadline_proxy`] that cuts them at the deadline): `https` through it as a
/// proxy, plain `http` by naming it in the URL libgit2 dials (libgit2 sends plain `http`
/// to the server itself even with a proxy set).
pub fn fetch_via(
    cache: &Path,
    url: &str,
    reference: &Reference,
    creds: Option<&Credentials>,
    deadline: Instant,
    proxy: Option<&str>,
) -> Result<Fetched, GitError> {
    fetch_with_depth(cache, url, reference, creds, deadline, true, proxy)
}

/// Like [`fetch`], with the whole history (write-back needs it to commit on top, to push,
/// and to find reverts).
pub fn fetch_full(
    cache: &Path,
    url: &str,
    reference: &Reference,
    creds: Option<&Credentials>,
    deadline: Instant,
) -> Result<Fetched, GitError> {
    fetch_with_depth(cache, url, reference, creds, deadline, false, None)
}

fn fetch_with_depth(
    cache: &Path,
    url: &str,
    reference: &Reference,
    creds: Option<&Credentials>,
    deadline: Instant,
    allow_shallow: bool,
    proxy: Option<&str>,
) -> Result<Fetched, GitError> {
    let parsed = url_policy::check(url, matches!(creds, Some(Credentials::Basic { .. })))?;
    let shallow_ok = allow_shallow && parsed.scheme != "file";
    if parsed.scheme == "ssh" && !matches!(creds, Some(Credentials::Ssh { .. })) {
        return Err(GitError::SshNeedsKnownHosts);
    }
    let port = ssh_port(url);
    let note: HostKeyNote = Default::default();
    let host_key_error = |note: &HostKeyNote| {
        note.lock()
            .expect("host key note")
            .take()
            .map(|(host, why)| GitError::HostKey { host, why })
    };
    let repo = open_or_init(cache, url, deadline)?;
    let headers: Vec<String> = match creds {
        Some(Credentials::Bearer { token }) => vec![format!("Authorization: Bearer {token}")],
        _ => vec![],
    };
    let rewritten = proxy.and_then(|p| {
        (parsed.scheme == "http").then(|| {
            let addr = p.trim_start_matches("http://");
            let rest = url.split_once("://").map_or("", |(_, r)| r);
            let path = rest.find('/').map_or("/", |i| &rest[i..]);
            format!("http://{addr}{path}")
        })
    });
    let proxy = if rewritten.is_some() { None } else { proxy };
    let mut remote = repo
        .remote_anonymous(rewritten.as_deref().unwrap_or(url))
        .map_err(|e| classify(url, deadline, e))?;
    let not_found = |reference: &str| GitError::RefNotFound {
        url: url_policy::redact(url),
        reference: reference.to_string(),
    };

    let (refspec, local_ref, name, shallow) = match reference {
        Reference::Branch(b) => (
            format!("+refs/heads/{b}:refs/remotes/origin/{b}"),
            format!("refs/remotes/origin/{b}"),
            b.clone(),
            shallow_ok,
        ),
        Reference::Tag(t) => (
            format!("+refs/tags/{t}:refs/tags/{t}"),
            format!("refs/tags/{t}"),
            t.clone(),
            shallow_ok,
        ),
        Reference::Semver(range) => {
            let conn_cb = callbacks(creds, deadline, port, note.clone());
            let tags: Vec<String> = {
                let conn = remote
                    .connect_auth(Direction::Fetch, Some(conn_cb), proxy_options(proxy))
                    .map_err(|e| {
                        host_key_error(&note).unwrap_or_else(|| classify(url, deadline, e))
                    })?;
                conn.list()
                    .map_err(|e| classify(url, deadline, e))?
                    .iter()
                    .filter_map(|h| h.name().strip_prefix("refs/tags/"))
                    .filter(|t| !t.ends_with("^{}"))
                    .map(str::to_string)
                    .collect()
            };
            let tag = newest_matching_tag(tags.iter().map(String::as_str), range)?
                .ok_or_else(|| not_found(&format!("a tag matching {range}")))?
                .to_string();
            (
                format!("+refs/tags/{tag}:refs/tags/{tag}"),
                format!("refs/tags/{tag}"),
                tag,
                shallow_ok,
            )
        }
        Reference::Full(r) => (
            format!("+{r}:refs/gantry/{}", r.trim_start_matches("refs/")),
            format!("refs/gantry/{}", r.trim_start_matches("refs/")),
            r.clone(),
            shallow_ok,
        ),
        Reference::Commit { branch, .. } => {
            let b = branch.clone().unwrap_or_else(|| "*".into());
            (
                format!("+refs/heads/{b}:refs/remotes/origin/{b}"),
                String::new(),
                branch.clone().unwrap_or_else(|| "HEAD".into()),
                false,
            )
        }
    };

    let mut fo = fetch_options(
        creds,
        deadline,
        shallow,
        &headers,
        port,
        note.clone(),
        proxy,
    );
    if let Err(e) = remote.fetch(&[refspec.as_str()], Some(&mut fo), None) {
        if let Some(err) = host_key_error(&note) {
            return Err(err);
        }
        let msg = e.message().to_ascii_lowercase();
        if msg.contains("couldn't find remote ref")
            || msg.contains("not found") && !msg.contains("repository")
        {
            return Err(not_found(&name));
        }
        return Err(classify(url, deadline, e));
    }

    let commit = match reference {
        Reference::Commit { commit, .. } => {
            let oid = git2::Oid::from_str(commit).map_err(|_| not_found(commit))?;
            repo.find_commit(oid).map_err(|_| not_found(commit))?.id()
        }
        _ => {
            let r = repo
                .find_reference(&local_ref)
                .map_err(|_| not_found(&name))?;
            r.peel_to_commit().map_err(|_| not_found(&name))?.id()
        }
    };
    Ok(Fetched {
        commit: commit.to_string(),
        revision: format!("{name}@sha1:{commit}"),
    })
}

/// The bare repository at `cache`, created when missing.
pub(crate) fn open_or_init(
    cache: &Path,
    url: &str,
    deadline: Instant,
) -> Result<Repository, GitError> {
    match Repository::open_bare(cache) {
        Ok(r) => Ok(r),
        Err(_) => Repository::init_bare(cache).map_err(|e| classify(url, deadline, e)),
    }
}

/// Host and port of an `http://` or `https://` URL (80 and 443 when not given); `None` for
/// other schemes.
pub fn http_endpoint(url: &str) -> Option<(String, u16)> {
    let (scheme, rest) = url.split_once("://")?;
    let default = match scheme.to_ascii_lowercase().as_str() {
        "http" => 80,
        "https" => 443,
        _ => return None,
    };
    let authority = rest.split(['/', '?', '#']).next().unwrap_or_default();
    let hostport = authority
        .rsplit_once('@')
        .map(|(_, h)| h)
        .unwrap_or(authority);
    let (host, port) = super::deadline_proxy::split_authority(hostport, default);
    Some((host.to_string(), port?))
}

/// The port of an `ssh://` URL (22 when not given).
pub(crate) fn ssh_port(url: &str) -> u16 {
    url.split_once("://")
        .map(|(_, rest)| rest.split('/').next().unwrap_or_default())
        .map(|authority| {
            authority
                .rsplit_once('@')
                .map(|(_, h)| h)
                .unwrap_or(authority)
        })
        .and_then(|hostport| hostport.rsplit_once(':').and_then(|(_, p)| p.parse().ok()))
        .unwrap_or(22)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn http_endpoints() {
        assert_eq!(
            http_endpoint("https://git.example.com/org/r.git"),
            Some(("git.example.com".into(), 443))
        );
        assert_eq!(
            http_endpoint("http://127.0.0.1:8080/r.git"),
            Some(("127.0.0.1".into(), 8080))
        );
        assert_eq!(
            http_endpoint("https://[::1]:9/r.git"),
            Some(("::1".into(), 9))
        );
        assert_eq!(http_endpoint("ssh://git@h/r.git"), None);
    }

    #[test]
    fn ssh_ports() {
        assert_eq!(ssh_port("ssh://git@127.0.0.1:2222/repo.git"), 2222);
        assert_eq!(ssh_port("ssh://git@github.com/org/repo.git"), 22);
    }

    #[test]
    fn semver_picks_the_newest_match() {
        let tags = [
            "v1.0.0",
            "v1.2.0",
            "1.10.0",
            "v2.0.0",
            "v1.11.0-rc.1",
            "latest",
        ];
        assert_eq!(
            newest_matching_tag(tags, ">=1.0.0, <2.0.0").unwrap(),
            Some("1.10.0")
        );
        assert_eq!(newest_matching_tag(tags, "^2").unwrap(), Some("v2.0.0"));
        assert_eq!(newest_matching_tag(tags, ">=3").unwrap(), None);
        assert!(newest_matching_tag(tags, "not a range").is_err());
    }

    #[test]
    fn a_commit_on_no_branch_is_fetched_through_its_full_ref() {
        let dir = tempfile::tempdir().unwrap();
        let origin = Repository::init_bare(dir.path().join("origin.git")).unwrap();
        let sig = git2::Signature::now("t", "t@example.test").unwrap();
        let tree = origin
            .find_tree(origin.treebuilder(None).unwrap().write().unwrap())
            .unwrap();
        let main = origin
            .commit(Some("refs/heads/main"), &sig, &sig, "main", &tree, &[])
            .unwrap();
        let main_commit = origin.find_commit(main).unwrap();
        // A fork's pull request head: under refs/pull/, on no branch.
        let head = origin
            .commit(
                Some("refs/pull/7/head"),
                &sig,
                &sig,
                "fork",
                &tree,
                &[&main_commit],
            )
            .unwrap();
        let url = format!("file://{}", dir.path().join("origin.git").display());
        let cache = dir.path().join("cache");
        let deadline = Instant::now() + std::time::Duration::from_secs(30);
        let by_commit = Reference::Commit {
            branch: None,
            commit: head.to_string(),
        };
        let full = Reference::Full("refs/pull/7/head".into());
        assert_eq!(
            fetch_full(&cache, &url, &full, None, deadline)
                .unwrap()
                .commit,
            head.to_string()
        );
        let cached = Repository::open_bare(&cache).unwrap();
        assert_eq!(
            cached.refname_to_id("refs/gantry/pull/7/head").unwrap(),
            head
        );
        assert_eq!(
            fetch_full(&cache, &url, &by_commit, None, deadline)
                .unwrap()
                .commit,
            head.to_string()
        );
    }

    #[test]
    fn reference_defaults_to_main() {
        assert_eq!(Reference::from_spec(None), Reference::Branch("main".into()));
    }

    #[test]
    fn credentials_do_not_print() {
        let c = Credentials::Basic {
            username: "u".into(),
            password: "hunter2".into(),
        };
        assert!(!format!("{c:?}").contains("hunter2"));
    }
}
