//! Shallow fetches over Git's smart HTTP in two requests: the ref advertisement, then one
//! upload-pack POST that carries the want, `deepen 1`, the repository's shallow boundary,
//! its haves and `done`, and is answered with the shallow list and the pack at once. An
//! unchanged commit costs the advertisement alone. libgit2 takes one POST more for every
//! shallow fetch (it reads the shallow list before it says `done`), and each POST is a
//! `git upload-pack` run on the server; a fleet of sources fetching at once paid for it in
//! the Git server's CPU.
//!
//! The pack goes into the bare repository through git2's pack writer (which indexes it),
//! so the repository stays the one libgit2 reads, writes back to and fetches by commit.
//! Each fetch runs on the fetch's blocking thread against the controller's runtime: one
//! shared HTTP client, the deadline on every await (a silent server costs no more than its
//! deadline), redirects only to the same scheme, host and port.

mod protocol;

use std::sync::OnceLock;
use std::time::Instant;

use git2::{Oid, Repository};
use tokio::runtime::Handle;

use super::git::{Credentials, Fetched, GitError, Reference, newest_matching_tag};
use super::url_policy;
use protocol::{Answer, Ask, ProtocolError};

const ADVERTISEMENT: &str = "application/x-git-upload-pack-advertisement";
/// Largest ref advertisement read (a repository with a few hundred thousand refs; only the
/// refs a fetch needs are kept).
const MAX_ADVERTISEMENT: usize = 64 << 20;
/// Servers tell Git clients by a `git/` user agent.
const USER_AGENT: &str = concat!("git/2.0 (gantry ", env!("CARGO_PKG_VERSION"), ")");
const AGENT: &str = concat!("gantry/", env!("CARGO_PKG_VERSION"));
/// Commits offered as haves.
const MAX_HAVES: usize = 32;
/// Redirects followed, each to the same scheme, host and port.
const MAX_REDIRECTS: usize = 3;

/// Why a fetch stopped; mapped to [`GitError`] with the source's URL.
enum Failure {
    Timeout,
    Auth(String),
    Fetch(String),
    /// The server speaks only the dumb protocol or protocol v2 (libgit2 neither).
    Unsupported(&'static str),
    NotFound(String),
    Other(GitError),
}

impl From<ProtocolError> for Failure {
    fn from(e: ProtocolError) -> Self {
        match e {
            ProtocolError::Unsupported(what) => Failure::Unsupported(what),
            e => Failure::Fetch(e.to_string()),
        }
    }
}

impl From<git2::Error> for Failure {
    fn from(e: git2::Error) -> Self {
        Failure::Fetch(e.message().to_string())
    }
}

fn transport(e: http_client::Error) -> Failure {
    if e.is_timeout() {
        return Failure::Timeout;
    }
    Failure::Fetch(super::helm_repo::describe(&e.without_url()))
}

fn client() -> Option<&'static http_client::Client> {
    static CLIENT: OnceLock<Option<http_client::Client>> = OnceLock::new();
    CLIENT
        .get_or_init(|| {
            let policy = http_client::redirect::Policy::custom(|attempt| {
                let from = attempt.previous().first().cloned();
                let to = attempt.url();
                let same_origin = from.is_some_and(|f| {
                    f.scheme() == to.scheme()
                        && f.host_str() == to.host_str()
                        && f.port_or_known_default() == to.port_or_known_default()
                });
                if attempt.previous().len() > MAX_REDIRECTS {
                    attempt.error("too many redirects")
                } else if same_origin {
                    attempt.follow()
                } else {
                    attempt.error("a redirect to another scheme, host or port is refused")
                }
            });
            // The process's TLS provider (installed by `main`; here too for library users).
            let _ = rustls::crypto::ring::default_provider().install_default();
            // No proxy from the environment: fetches dial the URL's host as libgit2's did.
            http_client::Client::builder()
                .no_proxy()
                .user_agent(USER_AGENT)
                .redirect(policy)
                .build()
                .inspect_err(|e| tracing::warn!(error = %e, "no HTTP client for Git fetches; HTTP(S) sources fail"))
                .ok()
        })
        .as_ref()
}

fn authorize(
    req: http_client::RequestBuilder,
    creds: Option<&Credentials>,
) -> http_client::RequestBuilder {
    match creds {
        Some(Credentials::Basic { username, password }) => req.basic_auth(username, Some(password)),
        Some(Credentials::Bearer { token }) => req.bearer_auth(token),
        _ => req,
    }
}

fn check_status(resp: &http_client::Response) -> Result<(), Failure> {
    let status = resp.status();
    match status.as_u16() {
        200..=299 => Ok(()),
        401 | 403 => Err(Failure::Auth(format!("the server answered {status}"))),
        404 => Err(Failure::Fetch(format!(
            "no repository there (the server answered {status})"
        ))),
        _ => Err(Failure::Fetch(format!("the server answered {status}"))),
    }
}

/// The ref advertisement, and the base URL after same-origin redirects.
async fn advertise(
    client: &http_client::Client,
    base: &str,
    creds: Option<&Credentials>,
    keep: impl Fn(&str) -> bool,
) -> Result<(protocol::Advertisement, String), Failure> {
    let req = client.get(format!("{base}/info/refs?service=git-upload-pack"));
    let mut resp = authorize(req, creds).send().await.map_err(transport)?;
    check_status(&resp)?;
    let base = resp
        .url()
        .as_str()
        .split_once("/info/refs")
        .map_or_else(|| base.to_string(), |(b, _)| b.to_string());
    let smart = resp
        .headers()
        .get(http_client::header::CONTENT_TYPE)
        .and_then(|v| v.to_str().ok())
        .is_some_and(|v| v.starts_with(ADVERTISEMENT));
    if !smart {
        return Err(Failure::Unsupported("the dumb HTTP protocol"));
    }
    let mut reader = protocol::AdvertisementReader::new(keep);
    let mut read = 0;
    while let Some(chunk) = resp.chunk().await.map_err(transport)? {
        read += chunk.len();
        if read > MAX_ADVERTISEMENT {
            return Err(Failure::Fetch(format!(
                "the ref advertisement is larger than {} MiB",
                MAX_ADVERTISEMENT >> 20
            )));
        }
        reader.feed(&chunk)?;
    }
    Ok((reader.finish()?, base))
}

/// The remote ref to fetch, the local ref that keeps it, and the name in the revision.
fn wanted(
    reference: &Reference,
    adv: &protocol::Advertisement,
) -> Result<Option<(String, String, String)>, Failure> {
    Ok(Some(match reference {
        Reference::Branch(b) => (
            format!("refs/heads/{b}"),
            format!("refs/remotes/origin/{b}"),
            b.clone(),
        ),
        Reference::Tag(t) => (
            format!("refs/tags/{t}"),
            format!("refs/tags/{t}"),
            t.clone(),
        ),
        Reference::Semver(range) => {
            let tag = newest_matching_tag(adv.tags(), range)
                .map_err(Failure::Other)?
                .ok_or_else(|| Failure::NotFound(format!("a tag matching {range}")))?
                .to_string();
            (format!("refs/tags/{tag}"), format!("refs/tags/{tag}"), tag)
        }
        Reference::Full(r) => (
            r.clone(),
            format!("refs/gantry/{}", r.trim_start_matches("refs/")),
            r.clone(),
        ),
        Reference::Commit { .. } => return Ok(None),
    }))
}

/// The commits the repository's refs point at, newest first (at most [`MAX_HAVES`]): the
/// server leaves out what they hold, also when the source moves to another tag or branch.
/// A ref whose object cannot be read means a damaged cache: the caller clones afresh.
fn haves(repo: &Repository) -> Result<Vec<Oid>, Failure> {
    let mut tips = Vec::new();
    for r in repo.references()?.flatten() {
        let Some(target) = r.target() else {
            continue;
        };
        let object = repo.find_object(target, None).map_err(|e| {
            Failure::Fetch(format!(
                "the cache cannot read {} of {}: {}",
                target,
                r.name().unwrap_or("a ref"),
                e.message()
            ))
        })?;
        if let Ok(commit) = object.peel_to_commit() {
            tips.push((commit.time().seconds(), commit.id()));
        }
    }
    tips.sort_unstable_by(|a, b| b.cmp(a));
    tips.dedup_by_key(|t| t.1);
    Ok(tips.into_iter().take(MAX_HAVES).map(|(_, id)| id).collect())
}

/// The repository's shallow boundary (`shallow`, one commit id a line).
fn read_shallow(repo: &Repository) -> Vec<Oid> {
    std::fs::read_to_string(repo.path().join("shallow"))
        .unwrap_or_default()
        .lines()
        .filter_map(|l| Oid::from_str(l.trim()).ok())
        .collect()
}

fn write_shallow(repo: &Repository, boundary: &[Oid]) -> std::io::Result<()> {
    let path = repo.path().join("shallow");
    if boundary.is_empty() {
        return match std::fs::remove_file(&path) {
            Err(e) if e.kind() != std::io::ErrorKind::NotFound => Err(e),
            _ => Ok(()),
        };
    }
    let text: String = boundary.iter().map(|o| format!("{o}\n")).collect();
    let tmp = repo.path().join("shallow.gantry-tmp");
    std::fs::write(&tmp, text)?;
    std::fs::rename(&tmp, &path)
}

/// Fetches `reference` from the `http(s)` `url` into `repo`, shallow. `Ok(None)` for an
/// exact commit (libgit2 fetches it, with its history). Blocking: call it on a blocking
/// thread of `handle`'s runtime.
pub fn fetch(
    handle: &Handle,
    repo: &Repository,
    url: &str,
    reference: &Reference,
    creds: Option<&Credentials>,
    deadline: Instant,
) -> Result<Option<Fetched>, GitError> {
    if matches!(reference, Reference::Commit { .. }) {
        return Ok(None);
    }
    let redacted = url_policy::redact(url);
    let Some(client) = client() else {
        return Err(GitError::Fetch {
            url: redacted,
            message: "no HTTP client could be built (see the controller's log)".into(),
        });
    };
    match fetch_with(handle, client, repo, url, reference, creds, deadline) {
        Ok(f) => Ok(f),
        Err(Failure::Unsupported(what)) => Err(GitError::Fetch {
            url: redacted,
            message: format!(
                "the server speaks {what}; Gantry fetches over Git's smart HTTP protocol (v0/v1)"
            ),
        }),
        Err(Failure::Timeout) => Err(GitError::Timeout { url: redacted }),
        Err(_) if Instant::now() >= deadline => Err(GitError::Timeout { url: redacted }),
        Err(Failure::Auth(message)) => Err(GitError::Auth {
            url: redacted,
            message,
        }),
        Err(Failure::Fetch(message)) => Err(GitError::Fetch {
            url: redacted,
            message,
        }),
        Err(Failure::NotFound(reference)) => Err(GitError::RefNotFound {
            url: redacted,
            reference,
        }),
        Err(Failure::Other(e)) => Err(e),
    }
}

/// Runs `f` on `handle`'s runtime until `until`.
fn on_time<F: std::future::Future>(
    handle: &Handle,
    until: tokio::time::Instant,
    f: F,
) -> Result<F::Output, Failure> {
    handle
        .block_on(tokio::time::timeout_at(until, f))
        .map_err(|_| Failure::Timeout)
}

fn fetch_with(
    handle: &Handle,
    client: &http_client::Client,
    repo: &Repository,
    url: &str,
    reference: &Reference,
    creds: Option<&Credentials>,
    deadline: Instant,
) -> Result<Option<Fetched>, Failure> {
    let until = tokio::time::Instant::from_std(deadline);
    let keep = |name: &str| match reference {
        Reference::Branch(b) => name.strip_prefix("refs/heads/") == Some(b.as_str()),
        Reference::Tag(t) => name.strip_prefix("refs/tags/") == Some(t.as_str()),
        Reference::Semver(_) => name.starts_with("refs/tags/"),
        Reference::Full(r) => name == r,
        Reference::Commit { .. } => false,
    };
    let base = url.trim_end_matches('/');
    let (adv, base) = on_time(handle, until, advertise(client, base, creds, keep))??;
    let Some((remote, local, name)) = wanted(reference, &adv)? else {
        return Ok(None);
    };
    let want = adv
        .get(&remote)
        .ok_or_else(|| Failure::NotFound(name.clone()))?;

    let odb = repo.odb()?;
    if !odb.exists(want) {
        let haves = haves(repo)?;
        let boundary = read_shallow(repo);
        let ask = Ask {
            want,
            shallow: &boundary,
            haves: &haves,
        };
        let (body, framing) = protocol::upload_request(&adv, &ask, AGENT);
        let req = client
            .post(format!("{base}/git-upload-pack"))
            .header(
                http_client::header::CONTENT_TYPE,
                "application/x-git-upload-pack-request",
            )
            .header(
                http_client::header::ACCEPT,
                "application/x-git-upload-pack-result",
            )
            .body(body);
        let send = authorize(req, creds).send();
        let mut resp = on_time(handle, until, send)?.map_err(transport)?;
        check_status(&resp)?;
        let mut writer = odb.packwriter()?;
        let mut answer = Answer::new(framing);
        while let Some(chunk) = on_time(handle, until, resp.chunk())?.map_err(transport)? {
            answer.feed(&chunk, &mut writer)?;
        }
        let update = answer.finish()?;
        writer
            .commit()
            .map_err(|e| Failure::Fetch(format!("the pack does not index: {}", e.message())))?;
        if !odb.exists(want) {
            return Err(Failure::Fetch(format!(
                "the server's pack lacks {want}, the tip of {remote}"
            )));
        }
        write_shallow(repo, &update.apply(&boundary))
            .map_err(|e| Failure::Fetch(format!("cannot write the shallow list: {e}")))?;
    }
    let commit = repo
        .find_object(want, None)?
        .peel_to_commit()
        .map_err(|_| Failure::NotFound(name.clone()))?
        .id();
    repo.reference(&local, want, true, "gantry: fetch")?;
    Ok(Some(Fetched {
        commit: commit.to_string(),
        revision: format!("{name}@sha1:{commit}"),
    }))
}
