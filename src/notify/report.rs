//! What an Application's status says to report, pure: one report per revision in its
//! history (oldest first), in the state that revision reached, and which of them a
//! Notifier still owes, given what it delivered last (its cursor).

use crate::api::application::{ApplicationStatus, SyncRecord, SyncResult};
use crate::api::conditions::{self, Status};
use crate::api::notifier::Delivered;
use crate::api::rollout::RolloutPhase;

/// The state of a revision, as commit statuses name it.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum State {
    /// A sync, a hook wave, the wait for health or a canary is in progress.
    Pending,
    /// Synced and healthy (or promoted).
    Success,
    /// A failed sync, an unhealthy revision, an aborted rollout.
    Failure,
}

impl State {
    pub fn as_str(self) -> &'static str {
        match self {
            State::Pending => "pending",
            State::Success => "success",
            State::Failure => "failure",
        }
    }
}

/// One thing to report about one revision.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Report {
    pub revision: String,
    /// The commit of the revision (`ref@sha1:<commit>`), when it names one.
    pub commit: Option<String>,
    pub state: State,
    /// What happened, for `gantry_notifications_total{event}` and webhook bodies: one of a
    /// fixed set.
    pub event: &'static str,
    /// One line saying why.
    pub description: String,
}

/// The longest description a forge shows (GitHub cuts at 140 characters).
const MAX_DESCRIPTION: usize = 140;

fn one_line(text: &str) -> String {
    let line = text.lines().next().unwrap_or_default().trim();
    if line.chars().count() <= MAX_DESCRIPTION {
        return line.to_string();
    }
    let cut: String = line.chars().take(MAX_DESCRIPTION - 1).collect();
    format!("{cut}…")
}

fn commit_of(revision: &str) -> Option<String> {
    revision.rsplit_once("@sha1:").map(|(_, c)| c.to_string())
}

/// The report of one history record; `latest` says whether it is the newest (whose health
/// and rollout the conditions describe).
fn of_record(rec: &SyncRecord, status: &ApplicationStatus, latest: bool) -> Report {
    let message = rec.message.as_deref().unwrap_or_default();
    let (state, event, description) = match rec.result {
        SyncResult::Failed => (
            State::Failure,
            "sync-failed",
            format!("sync failed: {message}"),
        ),
        SyncResult::Aborted => {
            let mut d = format!("rollout aborted: {message}");
            if let Some(revert) = &rec.reverted_by {
                d = format!(
                    "rollout aborted, reverted by {}: {message}",
                    &revert[..12.min(revert.len())]
                );
            }
            (State::Failure, "rollout-aborted", d)
        }
        _ if rec.healthy == Some(true) => {
            let event = if rec.result == SyncResult::Promoted {
                "canary-promoted"
            } else {
                "deployed"
            };
            let what = match rec.result {
                SyncResult::Promoted => "promoted and healthy",
                SyncResult::RolledBack => "rolled back and healthy",
                _ => "deployed and healthy",
            };
            (
                State::Success,
                event,
                format!(
                    "{what}: {} created, {} configured, {} pruned",
                    rec.created, rec.configured, rec.pruned
                ),
            )
        }
        _ if rec.healthy == Some(false) => (
            State::Failure,
            "health-degraded",
            format!("unhealthy: {message}"),
        ),
        _ => pending_or_current(status, latest),
    };
    Report {
        revision: rec.revision.clone(),
        commit: commit_of(&rec.revision),
        state,
        event,
        description: one_line(&description),
    }
}

/// A synced revision whose health is not decided yet: the conditions say where it is.
fn pending_or_current(status: &ApplicationStatus, latest: bool) -> (State, &'static str, String) {
    if !latest {
        // A newer revision came before this one was healthy.
        return (
            State::Success,
            "deployed",
            "applied; a newer revision followed".into(),
        );
    }
    let healthy = conditions::find(&status.conditions, conditions::HEALTHY);
    if let Some(rollout) = &status.rollout
        && matches!(
            rollout.phase,
            RolloutPhase::Progressing | RolloutPhase::Paused
        )
    {
        let m = rollout
            .message
            .clone()
            .unwrap_or_else(|| "in progress".into());
        return (State::Pending, "canary-progressing", format!("canary: {m}"));
    }
    match healthy {
        Some(c) if conditions::is(c, Status::True) => {
            (State::Success, "deployed", "deployed and healthy".into())
        }
        Some(c) if conditions::is(c, Status::False) => (
            State::Failure,
            "health-degraded",
            format!("unhealthy: {}", c.message),
        ),
        _ => (
            State::Pending,
            "progressing",
            "applied, waiting for health".into(),
        ),
    }
}

/// Every report the status holds, oldest first: one per revision of the history, and the
/// revision being synced when no record has it yet.
pub fn reports(status: &ApplicationStatus) -> Vec<Report> {
    let mut out: Vec<Report> = Vec::new();
    for (i, rec) in status.history.iter().enumerate().rev() {
        let report = of_record(rec, status, i == 0);
        // A revision synced twice (a retry): its newest record counts.
        out.retain(|r| r.revision != report.revision);
        out.push(report);
    }
    let newest = status.history.first().map(|r| r.revision.as_str());
    if let Some(attempted) = status.last_attempted_revision.as_deref()
        && Some(attempted) != newest
        && !out.iter().any(|r| r.revision == attempted)
    {
        let ready = conditions::find(&status.conditions, conditions::READY);
        let report = match ready {
            Some(c) if conditions::is(c, Status::False) => Report {
                revision: attempted.to_string(),
                commit: commit_of(attempted),
                state: State::Failure,
                event: "sync-failed",
                description: one_line(&format!("sync failed: {}", c.message)),
            },
            _ => Report {
                revision: attempted.to_string(),
                commit: commit_of(attempted),
                state: State::Pending,
                event: "progressing",
                description: "syncing".into(),
            },
        };
        out.push(report);
    }
    out
}

/// The reports still owed after `cursor` (what was delivered last for this Application):
/// the cursor's revision again when its state changed, and every newer one. Without a
/// cursor (a new Notifier or Application) only the newest report is owed: the past is not
/// replayed.
pub fn due<'a>(reports: &'a [Report], cursor: Option<&Delivered>) -> &'a [Report] {
    let Some(cursor) = cursor else {
        return &reports[reports.len().saturating_sub(1)..];
    };
    match reports.iter().position(|r| r.revision == cursor.revision) {
        Some(i) if reports[i].state.as_str() == cursor.state => &reports[i + 1..],
        Some(i) => &reports[i..],
        // Its revision left the history: everything there is newer.
        None => reports,
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use k8s_openapi::apimachinery::pkg::apis::meta::v1::Time;
    use k8s_openapi::jiff::Timestamp;

    fn rec(commit: &str, result: SyncResult, healthy: Option<bool>, message: &str) -> SyncRecord {
        SyncRecord {
            revision: format!("main@sha1:{commit}"),
            started_at: Time(Timestamp::now()),
            finished_at: None,
            result,
            message: Some(message.into()),
            created: 1,
            configured: 2,
            unchanged: 0,
            pruned: 0,
            template_hashes: Default::default(),
            healthy,
            chart_version: None,
            reverted_by: None,
        }
    }

    fn cursor(commit: &str, state: &str) -> Delivered {
        Delivered {
            application: "web".into(),
            revision: format!("main@sha1:{commit}"),
            state: state.into(),
        }
    }

    #[test]
    fn each_revision_is_reported_in_the_state_it_reached_oldest_first() {
        let mut aborted = rec("c3", SyncResult::Aborted, Some(false), "check pods failed");
        aborted.reverted_by = Some("d4d4d4d4d4d4d4d4".into());
        let status = ApplicationStatus {
            history: vec![
                aborted,
                rec(
                    "c2",
                    SyncResult::Failed,
                    None,
                    "ValidationFailed: Deployment web: bad",
                ),
                rec("c1", SyncResult::Succeeded, Some(true), ""),
            ],
            ..Default::default()
        };
        let r = reports(&status);
        let states: Vec<_> = r
            .iter()
            .map(|r| (r.commit.as_deref().unwrap(), r.state))
            .collect();
        assert_eq!(
            states,
            [
                ("c1", State::Success),
                ("c2", State::Failure),
                ("c3", State::Failure)
            ]
        );
        assert!(
            r[1].description.contains("Deployment web: bad"),
            "{}",
            r[1].description
        );
        assert!(
            r[2].description.contains("reverted by d4d4d4d4d4d4"),
            "{}",
            r[2].description
        );
    }

    #[test]
    fn a_revision_being_synced_is_pending_and_long_messages_are_one_short_line() {
        let status = ApplicationStatus {
            last_attempted_revision: Some("main@sha1:c2".into()),
            history: vec![rec("c1", SyncResult::Succeeded, Some(true), "")],
            ..Default::default()
        };
        let r = reports(&status);
        assert_eq!(r.last().unwrap().state, State::Pending);
        assert_eq!(r.last().unwrap().commit.as_deref(), Some("c2"));
        assert_eq!(one_line(&"x".repeat(500)).chars().count(), MAX_DESCRIPTION);
        assert_eq!(one_line("first\nsecond"), "first");
    }

    #[test]
    fn the_cursor_decides_what_is_owed() {
        let status = ApplicationStatus {
            history: vec![
                rec("c3", SyncResult::Succeeded, Some(true), ""),
                rec("c2", SyncResult::Succeeded, Some(true), ""),
                rec("c1", SyncResult::Succeeded, Some(true), ""),
            ],
            ..Default::default()
        };
        let r = reports(&status);
        let commits = |d: &[Report]| {
            d.iter()
                .map(|r| r.commit.clone().unwrap())
                .collect::<Vec<_>>()
        };
        assert_eq!(commits(due(&r, None)), ["c3"], "no replay of the past");
        assert_eq!(
            commits(due(&r, Some(&cursor("c1", "success")))),
            ["c2", "c3"]
        );
        assert_eq!(
            commits(due(&r, Some(&cursor("c2", "pending")))),
            ["c2", "c3"]
        );
        assert!(due(&r, Some(&cursor("c3", "success"))).is_empty());
        assert_eq!(
            commits(due(&r, Some(&cursor("gone", "success")))),
            ["c1", "c2", "c3"]
        );
    }
}
