//! Webhook verification and payload parsing, pure: signatures and tokens compared in
//! constant time, payloads parsed into what to trigger.

use axum::http;
use hmac::{Hmac, Mac};
use sha2::{Digest, Sha256};
use subtle::ConstantTimeEq;

use crate::api::receiver::ReceiverType;

/// Why a webhook is refused.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum Rejection {
    #[error("missing {0} header")]
    MissingSignature(&'static str),
    #[error(
        "SHA-1 signatures (X-Hub-Signature) are refused; configure the webhook to send X-Hub-Signature-256"
    )]
    Sha1Refused,
    #[error("signature or token does not match")]
    BadSignature,
    #[error("malformed payload: {0}")]
    Malformed(String),
}

impl Rejection {
    /// The HTTP status to answer with.
    pub fn status(&self) -> u16 {
        match self {
            Rejection::Malformed(_) => 400,
            _ => 401,
        }
    }
}

/// What a verified webhook asks for.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Verdict {
    /// Reconcile the Receiver's resources.
    Trigger,
    /// Reconcile the Receiver's ImagePolicies whose repository is one of these
    /// (registry push events).
    TriggerImages(Vec<String>),
    /// A pull (merge) request was opened, pushed to, reopened or closed: plan it, or forget
    /// its plan.
    PullRequest(super::pull_request::Event),
    /// Valid, but nothing to do (a ping, a non-push event).
    Ignore(String),
}

fn pull_request(event: Result<super::pull_request::Event, String>) -> Result<Verdict, Rejection> {
    match event.map_err(Rejection::Malformed)? {
        super::pull_request::Event::Ignore(why) => Ok(Verdict::Ignore(why)),
        e => Ok(Verdict::PullRequest(e)),
    }
}

/// The path token of a Receiver: derived from its secret and identity, so it changes when
/// the secret rotates and differs between Receivers sharing a secret.
pub fn path_token(secret: &[u8], namespace: &str, name: &str) -> String {
    let mut h = Sha256::new();
    h.update(secret);
    h.update(b"/");
    h.update(namespace.as_bytes());
    h.update(b"/");
    h.update(name.as_bytes());
    hex::encode(h.finalize())
}

fn header<'a>(headers: &'a http::HeaderMap, name: &str) -> Option<&'a str> {
    headers.get(name).and_then(|v| v.to_str().ok())
}

/// HMAC-SHA256 of `body` against a hex signature, optionally prefixed `sha256=`.
fn hmac_ok(secret: &[u8], body: &[u8], signature: &str) -> bool {
    let hex_sig = signature
        .trim()
        .strip_prefix("sha256=")
        .unwrap_or(signature.trim());
    let Ok(sig) = hex::decode(hex_sig) else {
        return false;
    };
    let Ok(mut mac) = Hmac::<Sha256>::new_from_slice(secret) else {
        return false;
    };
    mac.update(body);
    mac.verify_slice(&sig).is_ok()
}

fn token_ok(secret: &[u8], given: &str) -> bool {
    // Equal lengths are not secret; the content comparison is constant-time.
    let given = given.as_bytes();
    given.len() == secret.len() && bool::from(given.ct_eq(secret))
}

fn json(body: &[u8]) -> Result<serde_json::Value, Rejection> {
    serde_json::from_slice(body).map_err(|e| Rejection::Malformed(e.to_string()))
}

/// Verifies a webhook for a Receiver of `kind` and says what it triggers.
pub fn verify(
    kind: ReceiverType,
    secret: &[u8],
    headers: &http::HeaderMap,
    body: &[u8],
) -> Result<Verdict, Rejection> {
    match kind {
        ReceiverType::Github => {
            let Some(sig) = header(headers, "x-hub-signature-256") else {
                if header(headers, "x-hub-signature").is_some() {
                    return Err(Rejection::Sha1Refused);
                }
                return Err(Rejection::MissingSignature("X-Hub-Signature-256"));
            };
            if !sig.trim().starts_with("sha256=") || !hmac_ok(secret, body, sig) {
                return Err(Rejection::BadSignature);
            }
            let payload = json(body)?;
            match header(headers, "x-github-event").unwrap_or("push") {
                "push" => {
                    if payload.get("ref").is_some_and(|r| !r.is_string()) {
                        return Err(Rejection::Malformed("`ref` is not a string".into()));
                    }
                    Ok(Verdict::Trigger)
                }
                "ping" => Ok(Verdict::Ignore("ping".into())),
                "pull_request" => pull_request(super::pull_request::github_like(&payload)),
                other => Ok(Verdict::Ignore(format!("event {other} is not a push"))),
            }
        }
        ReceiverType::Gitlab => {
            let token = header(headers, "x-gitlab-token")
                .ok_or(Rejection::MissingSignature("X-Gitlab-Token"))?;
            if !token_ok(secret, token) {
                return Err(Rejection::BadSignature);
            }
            let payload = json(body)?;
            match header(headers, "x-gitlab-event").unwrap_or("Push Hook") {
                "Push Hook" | "Tag Push Hook" => Ok(Verdict::Trigger),
                "Merge Request Hook" => pull_request(super::pull_request::gitlab(&payload)),
                other => Ok(Verdict::Ignore(format!("event {other} is not a push"))),
            }
        }
        ReceiverType::Gitea => {
            // Gitea (and Forgejo) sign the body with HMAC-SHA256, hex, no prefix.
            let sig = header(headers, "x-gitea-signature")
                .or_else(|| header(headers, "x-forgejo-signature"))
                .ok_or(Rejection::MissingSignature("X-Gitea-Signature"))?;
            if !hmac_ok(secret, body, sig) {
                return Err(Rejection::BadSignature);
            }
            let payload = json(body)?;
            let event = header(headers, "x-gitea-event")
                .or_else(|| header(headers, "x-forgejo-event"))
                .unwrap_or("push");
            match event {
                "push" | "create" => Ok(Verdict::Trigger),
                "pull_request" => pull_request(super::pull_request::github_like(&payload)),
                other => Ok(Verdict::Ignore(format!("event {other} is not a push"))),
            }
        }
        ReceiverType::GenericHmac => {
            let sig =
                header(headers, "x-signature").ok_or(Rejection::MissingSignature("X-Signature"))?;
            if !hmac_ok(secret, body, sig) {
                return Err(Rejection::BadSignature);
            }
            json(body)?;
            Ok(Verdict::Trigger)
        }
        ReceiverType::Registry => {
            let auth = header(headers, "authorization")
                .ok_or(Rejection::MissingSignature("Authorization"))?;
            let token = auth
                .strip_prefix("Bearer ")
                .ok_or(Rejection::BadSignature)?;
            if !token_ok(secret, token.trim()) {
                return Err(Rejection::BadSignature);
            }
            let payload = json(body)?;
            let events = payload
                .get("events")
                .and_then(|e| e.as_array())
                .ok_or_else(|| Rejection::Malformed("no `events` list".into()))?;
            let mut repos: Vec<String> = Vec::new();
            for e in events {
                if e.get("action").and_then(|a| a.as_str()) != Some("push") {
                    continue;
                }
                let target = e.get("target");
                let has_tag = target
                    .and_then(|t| t.get("tag"))
                    .and_then(|t| t.as_str())
                    .is_some_and(|t| !t.is_empty());
                let repo = target
                    .and_then(|t| t.get("repository"))
                    .and_then(|r| r.as_str());
                if let (true, Some(repo)) = (has_tag, repo)
                    && !repos.iter().any(|r| r == repo)
                {
                    repos.push(repo.to_string());
                }
            }
            if repos.is_empty() {
                Ok(Verdict::Ignore("no tag push events".into()))
            } else {
                Ok(Verdict::TriggerImages(repos))
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn headers(pairs: &[(&str, &str)]) -> http::HeaderMap {
        let mut h = http::HeaderMap::new();
        for (k, v) in pairs {
            h.insert(
                http::HeaderName::from_bytes(k.as_bytes()).unwrap(),
                v.parse().unwrap(),
            );
        }
        h
    }

    fn sign(secret: &[u8], body: &[u8]) -> String {
        let mut mac = Hmac::<Sha256>::new_from_slice(secret).unwrap();
        mac.update(body);
        format!("sha256={}", hex::encode(mac.finalize().into_bytes()))
    }

    const PUSH: &[u8] = br#"{"ref":"refs/heads/main","after":"abc"}"#;

    #[test]
    fn github_signatures() {
        let s = b"s3cret";
        let ok = headers(&[
            ("x-hub-signature-256", &sign(s, PUSH)),
            ("x-github-event", "push"),
        ]);
        assert_eq!(
            verify(ReceiverType::Github, s, &ok, PUSH),
            Ok(Verdict::Trigger)
        );
        let wrong = headers(&[("x-hub-signature-256", &sign(b"other", PUSH))]);
        assert_eq!(
            verify(ReceiverType::Github, s, &wrong, PUSH),
            Err(Rejection::BadSignature)
        );
        let sha1 = headers(&[(
            "x-hub-signature",
            "sha1=0123456789abcdef0123456789abcdef01234567",
        )]);
        assert_eq!(
            verify(ReceiverType::Github, s, &sha1, PUSH),
            Err(Rejection::Sha1Refused)
        );
        assert_eq!(
            verify(ReceiverType::Github, s, &headers(&[]), PUSH),
            Err(Rejection::MissingSignature("X-Hub-Signature-256"))
        );
        let ping = headers(&[
            ("x-hub-signature-256", &sign(s, b"{}")),
            ("x-github-event", "ping"),
        ]);
        assert!(matches!(
            verify(ReceiverType::Github, s, &ping, b"{}"),
            Ok(Verdict::Ignore(_))
        ));
        // A valid signature over garbage is still a 400, not a panic.
        let garbage = b"\xff\xfe not json";
        let h = headers(&[("x-hub-signature-256", &sign(s, garbage))]);
        assert_eq!(
            verify(ReceiverType::Github, s, &h, garbage)
                .unwrap_err()
                .status(),
            400
        );
        // A signature that is not hex.
        let h = headers(&[("x-hub-signature-256", "sha256=zz")]);
        assert_eq!(
            verify(ReceiverType::Github, s, &h, PUSH),
            Err(Rejection::BadSignature)
        );
    }

    #[test]
    fn gitea_signs_the_body_in_hex_without_a_prefix() {
        let s = b"gitea-secret";
        let bare = sign(s, PUSH).trim_start_matches("sha256=").to_string();
        let h = headers(&[("x-gitea-signature", &bare), ("x-gitea-event", "push")]);
        assert_eq!(
            verify(ReceiverType::Gitea, s, &h, PUSH),
            Ok(Verdict::Trigger)
        );
        let h = headers(&[("x-gitea-signature", &bare), ("x-gitea-event", "issues")]);
        assert!(matches!(
            verify(ReceiverType::Gitea, s, &h, PUSH),
            Ok(Verdict::Ignore(_))
        ));
        let h = headers(&[("x-gitea-signature", &bare)]);
        assert_eq!(
            verify(ReceiverType::Gitea, b"other", &h, PUSH),
            Err(Rejection::BadSignature)
        );
        assert_eq!(
            verify(ReceiverType::Gitea, s, &headers(&[]), PUSH),
            Err(Rejection::MissingSignature("X-Gitea-Signature"))
        );
    }

    #[test]
    fn gitlab_and_generic() {
        let s = b"tok-123";
        let h = headers(&[
            ("x-gitlab-token", "tok-123"),
            ("x-gitlab-event", "Push Hook"),
        ]);
        assert_eq!(
            verify(ReceiverType::Gitlab, s, &h, PUSH),
            Ok(Verdict::Trigger)
        );
        let h = headers(&[("x-gitlab-token", "tok-124")]);
        assert_eq!(
            verify(ReceiverType::Gitlab, s, &h, PUSH),
            Err(Rejection::BadSignature)
        );
        let h = headers(&[("x-gitlab-token", "tok")]);
        assert_eq!(
            verify(ReceiverType::Gitlab, s, &h, PUSH),
            Err(Rejection::BadSignature)
        );
        let h = headers(&[("x-signature", &sign(s, PUSH))]);
        assert_eq!(
            verify(ReceiverType::GenericHmac, s, &h, PUSH),
            Ok(Verdict::Trigger)
        );
        let bare = sign(s, PUSH).trim_start_matches("sha256=").to_string();
        let h = headers(&[("x-signature", &bare)]);
        assert_eq!(
            verify(ReceiverType::GenericHmac, s, &h, PUSH),
            Ok(Verdict::Trigger)
        );
    }

    #[test]
    fn registry_notifications() {
        let s = b"reg-token";
        let body = br#"{"events":[
            {"action":"pull","target":{"repository":"team/api","tag":"1"}},
            {"action":"push","target":{"repository":"team/web","tag":"1.4.0","digest":"sha256:aa"}},
            {"action":"push","target":{"repository":"team/web","digest":"sha256:bb"}},
            {"action":"push","target":{"repository":"team/web","tag":"1.4.1"}}
        ]}"#;
        let h = headers(&[("authorization", "Bearer reg-token")]);
        assert_eq!(
            verify(ReceiverType::Registry, s, &h, body),
            Ok(Verdict::TriggerImages(vec!["team/web".into()]))
        );
        let h = headers(&[("authorization", "Bearer nope")]);
        assert_eq!(
            verify(ReceiverType::Registry, s, &h, body),
            Err(Rejection::BadSignature)
        );
        let h = headers(&[("authorization", "Basic cmVnLXRva2Vu")]);
        assert_eq!(
            verify(ReceiverType::Registry, s, &h, body),
            Err(Rejection::BadSignature)
        );
        let h = headers(&[("authorization", "Bearer reg-token")]);
        assert_eq!(
            verify(ReceiverType::Registry, s, &h, br#"{"events": 3}"#)
                .unwrap_err()
                .status(),
            400
        );
    }

    #[test]
    fn path_tokens_depend_on_secret_and_identity() {
        let a = path_token(b"s", "ns", "a");
        assert_eq!(a.len(), 64);
        assert_ne!(a, path_token(b"s", "ns", "b"));
        assert_ne!(a, path_token(b"t", "ns", "a"));
        assert_eq!(a, path_token(b"s", "ns", "a"));
    }
}
