//! What the web view shows, as data (pure): an Application's state in one word and the
//! fleet's rows, counts, filters and order. The pages render these; nothing here reads the
//! cluster.

use k8s_openapi::jiff::Timestamp;

use crate::api::Application;
use crate::api::conditions::{self, Condition};
use crate::api::rollout::RolloutPhase;

/// An Application's state, worst first: the fleet is sorted by it.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum State {
    /// Ready=False: the sync failed (or health failed the revision).
    Failed,
    /// Healthy=False.
    Degraded,
    /// A rollout was aborted and the revision rejected.
    Aborted,
    /// Drifted=True.
    Drifted,
    /// A sync, a wave, hooks or a canary in progress; or not reconciled yet.
    Progressing,
    Suspended,
    /// Ready and healthy.
    Synced,
}

impl State {
    pub const ALL: [State; 7] = [
        State::Failed,
        State::Degraded,
        State::Aborted,
        State::Drifted,
        State::Progressing,
        State::Suspended,
        State::Synced,
    ];

    /// The word shown and used in the `state` filter.
    pub fn word(self) -> &'static str {
        match self {
            State::Failed => "failed",
            State::Degraded => "degraded",
            State::Aborted => "aborted",
            State::Drifted => "drifted",
            State::Progressing => "progressing",
            State::Suspended => "suspended",
            State::Synced => "synced",
        }
    }

    pub fn parse(s: &str) -> Option<State> {
        State::ALL.into_iter().find(|x| x.word() == s)
    }
}

fn is(conds: &[Condition], type_: &str, status: conditions::Status) -> bool {
    conditions::find(conds, type_).is_some_and(|c| conditions::is(c, status))
}

/// The one word for an Application's state (its conditions, rollout and `suspend`).
pub fn state_of(app: &Application) -> State {
    if app.spec.suspend {
        return State::Suspended;
    }
    let Some(status) = &app.status else {
        return State::Progressing;
    };
    let c = &status.conditions;
    let aborted = status
        .rollout
        .as_ref()
        .is_some_and(|r| r.phase == RolloutPhase::Aborted);
    if aborted {
        return State::Aborted;
    }
    if is(c, conditions::READY, conditions::Status::False) {
        return State::Failed;
    }
    if is(c, conditions::HEALTHY, conditions::Status::False) {
        return State::Degraded;
    }
    if is(c, conditions::DRIFTED, conditions::Status::True) {
        return State::Drifted;
    }
    if is(c, conditions::READY, conditions::Status::True)
        && !is(c, conditions::HEALTHY, conditions::Status::Unknown)
    {
        return State::Synced;
    }
    State::Progressing
}

/// One Application of the fleet.
#[derive(Clone, Debug, PartialEq)]
pub struct Row {
    pub namespace: String,
    pub name: String,
    /// The API server it deploys to (`status.cluster`), `-` before its first reconcile.
    pub cluster: String,
    pub state: State,
    /// Why, in one line: the message of the condition that decided the state.
    pub why: String,
    /// The short revision applied (or attempted).
    pub revision: String,
    pub rollout: Option<String>,
    /// Seconds since the last sync finished.
    pub age: Option<i64>,
}

/// The condition that explains `state`.
fn why(app: &Application, state: State) -> String {
    let Some(status) = &app.status else {
        return "not reconciled yet".into();
    };
    let c = &status.conditions;
    let message = |t: &str| {
        conditions::find(c, t)
            .map(|c| c.message.clone())
            .unwrap_or_default()
    };
    match state {
        State::Failed | State::Synced | State::Progressing => message(conditions::READY),
        State::Degraded => message(conditions::HEALTHY),
        State::Drifted | State::Aborted => message(conditions::DRIFTED),
        State::Suspended => "reconciliation is suspended".into(),
    }
}

/// `main@sha1:0123456789ab…` → `main@0123456`.
pub fn short_revision(revision: &str) -> String {
    match revision.split_once("@sha1:") {
        Some((r, sha)) => format!("{r}@{}", &sha[..sha.len().min(7)]),
        None => revision.to_string(),
    }
}

pub fn row(app: &Application, now: Timestamp) -> Row {
    let state = state_of(app);
    let status = app.status.as_ref();
    let revision = status
        .and_then(|s| {
            s.last_applied_revision
                .clone()
                .or(s.last_attempted_revision.clone())
        })
        .map(|r| short_revision(&r))
        .unwrap_or_else(|| "-".into());
    let rollout = status
        .and_then(|s| s.rollout.as_ref())
        .filter(|r| r.phase != RolloutPhase::Idle)
        .map(|r| {
            let phase = format!("{:?}", r.phase);
            match r.phase {
                RolloutPhase::Progressing | RolloutPhase::Paused => {
                    format!("{phase} (step {})", r.step + 1)
                }
                _ => phase,
            }
        });
    let age = status
        .and_then(|s| s.history.first())
        .and_then(|h| h.finished_at.as_ref())
        .map(|t| now.duration_since(t.0).as_secs().max(0));
    Row {
        namespace: app.metadata.namespace.clone().unwrap_or_default(),
        name: app.metadata.name.clone().unwrap_or_default(),
        cluster: status
            .and_then(|s| s.cluster.clone())
            .unwrap_or_else(|| "-".into()),
        state,
        why: why(app, state),
        revision,
        rollout,
        age,
    }
}

/// "42s", "5m", "3h", "2d".
pub fn age_words(secs: i64) -> String {
    match secs {
        s if s < 120 => format!("{s}s"),
        s if s < 7200 => format!("{}m", s / 60),
        s if s < 172_800 => format!("{}h", s / 3600),
        s => format!("{}d", s / 86_400),
    }
}

/// What the viewer asked to see.
#[derive(Clone, Debug, Default, PartialEq, serde::Deserialize)]
pub struct Filter {
    /// Part of the namespace/name, the revision or the message, ignoring case.
    #[serde(default)]
    pub q: String,
    /// A [`State::word`]; empty: all.
    #[serde(default)]
    pub state: String,
    /// A cluster; empty: all.
    #[serde(default)]
    pub cluster: String,
}

impl Filter {
    pub fn admits(&self, row: &Row) -> bool {
        let q = self.q.trim().to_lowercase();
        let text = q.is_empty()
            || format!(
                "{}/{} {} {}",
                row.namespace, row.name, row.revision, row.why
            )
            .to_lowercase()
            .contains(&q);
        let state = match State::parse(&self.state) {
            Some(s) => row.state == s,
            None => true,
        };
        let cluster = self.cluster.is_empty() || self.cluster == row.cluster;
        text && state && cluster
    }
}

/// The fleet as the viewer sees it: counts of everything visible, the rows the filter
/// admits grouped by (cluster, namespace), worst first within each group and groups with
/// their worst first.
#[derive(Clone, Debug, Default, PartialEq)]
pub struct Fleet {
    pub total: usize,
    /// (state, how many), for the states present.
    pub counts: Vec<(State, usize)>,
    pub clusters: Vec<String>,
    pub groups: Vec<Group>,
    /// Rows the filter admits.
    pub shown: usize,
}

#[derive(Clone, Debug, PartialEq)]
pub struct Group {
    pub cluster: String,
    pub namespace: String,
    pub rows: Vec<Row>,
}

pub fn fleet(apps: &[std::sync::Arc<Application>], filter: &Filter, now: Timestamp) -> Fleet {
    let rows: Vec<Row> = apps.iter().map(|a| row(a, now)).collect();
    let mut counts = std::collections::BTreeMap::new();
    let mut clusters = std::collections::BTreeSet::new();
    for r in &rows {
        *counts.entry(r.state).or_insert(0) += 1;
        clusters.insert(r.cluster.clone());
    }
    let mut groups: std::collections::BTreeMap<(String, String), Vec<Row>> = Default::default();
    let total = rows.len();
    let mut shown = 0;
    for r in rows.into_iter().filter(|r| filter.admits(r)) {
        shown += 1;
        groups
            .entry((r.cluster.clone(), r.namespace.clone()))
            .or_default()
            .push(r);
    }
    let mut groups: Vec<Group> = groups
        .into_iter()
        .map(|((cluster, namespace), mut rows)| {
            rows.sort_by(|a, b| (a.state, &a.name).cmp(&(b.state, &b.name)));
            Group {
                cluster,
                namespace,
                rows,
            }
        })
        .collect();
    groups.sort_by(|a, b| {
        let worst = |g: &Group| g.rows.first().map(|r| r.state);
        (worst(a), &a.cluster, &a.namespace).cmp(&(worst(b), &b.cluster, &b.namespace))
    });
    Fleet {
        total,
        counts: counts.into_iter().collect(),
        clusters: clusters.into_iter().collect(),
        groups,
        shown,
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;
    use std::sync::Arc;

    fn app(ns: &str, name: &str, status: serde_json::Value) -> Arc<Application> {
        Arc::new(
            serde_json::from_value(json!({
                "apiVersion": "gantry.dev/v1alpha1", "kind": "Application",
                "metadata": {"name": name, "namespace": ns},
                "spec": {"sourceRef": {"kind": "GitRepository", "name": "repo"}},
                "status": status,
            }))
            .unwrap(),
        )
    }

    fn cond(t: &str, s: &str, message: &str) -> serde_json::Value {
        json!({"type": t, "status": s, "reason": "R", "message": message,
               "lastTransitionTime": "2026-01-01T00:00:00Z"})
    }

    fn with(conds: Vec<serde_json::Value>) -> serde_json::Value {
        json!({"cluster": "https://a:6443", "conditions": conds,
               "lastAppliedRevision": "main@sha1:0123456789abcdef0123456789abcdef01234567"})
    }

    #[test]
    fn each_state_comes_from_its_condition() {
        let failed = app("t", "a", with(vec![cond("Ready", "False", "apply failed")]));
        assert_eq!(state_of(&failed), State::Failed);
        assert_eq!(row(&failed, Timestamp::now()).why, "apply failed");
        let degraded = app(
            "t",
            "b",
            with(vec![
                cond("Ready", "True", ""),
                cond("Healthy", "False", "crash"),
            ]),
        );
        assert_eq!(state_of(&degraded), State::Degraded);
        let drifted = app(
            "t",
            "c",
            with(vec![
                cond("Ready", "True", ""),
                cond("Healthy", "True", ""),
                cond("Drifted", "True", "2 objects differ"),
            ]),
        );
        assert_eq!(state_of(&drifted), State::Drifted);
        assert_eq!(row(&drifted, Timestamp::now()).why, "2 objects differ");
        let synced = app(
            "t",
            "d",
            with(vec![cond("Ready", "True", ""), cond("Healthy", "True", "")]),
        );
        assert_eq!(state_of(&synced), State::Synced);
        let checking = app(
            "t",
            "e",
            with(vec![
                cond("Ready", "True", ""),
                cond("Healthy", "Unknown", ""),
            ]),
        );
        assert_eq!(state_of(&checking), State::Progressing);
        let mut aborted = with(vec![cond("Ready", "False", "")]);
        aborted["rollout"] = json!({"phase": "Aborted"});
        assert_eq!(state_of(&app("t", "f", aborted)), State::Aborted);
        assert_eq!(state_of(&app("t", "g", json!(null))), State::Progressing);
    }

    #[test]
    fn the_fleet_is_grouped_counted_filtered_and_worst_first() {
        let apps = vec![
            app(
                "web",
                "ok",
                with(vec![cond("Ready", "True", ""), cond("Healthy", "True", "")]),
            ),
            app("web", "broken", with(vec![cond("Ready", "False", "boom")])),
            app(
                "db",
                "fine",
                with(vec![cond("Ready", "True", ""), cond("Healthy", "True", "")]),
            ),
        ];
        let f = fleet(&apps, &Filter::default(), Timestamp::now());
        assert_eq!((f.total, f.shown), (3, 3));
        assert_eq!(f.counts, vec![(State::Failed, 1), (State::Synced, 2)]);
        // The namespace with a failure first, its failure first.
        assert_eq!(f.groups[0].namespace, "web");
        assert_eq!(f.groups[0].rows[0].name, "broken");
        assert_eq!(f.groups[1].namespace, "db");
        assert_eq!(f.groups[0].rows[0].revision, "main@0123456");

        let failed = Filter {
            state: "failed".into(),
            ..Default::default()
        };
        let f = fleet(&apps, &failed, Timestamp::now());
        assert_eq!((f.total, f.shown), (3, 1));
        let text = Filter {
            q: "DB/".into(),
            ..Default::default()
        };
        assert_eq!(fleet(&apps, &text, Timestamp::now()).shown, 1);
        let elsewhere = Filter {
            cluster: "https://b:6443".into(),
            ..Default::default()
        };
        assert_eq!(fleet(&apps, &elsewhere, Timestamp::now()).shown, 0);
    }

    #[test]
    fn ages_and_revisions_read_short() {
        assert_eq!(age_words(30), "30s");
        assert_eq!(age_words(600), "10m");
        assert_eq!(age_words(3 * 3600), "3h");
        assert_eq!(age_words(3 * 86_400), "3d");
        assert_eq!(short_revision("v1.2@sha1:abcdef0123"), "v1.2@abcdef0");
        assert_eq!(short_revision("oci"), "oci");
    }
}
