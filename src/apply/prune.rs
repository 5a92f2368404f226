//! Guarded prune: only objects from the previous inventory that still carry this
//! Application's label, and are not protected by `gantry.dev/prune: disabled`.

use kube::api::DeleteParams;

use super::applier::{Applier, api_message};
use super::normalize::describe;
use super::{APPLICATION_LABEL, PRUNE_ANNOTATION};
use crate::api::application::InventoryEntry;

#[derive(Debug, Default)]
pub struct PruneOutcome {
    /// Deleted (or already gone).
    pub deleted: Vec<InventoryEntry>,
    /// Left alone: relabelled, taken over or protected; no longer tracked.
    pub skipped: Vec<(InventoryEntry, String)>,
    /// Delete failed: kept in the inventory and retried.
    pub failed: Vec<(InventoryEntry, String)>,
}

impl Applier {
    /// Deletes the stale objects that still carry `app_label` and are not protected.
    pub async fn prune(&self, stale: &[InventoryEntry], app_label: &str) -> PruneOutcome {
        prune(self, stale, app_label).await
    }
}

async fn prune(applier: &Applier, stale: &[InventoryEntry], app_label: &str) -> PruneOutcome {
    let mut out = PruneOutcome::default();
    for entry in stale {
        let resolved = match applier.resolve_key(entry).await {
            Ok(Some(r)) => r,
            Ok(None) => {
                out.deleted.push(entry.clone()); // the kind itself is gone
                continue;
            }
            Err(e) => {
                out.failed.push((
                    entry.clone(),
                    format!("{}: {}", describe(entry), api_message(&e)),
                ));
                continue;
            }
        };
        let api = applier.api(&resolved, entry.namespace.as_deref());
        let live = match api.get_opt(&entry.name).await {
            Ok(Some(l)) => l,
            Ok(None) => {
                out.deleted.push(entry.clone());
                continue;
            }
            Err(e) => {
                let message = format!("{}: {}", describe(entry), api_message(&e));
                out.failed.push((entry.clone(), message));
                continue;
            }
        };
        let owner = live
            .metadata
            .labels
            .as_ref()
            .and_then(|l| l.get(APPLICATION_LABEL))
            .map(String::as_str);
        if owner != Some(app_label) {
            out.skipped.push((
                entry.clone(),
                format!(
                    "{} is no longer labelled for this Application",
                    describe(entry)
                ),
            ));
            continue;
        }
        let protected = live
            .metadata
            .annotations
            .as_ref()
            .and_then(|a| a.get(PRUNE_ANNOTATION))
            .is_some_and(|v| v == "disabled");
        if protected {
            out.skipped.push((
                entry.clone(),
                format!("{} has {PRUNE_ANNOTATION}: disabled", describe(entry)),
            ));
            continue;
        }
        match api.delete(&entry.name, &DeleteParams::background()).await {
            Ok(_) => out.deleted.push(entry.clone()),
            Err(kube::Error::Api(s)) if s.code == 404 => out.deleted.push(entry.clone()),
            Err(e) => out.failed.push((
                entry.clone(),
                format!("{}: {}", describe(entry), api_message(&e)),
            )),
        }
    }
    out
}
