//! Container registries through `oci-client`: paginated tag listing and manifest digests,
//! credentials from a `kubernetes.io/dockerconfigjson` Secret, one shared scan per image and
//! credentials.

use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::{Duration, SystemTime};

use oci_client::client::{ClientConfig, ClientProtocol};
use oci_client::errors::{OciDistributionError, OciErrorCode};
use oci_client::secrets::RegistryAuth;
use oci_client::{Client, Reference};

pub use super::registry_auth::Credentials;
use super::url_policy::is_loopback;

/// Tags asked for per page.
pub const PAGE_SIZE: usize = 1000;
/// A repository with more tags than this is refused rather than read without end.
pub const MAX_TAGS: usize = 200_000;

/// An image repository: registry host and repository path.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct ImageName {
    pub registry: String,
    pub repository: String,
}

impl ImageName {
    /// Parses `registry.example.com/team/web`, `127.0.0.1:5000/web`, `nginx`
    /// (→ `docker.io/library/nginx`). Tags and digests are refused.
    pub fn parse(image: &str) -> Result<Self, RegistryError> {
        let bad = |why: &str| RegistryError::BadImage {
            image: image.to_string(),
            why: why.to_string(),
        };
        if image.is_empty() {
            return Err(bad("it is empty"));
        }
        if image.contains('@') {
            return Err(bad("it carries a digest"));
        }
        let (first, rest) = match image.split_once('/') {
            Some((f, r)) if f.contains('.') || f.contains(':') || f == "localhost" => {
                (f.to_string(), r.to_string())
            }
            _ => ("docker.io".to_string(), image.to_string()),
        };
        if rest.contains(':') {
            return Err(bad("it carries a tag"));
        }
        let repository = if first == "docker.io" && !rest.contains('/') {
            format!("library/{rest}")
        } else {
            rest
        };
        let valid = repository.split('/').all(|c| {
            !c.is_empty()
                && c.bytes()
                    .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b"._-".contains(&b))
        });
        if !valid {
            return Err(bad(
                "a repository path has lowercase letters, digits and . _ - only",
            ));
        }
        Ok(ImageName {
            registry: first,
            repository,
        })
    }

    pub fn host(&self) -> &str {
        self.registry
            .rsplit_once(':')
            .filter(|(_, p)| p.bytes().all(|b| b.is_ascii_digit()))
            .map(|(h, _)| h)
            .unwrap_or(&self.registry)
    }

    pub(crate) fn reference(&self, tag: &str) -> Reference {
        Reference::with_tag(
            self.registry.clone(),
            self.repository.clone(),
            tag.to_string(),
        )
    }
}

#[derive(Debug, thiserror::Error)]
pub enum RegistryError {
    #[error("invalid image {image:?}: {why}")]
    BadImage { image: String, why: String },
    #[error(
        "refusing plain HTTP to {registry}: allowed only for loopback registries or with `insecure: true`"
    )]
    InsecureRefused { registry: String },
    #[error("registry {registry} refused the credentials for {repository}: {message}")]
    Auth {
        registry: String,
        repository: String,
        message: String,
    },
    #[error("{what} not found in registry {registry}")]
    NotFound { registry: String, what: String },
    #[error("registry {registry} is rate limiting requests (429); backing off")]
    RateLimited { registry: String },
    #[error("registry {registry} did not answer within {timeout:?}")]
    Timeout { registry: String, timeout: Duration },
    #[error("registry {registry} unavailable: {message}")]
    Unavailable { registry: String, message: String },
    #[error("{repository} has more than {MAX_TAGS} tags; refusing to read on")]
    TooManyTags { repository: String },
}

impl RegistryError {
    /// The condition reason.
    pub fn reason(&self) -> &'static str {
        use crate::api::reasons::image_policy as reasons;
        match self {
            RegistryError::BadImage { .. } => reasons::INVALID_IMAGE,
            RegistryError::InsecureRefused { .. } => reasons::URL_REFUSED,
            RegistryError::Auth { .. } => reasons::AUTHENTICATION_FAILED,
            RegistryError::NotFound { .. } => reasons::IMAGE_NOT_FOUND,
            RegistryError::RateLimited { .. } => reasons::RATE_LIMITED,
            RegistryError::Timeout { .. } => reasons::TIMEOUT,
            RegistryError::Unavailable { .. } => reasons::REGISTRY_UNAVAILABLE,
            RegistryError::TooManyTags { .. } => reasons::TOO_MANY_TAGS,
        }
    }

    /// Whether retrying without a change can help.
    pub fn is_transient(&self) -> bool {
        matches!(
            self,
            RegistryError::RateLimited { .. }
                | RegistryError::Timeout { .. }
                | RegistryError::Unavailable { .. }
        )
    }
}

pub(crate) fn classify(image: &ImageName, what: &str, e: OciDistributionError) -> RegistryError {
    let registry = image.registry.clone();
    let auth = |message: String| RegistryError::Auth {
        registry: image.registry.clone(),
        repository: image.repository.clone(),
        message,
    };
    let not_found = || RegistryError::NotFound {
        registry: image.registry.clone(),
        what: what.to_string(),
    };
    match e {
        OciDistributionError::UnauthorizedError { .. } => auth("401 Unauthorized".into()),
        OciDistributionError::AuthenticationFailure(m) => auth(m),
        OciDistributionError::ImageManifestNotFoundError(_) => not_found(),
        OciDistributionError::RegistryError { envelope, .. } => {
            let codes: Vec<&OciErrorCode> = envelope.errors.iter().map(|e| &e.code).collect();
            if codes
                .iter()
                .any(|c| matches!(c, OciErrorCode::Unauthorized | OciErrorCode::Denied))
            {
                auth(
                    envelope
                        .errors
                        .first()
                        .map(|e| e.message.clone())
                        .unwrap_or_default(),
                )
            } else if codes.iter().any(|c| {
                matches!(
                    c,
                    OciErrorCode::NameUnknown
                        | OciErrorCode::ManifestUnknown
                        | OciErrorCode::NotFound
                )
            }) {
                not_found()
            } else if codes.contains(&&OciErrorCode::Toomanyrequests) {
                RegistryError::RateLimited { registry }
            } else {
                RegistryError::Unavailable {
                    registry,
                    message: envelope
                        .errors
                        .iter()
                        .map(|e| e.message.clone())
                        .collect::<Vec<_>>()
                        .join("; "),
                }
            }
        }
        OciDistributionError::ServerError { code, message, .. } => match code {
            401 | 403 => auth(format!("{code}")),
            404 => not_found(),
            429 => RegistryError::RateLimited { registry },
            _ => RegistryError::Unavailable {
                registry,
                message: format!("HTTP {code}: {}", truncate(&message, 200)),
            },
        },
        OciDistributionError::RequestError(e) => RegistryError::Unavailable {
            registry,
            message: if e.is_connect() {
                "connection refused or unreachable".into()
            } else if e.is_timeout() {
                "request timed out".into()
            } else {
                // reqwest errors name the URL, which never carries credentials here
                e.to_string()
            },
        },
        other => RegistryError::Unavailable {
            registry,
            message: truncate(&other.to_string(), 300),
        },
    }
}

fn truncate(s: &str, n: usize) -> String {
    if s.len() <= n {
        return s.to_string();
    }
    let mut end = n;
    while !s.is_char_boundary(end) {
        end -= 1;
    }
    format!("{}…", &s[..end])
}

/// One completed tag listing.
#[derive(Debug)]
pub struct Scan {
    pub tags: Vec<String>,
    pub at: SystemTime,
}

type ClientKey = (String, String, bool);
type ScanKey = (ImageName, String, bool);
/// The latest scan of one key, behind an async lock so concurrent askers share it.
type ScanSlot = Arc<tokio::sync::Mutex<Option<Arc<Scan>>>>;

/// Registry clients and scans shared by every ImagePolicy: policies on the same image with
/// the same credentials reuse one scan per interval, and concurrent reconciles of such
/// policies wait for one listing instead of each making their own.
#[derive(Default)]
pub struct Scanner {
    clients: Mutex<HashMap<ClientKey, Arc<Client>>>,
    scans: Mutex<HashMap<ScanKey, ScanSlot>>,
    /// Number of listings that went to a registry (for tests and metrics).
    listings: std::sync::atomic::AtomicU64,
}

impl Scanner {
    /// The shared client for `image`'s registry with these credentials.
    pub fn client(
        &self,
        image: &ImageName,
        creds: &Credentials,
        insecure: bool,
        timeout: Duration,
    ) -> Result<Arc<Client>, RegistryError> {
        let plain_http = is_loopback(image.host()) || insecure;
        let key = (image.registry.clone(), creds.fingerprint(), plain_http);
        let mut clients = self.clients.lock().expect("registry clients");
        if let Some(c) = clients.get(&key) {
            return Ok(c.clone());
        }
        let client = Arc::new(new_client(image, insecure, timeout));
        clients.insert(key, client.clone());
        Ok(client)
    }

    /// How many listings went to a registry since start.
    pub fn listings(&self) -> u64 {
        self.listings.load(std::sync::atomic::Ordering::Relaxed)
    }

    /// All tags of `image`, reusing a scan that finished at or after `not_before`.
    pub async fn tags(
        &self,
        image: &ImageName,
        creds: &Credentials,
        insecure: bool,
        timeout: Duration,
        not_before: SystemTime,
    ) -> Result<Arc<Scan>, RegistryError> {
        let slot = {
            let key = (image.clone(), creds.fingerprint(), insecure);
            let mut scans = self.scans.lock().expect("registry scans");
            scans.entry(key).or_default().clone()
        };
        let mut guard = slot.lock().await;
        if let Some(scan) = guard.as_ref()
            && scan.at >= not_before
        {
            return Ok(scan.clone());
        }
        let client = self.client(image, creds, insecure, timeout)?;
        let auth = creds.auth();
        let tags = tokio::time::timeout(timeout, list_all(&client, image, &auth))
            .await
            .map_err(|_| RegistryError::Timeout {
                registry: image.registry.clone(),
                timeout,
            })??;
        self.listings
            .fetch_add(1, std::sync::atomic::Ordering::Relaxed);
        let scan = Arc::new(Scan {
            tags,
            at: SystemTime::now(),
        });
        *guard = Some(scan.clone());
        Ok(scan)
    }

    /// The manifest digest of `image:tag` (a HEAD request).
    pub async fn digest(
        &self,
        image: &ImageName,
        tag: &str,
        creds: &Credentials,
        insecure: bool,
        timeout: Duration,
    ) -> Result<String, RegistryError> {
        let client = self.client(image, creds, insecure, timeout)?;
        let reference = image.reference(tag);
        tokio::time::timeout(
            timeout,
            client.fetch_manifest_digest(&reference, &creds.auth()),
        )
        .await
        .map_err(|_| RegistryError::Timeout {
            registry: image.registry.clone(),
            timeout,
        })?
        .map_err(|e| classify(image, &format!("{}:{tag}", image.repository), e))
    }
}

/// A registry client for `image`'s registry: HTTPS, or plain HTTP for a loopback registry
/// or with `insecure`.
pub fn new_client(image: &ImageName, insecure: bool, timeout: Duration) -> Client {
    let protocol = if is_loopback(image.host()) || insecure {
        ClientProtocol::HttpsExcept(vec![image.registry.clone()])
    } else {
        ClientProtocol::Https
    };
    Client::new(ClientConfig {
        protocol,
        read_timeout: Some(timeout),
        connect_timeout: Some(timeout.min(Duration::from_secs(10))),
        ..Default::default()
    })
}

/// Follows the pagination (`n` and `last`, which is what the `Link` header of a
/// distribution registry encodes) until a short page.
/// Every tag of `image`, listed once (no shared scan), within `timeout`.
pub async fn list_tags(
    image: &ImageName,
    creds: &Credentials,
    insecure: bool,
    timeout: Duration,
) -> Result<Vec<String>, RegistryError> {
    let client = new_client(image, insecure, timeout);
    tokio::time::timeout(timeout, list_all(&client, image, &creds.auth()))
        .await
        .map_err(|_| RegistryError::Timeout {
            registry: image.registry.clone(),
            timeout,
        })?
}

async fn list_all(
    client: &Client,
    image: &ImageName,
    auth: &RegistryAuth,
) -> Result<Vec<String>, RegistryError> {
    let reference = image.reference("latest");
    let mut all: Vec<String> = Vec::new();
    let mut last: Option<String> = None;
    loop {
        let page = client
            .list_tags(&reference, auth, Some(PAGE_SIZE), last.as_deref())
            .await
            .map_err(|e| classify(image, &image.repository, e))?;
        let n = page.tags.len();
        let next = page.tags.last().cloned();
        all.extend(page.tags);
        if all.len() > MAX_TAGS {
            return Err(RegistryError::TooManyTags {
                repository: image.repository.clone(),
            });
        }
        // A short page ends the listing; so does a registry that repeats its last tag.
        if n < PAGE_SIZE || next.is_none() || next == last {
            break;
        }
        last = next;
    }
    Ok(all)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn image_names() {
        let i = ImageName::parse("127.0.0.1:5000/team/web").unwrap();
        assert_eq!(i.registry, "127.0.0.1:5000");
        assert_eq!(i.repository, "team/web");
        assert_eq!(i.host(), "127.0.0.1");
        let i = ImageName::parse("nginx").unwrap();
        assert_eq!(
            (i.registry.as_str(), i.repository.as_str()),
            ("docker.io", "library/nginx")
        );
        let i = ImageName::parse("ghcr.io/org/app").unwrap();
        assert_eq!(i.host(), "ghcr.io");
        assert!(ImageName::parse("ghcr.io/org/app:1.0").is_err());
        assert!(ImageName::parse("ghcr.io/org/app@sha256:abc").is_err());
        assert!(ImageName::parse("ghcr.io/Org/App").is_err());
        assert!(ImageName::parse("").is_err());
    }

    #[test]
    fn server_errors_map_to_reasons() {
        let image = ImageName::parse("127.0.0.1:1/team/web").unwrap();
        let e = |code| OciDistributionError::ServerError {
            code,
            url: "u".into(),
            message: "m".into(),
        };
        assert_eq!(
            classify(&image, "x", e(401)).reason(),
            "AuthenticationFailed"
        );
        assert_eq!(classify(&image, "x", e(404)).reason(), "ImageNotFound");
        assert_eq!(classify(&image, "x", e(429)).reason(), "RateLimited");
        assert_eq!(
            classify(&image, "x", e(503)).reason(),
            "RegistryUnavailable"
        );
        assert!(classify(&image, "x", e(503)).is_transient());
        assert!(!classify(&image, "x", e(401)).is_transient());
    }
}
