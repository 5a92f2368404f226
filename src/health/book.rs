//! The health of managed objects as the watches of their kinds last saw them, so that a
//! sync's health follow-up reads no object from the API server: one verdict per object
//! (not the object), kept for the kinds whose health is re-read (`has_check`).
//!
//! A verdict is only used when it is at least as new as this controller's last apply of
//! the object: the Applier notes the `resourceVersion` each apply produced, and an older
//! verdict reads as Progressing until the watch catches up. Resource versions are compared
//! as numbers, as etcd writes them; a cluster whose versions are not numbers, a kind whose
//! watch has not listed yet, or an object the watch does not hold leaves the answer to a
//! read of the live objects.

use std::collections::{HashMap, HashSet};
use std::sync::Mutex;

use super::{Health, Verdict};

/// (group, kind, namespace, name).
pub type ObjectKey = (String, String, Option<String>, String);

/// Applies noted at most (emptied past this bound: the verdicts are then read again).
const MAX_APPLIED: usize = 200_000;

#[derive(Clone, Debug, PartialEq)]
struct Seen {
    resource_version: u64,
    verdict: Verdict,
}

#[derive(Default)]
pub struct HealthBook {
    /// Kinds (group, kind) whose watch has listed every object once.
    synced: Mutex<HashSet<(String, String)>>,
    seen: Mutex<HashMap<ObjectKey, Seen>>,
    /// The `resourceVersion` of this controller's last apply of each object, until the
    /// watch has shown it.
    applied: Mutex<HashMap<ObjectKey, u64>>,
}

/// What the book says of one object.
#[derive(Clone, Debug, PartialEq)]
pub enum Answer {
    /// The verdict of the watch's latest view of it.
    Known(Verdict),
    /// The book cannot say: read the object.
    Ask,
}

impl HealthBook {
    /// Notes the `resourceVersion` an apply of the object produced.
    pub fn applied(&self, key: ObjectKey, resource_version: &str) {
        let Ok(rv) = resource_version.parse::<u64>() else {
            return;
        };
        let mut applied = self.applied.lock().expect("health book");
        if applied.len() >= MAX_APPLIED {
            applied.clear();
        }
        applied.insert(key, rv);
    }

    /// The watch saw the object at `resource_version` with `verdict`; returns whether its
    /// health changed (a new object counts as a change).
    pub fn observe(
        &self,
        key: ObjectKey,
        resource_version: Option<&str>,
        verdict: Verdict,
    ) -> bool {
        let Some(rv) = resource_version.and_then(|rv| rv.parse::<u64>().ok()) else {
            // Not comparable: this object's health is read from the API server, and its
            // events wake nothing (the follow-up's own polling reads it).
            self.seen.lock().expect("health book").remove(&key);
            return false;
        };
        {
            let mut applied = self.applied.lock().expect("health book");
            if applied.get(&key).is_some_and(|a| *a <= rv) {
                applied.remove(&key);
            }
        }
        let health = verdict.health;
        let before = self.seen.lock().expect("health book").insert(
            key,
            Seen {
                resource_version: rv,
                verdict,
            },
        );
        before.is_none_or(|b| b.verdict.health != health)
    }

    /// The object is gone.
    pub fn forget(&self, key: &ObjectKey) {
        self.seen.lock().expect("health book").remove(key);
    }

    /// The watch of a kind listed every object: `listed` replaces what the book held of
    /// that kind (objects deleted while the watch was away are dropped), and the kind is
    /// answered from now on. Returns the keys whose health changed.
    pub fn relisted(
        &self,
        group: &str,
        kind: &str,
        listed: Vec<(ObjectKey, Option<String>, Verdict)>,
    ) -> Vec<ObjectKey> {
        {
            let mut seen = self.seen.lock().expect("health book");
            let now: HashSet<&ObjectKey> = listed.iter().map(|(k, _, _)| k).collect();
            seen.retain(|k, _| k.0 != group || k.1 != kind || now.contains(k));
        }
        let mut changed = vec![];
        for (key, rv, verdict) in listed {
            if self.observe(key.clone(), rv.as_deref(), verdict) {
                changed.push(key);
            }
        }
        self.synced
            .lock()
            .expect("health book")
            .insert((group.to_string(), kind.to_string()));
        changed
    }

    /// The watch of a kind stopped answering (it lists again when it is back).
    pub fn unsynced(&self, group: &str, kind: &str) {
        self.synced
            .lock()
            .expect("health book")
            .remove(&(group.to_string(), kind.to_string()));
    }

    /// What the book says of the object.
    pub fn answer(&self, key: &ObjectKey) -> Answer {
        if !self
            .synced
            .lock()
            .expect("health book")
            .contains(&(key.0.clone(), key.1.clone()))
        {
            return Answer::Ask;
        }
        let applied = self.applied.lock().expect("health book").get(key).copied();
        match (self.seen.lock().expect("health book").get(key), applied) {
            (Some(seen), Some(rv)) if seen.resource_version < rv => Answer::Known(Verdict {
                health: Health::Progressing,
                message: "applied; waiting for its watch to see the change".into(),
            }),
            (Some(seen), _) => Answer::Known(seen.verdict.clone()),
            (None, Some(_)) => Answer::Known(Verdict {
                health: Health::Progressing,
                message: "applied; waiting for its watch to see it".into(),
            }),
            // Not labelled as applied by Gantry (any more), or of a cluster whose versions
            // are not numbers: read it.
            (None, None) => Answer::Ask,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn key(name: &str) -> ObjectKey {
        (
            "apps".into(),
            "Deployment".into(),
            Some("ns".into()),
            name.into(),
        )
    }

    fn verdict(health: Health) -> Verdict {
        Verdict {
            health,
            message: format!("{health:?}"),
        }
    }

    #[test]
    fn nothing_is_answered_before_the_kind_is_listed() {
        let book = HealthBook::default();
        book.observe(key("a"), Some("5"), verdict(Health::Healthy));
        assert_eq!(book.answer(&key("a")), Answer::Ask);
        book.relisted(
            "apps",
            "Deployment",
            vec![(key("a"), Some("5".into()), verdict(Health::Healthy))],
        );
        assert_eq!(
            book.answer(&key("a")),
            Answer::Known(verdict(Health::Healthy))
        );
        book.unsynced("apps", "Deployment");
        assert_eq!(book.answer(&key("a")), Answer::Ask);
    }

    #[test]
    fn a_verdict_older_than_the_last_apply_is_not_used() {
        let book = HealthBook::default();
        book.relisted(
            "apps",
            "Deployment",
            vec![(key("a"), Some("5".into()), verdict(Health::Healthy))],
        );
        book.applied(key("a"), "9");
        assert_eq!(
            book.answer(&key("a")),
            Answer::Known(Verdict {
                health: Health::Progressing,
                message: "applied; waiting for its watch to see the change".into()
            })
        );
        book.observe(key("a"), Some("9"), verdict(Health::Progressing));
        assert_eq!(
            book.answer(&key("a")),
            Answer::Known(verdict(Health::Progressing))
        );
        // The apply's note is consumed: the next verdicts stand on their own.
        assert!(book.observe(key("a"), Some("12"), verdict(Health::Healthy)));
        assert_eq!(
            book.answer(&key("a")),
            Answer::Known(verdict(Health::Healthy))
        );
    }

    #[test]
    fn an_applied_object_not_seen_yet_is_progressing_and_an_unknown_one_is_read() {
        let book = HealthBook::default();
        book.relisted("apps", "Deployment", vec![]);
        assert_eq!(book.answer(&key("new")), Answer::Ask);
        book.applied(key("new"), "3");
        assert!(matches!(
            book.answer(&key("new")),
            Answer::Known(Verdict {
                health: Health::Progressing,
                ..
            })
        ));
    }

    #[test]
    fn only_changes_of_health_are_reported_and_a_relist_drops_the_deleted() {
        let book = HealthBook::default();
        assert!(book.observe(key("a"), Some("1"), verdict(Health::Progressing)));
        assert!(!book.observe(key("a"), Some("2"), verdict(Health::Progressing)));
        assert!(book.observe(key("a"), Some("3"), verdict(Health::Healthy)));
        book.observe(key("b"), Some("4"), verdict(Health::Healthy));
        let changed = book.relisted(
            "apps",
            "Deployment",
            vec![(key("a"), Some("5".into()), verdict(Health::Healthy))],
        );
        assert!(changed.is_empty());
        assert_eq!(book.answer(&key("b")), Answer::Ask);
    }

    #[test]
    fn versions_that_are_not_numbers_leave_the_answer_to_a_read() {
        let book = HealthBook::default();
        book.relisted(
            "apps",
            "Deployment",
            vec![(key("a"), Some("x1".into()), verdict(Health::Healthy))],
        );
        assert_eq!(book.answer(&key("a")), Answer::Ask);
    }
}
