//! The health of an Application's inventory: from the verdicts the watches of its cluster
//! keep ([`HealthBook`]), and otherwise read through its Applier with one LIST per kind and
//! namespace (kinds the Application's own rules judge, a watch that has not listed yet),
//! each object judged by `health::assess`.

use crate::api::application::InventoryEntry;
use crate::apply::applier::Applier;
use crate::apply::normalize::describe;
use crate::health::book::{Answer, HealthBook};
use crate::health::rules::Rules;
use crate::health::{self, Health};

/// Aggregated health of the inventory: objects whose kinds have health checks are taken
/// from the watches' book, or read with one LIST per kind and namespace.
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
        let from_book = (!rules.covers(&group, &kind))
            .then(|| applier.health_book().and_then(|b| booked(b, &entries)))
            .flatten();
        let verdicts: Vec<health::Verdict> = if let Some(verdicts) = from_book {
            verdicts
        } else {
            let Ok(Some(r)) = applier.resolve(&group, &version, &kind).await else {
                continue;
            };
            let Ok(by_name) = applier.list_by_name(&r, ns.as_deref()).await else {
                worst = (Health::Unknown, format!("cannot list {kind}"));
                continue;
            };
            read(rules, &group, &kind, &entries, by_name).await
        };
        for (entry, verdict) in entries.into_iter().zip(verdicts) {
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

/// The verdicts of `entries` from the live objects of their kind, by name.
async fn read(
    rules: &Rules,
    group: &str,
    kind: &str,
    entries: &[&InventoryEntry],
    by_name: std::collections::HashMap<String, serde_json::Value>,
) -> Vec<health::Verdict> {
    // Rules in CEL are the tenant's code: bounded in cost, and run off the async
    // workers so that even a costly one never stalls another reconcile or a probe.
    if rules.covers(group, kind) {
        let rules = rules.clone();
        let wanted: Vec<(String, String, String)> = entries
            .iter()
            .map(|e| (e.group.clone(), e.kind.clone(), e.name.clone()))
            .collect();
        tokio::task::spawn_blocking(move || {
            wanted
                .iter()
                .map(|(g, k, name)| judge(&rules, g, k, by_name.get(name)))
                .collect()
        })
        .await
        .unwrap_or_else(|e| {
            vec![
                health::Verdict {
                    health: Health::Unknown,
                    message: format!("health rules failed: {e}"),
                };
                entries.len()
            ]
        })
    } else {
        entries
            .iter()
            .map(|e| judge(rules, &e.group, &e.kind, by_name.get(&e.name)))
            .collect()
    }
}

/// The verdicts of `entries` from the book; `None` when it cannot say for one of them.
fn booked(book: &HealthBook, entries: &[&InventoryEntry]) -> Option<Vec<health::Verdict>> {
    entries
        .iter()
        .map(|e| {
            match book.answer(&(
                e.group.clone(),
                e.kind.clone(),
                e.namespace.clone(),
                e.name.clone(),
            )) {
                Answer::Known(v) => Some(v),
                Answer::Ask => None,
            }
        })
        .collect()
}

/// One object's verdict: missing, or judged by the rules and the built-in checks.
fn judge(
    rules: &Rules,
    group: &str,
    kind: &str,
    live: Option<&serde_json::Value>,
) -> health::Verdict {
    match live {
        Some(live) => health::assess_with(rules, group, kind, live),
        None => health::Verdict {
            health: Health::Degraded,
            message: "is missing".into(),
        },
    }
}
