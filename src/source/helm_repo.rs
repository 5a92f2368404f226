//! Helm chart repositories (`index.yaml` and chart archives over HTTP(S)), as `helm repo
//! add` + `helm pull` would read them: the index is fetched with a size cap and kept per
//! repository (revalidated with its ETag), the version is resolved from it (an exact
//! version or a range), and the archive is read with a size cap and verified against the
//! index's digest before anything unpacks it.

use std::collections::HashMap;
use std::sync::{Arc, LazyLock, Mutex};
use std::time::Duration;

use serde::Deserialize;
use sha2::{Digest, Sha256};

use super::chart_version::Wanted;
use super::oci_chart::{ChartError, FetchedChart, MAX_ARCHIVE_BYTES};
use super::url_policy::is_loopback;

/// The largest `index.yaml` read (a repository with thousands of versions is a few MiB).
pub const MAX_INDEX_BYTES: usize = 32 << 20;
/// Repositories whose index is kept between reconciles.
const MAX_CACHED_INDEXES: usize = 256;

/// How to reach a repository.
#[derive(Clone, Default)]
pub struct RepoAuth {
    pub basic: Option<(String, String)>,
    /// PEM of a CA to trust for this repository (instead of the system's).
    pub ca_pem: Option<Vec<u8>>,
}

impl RepoAuth {
    /// Tells cache entries of different credentials apart (never printed).
    fn fingerprint(&self) -> String {
        let mut h = Sha256::new();
        if let Some((u, p)) = &self.basic {
            h.update(u.as_bytes());
            h.update([0]);
            h.update(p.as_bytes());
        }
        h.update([1]);
        if let Some(ca) = &self.ca_pem {
            h.update(ca);
        }
        hex::encode(&h.finalize()[..8])
    }
}

impl std::fmt::Debug for RepoAuth {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("RepoAuth")
            .field("basic", &self.basic.as_ref().map(|(u, _)| u))
            .field("ca", &self.ca_pem.is_some())
            .finish()
    }
}

#[derive(Debug, Deserialize)]
struct Index {
    #[serde(default)]
    entries: HashMap<String, Vec<IndexEntry>>,
}

#[derive(Debug, Clone, Deserialize)]
struct IndexEntry {
    version: String,
    #[serde(default)]
    digest: Option<String>,
    #[serde(default)]
    urls: Vec<String>,
}

/// A version of a chart as the index lists it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Resolved {
    pub repository: String,
    pub name: String,
    pub version: String,
    /// The archive's `sha256:<hex>`, from the index.
    pub digest: String,
    /// Where the archive is (absolute).
    pub url: String,
}

impl Resolved {
    pub fn source(&self) -> String {
        format!("{} {}", self.repository, self.name)
    }
}

/// Indexes by URL and credentials: (ETag, index).
type IndexCache = HashMap<String, (String, Arc<Index>)>;

static INDEXES: LazyLock<Mutex<IndexCache>> = LazyLock::new(Default::default);

fn bad_url(url: &str, why: &str) -> ChartError {
    ChartError::BadUrl {
        url: super::url_policy::redact(url),
        why: why.to_string(),
    }
}

fn failed(reference: &str, why: impl Into<String>) -> ChartError {
    ChartError::Repository {
        reference: reference.to_string(),
        why: why.into(),
    }
}

/// Checks the repository URL: http(s), plain HTTP only to loopback or with `insecure`.
pub fn check_url(repository: &str, insecure: bool) -> Result<http_client::Url, ChartError> {
    let url = http_client::Url::parse(repository)
        .map_err(|e| bad_url(repository, &format!("not a URL: {e}")))?;
    match url.scheme() {
        "https" => {}
        "http" if insecure || url.host_str().is_some_and(is_loopback) => {}
        "http" => {
            return Err(bad_url(
                repository,
                "plain HTTP is allowed only to loopback repositories or with insecure: true",
            ));
        }
        _ => return Err(bad_url(repository, "a chart repository URL is https://…")),
    }
    if url
        .host_str()
        .is_some_and(super::url_policy::is_metadata_host)
    {
        return Err(bad_url(
            repository,
            "a link-local or cloud metadata address is never a chart repository",
        ));
    }
    if !url.username().is_empty() || url.password().is_some() {
        return Err(bad_url(
            repository,
            "credentials go in the Secret of secretRef, not in the URL",
        ));
    }
    Ok(url)
}

fn client(auth: &RepoAuth, timeout: Duration) -> Result<http_client::Client, ChartError> {
    let mut b = http_client::Client::builder()
        .timeout(timeout)
        .redirect(http_client::redirect::Policy::limited(3));
    if let Some(pem) = &auth.ca_pem {
        let ca = http_client::Certificate::from_pem(pem)
            .map_err(|e| failed("secretRef", format!("ca.crt is not a PEM certificate: {e}")))?;
        b = b.tls_certs_only([ca]);
    }
    b.build()
        .map_err(|e| failed("client", format!("cannot build the HTTP client: {e}")))
}

/// GETs `url` (with the repository's credentials), reading at most `cap` bytes.
async fn get_capped(
    client: &http_client::Client,
    url: &str,
    auth: &RepoAuth,
    etag: Option<&str>,
    cap: usize,
) -> Result<Option<(Vec<u8>, Option<String>)>, ChartError> {
    let mut req = client.get(url);
    if let Some((u, p)) = &auth.basic {
        req = req.basic_auth(u, Some(p));
    }
    if let Some(tag) = etag {
        req = req.header("If-None-Match", tag);
    }
    let mut resp = req.send().await.map_err(|e| failed(url, describe(&e)))?;
    let status = resp.status();
    if status.as_u16() == 304 {
        return Ok(None);
    }
    if !status.is_success() {
        return Err(failed(url, format!("the server answered {status}")));
    }
    if resp.content_length().is_some_and(|l| l > cap as u64) {
        return Err(ChartError::TooLarge {
            reference: url.to_string(),
            limit: cap as u64,
        });
    }
    let etag = resp
        .headers()
        .get("etag")
        .and_then(|v| v.to_str().ok())
        .map(str::to_string);
    let mut body = Vec::new();
    while let Some(chunk) = resp.chunk().await.map_err(|e| failed(url, describe(&e)))? {
        if body.len() + chunk.len() > cap {
            return Err(ChartError::TooLarge {
                reference: url.to_string(),
                limit: cap as u64,
            });
        }
        body.extend_from_slice(&chunk);
    }
    Ok(Some((body, etag)))
}

/// The cause of a failed request, with its sources (host, connection, TLS).
pub(crate) fn describe(e: &http_client::Error) -> String {
    let mut text = e.to_string();
    let mut source = std::error::Error::source(e);
    while let Some(s) = source {
        text.push_str(&format!(": {s}"));
        source = s.source();
    }
    text
}

/// The repository's index, fetched (or revalidated with its ETag).
async fn index(
    repository: &str,
    auth: &RepoAuth,
    insecure: bool,
    timeout: Duration,
) -> Result<Arc<Index>, ChartError> {
    let base = check_url(repository, insecure)?;
    let url = format!("{}/index.yaml", base.as_str().trim_end_matches('/'));
    let key = format!("{url}#{}", auth.fingerprint());
    let cached = INDEXES.lock().expect("index cache").get(&key).cloned();
    let client = client(auth, timeout)?;
    let fetched = get_capped(
        &client,
        &url,
        auth,
        cached.as_ref().map(|(tag, _)| tag.as_str()),
        MAX_INDEX_BYTES,
    )
    .await?;
    let Some((body, etag)) = fetched else {
        // 304: what we have is current.
        return Ok(cached.expect("a 304 answers a cached ETag").1);
    };
    let parsed = tokio::task::spawn_blocking(move || serde_yaml::from_slice::<Index>(&body))
        .await
        .map_err(|e| failed(&url, format!("parsing stopped: {e}")))?
        // Where, not what: the answer of a wrong URL is never quoted into a status.
        .map_err(|e| {
            let at = e
                .location()
                .map(|l| format!(" (YAML error at line {}, column {})", l.line(), l.column()))
                .unwrap_or_default();
            failed(&url, format!("not a chart repository index{at}"))
        })?;
    let parsed = Arc::new(parsed);
    if let Some(tag) = etag {
        let mut cache = INDEXES.lock().expect("index cache");
        if cache.len() >= MAX_CACHED_INDEXES {
            cache.clear();
        }
        cache.insert(key, (tag, parsed.clone()));
    }
    Ok(parsed)
}

/// Every version of chart `name` that `repository`'s index lists (for a policy to order).
pub async fn versions(
    repository: &str,
    name: &str,
    auth: &RepoAuth,
    insecure: bool,
    timeout: Duration,
) -> Result<Vec<String>, ChartError> {
    let index = index(repository, auth, insecure, timeout).await?;
    let entries = index.entries.get(name).ok_or_else(|| {
        failed(
            &format!("{repository} {name}"),
            "the repository's index has no chart of that name",
        )
    })?;
    Ok(entries.iter().map(|e| e.version.clone()).collect())
}

/// The version of chart `name` that `version` asks for, as `repository`'s index lists it.
pub async fn resolve(
    repository: &str,
    name: &str,
    version: &str,
    auth: &RepoAuth,
    insecure: bool,
    timeout: Duration,
) -> Result<Resolved, ChartError> {
    let wanted = Wanted::parse(version).map_err(|why| ChartError::BadVersion {
        version: version.to_string(),
        why,
    })?;
    let index = index(repository, auth, insecure, timeout).await?;
    let reference = format!("{repository} {name}");
    let entries = index.entries.get(name).ok_or_else(|| {
        failed(
            &reference,
            "the repository's index has no chart of that name",
        )
    })?;
    let chosen = wanted
        .select(entries.iter().map(|e| e.version.as_str()))
        .ok_or_else(|| {
            failed(
                &reference,
                format!(
                    "no version matches {version:?} (the index lists {})",
                    listed(entries)
                ),
            )
        })?;
    let entry = entries
        .iter()
        .find(|e| e.version == chosen)
        .expect("selected from the entries");
    let digest = entry
        .digest
        .as_deref()
        .filter(|d| d.len() == 64 && d.bytes().all(|b| b.is_ascii_hexdigit()))
        .ok_or_else(|| {
            failed(
                &reference,
                format!(
                    "the index gives no sha256 digest for {chosen}; an archive that cannot be verified is not used"
                ),
            )
        })?;
    let first = entry
        .urls
        .first()
        .ok_or_else(|| failed(&reference, format!("the index gives no URL for {chosen}")))?;
    let base = check_url(&format!("{}/", repository.trim_end_matches('/')), insecure)?;
    let url = base
        .join(first)
        .map_err(|e| failed(&reference, format!("archive URL {first:?}: {e}")))?;
    // The archive is read with the repository's credentials: it must be on the same host,
    // over a scheme the repository allows.
    check_url(url.as_str(), insecure)?;
    if url.host_str() != base.host_str()
        || url.port_or_known_default() != base.port_or_known_default()
    {
        return Err(failed(
            &reference,
            format!("the archive URL {url} is on another host than the repository; refused"),
        ));
    }
    Ok(Resolved {
        repository: repository.to_string(),
        name: name.to_string(),
        version: chosen.to_string(),
        digest: format!("sha256:{}", digest.to_ascii_lowercase()),
        url: url.to_string(),
    })
}

fn listed(entries: &[IndexEntry]) -> String {
    let mut versions: Vec<&str> = entries
        .iter()
        .map(|e| e.version.as_str())
        .take(10)
        .collect();
    if entries.len() > 10 {
        versions.push("…");
    }
    versions.join(", ")
}

/// Reads the archive of `chart` and verifies it against the index's digest.
pub async fn download(
    chart: &Resolved,
    auth: &RepoAuth,
    timeout: Duration,
) -> Result<FetchedChart, ChartError> {
    let client = client(auth, timeout)?;
    let (archive, _) = get_capped(&client, &chart.url, auth, None, MAX_ARCHIVE_BYTES)
        .await?
        .ok_or_else(|| failed(&chart.url, "the server answered 304 without being asked"))?;
    let got = format!("sha256:{}", hex::encode(Sha256::digest(&archive)));
    if got != chart.digest {
        return Err(ChartError::DigestMismatch {
            reference: format!("{} {}", chart.source(), chart.version),
            expected: chart.digest.clone(),
            got,
        });
    }
    Ok(FetchedChart {
        reference: format!("{} {}", chart.source(), chart.version),
        digest: got,
        archive,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn repository_urls_are_checked() {
        assert!(check_url("https://charts.example.com/stable", false).is_ok());
        assert!(check_url("http://127.0.0.1:8080/charts", false).is_ok());
        let e = check_url("http://charts.example.com", false).unwrap_err();
        assert!(e.to_string().contains("plain HTTP"), "{e}");
        assert!(check_url("http://charts.example.com", true).is_ok());
        assert!(check_url("ftp://charts.example.com", true).is_err());
        for metadata in [
            "http://169.254.169.254/latest/meta-data",
            "https://[fd00:ec2::254]/",
            "http://metadata.google.internal/computeMetadata/v1",
            "https://[fe80::1]/charts",
        ] {
            let e = check_url(metadata, true).unwrap_err();
            assert!(e.to_string().contains("metadata"), "{metadata}: {e}");
        }
        let e = check_url("https://user:pw@charts.example.com", false).unwrap_err();
        assert!(
            e.to_string().contains("secretRef") && !e.to_string().contains("pw@"),
            "{e}"
        );
    }

    #[test]
    fn an_index_parses_with_only_what_is_needed() {
        let text = "apiVersion: v1\nentries:\n  web:\n  - version: 1.2.0\n    digest: abc\n    urls: [web-1.2.0.tgz]\n    created: 2026-01-01T00:00:00Z\n    description: x\n    maintainers: [{name: a}]\ngenerated: 2026-01-01T00:00:00Z\n";
        let index: Index = serde_yaml::from_str(text).unwrap();
        assert_eq!(index.entries["web"][0].urls, ["web-1.2.0.tgz"]);
    }
}
