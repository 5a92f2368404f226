//! The resource versions this controller's own applies produced, so that the drift watches
//! can tell the event of Gantry's own write from a change made by someone else: only the
//! latter makes an Application look for drift.

use std::collections::HashMap;
use std::sync::Mutex;

/// Entries kept at most (an entry whose event came before the write was recorded stays
/// until the object's next event; the map is emptied past this bound).
const MAX_ENTRIES: usize = 200_000;

/// uid → resourceVersion of the object as this controller's last apply left it.
#[derive(Default)]
pub struct OwnWrites {
    by_uid: Mutex<HashMap<String, String>>,
}

impl OwnWrites {
    /// Notes that an apply left the object `uid` at `resource_version`.
    pub fn record(&self, uid: &str, resource_version: &str) {
        let mut map = self.by_uid.lock().expect("own writes");
        if map.len() >= MAX_ENTRIES {
            map.clear();
        }
        map.insert(uid.to_string(), resource_version.to_string());
    }

    /// Whether an event showing `uid` at `resource_version` is this controller's own write.
    /// Every event of the object consumes what was recorded for it, so a later change by
    /// someone else is never taken for Gantry's.
    pub fn is_own(&self, uid: &str, resource_version: &str) -> bool {
        self.by_uid
            .lock()
            .expect("own writes")
            .remove(uid)
            .is_some_and(|rv| rv == resource_version)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn only_the_recorded_version_is_own_and_only_once() {
        let own = OwnWrites::default();
        own.record("u1", "10");
        assert!(!own.is_own("u2", "10"), "another object");
        assert!(own.is_own("u1", "10"));
        assert!(!own.is_own("u1", "10"), "consumed by its event");
        // The event came first (the write is recorded after it): the next change, made by
        // someone else, is not taken for Gantry's.
        own.record("u1", "11");
        assert!(!own.is_own("u1", "12"));
        assert!(!own.is_own("u1", "11"));
    }
}
