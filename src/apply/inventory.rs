//! Inventory arithmetic (pure): what the previous sync applied and the new one no longer has.

use std::collections::BTreeSet;

use crate::api::application::InventoryEntry;

/// Identity of an object regardless of the API version it was applied with.
fn identity(e: &InventoryEntry) -> (&str, &str, Option<&str>, &str) {
    (&e.group, &e.kind, e.namespace.as_deref(), &e.name)
}

/// Entries of `previous` that are missing from `desired`, in reverse apply order
/// (namespaced objects before Namespaces and CRDs).
pub fn stale(previous: &[InventoryEntry], desired: &[InventoryEntry]) -> Vec<InventoryEntry> {
    let keep: BTreeSet<_> = desired.iter().map(identity).collect();
    let mut out: Vec<InventoryEntry> = previous
        .iter()
        .filter(|e| !keep.contains(&identity(e)))
        .cloned()
        .collect();
    out.sort_by_key(|e| {
        std::cmp::Reverse(super::order::rank(&e.group, &e.kind, e.namespace.is_some()))
    });
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    fn e(group: &str, kind: &str, ns: Option<&str>, name: &str) -> InventoryEntry {
        InventoryEntry {
            group: group.into(),
            version: "v1".into(),
            kind: kind.into(),
            namespace: ns.map(Into::into),
            name: name.into(),
        }
    }

    #[test]
    fn stale_entries_in_reverse_order() {
        let prev = vec![
            e("", "Namespace", None, "team"),
            e("", "ConfigMap", Some("team"), "a"),
            e("apps", "Deployment", Some("team"), "web"),
        ];
        let mut new_web = e("apps", "Deployment", Some("team"), "web");
        new_web.version = "v2".into();
        let stale = stale(&prev, &[new_web]);
        assert_eq!(
            stale.iter().map(|e| e.kind.as_str()).collect::<Vec<_>>(),
            ["ConfigMap", "Namespace"]
        );
    }
}
