//! What one kind's drift watch knows of its objects: for each, its uid, generation and
//! version, its Application, and its labels and annotations (hashed); and whether the watch
//! has listed since its last error. Changes are told as they come (a new generation, or a
//! new version of an object without one, is a change; a status-only update is not), and
//! the periodic full check asks the view before reading an object: one the watch holds,
//! with the labels and annotations Git declares, has not changed unseen.

use std::collections::{BTreeMap, HashMap, HashSet};
use std::hash::{DefaultHasher, Hash, Hasher};

use kube::core::ObjectMeta;

use crate::apply::APPLICATION_LABEL;

/// An object's namespace and name.
pub type Name = (Option<String>, String);

struct Seen {
    uid: String,
    generation: Option<i64>,
    version: Option<String>,
    /// The `gantry.dev/application` label: whose object it is.
    owner: Option<String>,
    /// One hash per label and per annotation (key and value), sorted.
    metadata: Vec<u64>,
}

/// One kind's watch: the objects it holds and whether its list is current.
#[derive(Default)]
pub struct KindView {
    synced: bool,
    objects: HashMap<Name, Seen>,
}

fn pair(section: u8, key: &str, value: &str) -> u64 {
    let mut h = DefaultHasher::new();
    (section, key, value).hash(&mut h);
    h.finish()
}

/// One hash per label and per annotation (key and value), sorted: what a view keeps of an
/// object's metadata, and what a caller gives [`KindView::vouches_for`] of the metadata Git
/// declares (computed once, when the rendered set is kept).
pub fn metadata_hashes(
    labels: Option<&BTreeMap<String, String>>,
    annotations: Option<&BTreeMap<String, String>>,
) -> Vec<u64> {
    let mut hashes: Vec<u64> = labels
        .into_iter()
        .flatten()
        .map(|(k, v)| pair(0, k, v))
        .chain(
            annotations
                .into_iter()
                .flatten()
                .map(|(k, v)| pair(1, k, v)),
        )
        .collect();
    hashes.sort_unstable();
    hashes
}

fn name_of(meta: &ObjectMeta) -> Name {
    (
        meta.namespace.clone(),
        meta.name.clone().unwrap_or_default(),
    )
}

impl KindView {
    /// Records an object the watch saw; returns whether it changed since it was last seen
    /// (new, another uid, a new generation, or a new version for objects without one).
    pub fn saw(&mut self, meta: &ObjectMeta) -> bool {
        let uid = meta.uid.clone().unwrap_or_default();
        let now = Seen {
            uid,
            generation: meta.generation,
            version: meta.resource_version.clone(),
            owner: meta
                .labels
                .as_ref()
                .and_then(|l| l.get(APPLICATION_LABEL))
                .cloned(),
            metadata: metadata_hashes(meta.labels.as_ref(), meta.annotations.as_ref()),
        };
        let changed = match self.objects.get(&name_of(meta)) {
            None => true,
            Some(before) if before.uid != now.uid => true,
            Some(before) => match (before.generation, now.generation) {
                (Some(old), Some(new)) => old != new,
                _ => before.version != now.version,
            },
        };
        self.objects.insert(name_of(meta), now);
        changed
    }

    /// Forgets a deleted object.
    pub fn deleted(&mut self, meta: &ObjectMeta) {
        self.objects.remove(&name_of(meta));
    }

    /// A (re)list ended: the list is current, and the objects held but not listed were
    /// deleted meanwhile. Returns those, with their Application, and forgets them.
    pub fn relisted(&mut self, listed: &HashSet<Name>) -> Vec<(Name, Option<String>)> {
        self.synced = true;
        let gone: Vec<Name> = self
            .objects
            .keys()
            .filter(|n| !listed.contains(*n))
            .cloned()
            .collect();
        gone.into_iter()
            .map(|n| {
                let owner = self.objects.remove(&n).and_then(|s| s.owner);
                (n, owner)
            })
            .collect()
    }

    /// The watch failed: what it holds may be behind until it lists again.
    pub fn unsynced(&mut self) {
        self.synced = false;
    }

    /// Whether the watch vouches that the object has not changed unseen: it has listed since
    /// its last error, holds the object, and the object carries every label and annotation
    /// given (the hashes of the ones Git declares, from [`metadata_hashes`]). A change of
    /// anything else (a new generation or version, a deletion) was told when it came.
    pub fn vouches_for(&self, name: &Name, declared: &[u64]) -> bool {
        if !self.synced {
            return false;
        }
        let Some(seen) = self.objects.get(name) else {
            return false;
        };
        declared
            .iter()
            .all(|h| seen.metadata.binary_search(h).is_ok())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn meta(name: &str, generation: Option<i64>, version: &str, team: &str) -> ObjectMeta {
        ObjectMeta {
            name: Some(name.into()),
            namespace: Some("web".into()),
            uid: Some(format!("uid-{name}")),
            generation,
            resource_version: Some(version.into()),
            labels: Some(BTreeMap::from([
                (APPLICATION_LABEL.to_string(), "team.web".to_string()),
                ("team".to_string(), team.to_string()),
            ])),
            ..Default::default()
        }
    }

    fn name(n: &str) -> Name {
        (Some("web".into()), n.into())
    }

    fn labels(team: &str) -> BTreeMap<String, String> {
        BTreeMap::from([("team".to_string(), team.to_string())])
    }

    #[test]
    fn a_status_update_is_no_change_but_a_new_generation_or_version_is() {
        let mut view = KindView::default();
        assert!(view.saw(&meta("api", Some(1), "10", "a")));
        assert!(!view.saw(&meta("api", Some(1), "11", "a")), "status only");
        assert!(view.saw(&meta("api", Some(2), "12", "a")));
        assert!(view.saw(&meta("cm", None, "10", "a")));
        assert!(view.saw(&meta("cm", None, "11", "a")), "no generation");
        let mut again = meta("cm", None, "11", "a");
        again.uid = Some("another".into());
        assert!(view.saw(&again), "deleted and created again");
    }

    #[test]
    fn it_vouches_only_when_listed_and_the_declared_metadata_is_there() {
        let mut view = KindView::default();
        view.saw(&meta("api", Some(1), "10", "a"));
        assert!(
            !view.vouches_for(&name("api"), &metadata_hashes(Some(&labels("a")), None)),
            "not listed yet"
        );
        view.relisted(&HashSet::from([name("api")]));
        assert!(view.vouches_for(&name("api"), &metadata_hashes(Some(&labels("a")), None)));
        assert!(view.vouches_for(&name("api"), &metadata_hashes(None, None)));
        // A label changed by hand (no new generation): not vouched for.
        view.saw(&meta("api", Some(1), "11", "b"));
        assert!(!view.vouches_for(&name("api"), &metadata_hashes(Some(&labels("a")), None)));
        let declared = BTreeMap::from([("note".to_string(), "x".to_string())]);
        assert!(
            !view.vouches_for(&name("api"), &metadata_hashes(None, Some(&declared))),
            "a declared annotation that is missing"
        );
        assert!(
            !view.vouches_for(&name("gone"), &metadata_hashes(None, None)),
            "not held"
        );
        view.unsynced();
        assert!(!view.vouches_for(&name("api"), &metadata_hashes(Some(&labels("b")), None)));
    }

    #[test]
    fn a_relist_tells_the_objects_deleted_while_the_watch_was_away() {
        let mut view = KindView::default();
        view.saw(&meta("api", Some(1), "10", "a"));
        view.saw(&meta("db", Some(1), "10", "a"));
        let gone = view.relisted(&HashSet::from([name("api")]));
        assert_eq!(gone, vec![(name("db"), Some("team.web".to_string()))]);
        assert!(!view.vouches_for(&name("db"), &metadata_hashes(None, None)));
        assert!(view.relisted(&HashSet::from([name("api")])).is_empty());
    }
}
