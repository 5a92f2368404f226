//! Pull and merge request events of GitHub, Gitea (and Forgejo) and GitLab, parsed (pure)
//! into what a plan needs: the request's number, its head commit and branch, the branch it
//! targets and whether it comes from a fork.

use serde_json::Value;

/// A pull request that was opened, pushed to or reopened.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PullRequest {
    /// The pull request's number (GitLab: the merge request's `iid`).
    pub number: i64,
    /// The head commit (40 hex).
    pub head: String,
    /// The head branch (in the fork, for a fork).
    pub head_ref: String,
    /// The branch it would merge into.
    pub base_ref: String,
    /// The head lives in another repository.
    pub from_fork: bool,
}

/// What a pull request event asks for.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Event {
    /// Plan the head (opened, pushed to, reopened).
    Plan(PullRequest),
    /// Forget the pull request (closed or merged).
    Closed { number: i64, base_ref: String },
    /// Nothing to do (labels, reviews, edits of the title …), with why.
    Ignore(String),
}

fn str_at<'a>(v: &'a Value, pointer: &str) -> Option<&'a str> {
    v.pointer(pointer).and_then(Value::as_str)
}

fn is_commit(s: &str) -> bool {
    s.len() == 40 && s.bytes().all(|b| b.is_ascii_hexdigit())
}

fn malformed(what: &str) -> String {
    format!("pull request event without {what}")
}

/// GitHub's and Gitea's `pull_request` event (the same shape; Gitea says `synchronized`).
pub fn github_like(payload: &Value) -> Result<Event, String> {
    let action = str_at(payload, "/action").ok_or_else(|| malformed("`action`"))?;
    let number = payload
        .pointer("/number")
        .or_else(|| payload.pointer("/pull_request/number"))
        .and_then(Value::as_i64)
        .filter(|n| *n > 0)
        .ok_or_else(|| malformed("`number`"))?;
    let base_ref = str_at(payload, "/pull_request/base/ref")
        .ok_or_else(|| malformed("`pull_request.base.ref`"))?
        .to_string();
    match action {
        "opened" | "synchronize" | "synchronized" | "reopened" => {}
        "closed" => return Ok(Event::Closed { number, base_ref }),
        other => return Ok(Event::Ignore(format!("pull request action {other}"))),
    }
    let head = str_at(payload, "/pull_request/head/sha")
        .filter(|s| is_commit(s))
        .ok_or_else(|| malformed("a head commit"))?
        .to_ascii_lowercase();
    let head_ref = str_at(payload, "/pull_request/head/ref")
        .ok_or_else(|| malformed("`pull_request.head.ref`"))?
        .to_string();
    let repo_id = |side: &str| {
        payload
            .pointer(&format!("/pull_request/{side}/repo/id"))
            .cloned()
    };
    let from_fork = match (repo_id("head"), repo_id("base")) {
        (Some(h), Some(b)) => h != b,
        // Without both repositories, assume the worst.
        _ => true,
    };
    Ok(Event::Plan(PullRequest {
        number,
        head,
        head_ref,
        base_ref,
        from_fork,
    }))
}

/// GitLab's `Merge Request Hook`.
pub fn gitlab(payload: &Value) -> Result<Event, String> {
    let attrs = payload
        .get("object_attributes")
        .ok_or_else(|| malformed("`object_attributes`"))?;
    let number = attrs
        .get("iid")
        .and_then(Value::as_i64)
        .filter(|n| *n > 0)
        .ok_or_else(|| malformed("`object_attributes.iid`"))?;
    let base_ref = str_at(attrs, "/target_branch")
        .ok_or_else(|| malformed("`object_attributes.target_branch`"))?
        .to_string();
    match str_at(attrs, "/action").unwrap_or_default() {
        "open" | "reopen" => {}
        // An update that is not a push (a title, a label) has no `oldrev`.
        "update" if attrs.get("oldrev").is_some() => {}
        "close" | "merge" => return Ok(Event::Closed { number, base_ref }),
        other => return Ok(Event::Ignore(format!("merge request action {other:?}"))),
    }
    let head = str_at(attrs, "/last_commit/id")
        .filter(|s| is_commit(s))
        .ok_or_else(|| malformed("a head commit"))?
        .to_ascii_lowercase();
    let head_ref = str_at(attrs, "/source_branch")
        .ok_or_else(|| malformed("`object_attributes.source_branch`"))?
        .to_string();
    let from_fork = match (
        attrs.get("source_project_id"),
        attrs.get("target_project_id"),
    ) {
        (Some(s), Some(t)) => s != t,
        _ => true,
    };
    Ok(Event::Plan(PullRequest {
        number,
        head,
        head_ref,
        base_ref,
        from_fork,
    }))
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    const SHA: &str = "0123456789abcdef0123456789abcdef01234567";

    fn github(action: &str, head_repo: u64) -> Value {
        json!({"action": action, "number": 7, "pull_request": {
            "number": 7,
            "head": {"sha": SHA, "ref": "feature", "repo": {"id": head_repo}},
            "base": {"ref": "main", "repo": {"id": 1}}}})
    }

    #[test]
    fn github_and_gitea_pushes_to_a_pull_request_are_planned() {
        for action in ["opened", "synchronize", "synchronized", "reopened"] {
            assert_eq!(
                github_like(&github(action, 1)),
                Ok(Event::Plan(PullRequest {
                    number: 7,
                    head: SHA.into(),
                    head_ref: "feature".into(),
                    base_ref: "main".into(),
                    from_fork: false,
                }))
            );
        }
        let Ok(Event::Plan(fork)) = github_like(&github("opened", 2)) else {
            panic!("a plan");
        };
        assert!(fork.from_fork);
        assert_eq!(
            github_like(&github("closed", 1)),
            Ok(Event::Closed {
                number: 7,
                base_ref: "main".into()
            })
        );
        assert!(matches!(
            github_like(&github("labeled", 1)),
            Ok(Event::Ignore(_))
        ));
    }

    #[test]
    fn a_crafted_event_is_refused_or_treated_as_a_fork() {
        let mut bad = github("opened", 1);
        bad["pull_request"]["head"]["sha"] = json!("main; rm -rf /");
        assert!(github_like(&bad).unwrap_err().contains("head commit"));
        let mut no_repos = github("opened", 1);
        no_repos["pull_request"]["base"]
            .as_object_mut()
            .unwrap()
            .remove("repo");
        let Ok(Event::Plan(pr)) = github_like(&no_repos) else {
            panic!("a plan");
        };
        assert!(pr.from_fork, "unknown origin counts as a fork");
        assert!(github_like(&json!({"action": "opened"})).is_err());
    }

    #[test]
    fn gitlab_merge_requests() {
        let mr = |action: &str, source: u64, oldrev: bool| {
            let mut v = json!({"object_kind": "merge_request", "object_attributes": {
                "iid": 3, "action": action, "source_branch": "feature", "target_branch": "main",
                "source_project_id": source, "target_project_id": 1,
                "last_commit": {"id": SHA}}});
            if oldrev {
                v["object_attributes"]["oldrev"] = json!("f".repeat(40));
            }
            v
        };
        let Ok(Event::Plan(pr)) = gitlab(&mr("open", 1, false)) else {
            panic!("a plan");
        };
        assert_eq!((pr.number, pr.from_fork), (3, false));
        assert!(matches!(gitlab(&mr("update", 1, true)), Ok(Event::Plan(_))));
        assert!(matches!(
            gitlab(&mr("update", 1, false)),
            Ok(Event::Ignore(_))
        ));
        assert!(matches!(
            gitlab(&mr("merge", 1, false)),
            Ok(Event::Closed { number: 3, .. })
        ));
        let Ok(Event::Plan(fork)) = gitlab(&mr("open", 9, false)) else {
            panic!("a plan");
        };
        assert!(fork.from_fork);
    }
}
