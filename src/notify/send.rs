//! Sending one request to a provider, within bounds: https (plain http only to loopback or
//! with `insecure`), never to a link-local or cloud-metadata address, nor (unless the
//! operator allows private targets) to the cluster's own Service network or an in-cluster
//! DNS name (checked on the name and on every address it resolves to, and the connection
//! pinned to the checked address), TLS verified (against the Notifier's CA when it gives
//! one), 10 s per request, 64 KiB of answer read at most. Errors name the host, never the path or a token: a webhook's URL is
//! a secret.

use std::collections::HashMap;
use std::net::SocketAddr;
use std::time::Duration;

use ipnet::IpNet;

use super::provider::{Method, Request};
use crate::source::helm_repo::describe;
use crate::source::url_policy::{is_loopback, is_metadata_host};

const TIMEOUT: Duration = Duration::from_secs(10);
const MAX_ANSWER: usize = 64 << 10;

#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum SendError {
    /// The address is not one Gantry sends to.
    #[error("{0}")]
    Refused(String),
    /// The provider answered with an error status.
    #[error("{host} answered {status}{}", detail.as_deref().map(|d| format!(": {d}")).unwrap_or_default())]
    Status {
        host: String,
        status: u16,
        /// `Retry-After` of a 429 or 503.
        retry_after: Option<Duration>,
        detail: Option<String>,
    },
    /// No answer: connection, TLS, time limit, or an answer larger than the cap.
    #[error("{host}: {why}")]
    Transport { host: String, why: String },
}

impl SendError {
    pub fn retry_after(&self) -> Option<Duration> {
        match self {
            SendError::Status { retry_after, .. } => *retry_after,
            _ => None,
        }
    }

    /// Whether a retry can help (a refused address or a 4xx other than 408/429 needs a
    /// change first; they are still retried, at the long interval).
    pub fn is_transient(&self) -> bool {
        match self {
            SendError::Refused(_) => false,
            SendError::Status { status, .. } => *status >= 500 || *status == 429 || *status == 408,
            SendError::Transport { .. } => true,
        }
    }

    /// The bounded label of `gantry_notifications_total{result}`.
    pub fn label(&self) -> &'static str {
        match self {
            SendError::Refused(_) => "refused",
            SendError::Status { .. } => "rejected",
            SendError::Transport { .. } => "unreachable",
        }
    }
}

/// Which addresses the operator lets Notifiers send to (`--allow-private-notify-targets`,
/// `--service-cidr`).
#[derive(Debug, Clone)]
pub struct Targets {
    /// Allow the Service network and in-cluster names.
    pub allow_private: bool,
    /// The cluster's Service networks.
    pub service_networks: Vec<IpNet>,
}

impl Default for Targets {
    fn default() -> Self {
        Targets {
            allow_private: false,
            service_networks: vec!["10.96.0.0/12".parse().expect("a network")],
        }
    }
}

impl Targets {
    /// Why `host` (a name or an address) is not a target, if it is not.
    pub fn refusal(&self, host: &str) -> Option<String> {
        if is_metadata_host(host) {
            return Some(format!(
                "{host} is a link-local or cloud metadata address; never a notification target"
            ));
        }
        if self.allow_private {
            return None;
        }
        let name = host.trim_end_matches('.').to_ascii_lowercase();
        if name.ends_with(".svc") || name.ends_with(".cluster.local") {
            return Some(format!(
                "{host} is a Service of the cluster; allowed only with --allow-private-notify-targets"
            ));
        }
        let ip: std::net::IpAddr = host.trim_matches(['[', ']']).parse().ok()?;
        self.service_networks
            .iter()
            .find(|n| n.contains(&ip))
            .map(|n| {
                format!(
                    "{host} is in the cluster's Service network {n}; allowed only with --allow-private-notify-targets"
                )
            })
    }
}

/// The pace one Notifier keeps toward its provider (`NotifierType::rate_limit`).
pub struct Pace(Option<governor::DefaultDirectRateLimiter>);

impl Pace {
    pub fn new(limit: Option<(u32, u32, u32)>) -> Self {
        use governor::{Quota, RateLimiter};
        use std::num::NonZeroU32;
        let quota = limit.and_then(|(n, per_s, burst)| {
            let n = NonZeroU32::new(n)?;
            let period = Duration::from_secs(u64::from(per_s)) / n.get();
            Quota::with_period(period)
                .map(|q| q.allow_burst(NonZeroU32::new(burst).unwrap_or(NonZeroU32::MIN)))
        });
        Pace(quota.map(RateLimiter::direct))
    }

    /// Waits for the next request's turn.
    pub async fn turn(&self) {
        if let Some(limiter) = &self.0 {
            limiter.until_ready().await;
        }
    }
}

/// How to send: the Notifier's CA and `insecure`, the operator's target rules and the
/// Notifier's pace.
#[derive(Clone, Copy)]
pub struct Options<'a> {
    pub ca_pem: Option<&'a [u8]>,
    pub insecure: bool,
    pub targets: &'a Targets,
    pub pace: &'a Pace,
}

/// Clients (connection pools, TLS set-up) kept per (host, checked address, CA): a fleet's
/// reports to one provider reuse connections, and a client is never used for an address
/// it was not checked for.
type ClientKey = (String, SocketAddr, Option<[u8; 32]>);
static CLIENTS: std::sync::LazyLock<std::sync::Mutex<HashMap<ClientKey, http_client::Client>>> =
    std::sync::LazyLock::new(Default::default);
/// Kept clients at most (then all are dropped and built again as needed).
const MAX_CLIENTS: usize = 256;

fn client_for(
    host: &str,
    addr: SocketAddr,
    ca_pem: Option<&[u8]>,
) -> Result<http_client::Client, SendError> {
    use sha2::{Digest, Sha256};
    let key = (
        host.to_string(),
        addr,
        ca_pem.map(|p| Sha256::digest(p).into()),
    );
    if let Some(c) = CLIENTS.lock().expect("notify clients").get(&key) {
        return Ok(c.clone());
    }
    let mut builder = http_client::Client::builder()
        .timeout(TIMEOUT)
        .redirect(http_client::redirect::Policy::none())
        .resolve(host, addr);
    if let Some(pem) = ca_pem {
        let ca = http_client::Certificate::from_pem(pem)
            .map_err(|e| SendError::Refused(format!("ca.crt is not a PEM certificate: {e}")))?;
        builder = builder.tls_certs_only([ca]);
    }
    let client = builder.build().map_err(|e| SendError::Transport {
        host: host.to_string(),
        why: format!("cannot build the HTTP client: {e}"),
    })?;
    let mut clients = CLIENTS.lock().expect("notify clients");
    if clients.len() >= MAX_CLIENTS {
        clients.clear();
    }
    clients.insert(key, client.clone());
    Ok(client)
}

/// Sends `req`; on a 2xx answer, the answer's first 64 KiB.
pub async fn send(req: &Request, opts: Options<'_>) -> Result<Vec<u8>, SendError> {
    let Options {
        ca_pem,
        insecure,
        targets,
        pace,
    } = opts;
    let url = http_client::Url::parse(&req.url)
        .map_err(|_| SendError::Refused("the address is not a URL".into()))?;
    let host = url.host_str().unwrap_or_default().to_string();
    match url.scheme() {
        "https" => {}
        "http" if insecure || is_loopback(&host) => {}
        _ => {
            return Err(SendError::Refused(format!(
                "{host}: only https (plain http to loopback or with insecure: true)"
            )));
        }
    }
    if let Some(why) = targets.refusal(&host) {
        return Err(SendError::Refused(why));
    }
    let port = url.port_or_known_default().unwrap_or(443);
    let addrs: Vec<SocketAddr> =
        tokio::time::timeout(TIMEOUT, tokio::net::lookup_host((host.as_str(), port)))
            .await
            .map_err(|_| SendError::Transport {
                host: host.clone(),
                why: "name lookup timed out".into(),
            })?
            .map_err(|e| SendError::Transport {
                host: host.clone(),
                why: format!("name lookup failed: {e}"),
            })?
            .collect();
    if let Some(why) = addrs
        .iter()
        .find_map(|a| targets.refusal(&a.ip().to_string()))
    {
        return Err(SendError::Refused(format!("{host} resolves to {why}")));
    }
    let Some(addr) = addrs.first().copied() else {
        return Err(SendError::Transport {
            host,
            why: "the name has no address".into(),
        });
    };
    let client = client_for(&host, addr, ca_pem)?;
    pace.turn().await;
    let mut request = match req.method {
        Method::Get => client.get(url),
        Method::Post => client.post(url).body(req.body.clone()),
        Method::Patch => client.patch(url).body(req.body.clone()),
        Method::Put => client.put(url).body(req.body.clone()),
    };
    for (k, v) in &req.headers {
        request = request.header(*k, v);
    }
    let transport = |e: http_client::Error| SendError::Transport {
        host: host.clone(),
        // Without the URL (a webhook's path is a secret).
        why: describe(&e.without_url()),
    };
    let mut resp = request.send().await.map_err(transport)?;
    let status = resp.status();
    let retry_after = resp
        .headers()
        .get("retry-after")
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.trim().parse::<u64>().ok())
        .map(|s| Duration::from_secs(s.min(3600)));
    let mut answer = Vec::new();
    while let Some(chunk) = resp.chunk().await.map_err(transport)? {
        if answer.len() + chunk.len() > MAX_ANSWER {
            // Accepted or not, the rest of the answer is not needed (and not read).
            let room = MAX_ANSWER - answer.len();
            answer.extend_from_slice(&chunk[..room]);
            break;
        }
        answer.extend_from_slice(&chunk);
    }
    if status.is_success() {
        return Ok(answer);
    }
    // The provider's own words, one short line (it may quote the request; never a token, as
    // tokens travel in headers, which providers do not echo).
    let detail = String::from_utf8_lossy(&answer)
        .lines()
        .next()
        .map(|l| l.chars().take(200).collect::<String>())
        .filter(|l| !l.trim().is_empty());
    Err(SendError::Status {
        host,
        status: status.as_u16(),
        retry_after,
        detail,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn a_paced_provider_gets_its_burst_at_once_and_the_rest_at_its_rate() {
        let pace = Pace::new(Some((10, 1, 2)));
        let start = std::time::Instant::now();
        for _ in 0..4 {
            pace.turn().await;
        }
        // Two at once, then one every 100 ms.
        assert!(
            start.elapsed() >= Duration::from_millis(150),
            "{:?}",
            start.elapsed()
        );
        let free = Pace::new(None);
        free.turn().await;
    }

    #[test]
    fn metadata_is_never_a_target_and_the_service_network_only_when_allowed() {
        let strict = Targets::default();
        let open = Targets {
            allow_private: true,
            ..Targets::default()
        };
        for host in ["169.254.169.254", "metadata.google.internal", "[fe80::1]"] {
            assert!(strict.refusal(host).is_some(), "{host}");
            assert!(open.refusal(host).is_some(), "{host}");
        }
        for host in [
            "10.96.0.1",
            "10.100.3.4",
            "web.team-a.svc",
            "x.team-a.svc.cluster.local.",
        ] {
            let why = strict.refusal(host).unwrap_or_default();
            assert!(
                why.contains("--allow-private-notify-targets"),
                "{host}: {why}"
            );
            assert_eq!(open.refusal(host), None, "{host}");
        }
        for host in ["127.0.0.1", "10.0.0.5", "gitea.example.com", "192.168.1.10"] {
            assert_eq!(strict.refusal(host), None, "{host}");
        }
    }
}
