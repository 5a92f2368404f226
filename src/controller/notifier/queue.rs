//! What a Notifier owes, pure: the reports each selected Application (and each one gone
//! since a report about it was delivered) is still owed after its cursors, the bound on
//! them, and moving a cursor.

use std::sync::Arc;

use kube::ResourceExt;

use crate::api::application::{Application, ApplicationStatus};
use crate::api::notifier::Delivered;
use crate::notify::report::{self, Report};

/// The most reports one Notifier keeps owing; beyond it the oldest are dropped (counted,
/// and said on its Ready condition).
pub const MAX_OWED: usize = 4096;

/// One report owed about one Application.
pub(super) struct Owed {
    pub app: String,
    /// The Application's index in the round (its source, its cluster).
    pub index: Option<usize>,
    pub report: Report,
    pub dropped: bool,
}

/// What each selected Application (and each one gone since a report about it was
/// delivered) is still owed, oldest first per Application; `cursors` keeps the cursors of
/// the Applications still selected, and loses those of the others.
pub(super) fn owed(
    apps: &[Arc<Application>],
    all_names: &[String],
    cursors: &mut Vec<Delivered>,
) -> Vec<Owed> {
    let mut out = Vec::new();
    for (index, app) in apps.iter().enumerate() {
        let name = app.name_any();
        // Canary cursors matter while that canary runs: the others are let go (a new
        // canary's keys name its own revision).
        let canary = app
            .status
            .as_ref()
            .and_then(|s| s.rollout.as_ref())
            .filter(|r| {
                matches!(
                    r.phase,
                    crate::api::rollout::RolloutPhase::Progressing
                        | crate::api::rollout::RolloutPhase::Paused
                )
            })
            .and_then(|r| r.revision.clone());
        cursors.retain(|d| {
            d.application != name
                || !report::stream_of(&d.revision).starts_with(report::CANARY)
                || canary
                    .as_deref()
                    .is_some_and(|r| d.revision.starts_with(&format!("{r}#")))
        });
        let cursor = |stream: &str| {
            cursors
                .iter()
                .find(|d| d.application == name && report::stream_of(&d.revision) == stream)
        };
        let empty = ApplicationStatus::default();
        let status = app.status.as_ref().unwrap_or(&empty);
        let reports = report::reports(status);
        let mut mine: Vec<Report> = report::due(&reports, cursor("")).to_vec();
        for event in report::events(status) {
            let stream = report::stream_of(&event.report.revision);
            if report::event_due(&event, cursor(stream)) {
                mine.push(event.report);
            }
        }
        if app.metadata.deletion_timestamp.is_some() && cursor(report::DELETED).is_none() {
            let last = reports
                .last()
                .map(|r| r.revision.as_str())
                .unwrap_or("none");
            mine.push(report::deleted(Some(app), last));
        }
        out.extend(mine.into_iter().map(|report| Owed {
            app: name.clone(),
            index: Some(index),
            report,
            dropped: false,
        }));
    }
    // Applications gone: their deletion, when it was not said while they were deleted.
    let selected: Vec<String> = apps.iter().map(|a| a.name_any()).collect();
    let mut gone: Vec<String> = cursors
        .iter()
        .filter(|d| !all_names.contains(&d.application))
        .map(|d| d.application.clone())
        .collect();
    gone.sort();
    gone.dedup();
    for app in gone {
        let said = cursors
            .iter()
            .any(|d| d.application == app && report::stream_of(&d.revision) == report::DELETED);
        if !said && let Some(last) = cursors.iter().find(|d| d.application == app) {
            out.push(Owed {
                report: report::deleted(None, &last.revision),
                app: app.clone(),
                index: None,
                dropped: false,
            });
        }
        cursors.retain(|d| d.application != app);
    }
    // Applications no longer selected (a label changed): forgotten.
    cursors.retain(|d| {
        selected.contains(&d.application) || out.iter().any(|o| o.app == d.application)
    });
    out
}

/// Marks the oldest reports beyond `max` dropped; returns how many.
pub(super) fn drop_oldest(owed: &mut [Owed], max: usize) -> usize {
    let excess = owed.len().saturating_sub(max);
    if excess == 0 {
        return 0;
    }
    let mut order: Vec<usize> = (0..owed.len()).collect();
    // Unknown times count as newest.
    order.sort_by_key(|&i| (owed[i].report.at.is_none(), owed[i].report.at));
    for &i in order.iter().take(excess) {
        owed[i].dropped = true;
    }
    excess
}

/// Moves an Application's cursor of the report's stream to it.
pub(super) fn advance(cursors: &mut Vec<Delivered>, app: &str, report: &Report) {
    let stream = report::stream_of(&report.revision);
    let entry = Delivered {
        application: app.to_string(),
        revision: report.revision.clone(),
        state: report.state.as_str().to_string(),
    };
    match cursors
        .iter_mut()
        .find(|d| d.application == app && report::stream_of(&d.revision) == stream)
    {
        Some(d) => *d = entry,
        None => cursors.push(entry),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::notify::report::State;
    use k8s_openapi::jiff::Timestamp;

    fn app(name: &str, history: &[(&str, bool)]) -> Arc<Application> {
        let records: Vec<serde_json::Value> = history
            .iter()
            .map(|(commit, healthy)| {
                serde_json::json!({
                    "revision": format!("main@sha1:{commit}"),
                    "startedAt": "2026-12-02T10:00:00Z",
                    "result": "Succeeded",
                    "created": 1, "configured": 0, "unchanged": 0, "pruned": 0,
                    "healthy": healthy,
                })
            })
            .collect();
        Arc::new(
            serde_json::from_value(serde_json::json!({
                "apiVersion": "gantry.dev/v1alpha1", "kind": "Application",
                "metadata": {"name": name, "namespace": "team-a"},
                "spec": {"sourceRef": {"name": "s"}},
                "status": {"history": records},
            }))
            .unwrap(),
        )
    }

    fn cursor(app: &str, revision: &str, state: &str) -> Delivered {
        Delivered {
            application: app.into(),
            revision: revision.into(),
            state: state.into(),
        }
    }

    #[test]
    fn owed_reports_follow_the_cursors_and_a_gone_application_is_said_deleted_once() {
        let apps = vec![app("web", &[("c2", true), ("c1", true)])];
        let mut cursors = vec![
            cursor("web", "main@sha1:c1", "success"),
            cursor("gone", "main@sha1:c9", "success"),
            cursor("gone", "main@sha1:c9#drift", "failure"),
            cursor("unselected", "main@sha1:c5", "success"),
        ];
        let names = vec!["web".to_string(), "unselected".to_string()];
        let queue = owed(&apps, &names, &mut cursors);
        let said: Vec<(&str, &str)> = queue
            .iter()
            .map(|o| (o.app.as_str(), o.report.revision.as_str()))
            .collect();
        assert_eq!(
            said,
            [("web", "main@sha1:c2"), ("gone", "main@sha1:c9#deleted")]
        );
        // The gone Application's and the unselected one's cursors are forgotten.
        assert_eq!(
            cursors
                .iter()
                .map(|c| c.application.as_str())
                .collect::<Vec<_>>(),
            ["web"]
        );
    }

    #[test]
    fn beyond_the_bound_the_oldest_reports_are_dropped() {
        let report = |commit: &str, secs: i64| Owed {
            app: "web".into(),
            index: Some(0),
            report: Report {
                revision: format!("main@sha1:{commit}"),
                commit: Some(commit.into()),
                state: State::Success,
                event: "deployed",
                description: String::new(),
                at: Some(Timestamp::from_second(secs).unwrap()),
            },
            dropped: false,
        };
        let mut queue = vec![report("c3", 30), report("c1", 10), report("c2", 20)];
        assert_eq!(drop_oldest(&mut queue, 5), 0);
        assert_eq!(drop_oldest(&mut queue, 1), 2);
        let kept: Vec<_> = queue
            .iter()
            .filter(|o| !o.dropped)
            .map(|o| o.report.revision.as_str())
            .collect();
        assert_eq!(kept, ["main@sha1:c3"]);
        let mut cursors = vec![];
        advance(&mut cursors, "web", &queue[1].report);
        advance(&mut cursors, "web", &queue[0].report);
        assert_eq!(cursors.len(), 1, "one cursor per stream");
        assert_eq!(cursors[0].revision, "main@sha1:c3");
    }
}
