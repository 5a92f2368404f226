//! The health of an Application's inventory, read from the cluster through its Applier:
//! one LIST per kind and namespace, each object judged by `health::assess`.

use crate::api::application::InventoryEntry;
use crate::apply::applier::Applier;
use crate::apply::normalize::describe;
use crate::health::rules::Rules;
use crate::health::{self, Health};

/// Aggregated health of the inventory: objects whose kinds have health checks are read with
/// one LIST per kind and namespace.
pub async fn assess(
    applier: &Applier,
    inventory: &[InventoryEntry],
    rules: &Rules,
) -> (Health, String) {
    let mut worst = (Health::Healthy, String::new());
    let rank = |h: Health| match h {
        Health::Healthy | Health::Suspended => 0,
        Health::Unknown => 1,
        Health::Progressing => 2,
        Health::Degraded => 3,
    };
    let mut groups: std::collections::BTreeMap<
        (String, String, String, Option<String>),
        Vec<&InventoryEntry>,
    > = Default::default();
    for e in inventory
        .iter()
        .filter(|e| health::has_check(&e.group, &e.kind) || rules.covers(&e.group, &e.kind))
    {
        groups
            .entry((
                e.group.clone(),
                e.version.clone(),
                e.kind.clone(),
                e.namespace.clone(),
            ))
            .or_default()
            .push(e);
    }
    for ((group, version, kind, ns), entries) in groups {
        let Ok(Some(r)) = applier.resolve(&group, &version, &kind).await else {
            continue;
        };
        let Ok(by_name) = applier.list_by_name(&r, ns.as_deref()).await else {
            worst = (Health::Unknown, format!("cannot list {kind}"));
            continue;
        };
        for entry in entries {
            let verdict = match by_name.get(&entry.name) {
                Some(live) => health::assess_with(rules, &entry.group, &entry.kind, live),
                None => health::Verdict {
                    health: Health::Degraded,
                    message: "is missing".into(),
                },
            };
            if rank(verdict.health) > rank(worst.0) {
                worst = (
                    verdict.health,
                    format!("{}: {}", describe(entry), verdict.message),
                );
            }
        }
    }
    worst
}
