//! What an Application's status says to report, pure: one report per revision in its
//! history (oldest first), in the state that revision reached; beside them, reports of the
//! Application's current state that concern no revision (drift, its source, its deletion),
//! each a stream of its own; and which of them a Notifier still owes, given what it
//! delivered last on each stream (its cursors).

use k8s_openapi::jiff::Timestamp;

use crate::api::application::{Application, ApplicationStatus, SyncRecord, SyncResult};
use crate::api::conditions::{self, Status};
use crate::api::notifier::Delivered;
use crate::api::reasons::{
    ARTIFACT_FAILED, DRIFT_DETECTED, DRIFT_HEAL_FAILED, DRIFT_HEALED, HOOK_FAILED,
};
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
    /// When the state was reached, when known (for the delivery latency).
    pub at: Option<Timestamp>,
}

/// The streams of reports beside the revisions': a report's key is `<revision>#<stream>`.
pub const DRIFT: &str = "drift";
pub const SOURCE: &str = "source";
pub const DELETED: &str = "deleted";
/// Canary streams are `canary-<step>` and `canary-<step>-paused`.
pub const CANARY: &str = "canary";

/// The stream a key (a report's `revision`, a cursor's) belongs to; `""` for revisions.
pub fn stream_of(key: &str) -> &str {
    key.split_once('#').map(|(_, s)| s).unwrap_or("")
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
            let event = match rec.result {
                SyncResult::Promoted => "canary-promoted",
                SyncResult::RolledBack => "rolled-back",
                _ => "deployed",
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
    let event = if event == "sync-failed" && message.starts_with(HOOK_FAILED) {
        "hook-failed"
    } else {
        event
    };
    Report {
        revision: rec.revision.clone(),
        commit: commit_of(&rec.revision),
        state,
        event,
        description: one_line(&description),
        at: Some(rec.finished_at.as_ref().unwrap_or(&rec.started_at).0),
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
            Some(c) if conditions::is(c, Status::False) && c.reason != ARTIFACT_FAILED => Report {
                revision: attempted.to_string(),
                commit: commit_of(attempted),
                state: State::Failure,
                event: if c.reason == HOOK_FAILED {
                    "hook-failed"
                } else {
                    "sync-failed"
                },
                description: one_line(&format!("sync failed: {}", c.message)),
                at: Some(c.last_transition_time.0),
            },
            _ => Report {
                revision: attempted.to_string(),
                commit: commit_of(attempted),
                state: State::Pending,
                event: "progressing",
                description: "syncing".into(),
                at: None,
            },
        };
        out.push(report);
    }
    out
}

/// One report of a stream beside the revisions.
pub struct Event {
    pub report: Report,
    /// Worth saying only after the failure it ends was said (a drift cleared, a source
    /// that works again): never the first report of its stream.
    pub quiet: bool,
}

fn key(status: &ApplicationStatus, stream: &str) -> String {
    let base = status
        .history
        .first()
        .map(|r| r.revision.as_str())
        .unwrap_or("none");
    format!("{base}#{stream}")
}

/// The reports of the Application's current state beside its revisions': its drift (in
/// audit mode: detected and cleared; in heal mode: healed, or a heal that failed), its
/// canary (started, each step reached, paused for promotion) and its source (failed,
/// working again).
pub fn events(status: &ApplicationStatus) -> Vec<Event> {
    let mut out = Vec::new();
    if let Some(c) = conditions::find(&status.conditions, conditions::DRIFTED) {
        let (state, event, quiet) = match c.reason.as_str() {
            DRIFT_DETECTED => (State::Failure, "drift-detected", false),
            DRIFT_HEAL_FAILED => (State::Failure, "drift-heal-failed", false),
            DRIFT_HEALED => (State::Success, "drift-healed", false),
            _ => (State::Success, "drift-cleared", true),
        };
        out.push(Event {
            report: Report {
                revision: key(status, DRIFT),
                commit: None,
                state,
                event,
                description: one_line(&c.message),
                at: Some(c.last_transition_time.0),
            },
            quiet,
        });
    }
    if let Some(r) = &status.rollout
        && matches!(r.phase, RolloutPhase::Progressing | RolloutPhase::Paused)
        && let Some(revision) = &r.revision
    {
        // One stream per step (and per pause for promotion): each is said once.
        let paused = r.phase == RolloutPhase::Paused;
        let (event, stream) = match (paused, r.step) {
            (true, step) => ("canary-paused", format!("{CANARY}-{step}-paused")),
            (false, 0) => ("canary-started", format!("{CANARY}-0")),
            (false, step) => ("canary-step", format!("{CANARY}-{step}")),
        };
        let at = r
            .step_started_at
            .as_ref()
            .or(r.started_at.as_ref())
            .map(|t| t.0);
        out.push(Event {
            report: Report {
                revision: format!("{revision}#{stream}"),
                commit: None,
                state: State::Pending,
                event,
                description: one_line(&format!(
                    "canary step {}: {}",
                    r.step + 1,
                    r.message.as_deref().unwrap_or("in progress")
                )),
                at,
            },
            quiet: false,
        });
    }
    if let Some(c) = conditions::find(&status.conditions, conditions::READY) {
        let failed = c.reason == ARTIFACT_FAILED;
        out.push(Event {
            report: Report {
                revision: key(status, SOURCE),
                commit: None,
                state: if failed {
                    State::Failure
                } else {
                    State::Success
                },
                event: if failed {
                    "source-failed"
                } else {
                    "source-recovered"
                },
                description: one_line(&if failed {
                    format!("source failed: {}", c.message)
                } else {
                    "the source works again".to_string()
                }),
                at: Some(c.last_transition_time.0),
            },
            quiet: !failed,
        });
    }
    out
}

/// The report of an Application deleted (`app` while it is being deleted, `None` once it
/// is gone): whether its objects are pruned or left.
pub fn deleted(app: Option<&Application>, last_revision: &str) -> Report {
    let base = last_revision
        .split_once('#')
        .map(|(b, _)| b)
        .unwrap_or(last_revision);
    let description = match app {
        Some(a) if a.spec.prune && !a.spec.suspend => {
            "Application deleted; the objects it applied are pruned"
        }
        Some(_) => "Application deleted; the objects it applied are left in place",
        None => "Application deleted",
    };
    Report {
        revision: format!("{base}#{DELETED}"),
        commit: None,
        state: State::Success,
        event: "deleted",
        description: description.into(),
        at: app
            .and_then(|a| a.metadata.deletion_timestamp.as_ref())
            .map(|t| t.0),
    }
}

/// Whether a report of a stream beside the revisions is owed after `cursor` (what that
/// stream delivered last): a new key or a changed state; a quiet one only when it follows
/// its own stream's failure.
pub fn event_due(event: &Event, cursor: Option<&Delivered>) -> bool {
    let report = &event.report;
    match cursor {
        Some(c) if c.revision == report.revision => c.state != report.state.as_str(),
        Some(c) if event.quiet => {
            // A new revision: the cleared drift of the earlier one is said once.
            c.state == State::Failure.as_str() && report.state != State::Failure
        }
        Some(_) => true,
        None => !event.quiet,
    }
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

    fn condition(type_: &str, status: Status, reason: &str) -> conditions::Condition {
        conditions::new_condition(type_, status, reason, "m", None, Timestamp::now())
    }

    #[test]
    fn drift_and_source_are_streams_of_their_own_and_recoveries_follow_failures() {
        let mut status = ApplicationStatus {
            history: vec![rec("c1", SyncResult::Succeeded, Some(true), "")],
            conditions: vec![
                condition(conditions::DRIFTED, Status::True, DRIFT_DETECTED),
                condition(conditions::READY, Status::True, "Synced"),
            ],
            ..Default::default()
        };
        let ev = events(&status);
        assert_eq!(ev[0].report.revision, "main@sha1:c1#drift");
        assert_eq!(ev[0].report.event, "drift-detected");
        assert!(event_due(&ev[0], None));
        assert!(!event_due(&ev[1], None), "a working source is not news");
        let said = Delivered {
            application: "web".into(),
            revision: ev[0].report.revision.clone(),
            state: "failure".into(),
        };
        assert!(!event_due(&ev[0], Some(&said)), "said once");
        status.conditions[0] = condition(conditions::DRIFTED, Status::False, "NoDrift");
        let cleared = &events(&status)[0];
        assert_eq!(cleared.report.event, "drift-cleared");
        assert!(event_due(cleared, Some(&said)), "cleared after detected");
        status.conditions[1] = condition(conditions::READY, Status::False, ARTIFACT_FAILED);
        let source = &events(&status)[1];
        assert_eq!(
            (source.report.event, source.report.state),
            ("source-failed", State::Failure)
        );
        assert!(event_due(source, None));
        // The failed fetch is not a failed sync of the revision being attempted.
        status.last_attempted_revision = Some("main@sha1:c2".into());
        assert_eq!(reports(&status).last().unwrap().state, State::Pending);
        assert_eq!(stream_of("main@sha1:c1#source"), SOURCE);
        assert_eq!(stream_of("main@sha1:c1"), "");
    }

    #[test]
    fn each_canary_step_and_pause_is_said_once() {
        use crate::api::rollout::RolloutStatus;
        let mut status = ApplicationStatus {
            history: vec![rec("c1", SyncResult::Succeeded, Some(true), "")],
            rollout: Some(RolloutStatus {
                phase: RolloutPhase::Progressing,
                revision: Some("main@sha1:c2".into()),
                step: 0,
                message: Some("10% of the stable replicas".into()),
                ..Default::default()
            }),
            ..Default::default()
        };
        let canary = |status: &ApplicationStatus| {
            events(status)
                .into_iter()
                .find(|e| stream_of(&e.report.revision).starts_with(CANARY))
                .unwrap()
        };
        let started = canary(&status);
        assert_eq!(started.report.event, "canary-started");
        assert_eq!(started.report.revision, "main@sha1:c2#canary-0");
        let said = Delivered {
            application: "web".into(),
            revision: started.report.revision.clone(),
            state: "pending".into(),
        };
        assert!(!event_due(&started, Some(&said)));
        let rollout = status.rollout.as_mut().unwrap();
        rollout.step = 1;
        let step = canary(&status);
        assert_eq!(step.report.event, "canary-step");
        assert!(event_due(&step, None), "a stream of its own");
        status.rollout.as_mut().unwrap().phase = RolloutPhase::Paused;
        assert_eq!(canary(&status).report.event, "canary-paused");
        status.rollout.as_mut().unwrap().phase = RolloutPhase::Succeeded;
        assert!(
            events(&status)
                .iter()
                .all(|e| !stream_of(&e.report.revision).starts_with(CANARY))
        );
    }

    #[test]
    fn a_failed_hook_is_its_own_event_and_a_deletion_says_what_became_of_the_objects() {
        let status = ApplicationStatus {
            history: vec![rec(
                "c1",
                SyncResult::Failed,
                None,
                "HookFailed: Job migrate failed",
            )],
            ..Default::default()
        };
        assert_eq!(reports(&status)[0].event, "hook-failed");
        let app: Application = serde_json::from_value(serde_json::json!({
            "apiVersion": "gantry.dev/v1alpha1", "kind": "Application",
            "metadata": {"name": "web", "namespace": "team-a"},
            "spec": {"sourceRef": {"name": "s"}, "prune": false},
        }))
        .unwrap();
        let r = deleted(Some(&app), "main@sha1:c1#drift");
        assert_eq!(r.revision, "main@sha1:c1#deleted");
        assert!(r.description.contains("left in place"), "{}", r.description);
        assert_eq!(deleted(None, "x").description, "Application deleted");
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
