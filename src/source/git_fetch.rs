//! Which client fetches a GitRepository: a ref over HTTP(S) by the one-round shallow fetch
//! of [`super::git_http`]; SSH, `file://`, an exact commit (fetched with its history) and a
//! caller outside the controller's runtime by libgit2 ([`super::git`]).

use std::path::Path;
use std::time::Instant;

use tokio::runtime::{Handle, RuntimeFlavor};

use super::git::{self, Credentials, Fetched, GitError, Reference};
use super::url_policy;

/// Fetches `reference` from `url` into the bare repository at `cache` (created when
/// missing) and returns the commit. `proxy` is the [`super::deadline_proxy`] for libgit2's
/// HTTP(S) connections. Blocking: run it on a thread that entered the controller's runtime.
pub fn fetch(
    cache: &Path,
    url: &str,
    reference: &Reference,
    creds: Option<&Credentials>,
    deadline: Instant,
    proxy: Option<&str>,
) -> Result<Fetched, GitError> {
    let parsed = url_policy::check(url, matches!(creds, Some(Credentials::Basic { .. })))?;
    if matches!(parsed.scheme.as_str(), "http" | "https")
        && !matches!(reference, Reference::Commit { .. })
        && let Ok(handle) = Handle::try_current()
        && handle.runtime_flavor() == RuntimeFlavor::MultiThread
    {
        let repo = git::open_or_init(cache, url, deadline)?;
        if let Some(fetched) =
            super::git_http::fetch(&handle, &repo, url, reference, creds, deadline)?
        {
            return Ok(fetched);
        }
    }
    git::fetch_via(cache, url, reference, creds, deadline, proxy)
}
