//! The request each provider expects, pure: where it goes, its headers and its body. The
//! shapes follow the providers' public API documentation:
//! - Gitea/Forgejo: `POST /api/v1/repos/{owner}/{repo}/statuses/{sha}` with `state`,
//!   `context`, `description`, `target_url` and `Authorization: token …`
//!   (https://gitea.com/api/swagger#/repository/repoCreateStatus);
//! - GitHub: `POST /repos/{owner}/{repo}/statuses/{sha}`, the same fields,
//!   `Authorization: Bearer …`, `Accept: application/vnd.github+json`
//!   (https://docs.github.com/en/rest/commits/statuses#create-a-commit-status);
//! - GitLab: `POST /api/v4/projects/{url-encoded path}/statuses/{sha}` with `state`
//!   (`running`, `success`, `failed`), `name`, `description` and `PRIVATE-TOKEN`
//!   (https://docs.gitlab.com/api/commits/#set-the-pipeline-status-of-a-commit);
//! - Slack incoming webhooks: a JSON body with `text`
//!   (https://api.slack.com/messaging/webhooks);
//! - Gantry's webhook: the JSON body below, `X-Gantry-Signature: sha256=<hex HMAC-SHA256 of
//!   the body with the Secret's token>` (as Gantry's own `generic-hmac` Receivers verify),
//!   `X-Gantry-Delivery` (the same for a report delivered twice: an idempotency key).

use hmac::{Hmac, Mac};
use serde_json::json;
use sha2::{Digest, Sha256};

use super::report::{Report, State};
use crate::api::notifier::NotifierType;

/// One request to send.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Request {
    pub url: String,
    /// Header names and values; values of `Authorization`/`PRIVATE-TOKEN` are secrets.
    pub headers: Vec<(&'static str, String)>,
    pub body: Vec<u8>,
}

/// Which Application a report is about.
#[derive(Debug, Clone, Copy)]
pub struct Subject<'a> {
    pub namespace: &'a str,
    pub name: &'a str,
    /// The API server the Application deploys to (`status.cluster`), or `local`.
    pub cluster: &'a str,
}

/// The forge and repository of a Git URL: (`scheme://host[:port]`, `owner/name`), from
/// the https form (`https://host/owner/name(.git)`) or the ssh forms
/// (`ssh://git@host[:port]/owner/name.git`, `git@host:owner/name.git`; the forge is then
/// reached over https).
pub fn forge_of(url: &str) -> Option<(String, String)> {
    let trim = |path: &str| {
        let p = path.trim_matches('/').trim_end_matches(".git").to_string();
        (p.split('/').count() >= 2 && p.split('/').all(|c| !c.is_empty())).then_some(p)
    };
    if let Some(rest) = url
        .strip_prefix("https://")
        .or_else(|| url.strip_prefix("http://"))
    {
        let scheme = if url.starts_with("https") {
            "https"
        } else {
            "http"
        };
        let (host, path) = rest.split_once('/')?;
        let host = host.rsplit('@').next()?;
        return Some((format!("{scheme}://{host}"), trim(path)?));
    }
    if let Some(rest) = url.strip_prefix("ssh://") {
        let (host, path) = rest.split_once('/')?;
        let host = host.rsplit('@').next()?;
        let host = host.split(':').next()?;
        return Some((format!("https://{host}"), trim(path)?));
    }
    if url.contains("://") {
        return None; // file:// and other schemes name no forge
    }
    let (user_host, path) = url.split_once(':')?;
    if user_host.contains('/') {
        return None;
    }
    let host = user_host.rsplit('@').next()?;
    Some((format!("https://{host}"), trim(path)?))
}

/// The API base of a forge: Gitea's `/api/v1`, GitLab's `/api/v4`, GitHub's
/// `api.github.com` for `github.com` (an Enterprise server's `/api/v3` otherwise).
pub fn api_base(kind: NotifierType, origin: &str) -> String {
    let origin = origin.trim_end_matches('/');
    match kind {
        NotifierType::Gitea => format!("{origin}/api/v1"),
        NotifierType::Gitlab => format!("{origin}/api/v4"),
        NotifierType::Github if origin == "https://github.com" => "https://api.github.com".into(),
        NotifierType::Github
            if origin.contains("api.github.com") || origin.ends_with("/api/v3") =>
        {
            origin.to_string()
        }
        NotifierType::Github => format!("{origin}/api/v3"),
        NotifierType::Webhook | NotifierType::Slack => origin.to_string(),
    }
}

/// `{cluster}`, `{namespace}` and `{name}` replaced in a context template.
pub fn context(template: &str, subject: Subject<'_>) -> String {
    template
        .replace("{cluster}", subject.cluster)
        .replace("{namespace}", subject.namespace)
        .replace("{name}", subject.name)
}

/// A commit status on a forge.
pub fn commit_status(
    kind: NotifierType,
    api: &str,
    repository: &str,
    commit: &str,
    report: &Report,
    context: &str,
    token: &str,
) -> Request {
    let api = api.trim_end_matches('/');
    match kind {
        NotifierType::Gitlab => {
            let state = match report.state {
                State::Pending => "running",
                State::Success => "success",
                State::Failure => "failed",
            };
            let project = repository.replace('/', "%2F");
            Request {
                url: format!("{api}/projects/{project}/statuses/{commit}"),
                headers: vec![
                    ("PRIVATE-TOKEN", token.to_string()),
                    ("Content-Type", "application/json".into()),
                ],
                body: json!({"state": state, "name": context, "description": report.description})
                    .to_string()
                    .into_bytes(),
            }
        }
        _ => {
            let mut headers = vec![("Content-Type", "application/json".to_string())];
            if kind == NotifierType::Github {
                headers.push(("Authorization", format!("Bearer {token}")));
                headers.push(("Accept", "application/vnd.github+json".into()));
                headers.push(("X-GitHub-Api-Version", "2022-11-28".into()));
            } else {
                headers.push(("Authorization", format!("token {token}")));
            }
            Request {
                url: format!("{api}/repos/{repository}/statuses/{commit}"),
                headers,
                body: json!({
                    "state": report.state.as_str(),
                    "context": context,
                    "description": report.description,
                })
                .to_string()
                .into_bytes(),
            }
        }
    }
}

/// The idempotency key of a report: the same for the same (Application, revision, state).
pub fn delivery_id(subject: Subject<'_>, report: &Report) -> String {
    let mut h = Sha256::new();
    for part in [
        subject.namespace,
        subject.name,
        &report.revision,
        report.state.as_str(),
    ] {
        h.update(part.as_bytes());
        h.update([0]);
    }
    hex::encode(&h.finalize()[..16])
}

/// Gantry's signed webhook.
pub fn webhook(
    address: &str,
    subject: Subject<'_>,
    report: &Report,
    key: &str,
    at: &str,
) -> Request {
    let body = json!({
        "application": {"namespace": subject.namespace, "name": subject.name},
        "cluster": subject.cluster,
        "revision": report.revision,
        "commit": report.commit,
        "state": report.state.as_str(),
        "event": report.event,
        "description": report.description,
        "timestamp": at,
    })
    .to_string()
    .into_bytes();
    let mut mac = Hmac::<Sha256>::new_from_slice(key.as_bytes()).expect("HMAC takes any key");
    mac.update(&body);
    let signature = hex::encode(mac.finalize().into_bytes());
    Request {
        url: address.to_string(),
        headers: vec![
            ("Content-Type", "application/json".into()),
            ("X-Gantry-Signature", format!("sha256={signature}")),
            ("X-Gantry-Event", report.event.to_string()),
            ("X-Gantry-Delivery", delivery_id(subject, report)),
        ],
        body,
    }
}

/// A Slack message.
pub fn slack(address: &str, subject: Subject<'_>, report: &Report) -> Request {
    let icon = match report.state {
        State::Pending => ":hourglass_flowing_sand:",
        State::Success => ":white_check_mark:",
        State::Failure => ":x:",
    };
    let commit = report
        .commit
        .as_deref()
        .map(|c| &c[..12.min(c.len())])
        .unwrap_or(&report.revision);
    let text = format!(
        "{icon} *{}/{}* `{commit}` on {}: {} — {}",
        subject.namespace,
        subject.name,
        subject.cluster,
        report.state.as_str(),
        report.description
    );
    Request {
        url: address.to_string(),
        headers: vec![("Content-Type", "application/json".into())],
        body: json!({"text": text}).to_string().into_bytes(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn report(state: State) -> Report {
        Report {
            revision: "main@sha1:abcdef0123456789".into(),
            commit: Some("abcdef0123456789".into()),
            state,
            event: "deployed",
            description: "deployed and healthy".into(),
        }
    }

    const SUBJECT: Subject<'static> = Subject {
        namespace: "team-a",
        name: "web",
        cluster: "prod",
    };

    #[test]
    fn forges_and_repositories_come_from_https_and_ssh_urls() {
        let f = |u: &str| forge_of(u).map(|(o, r)| format!("{o} {r}"));
        assert_eq!(
            f("https://gitea.example.com/team/app.git").unwrap(),
            "https://gitea.example.com team/app"
        );
        assert_eq!(
            f("http://127.0.0.1:3000/team/app").unwrap(),
            "http://127.0.0.1:3000 team/app"
        );
        assert_eq!(
            f("https://user@github.com/org/repo/").unwrap(),
            "https://github.com org/repo"
        );
        assert_eq!(
            f("ssh://git@gitlab.com:2222/group/sub/app.git").unwrap(),
            "https://gitlab.com group/sub/app"
        );
        assert_eq!(
            f("git@github.com:org/repo.git").unwrap(),
            "https://github.com org/repo"
        );
        assert_eq!(f("https://example.com/only-one"), None);
        assert_eq!(f("file:///srv/git/app"), None);
        assert_eq!(
            api_base(NotifierType::Github, "https://github.com"),
            "https://api.github.com"
        );
        assert_eq!(
            api_base(NotifierType::Gitea, "http://127.0.0.1:3000/"),
            "http://127.0.0.1:3000/api/v1"
        );
        assert_eq!(
            api_base(NotifierType::Gitlab, "https://gitlab.com"),
            "https://gitlab.com/api/v4"
        );
    }

    #[test]
    fn commit_statuses_have_each_forges_shape() {
        let ctx = context("gantry/{cluster}/{namespace}/{name}", SUBJECT);
        assert_eq!(ctx, "gantry/prod/team-a/web");
        let gh = commit_status(
            NotifierType::Github,
            "https://api.github.com",
            "org/repo",
            "abc",
            &report(State::Failure),
            &ctx,
            "t0k",
        );
        assert_eq!(gh.url, "https://api.github.com/repos/org/repo/statuses/abc");
        assert!(gh.headers.contains(&("Authorization", "Bearer t0k".into())));
        let body: serde_json::Value = serde_json::from_slice(&gh.body).unwrap();
        assert_eq!(body["state"], "failure");
        assert_eq!(body["context"], "gantry/prod/team-a/web");
        let gl = commit_status(
            NotifierType::Gitlab,
            "https://gitlab.com/api/v4",
            "group/sub/app",
            "abc",
            &report(State::Pending),
            &ctx,
            "t0k",
        );
        assert_eq!(
            gl.url,
            "https://gitlab.com/api/v4/projects/group%2Fsub%2Fapp/statuses/abc"
        );
        assert!(gl.headers.contains(&("PRIVATE-TOKEN", "t0k".into())));
        let body: serde_json::Value = serde_json::from_slice(&gl.body).unwrap();
        assert_eq!(
            (body["state"].as_str(), body["name"].as_str()),
            (Some("running"), Some(ctx.as_str()))
        );
        let gt = commit_status(
            NotifierType::Gitea,
            "http://127.0.0.1:3000/api/v1",
            "team/app",
            "abc",
            &report(State::Success),
            &ctx,
            "t0k",
        );
        assert!(gt.headers.contains(&("Authorization", "token t0k".into())));
    }

    #[test]
    fn the_webhook_is_signed_and_carries_an_idempotency_key() {
        let r = webhook(
            "https://hooks.example.com/x",
            SUBJECT,
            &report(State::Success),
            "k3y",
            "2026-12-02T00:00:00Z",
        );
        let mut mac = Hmac::<Sha256>::new_from_slice(b"k3y").unwrap();
        mac.update(&r.body);
        let want = format!("sha256={}", hex::encode(mac.finalize().into_bytes()));
        assert!(r.headers.contains(&("X-Gantry-Signature", want)));
        let again = webhook(
            "https://hooks.example.com/x",
            SUBJECT,
            &report(State::Success),
            "k3y",
            "later",
        );
        let id = |r: &Request| {
            r.headers
                .iter()
                .find(|(k, _)| *k == "X-Gantry-Delivery")
                .unwrap()
                .1
                .clone()
        };
        assert_eq!(id(&r), id(&again));
        let body: serde_json::Value = serde_json::from_slice(&r.body).unwrap();
        assert_eq!(body["application"]["name"], "web");
        assert_eq!(body["state"], "success");
        let s = slack(
            "https://hooks.slack.com/services/x",
            SUBJECT,
            &report(State::Failure),
        );
        let body: serde_json::Value = serde_json::from_slice(&s.body).unwrap();
        assert!(body["text"].as_str().unwrap().contains("team-a/web"));
    }
}
