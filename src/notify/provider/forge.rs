//! Commit statuses and deployments on forges, as their public API documentation specifies:
//! - Gitea/Forgejo: `POST /api/v1/repos/{owner}/{repo}/statuses/{sha}` with `state`,
//!   `context`, `description` and `Authorization: token …`
//!   (https://gitea.com/api/swagger#/repository/repoCreateStatus);
//! - GitHub: `POST /repos/{owner}/{repo}/statuses/{sha}`, the same fields,
//!   `Authorization: Bearer …`, `Accept: application/vnd.github+json`
//!   (https://docs.github.com/en/rest/commits/statuses#create-a-commit-status);
//! - GitHub Deployments: `GET /repos/{o}/{r}/deployments?sha=&environment=` (an existing
//!   deployment of that commit and environment is reused), `POST /repos/{o}/{r}/deployments`
//!   with `ref`, `environment`, `auto_merge: false`, `required_contexts: []`, then
//!   `POST /repos/{o}/{r}/deployments/{id}/statuses` with `state` (`in_progress`, `success`,
//!   `failure`), `description`, `environment`
//!   (https://docs.github.com/en/rest/deployments/deployments,
//!   https://docs.github.com/en/rest/deployments/statuses);
//! - GitLab: `POST /api/v4/projects/{url-encoded path}/statuses/{sha}` with `state`
//!   (`running`, `success`, `failed`), `name`, `description` and `PRIVATE-TOKEN`
//!   (https://docs.gitlab.com/api/commits/#set-the-pipeline-status-of-a-commit);
//! - Bitbucket Server/Data Center:
//!   `POST /rest/api/latest/projects/{key}/repos/{slug}/commits/{sha}/builds` with `key`,
//!   `state` (`INPROGRESS`, `SUCCESSFUL`, `FAILED`), `name`, `url`, `description` and
//!   `Authorization: Bearer …` (https://developer.atlassian.com/server/bitbucket/rest/v906/api-group-builds-and-deployments/).

use serde_json::json;

use super::Request;
use crate::api::notifier::NotifierType;
use crate::notify::report::{Report, State};

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
/// `api.github.com` for `github.com` (an Enterprise server's `/api/v3` otherwise),
/// Bitbucket Server's origin (its paths carry `/rest/api/latest`).
pub fn api_base(kind: NotifierType, origin: &str) -> String {
    let origin = origin.trim_end_matches('/');
    match kind {
        NotifierType::Gitea => format!("{origin}/api/v1"),
        NotifierType::Gitlab => format!("{origin}/api/v4"),
        NotifierType::Github | NotifierType::GithubDeployment => {
            if origin == "https://github.com" {
                "https://api.github.com".into()
            } else if origin.contains("api.github.com") || origin.ends_with("/api/v3") {
                origin.to_string()
            } else {
                format!("{origin}/api/v3")
            }
        }
        _ => origin.to_string(),
    }
}

/// The repository as a forge's API names it: Bitbucket Server's clone URLs carry an `scm/`
/// prefix before `project/slug`.
pub fn repository_of(kind: NotifierType, derived: &str) -> String {
    match kind {
        NotifierType::BitbucketServer => {
            derived.strip_prefix("scm/").unwrap_or(derived).to_string()
        }
        _ => derived.to_string(),
    }
}

/// A commit status on a forge (`gitea`, `github`, `gitlab`, `bitbucket-server`).
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
            Request::post_json(
                format!("{api}/projects/{project}/statuses/{commit}"),
                &json!({"state": state, "name": context, "description": report.description}),
            )
            .header("PRIVATE-TOKEN", token)
        }
        NotifierType::BitbucketServer => {
            let state = match report.state {
                State::Pending => "INPROGRESS",
                State::Success => "SUCCESSFUL",
                State::Failure => "FAILED",
            };
            let (project, slug) = repository.split_once('/').unwrap_or(("", repository));
            // `url` is required: the commit's own page on the server.
            let link = format!("{api}/projects/{project}/repos/{slug}/commits/{commit}");
            Request::post_json(
                format!(
                    "{api}/rest/api/latest/projects/{project}/repos/{slug}/commits/{commit}/builds"
                ),
                &json!({
                    "key": context,
                    "name": context,
                    "state": state,
                    "url": link,
                    "description": report.description,
                }),
            )
            .header("Authorization", format!("Bearer {token}"))
        }
        NotifierType::Github => github(
            Request::post_json(
                format!("{api}/repos/{repository}/statuses/{commit}"),
                &json!({
                    "state": report.state.as_str(),
                    "context": context,
                    "description": report.description,
                }),
            ),
            token,
        ),
        _ => Request::post_json(
            format!("{api}/repos/{repository}/statuses/{commit}"),
            &json!({
                "state": report.state.as_str(),
                "context": context,
                "description": report.description,
            }),
        )
        .header("Authorization", format!("token {token}")),
    }
}

fn github(req: Request, token: &str) -> Request {
    req.header("Authorization", format!("Bearer {token}"))
        .header("Accept", "application/vnd.github+json")
        .header("X-GitHub-Api-Version", "2022-11-28")
}

/// The GitHub deployment of `commit` in `environment`, if one exists (answered with a JSON
/// array, newest first).
pub fn find_deployment(
    api: &str,
    repository: &str,
    commit: &str,
    environment: &str,
    token: &str,
) -> Request {
    let base = format!(
        "{}/repos/{repository}/deployments",
        api.trim_end_matches('/')
    );
    let query = [
        ("sha", commit),
        ("environment", environment),
        ("per_page", "1"),
    ];
    // (An address that is not a URL stays as it is: sending it says so.)
    let url = http_client::Url::parse_with_params(&base, query)
        .map(String::from)
        .unwrap_or(base);
    github(
        Request {
            method: super::Method::Get,
            url,
            headers: Vec::new(),
            body: Vec::new(),
        },
        token,
    )
}

/// A new GitHub deployment of `commit` in `environment` (answered with its `id`). Checks
/// are not required and the default branch is not merged in: Gantry reports a deployment
/// that already happened.
pub fn create_deployment(
    api: &str,
    repository: &str,
    commit: &str,
    environment: &str,
    report: &Report,
    token: &str,
) -> Request {
    github(
        Request::post_json(
            format!(
                "{}/repos/{repository}/deployments",
                api.trim_end_matches('/')
            ),
            &json!({
                "ref": commit,
                "environment": environment,
                "description": report.description,
                "auto_merge": false,
                "required_contexts": [],
                "transient_environment": false,
            }),
        ),
        token,
    )
}

/// A status of a GitHub deployment; a successful one marks the environment's earlier
/// deployments inactive.
pub fn deployment_status(
    api: &str,
    repository: &str,
    id: u64,
    environment: &str,
    report: &Report,
    token: &str,
) -> Request {
    let state = match report.state {
        State::Pending => "in_progress",
        State::Success => "success",
        State::Failure => "failure",
    };
    github(
        Request::post_json(
            format!(
                "{}/repos/{repository}/deployments/{id}/statuses",
                api.trim_end_matches('/')
            ),
            &json!({
                "state": state,
                "description": report.description,
                "environment": environment,
                "auto_inactive": true,
            }),
        ),
        token,
    )
}

/// The `id` of a deployment: from an object (created) or the first of an array (found).
pub fn deployment_id(answer: &[u8]) -> Option<u64> {
    let v: serde_json::Value = serde_json::from_slice(answer).ok()?;
    let d = if v.is_array() { v.get(0)? } else { &v };
    d.get("id")?.as_u64()
}

#[cfg(test)]
mod tests {
    use super::super::expand;
    use super::super::fixtures::{SUBJECT, report};
    use super::*;

    fn body(r: &Request) -> serde_json::Value {
        serde_json::from_slice(&r.body).unwrap()
    }

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
            api_base(NotifierType::GithubDeployment, "https://ghe.example.com"),
            "https://ghe.example.com/api/v3"
        );
        assert_eq!(
            api_base(NotifierType::Gitea, "http://127.0.0.1:3000/"),
            "http://127.0.0.1:3000/api/v1"
        );
        assert_eq!(
            api_base(NotifierType::Gitlab, "https://gitlab.com"),
            "https://gitlab.com/api/v4"
        );
        let (_, bb) = forge_of("https://bitbucket.example.com/scm/PROJ/app.git").unwrap();
        assert_eq!(
            repository_of(NotifierType::BitbucketServer, &bb),
            "PROJ/app"
        );
    }

    #[test]
    fn commit_statuses_have_each_forges_shape() {
        let ctx = expand("gantry/{cluster}/{namespace}/{name}", SUBJECT);
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
        assert_eq!(body(&gh)["state"], "failure");
        assert_eq!(body(&gh)["context"], "gantry/prod/team-a/web");
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
        assert_eq!(
            (body(&gl)["state"].as_str(), body(&gl)["name"].as_str()),
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
        let bb = commit_status(
            NotifierType::BitbucketServer,
            "https://bb.example.com",
            "PROJ/app",
            "abc",
            &report(State::Success),
            &ctx,
            "t0k",
        );
        assert_eq!(
            bb.url,
            "https://bb.example.com/rest/api/latest/projects/PROJ/repos/app/commits/abc/builds"
        );
        assert_eq!(body(&bb)["state"], "SUCCESSFUL");
        assert_eq!(body(&bb)["key"], ctx.as_str());
    }

    #[test]
    fn a_github_deployment_is_found_or_created_then_given_a_status() {
        let find = find_deployment("https://api.github.com", "o/r", "abc", "team-a/web", "t");
        assert_eq!(find.method, super::super::Method::Get);
        assert_eq!(
            find.url,
            "https://api.github.com/repos/o/r/deployments?sha=abc&environment=team-a%2Fweb&per_page=1"
        );
        let create = create_deployment(
            "https://api.github.com",
            "o/r",
            "abc",
            "team-a/web",
            &report(State::Pending),
            "t",
        );
        assert_eq!(body(&create)["ref"], "abc");
        assert_eq!(body(&create)["required_contexts"], serde_json::json!([]));
        let status = deployment_status(
            "https://api.github.com",
            "o/r",
            7,
            "team-a/web",
            &report(State::Pending),
            "t",
        );
        assert_eq!(
            status.url,
            "https://api.github.com/repos/o/r/deployments/7/statuses"
        );
        assert_eq!(body(&status)["state"], "in_progress");
        assert_eq!(deployment_id(br#"[{"id": 12}]"#), Some(12));
        assert_eq!(deployment_id(br#"{"id": 13, "sha": "abc"}"#), Some(13));
        assert_eq!(deployment_id(b"[]"), None);
    }
}
