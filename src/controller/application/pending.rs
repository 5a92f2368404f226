//! A sync's status held back while the health of what it applied is not known yet: a small
//! set's workloads usually report within a second, and writing Ready then Healthy a moment
//! later costs the API server two status writes per sync where one does. The status is
//! held in memory (the planned inventory is already written, so a restart loses nothing but
//! a redundant sync) and written with the first verdict, or after [`HOLD_AT_MOST`] whatever
//! health says. A change of health wakes the Application (the health book); it is also
//! looked at again every [`HOLD_POLL`].

use std::collections::HashMap;
use std::sync::Mutex;
use std::time::{Duration, Instant};

use kube::ResourceExt;

use crate::api::application::{Application, ApplicationStatus};
use crate::api::conditions::{self, Status};
use crate::api::reasons;

/// Sets of more objects than this have Ready written before their health is assessed (the
/// first assessment of a large set can take a while): they are never held.
pub const EARLY_READY_ABOVE: usize = 50;

/// The longest a sync's status is held back for health.
pub const HOLD_AT_MOST: Duration = Duration::from_secs(3);
/// When a held Application is looked at again (a change of health wakes it sooner).
pub const HOLD_POLL: Duration = Duration::from_millis(500);

type AppKey = (String, String);

struct Held {
    uid: String,
    generation: Option<i64>,
    status: ApplicationStatus,
    since: Instant,
}

/// The statuses held back, per Application.
#[derive(Default)]
pub struct PendingStatus(Mutex<HashMap<AppKey, Held>>);

/// An Application's held status and since when it is held.
pub struct Taken {
    pub status: ApplicationStatus,
    pub since: Instant,
}

impl PendingStatus {
    /// The status held for the Application, if it is the same object at the same generation
    /// (a new generation syncs again from what the API server holds).
    pub fn take(
        &self,
        namespace: &str,
        name: &str,
        uid: &str,
        generation: Option<i64>,
    ) -> Option<Taken> {
        let held = self
            .0
            .lock()
            .expect("pending statuses")
            .remove(&(namespace.to_string(), name.to_string()))?;
        (held.uid == uid && held.generation == generation).then_some(Taken {
            status: held.status,
            since: held.since,
        })
    }

    pub fn forget(&self, namespace: &str, name: &str) {
        self.0
            .lock()
            .expect("pending statuses")
            .remove(&(namespace.to_string(), name.to_string()));
    }

    /// Holds `status` back when [`should_hold`] says so and the set is small (a large one,
    /// or one with a rollout, writes Ready as soon as it is applied); then nothing is
    /// written and the Application is looked at again in [`HOLD_POLL`].
    pub fn hold(
        &self,
        app: &Application,
        on_server: &ApplicationStatus,
        held_since: Option<Instant>,
        status: &ApplicationStatus,
    ) -> bool {
        let small_set = app.spec.rollout.is_none() && status.inventory.len() <= EARLY_READY_ABOVE;
        if !small_set || !should_hold(status, Some(on_server), held_since) {
            return false;
        }
        self.0.lock().expect("pending statuses").insert(
            (app.namespace().unwrap_or_default(), app.name_any()),
            Held {
                uid: app.uid().unwrap_or_default(),
                generation: app.metadata.generation,
                status: status.clone(),
                since: held_since.unwrap_or_else(Instant::now),
            },
        );
        true
    }
}

/// Whether a status is held back (pure): a revision applied successfully (Ready=True,
/// Succeeded) that the API server does not show yet, or one already held, whose health is
/// still being checked or progressing, held for less than [`HOLD_AT_MOST`].
pub fn should_hold(
    status: &ApplicationStatus,
    on_server: Option<&ApplicationStatus>,
    held_since: Option<Instant>,
) -> bool {
    let newly_applied = status.last_applied_revision.is_some()
        && status.last_applied_revision != on_server.and_then(|s| s.last_applied_revision.clone());
    if !newly_applied && held_since.is_none() {
        return false;
    }
    if held_since.is_some_and(|s| s.elapsed() >= HOLD_AT_MOST) {
        return false;
    }
    let ready = conditions::find(&status.conditions, conditions::READY)
        .is_some_and(|c| conditions::is(c, Status::True) && c.reason == reasons::SUCCEEDED);
    let progressing = conditions::find(&status.conditions, conditions::HEALTHY)
        .is_some_and(|c| conditions::is(c, Status::Unknown) && c.reason == reasons::PROGRESSING);
    ready && progressing
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::controller::application::record::set;

    fn synced(revision: &str, health: (Status, &str)) -> ApplicationStatus {
        let mut s = ApplicationStatus {
            last_applied_revision: Some(revision.into()),
            ..Default::default()
        };
        let g = Some(1);
        set(
            &mut s,
            conditions::READY,
            Status::True,
            reasons::SUCCEEDED,
            "applied",
            g,
        );
        set(&mut s, conditions::HEALTHY, health.0, health.1, "", g);
        s
    }

    const PROGRESSING: (Status, &str) = (Status::Unknown, reasons::PROGRESSING);

    #[test]
    fn a_new_revision_still_progressing_is_held_until_its_health_is_known_or_time_is_up() {
        let before = synced("main@sha1:a", (Status::True, reasons::HEALTHY));
        let now = synced("main@sha1:b", PROGRESSING);
        assert!(should_hold(&now, Some(&before), None));
        assert!(should_hold(&now, Some(&before), Some(Instant::now())));
        let long_ago = Instant::now() - HOLD_AT_MOST;
        assert!(
            !should_hold(&now, Some(&before), Some(long_ago)),
            "time is up"
        );
        let healthy = synced("main@sha1:b", (Status::True, reasons::HEALTHY));
        assert!(
            !should_hold(&healthy, Some(&before), None),
            "known: written"
        );
        let failed = synced("main@sha1:b", (Status::False, reasons::HEALTH_CHECK_FAILED));
        assert!(!should_hold(&failed, Some(&before), Some(Instant::now())));
    }

    #[test]
    fn what_the_server_shows_already_or_a_failed_sync_is_not_held() {
        let now = synced("main@sha1:b", PROGRESSING);
        assert!(
            !should_hold(&now, Some(&now), None),
            "the revision is on the server already (a later follow-up)"
        );
        let mut failed = now.clone();
        set(
            &mut failed,
            conditions::READY,
            Status::False,
            reasons::APPLY_FAILED,
            "",
            Some(1),
        );
        assert!(!should_hold(&failed, None, None));
    }

    #[test]
    fn a_held_status_is_taken_once_by_the_same_object_at_the_same_generation() {
        let pending = PendingStatus::default();
        let key = ("ns".to_string(), "a".to_string());
        let held = |uid: &str| Held {
            uid: uid.into(),
            generation: Some(2),
            status: synced("main@sha1:b", PROGRESSING),
            since: Instant::now(),
        };
        pending.0.lock().unwrap().insert(key.clone(), held("u1"));
        assert!(
            pending.take("ns", "a", "u1", Some(3)).is_none(),
            "new generation"
        );
        pending.0.lock().unwrap().insert(key.clone(), held("u1"));
        assert!(
            pending.take("ns", "a", "u2", Some(2)).is_none(),
            "another object"
        );
        pending.0.lock().unwrap().insert(key, held("u1"));
        assert!(pending.take("ns", "a", "u1", Some(2)).is_some());
        assert!(
            pending.take("ns", "a", "u1", Some(2)).is_none(),
            "taken once"
        );
    }
}
