//! Where each object of a set goes, decided before any request (pure): what waits for
//! stage 0, what stage 0 holds, and the ranks of the rest.

use std::collections::{BTreeSet, HashMap};

use super::normalize::Desired;
use super::order;
use super::plan::Change;
use crate::api::application::InventoryEntry;

/// Objects that cannot be validated before stage 0 is applied: kinds the cluster does not
/// serve yet (defined by CRDs in this set), and objects in Namespaces this set creates.
pub fn deferred(
    desired: &[Desired],
    known_kind: impl Fn(&Desired) -> bool,
    new_namespaces: &BTreeSet<String>,
) -> BTreeSet<InventoryEntry> {
    desired
        .iter()
        .filter(|d| {
            !known_kind(d)
                || d.key
                    .namespace
                    .as_ref()
                    .is_some_and(|n| new_namespaces.contains(n))
        })
        .map(|d| d.key.clone())
        .collect()
}

/// Stage 0 of the set: the changed CRDs and Namespaces that can be validated now.
pub fn first_stage<'d>(
    desired: &'d [Desired],
    deferred: &BTreeSet<InventoryEntry>,
    changes: &HashMap<InventoryEntry, Change>,
) -> Vec<&'d Desired> {
    desired
        .iter()
        .filter(|d| order::stage(&d.key.group, &d.key.kind) == 0 && !deferred.contains(&d.key))
        .filter(|d| changes.get(&d.key) != Some(&Change::Unchanged))
        .collect()
}

/// Argo CD's sync-wave annotation: objects of a lower wave are applied first.
pub const SYNC_WAVE: &str = "argocd.argoproj.io/sync-wave";

/// The object's sync wave (0 without the annotation or with one that is not a number).
pub fn wave(d: &Desired) -> i64 {
    d.object["metadata"]["annotations"][SYNC_WAVE]
        .as_str()
        .and_then(|w| w.trim().parse().ok())
        .unwrap_or(0)
}

/// Everything else that changes and is not held, by sync wave and then by rank within a
/// wave (applied one group after the other, concurrently within a group): without waves,
/// one group per rank.
pub fn ranked<'d>(
    desired: &'d [Desired],
    deferred: &BTreeSet<InventoryEntry>,
    changes: &HashMap<InventoryEntry, Change>,
    held: impl Fn(&Desired) -> bool,
) -> Vec<Vec<&'d Desired>> {
    let mut groups: std::collections::BTreeMap<(i64, usize), Vec<&Desired>> = Default::default();
    for d in desired
        .iter()
        .filter(|d| order::stage(&d.key.group, &d.key.kind) != 0 || deferred.contains(&d.key))
        .filter(|d| changes.get(&d.key) != Some(&Change::Unchanged) && !held(d))
    {
        let rank = order::rank(&d.key.group, &d.key.kind, d.namespaced) as usize;
        groups
            .entry((wave(d), rank.min(order::RANKS - 1)))
            .or_default()
            .push(d);
    }
    groups.into_values().collect()
}

#[cfg(test)]
pub(crate) mod tests {
    use super::*;
    use serde_json::json;

    pub(crate) fn obj(group: &str, kind: &str, ns: Option<&str>, name: &str) -> Desired {
        Desired {
            key: InventoryEntry {
                group: group.into(),
                version: "v1".into(),
                kind: kind.into(),
                namespace: ns.map(str::to_string),
                name: name.into(),
            },
            object: json!({"spec": {"group": "example.com"}}),
            namespaced: ns.is_some(),
        }
    }

    pub(crate) fn set() -> Vec<Desired> {
        vec![
            obj(
                "apiextensions.k8s.io",
                "CustomResourceDefinition",
                None,
                "widgets.example.com",
            ),
            obj("", "Namespace", None, "shop"),
            obj("", "Namespace", None, "old"),
            obj("example.com", "Widget", Some("old"), "w"),
            obj("apps", "Deployment", Some("shop"), "web"),
            obj("apps", "Deployment", Some("old"), "api"),
            obj("", "ConfigMap", Some("old"), "cfg"),
            obj("", "Service", Some("old"), "svc"),
            obj("rbac.authorization.k8s.io", "ClusterRole", None, "reader"),
            obj(
                "admissionregistration.k8s.io",
                "ValidatingWebhookConfiguration",
                None,
                "hook",
            ),
        ]
    }

    fn names(ds: &[&Desired]) -> Vec<String> {
        ds.iter().map(|d| d.key.name.clone()).collect()
    }

    #[test]
    fn unknown_kinds_and_objects_in_new_namespaces_wait_for_stage_zero() {
        let desired = set();
        let new_ns: BTreeSet<String> = ["shop".to_string()].into();
        let deferred = deferred(&desired, |d| d.key.kind != "Widget", &new_ns);
        let mut got: Vec<&str> = deferred.iter().map(|k| k.name.as_str()).collect();
        got.sort();
        assert_eq!(got, ["w", "web"]);
    }

    #[test]
    fn stage_zero_holds_only_changed_crds_and_namespaces() {
        let desired = set();
        let mut changes: HashMap<InventoryEntry, Change> = desired
            .iter()
            .map(|d| (d.key.clone(), Change::Created))
            .collect();
        changes.insert(desired[2].key.clone(), Change::Unchanged); // Namespace old
        let first = first_stage(&desired, &BTreeSet::new(), &changes);
        assert_eq!(names(&first), ["widgets.example.com", "shop"]);
    }

    #[test]
    fn ranks_put_references_before_workloads_and_webhooks_last_skipping_unchanged_and_held() {
        let desired = set();
        let deferred: BTreeSet<InventoryEntry> = [desired[3].key.clone()].into();
        let mut changes: HashMap<InventoryEntry, Change> = desired
            .iter()
            .map(|d| (d.key.clone(), Change::Configured))
            .collect();
        changes.insert(desired[7].key.clone(), Change::Unchanged); // Service svc
        let ranks = ranked(&desired, &deferred, &changes, |d| d.key.name == "api");
        let by_rank: Vec<Vec<String>> = ranks.iter().map(|r| names(r)).collect();
        assert_eq!(
            by_rank,
            vec![
                vec!["reader".to_string()],
                vec!["cfg".to_string()],
                vec!["w".to_string(), "web".to_string()],
                vec!["hook".to_string()],
            ]
        );
    }

    #[test]
    fn sync_waves_come_before_ranks() {
        let with_wave = |mut d: Desired, w: &str| {
            d.object["metadata"]["annotations"][SYNC_WAVE] = json!(w);
            d
        };
        let desired = vec![
            with_wave(obj("apps", "Deployment", Some("a"), "db"), "-1"),
            obj("", "ConfigMap", Some("a"), "cfg"),
            obj("apps", "Deployment", Some("a"), "web"),
            with_wave(obj("", "ConfigMap", Some("a"), "late-cfg"), "2"),
            with_wave(obj("", "Service", Some("a"), "not-a-number"), "soon"),
        ];
        let changes: HashMap<InventoryEntry, Change> = desired
            .iter()
            .map(|d| (d.key.clone(), Change::Created))
            .collect();
        let groups = ranked(&desired, &BTreeSet::new(), &changes, |_| false);
        let names: Vec<Vec<String>> = groups.iter().map(|g| names(g)).collect();
        assert_eq!(
            names,
            vec![
                vec!["db".to_string()],
                vec!["cfg".to_string(), "not-a-number".to_string()],
                vec!["web".to_string()],
                vec!["late-cfg".to_string()],
            ]
        );
    }
}
