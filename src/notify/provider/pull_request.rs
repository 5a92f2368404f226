//! A deploy plan on a pull request, as the forges' public APIs specify: one comment, edited
//! in place on every push, and a commit status on the head.
//! - Gitea/Forgejo: `POST /api/v1/repos/{owner}/{repo}/issues/{index}/comments` and
//!   `PATCH /api/v1/repos/{owner}/{repo}/issues/comments/{id}` with `body`
//!   (https://gitea.com/api/swagger#/issue/issueCreateComment, #/issue/issueEditComment);
//! - GitHub: `POST /repos/{owner}/{repo}/issues/{number}/comments` and
//!   `PATCH /repos/{owner}/{repo}/issues/comments/{id}` with `body`
//!   (https://docs.github.com/en/rest/issues/comments);
//! - GitLab: `POST /projects/{id}/merge_requests/{iid}/notes` and
//!   `PUT /projects/{id}/merge_requests/{iid}/notes/{note_id}` with `body`
//!   (https://docs.gitlab.com/api/notes/#merge-requests).
//!
//! The status: `success` (applies cleanly), `failure` (something would be refused) and, for
//! a pull request that is not planned, the forge's neutral state where it has one (Gitea
//! `warning`, GitLab `skipped`); GitHub's commit statuses have none, so `error` (never
//! `success`, which a required check would take for a clean plan).

use serde_json::json;

use super::{Method, Request};
use crate::api::notifier::NotifierType;

/// The commit status context of plans.
pub const CONTEXT: &str = "gantry/plan";

/// What a plan's status says.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum PlanState {
    Success,
    Failure,
    /// Not planned (a fork, no Application on the branch), see the description.
    Skipped,
}

fn auth(kind: NotifierType, req: Request, token: &str) -> Request {
    match kind {
        NotifierType::Gitlab => req.header("PRIVATE-TOKEN", token),
        NotifierType::Github => req
            .header("Authorization", format!("Bearer {token}"))
            .header("Accept", "application/vnd.github+json")
            .header("X-GitHub-Api-Version", "2022-11-28"),
        _ => req.header("Authorization", format!("token {token}")),
    }
}

/// Whether plans can be posted through a Notifier of this type.
pub fn supported(kind: NotifierType) -> bool {
    matches!(
        kind,
        NotifierType::Gitea | NotifierType::Github | NotifierType::Gitlab
    )
}

/// A new comment on pull request `number`.
pub fn create_comment(
    kind: NotifierType,
    api: &str,
    repository: &str,
    number: i64,
    body: &str,
    token: &str,
) -> Request {
    let api = api.trim_end_matches('/');
    let url = match kind {
        NotifierType::Gitlab => format!(
            "{api}/projects/{}/merge_requests/{number}/notes",
            repository.replace('/', "%2F")
        ),
        _ => format!("{api}/repos/{repository}/issues/{number}/comments"),
    };
    auth(
        kind,
        Request::post_json(url, &json!({ "body": body })),
        token,
    )
}

/// Comment `id` of pull request `number`, replaced by `body`.
pub fn edit_comment(
    kind: NotifierType,
    api: &str,
    repository: &str,
    number: i64,
    id: &str,
    body: &str,
    token: &str,
) -> Request {
    let api = api.trim_end_matches('/');
    let (method, url) = match kind {
        NotifierType::Gitlab => (
            Method::Put,
            format!(
                "{api}/projects/{}/merge_requests/{number}/notes/{id}",
                repository.replace('/', "%2F")
            ),
        ),
        _ => (
            Method::Patch,
            format!("{api}/repos/{repository}/issues/comments/{id}"),
        ),
    };
    let mut req = Request::post_json(url, &json!({ "body": body }));
    req.method = method;
    auth(kind, req, token)
}

/// The id of the comment a create answered with.
pub fn comment_id(answer: &[u8]) -> Option<String> {
    let v: serde_json::Value = serde_json::from_slice(answer).ok()?;
    v.get("id")?.as_u64().map(|id| id.to_string())
}

/// The plan's commit status on `commit`.
pub fn status(
    kind: NotifierType,
    api: &str,
    repository: &str,
    commit: &str,
    state: PlanState,
    description: &str,
    token: &str,
) -> Request {
    let api = api.trim_end_matches('/');
    let description: String = description.chars().take(140).collect();
    match kind {
        NotifierType::Gitlab => {
            let state = match state {
                PlanState::Success => "success",
                PlanState::Failure => "failed",
                PlanState::Skipped => "skipped",
            };
            auth(
                kind,
                Request::post_json(
                    format!(
                        "{api}/projects/{}/statuses/{commit}",
                        repository.replace('/', "%2F")
                    ),
                    &json!({"state": state, "name": CONTEXT, "description": description}),
                ),
                token,
            )
        }
        _ => {
            let state = match (kind, state) {
                (_, PlanState::Success) => "success",
                (_, PlanState::Failure) => "failure",
                (NotifierType::Github, PlanState::Skipped) => "error",
                (_, PlanState::Skipped) => "warning",
            };
            auth(
                kind,
                Request::post_json(
                    format!("{api}/repos/{repository}/statuses/{commit}"),
                    &json!({"state": state, "context": CONTEXT, "description": description}),
                ),
                token,
            )
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn body(req: &Request) -> serde_json::Value {
        serde_json::from_slice(&req.body).unwrap()
    }

    #[test]
    fn comments_are_created_then_edited_in_place() {
        let c = create_comment(
            NotifierType::Gitea,
            "http://f/api/v1/",
            "team/app",
            7,
            "plan",
            "t",
        );
        assert_eq!(c.url, "http://f/api/v1/repos/team/app/issues/7/comments");
        assert_eq!(
            (c.method, body(&c)["body"].as_str()),
            (Method::Post, Some("plan"))
        );
        assert!(c.headers.contains(&("Authorization", "token t".into())));
        let e = edit_comment(
            NotifierType::Github,
            "https://api.github.com",
            "team/app",
            7,
            "42",
            "new",
            "t",
        );
        assert_eq!(e.method, Method::Patch);
        assert_eq!(
            e.url,
            "https://api.github.com/repos/team/app/issues/comments/42"
        );
        assert!(e.headers.contains(&("Authorization", "Bearer t".into())));
        let g = edit_comment(
            NotifierType::Gitlab,
            "https://gl/api/v4",
            "group/app",
            3,
            "9",
            "x",
            "t",
        );
        assert_eq!(g.method, Method::Put);
        assert_eq!(
            g.url,
            "https://gl/api/v4/projects/group%2Fapp/merge_requests/3/notes/9"
        );
        assert!(g.headers.contains(&("PRIVATE-TOKEN", "t".into())));
        assert_eq!(
            comment_id(br#"{"id": 42, "body": "x"}"#).as_deref(),
            Some("42")
        );
        assert_eq!(comment_id(b"not json"), None);
    }

    #[test]
    fn a_skipped_plan_is_never_a_success() {
        let s = |kind| {
            body(&status(
                kind,
                "http://f",
                "team/app",
                "c",
                PlanState::Skipped,
                "fork",
                "t",
            ))
        };
        assert_eq!(s(NotifierType::Gitea)["state"], "warning");
        assert_eq!(s(NotifierType::Github)["state"], "error");
        assert_eq!(s(NotifierType::Gitlab)["state"], "skipped");
        assert_eq!(s(NotifierType::Gitea)["context"], CONTEXT);
        assert_eq!(s(NotifierType::Gitlab)["name"], CONTEXT);
        let failed = status(
            NotifierType::Gitlab,
            "http://f",
            "a/b",
            "c",
            PlanState::Failure,
            "x",
            "t",
        );
        assert_eq!(body(&failed)["state"], "failed");
        assert!(supported(NotifierType::Gitea) && !supported(NotifierType::Slack));
    }
}
