//! The protocol between the CLI, the receivers and the controller: the annotations each
//! writes for another to read, and the marks left in Git.

/// Set to ask for a reconcile now (value: an RFC 3339 timestamp); see `crate::trigger`.
pub const REQUEST_ANNOTATION: &str = "gantry.dev/requested-at";

/// Set by `gantry promote` / `gantry abort` on an Application (value `promote@<time>` /
/// `abort@<time>`).
pub const ROLLOUT_ACTION_ANNOTATION: &str = "gantry.dev/rollout-action";

/// The line `gantry rollback` puts in its revert commits; the controller knows a rollback
/// of an Application by it.
pub const ROLLBACK_NOTE: &str = "Rolled back by `gantry rollback";

/// Prefix of the annotations a Receiver writes on a GitRepository with plans enabled, one
/// per open pull request that targets its branch: `plan.gantry.dev/pr-<number>: <head
/// commit>`, followed by ` fork` when the head is in a fork. Closing the pull request
/// removes it.
pub const PLAN_REQUEST_PREFIX: &str = "plan.gantry.dev/pr-";

/// The most pull requests planned per GitRepository (more are not recorded).
pub const MAX_PLAN_REQUESTS: usize = 50;

/// A pull request to plan, read from a [`PLAN_REQUEST_PREFIX`] annotation.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PlanRequest {
    /// The pull request's number (positive).
    pub number: i64,
    pub head: String,
    pub from_fork: bool,
}

/// The annotation of a plan request: its key and value.
pub fn plan_request_annotation(r: &PlanRequest) -> (String, String) {
    let fork = if r.from_fork { " fork" } else { "" };
    (
        format!("{PLAN_REQUEST_PREFIX}{}", r.number),
        format!("{}{fork}", r.head),
    )
}

/// The plan requests among `annotations`, by number; malformed ones are left out.
pub fn plan_requests(annotations: &std::collections::BTreeMap<String, String>) -> Vec<PlanRequest> {
    annotations
        .iter()
        .filter_map(|(k, v)| {
            let number: i64 = k.strip_prefix(PLAN_REQUEST_PREFIX)?.parse().ok()?;
            if number <= 0 {
                return None;
            }
            let mut words = v.split_whitespace();
            let head = words.next()?;
            if head.len() != 40 || !head.bytes().all(|b| b.is_ascii_hexdigit()) {
                return None;
            }
            Some(PlanRequest {
                number,
                head: head.to_ascii_lowercase(),
                from_fork: words.next() == Some("fork"),
            })
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn plan_requests_round_trip_and_malformed_ones_are_left_out() {
        let r = PlanRequest {
            number: 7,
            head: "a".repeat(40),
            from_fork: true,
        };
        let (k, v) = plan_request_annotation(&r);
        let mut annotations = std::collections::BTreeMap::from([(k, v)]);
        annotations.insert(format!("{PLAN_REQUEST_PREFIX}8"), "not-a-commit".into());
        annotations.insert(format!("{PLAN_REQUEST_PREFIX}x"), "b".repeat(40));
        annotations.insert("other/annotation".into(), "c".repeat(40));
        assert_eq!(plan_requests(&annotations), vec![r]);
    }
}
