//! The in-cluster web view's viewers: one per bearer token. A token is checked with the API
//! server (a SelfSubjectReview made with it: an invalid one is refused there), and the
//! viewer's scope is what the API server lets that token list (SelfSubjectAccessReviews).
//! Every page is then read, and every action made, with the token — never with the
//! controller's rights. The controller only suggests which namespaces to ask about (those
//! holding Applications); the viewer learns of none the API server does not admit.

use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use futures::StreamExt;
use k8s_openapi::api::authentication::v1::SelfSubjectReview;
use k8s_openapi::api::authorization::v1::{
    ResourceAttributes, SelfSubjectAccessReview, SelfSubjectAccessReviewSpec,
};
use kube::api::{Api, PostParams};
use kube::runtime::reflector::Store;
use kube::{Client, core::PartialObjectMeta};
use sha2::{Digest, Sha256};

use super::viewer::{Scope, Viewer};
use crate::api::Application;
use crate::cache::Readiness;

/// How long a token is trusted before it is checked again (one review).
const RECHECK: Duration = Duration::from_secs(60);
/// How long a viewer's scope stands before it is asked again (a review per namespace
/// holding Applications): a namespace opened to them later appears within this.
const RESCOPE: Duration = Duration::from_secs(300);
/// A viewer without a request or an open page for this long is dropped (its watches end).
const IDLE: Duration = Duration::from_secs(600);
/// Viewers at once: each holds its own caches.
const MAX_VIEWERS: usize = 64;

/// Why a request gets no viewer.
#[derive(Debug, PartialEq)]
pub enum Refusal {
    /// The API server does not accept the token (401).
    Invalid(String),
    /// The API server cannot be asked, or too many viewers are open (503).
    Unavailable(String),
}

struct Session {
    viewer: Arc<Viewer>,
    checked: Instant,
    scoped: Instant,
    used: Instant,
}

pub struct Sessions {
    /// The controller's connection to the API server; each viewer's client replaces its
    /// credentials with the viewer's token.
    base: kube::Config,
    /// Namespaces holding Applications, as the controller sees them.
    candidates: Store<PartialObjectMeta<Application>>,
    candidates_ready: Readiness,
    sessions: Mutex<HashMap<[u8; 32], Session>>,
}

impl Sessions {
    pub fn new(base: kube::Config, candidates: Store<PartialObjectMeta<Application>>) -> Self {
        Self {
            base,
            candidates_ready: Readiness::of(&candidates),
            candidates,
            sessions: Mutex::default(),
        }
    }

    /// The viewer of `token`: a known one, or a new one once the API server accepted the
    /// token.
    pub async fn viewer(&self, token: &str) -> Result<Arc<Viewer>, Refusal> {
        let key: [u8; 32] = Sha256::digest(token.as_bytes()).into();
        let now = Instant::now();
        let known = {
            let mut sessions = self.sessions.lock().expect("ui sessions");
            match sessions.get_mut(&key) {
                Some(s) => {
                    s.used = now;
                    if now.duration_since(s.checked) < RECHECK {
                        return Ok(s.viewer.clone());
                    }
                    (now.duration_since(s.scoped) < RESCOPE).then(|| s.viewer.clone())
                }
                None => None,
            }
        };
        // A known viewer whose scope stands: the token is checked again, once.
        if let Some(viewer) = known {
            let checked = whoami(&viewer.client).await;
            let mut sessions = self.sessions.lock().expect("ui sessions");
            return match checked {
                Ok(_) => {
                    if let Some(s) = sessions.get_mut(&key) {
                        s.checked = now;
                    }
                    Ok(viewer)
                }
                Err(refusal) => {
                    sessions.remove(&key);
                    Err(refusal)
                }
            };
        }
        let config = self.config_for(token);
        let client =
            Client::try_from(config.clone()).map_err(|e| Refusal::Unavailable(e.to_string()))?;
        // The namespaces to ask about are known once the controller's first list is in.
        let ready = self.candidates_ready.wait();
        if tokio::time::timeout(Duration::from_secs(30), ready)
            .await
            .is_err()
        {
            return Err(Refusal::Unavailable(
                "the view is starting: try again in a moment".into(),
            ));
        }
        let checked = check(&client, self.namespaces()).await;
        let mut sessions = self.sessions.lock().expect("ui sessions");
        let (user, scope) = match checked {
            Ok(found) => found,
            Err(refusal) => {
                sessions.remove(&key);
                return Err(refusal);
            }
        };
        if let Some(s) = sessions.get_mut(&key)
            && s.viewer.scope == scope
        {
            s.checked = now;
            s.scoped = now;
            return Ok(s.viewer.clone());
        }
        drop_idle(&mut sessions, now);
        if sessions.len() >= MAX_VIEWERS && !sessions.contains_key(&key) {
            return Err(Refusal::Unavailable(format!(
                "{MAX_VIEWERS} viewers are open; try again later"
            )));
        }
        let viewer = Viewer::start(Some(user), config, client, scope);
        sessions.insert(
            key,
            Session {
                viewer: viewer.clone(),
                checked: now,
                scoped: now,
                used: now,
            },
        );
        Ok(viewer)
    }

    /// Drops the viewers idle for [`IDLE`] with no page open (their watches stop).
    pub fn sweep(&self) {
        drop_idle(
            &mut self.sessions.lock().expect("ui sessions"),
            Instant::now(),
        );
    }

    /// Forgets the viewer of `token` (signing out).
    pub fn forget(&self, token: &str) {
        let key: [u8; 32] = Sha256::digest(token.as_bytes()).into();
        self.sessions.lock().expect("ui sessions").remove(&key);
    }

    /// Viewers open now.
    pub fn open(&self) -> usize {
        self.sessions.lock().expect("ui sessions").len()
    }

    fn namespaces(&self) -> Vec<String> {
        let mut nss: Vec<String> = self
            .candidates
            .state()
            .iter()
            .filter_map(|m| m.metadata.namespace.clone())
            .collect();
        nss.sort();
        nss.dedup();
        nss
    }

    fn config_for(&self, token: &str) -> kube::Config {
        let mut config = self.base.clone();
        config.auth_info = kube::config::AuthInfo {
            token: Some(secrecy::SecretString::from(token.to_string())),
            ..Default::default()
        };
        config
    }
}

/// Drops the viewers idle for [`IDLE`] that no open page holds.
fn drop_idle(sessions: &mut HashMap<[u8; 32], Session>, now: Instant) {
    sessions.retain(|_, s| now.duration_since(s.used) < IDLE || Arc::strong_count(&s.viewer) > 1);
}

/// Who the token is (an invalid one is refused by the API server).
async fn whoami(client: &Client) -> Result<String, Refusal> {
    let review = Api::<SelfSubjectReview>::all(client.clone())
        .create(&PostParams::default(), &SelfSubjectReview::default())
        .await
        .map_err(refusal)?;
    Ok(review
        .status
        .and_then(|s| s.user_info)
        .and_then(|u| u.username)
        .unwrap_or_else(|| "an unnamed user".into()))
}

/// Who the token is, and what it may list.
async fn check(client: &Client, candidates: Vec<String>) -> Result<(String, Scope), Refusal> {
    let user = whoami(client).await?;
    if may_list(client, None).await? {
        return Ok((user, Scope::All));
    }
    let answers: Vec<(String, Result<bool, Refusal>)> = futures::stream::iter(candidates)
        .map(|ns| async move {
            let allowed = may_list(client, Some(&ns)).await;
            (ns, allowed)
        })
        .buffer_unordered(16)
        .collect()
        .await;
    let mut allowed = vec![];
    for (ns, answer) in answers {
        if answer? {
            allowed.push(ns);
        }
    }
    allowed.sort();
    Ok((user, Scope::Namespaces(allowed)))
}

/// Whether the token may list Applications in `ns` (every namespace: `None`).
async fn may_list(client: &Client, ns: Option<&str>) -> Result<bool, Refusal> {
    let review = SelfSubjectAccessReview {
        spec: SelfSubjectAccessReviewSpec {
            resource_attributes: Some(ResourceAttributes {
                group: Some("gantry.dev".into()),
                resource: Some("applications".into()),
                verb: Some("list".into()),
                namespace: ns.map(str::to_string),
                ..Default::default()
            }),
            ..Default::default()
        },
        ..Default::default()
    };
    let answer = Api::<SelfSubjectAccessReview>::all(client.clone())
        .create(&PostParams::default(), &review)
        .await
        .map_err(refusal)?;
    Ok(answer.status.is_some_and(|s| s.allowed))
}

fn refusal(e: kube::Error) -> Refusal {
    match e {
        kube::Error::Api(s) if s.code == 401 => {
            Refusal::Invalid("the API server does not accept this token".into())
        }
        kube::Error::Api(s) => Refusal::Unavailable(format!("{} ({})", s.message, s.reason)),
        _ => Refusal::Unavailable("the API server cannot be reached".into()),
    }
}

/// The bearer token of a request: the `Authorization` header (an authenticating proxy),
/// else the sign-in cookie. Only characters a token can hold are accepted.
pub fn token_of(headers: &axum::http::HeaderMap) -> Option<String> {
    let header = headers
        .get(axum::http::header::AUTHORIZATION)
        .and_then(|h| h.to_str().ok())
        .and_then(|h| h.strip_prefix("Bearer "))
        .map(str::trim);
    let cookie = || {
        headers
            .get_all(axum::http::header::COOKIE)
            .iter()
            .filter_map(|h| h.to_str().ok())
            .find_map(|h| super::actions::cookie(h, TOKEN_COOKIE))
    };
    header
        .or_else(cookie)
        .filter(|t| valid_token(t))
        .map(str::to_string)
}

pub const TOKEN_COOKIE: &str = "gantry_token";

/// Whether `t` looks like a bearer token (and is safe in a cookie).
pub fn valid_token(t: &str) -> bool {
    !t.is_empty()
        && t.len() <= 16 * 1024
        && t.bytes()
            .all(|b| b.is_ascii_alphanumeric() || b"-._~+/=:".contains(&b))
}

/// The sign-in cookie: never readable by scripts, never sent by another site.
pub fn token_cookie(token: &str) -> String {
    format!("{TOKEN_COOKIE}={token}; HttpOnly; SameSite=Strict; Path=/")
}

/// The cookie that signs out.
pub fn cleared_cookie() -> String {
    format!("{TOKEN_COOKIE}=; HttpOnly; SameSite=Strict; Path=/; Max-Age=0")
}

#[cfg(test)]
mod tests {
    use super::*;
    use axum::http::{HeaderMap, HeaderValue, header};

    #[test]
    fn the_token_comes_from_the_proxy_header_first_then_the_cookie() {
        let mut h = HeaderMap::new();
        assert_eq!(token_of(&h), None);
        h.insert(
            header::COOKIE,
            HeaderValue::from_static("gantry_csrf=x; gantry_token=eyJ.abc.def"),
        );
        assert_eq!(token_of(&h).as_deref(), Some("eyJ.abc.def"));
        h.insert(
            header::AUTHORIZATION,
            HeaderValue::from_static("Bearer from-proxy"),
        );
        assert_eq!(token_of(&h).as_deref(), Some("from-proxy"));
        h.insert(
            header::AUTHORIZATION,
            HeaderValue::from_static("Basic dXNlcg=="),
        );
        assert_eq!(token_of(&h).as_deref(), Some("eyJ.abc.def"));
    }

    #[test]
    fn only_token_characters_are_accepted() {
        assert!(valid_token("eyJhbGciOi.J9-_x.y+/=="));
        assert!(!valid_token(""));
        assert!(!valid_token("a;b"), "would end the cookie");
        assert!(!valid_token("a b"));
        assert!(!valid_token("a\"b"));
        assert!(!valid_token("a,b"));
        assert!(token_cookie("t").contains("HttpOnly; SameSite=Strict"));
        assert!(cleared_cookie().contains("Max-Age=0"));
    }
}
