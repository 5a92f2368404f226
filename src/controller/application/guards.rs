//! What must hold before a sync writes anything, and what it leaves behind if it stops
//! half-way: the artifact on disk is the one its digest names, and the planned inventory is
//! in status before the first write. (Objects of another Application are refused by the
//! staged apply, apply/set.rs; targets the controller cannot act as by target/.)

use std::collections::BTreeSet;
use std::path::Path;

use kube::api::Api;

use crate::api::application::{Application, ApplicationStatus, InventoryEntry};
use crate::apply::normalize::Desired;

/// Verifies the tree on disk against its digest (only the files under `scope` when the
/// render reads nothing else, see `ArtifactStore::verify`); a tree that changed is removed
/// (the next reconcile writes it again from the Git cache) and nothing of it is rendered.
pub async fn verify_artifact(
    store: &crate::source::store::ArtifactStore,
    root: &Path,
    digest: &str,
    scope: Option<std::path::PathBuf>,
) -> Result<(), String> {
    let (store, root, digest) = (store.clone(), root.to_path_buf(), digest.to_string());
    tokio::task::spawn_blocking(move || store.verify(&root, &digest, scope.as_deref()))
        .await
        .map_err(|e| format!("verify task failed: {e}"))?
        .map_err(|e| e.to_string())
}

/// The previous inventory and every desired object, sorted; `None` when that adds nothing.
pub fn planned_inventory(
    previous: &[InventoryEntry],
    desired: &[Desired],
) -> Option<Vec<InventoryEntry>> {
    let known: BTreeSet<&InventoryEntry> = previous.iter().collect();
    if desired.iter().all(|d| known.contains(&d.key)) {
        return None;
    }
    let all: BTreeSet<InventoryEntry> = previous
        .iter()
        .cloned()
        .chain(desired.iter().map(|d| d.key.clone()))
        .collect();
    Some(all.into_iter().collect())
}

/// What a sync writes into status while it runs: the planned inventory before its first
/// write, and where it is when it waits (hooks, waves, health).
pub trait RecordPlanned: Send + Sync {
    fn record(
        &self,
        entries: Vec<InventoryEntry>,
    ) -> futures::future::BoxFuture<'_, Result<(), String>>;

    /// The sync is about to wait on `what` (e.g. "running 2 pre hooks"): Ready says so.
    fn progress(&self, _what: String) -> futures::future::BoxFuture<'_, ()> {
        Box::pin(async {})
    }
}

/// The status writes a sync makes before its outcome, and the only ones besides it: the
/// planned inventory before the set's first write, where the sync is when it waits (hooks,
/// waves, health), and Ready before a large set's health is assessed. One per reconcile;
/// the reconciler compares its outcome with what these last wrote ([`Checkpoint::held`]).
pub struct Checkpoint<'a> {
    api: &'a Api<Application>,
    name: &'a str,
    writes: &'a super::memory::StatusWrites,
    revision: String,
    generation: Option<i64>,
    /// The status the next checkpoint writes over (as the sync started, then as last written).
    status: std::sync::Mutex<ApplicationStatus>,
    recorded: std::sync::Mutex<Option<Vec<InventoryEntry>>>,
    /// What a checkpoint wrote last: what the API server holds now.
    held: std::sync::Mutex<Option<ApplicationStatus>>,
}

impl<'a> Checkpoint<'a> {
    pub fn new(
        api: &'a Api<Application>,
        name: &'a str,
        writes: &'a super::memory::StatusWrites,
        revision: &str,
        generation: Option<i64>,
    ) -> Self {
        Self {
            api,
            name,
            writes,
            revision: revision.to_string(),
            generation,
            status: Default::default(),
            recorded: Default::default(),
            held: Default::default(),
        }
    }

    /// The sync starts from `status`: the checkpoints write it with what they add.
    pub fn begin(&self, status: ApplicationStatus) {
        *self.status.lock().expect("sync status") = status;
    }

    /// The inventory recorded, if any (a sync that failed after it keeps it).
    pub fn recorded(&self) -> Option<Vec<InventoryEntry>> {
        self.recorded.lock().expect("planned inventory").clone()
    }

    /// The status a checkpoint wrote last, if one wrote (what the API server now holds).
    pub fn held(&self) -> Option<ApplicationStatus> {
        self.held.lock().expect("held status").clone()
    }

    /// Writes `status` now, before the reconcile goes on (e.g. Ready of an applied set
    /// whose health takes a while to assess).
    pub async fn write(&self, status: &ApplicationStatus) -> crate::error::Result<()> {
        if self.held().as_ref() == Some(status) {
            return Ok(());
        }
        super::record::write_status(self.api, self.name, self.writes, status).await?;
        *self.status.lock().expect("sync status") = status.clone();
        *self.held.lock().expect("held status") = Some(status.clone());
        Ok(())
    }
}

impl RecordPlanned for Checkpoint<'_> {
    fn record(
        &self,
        entries: Vec<InventoryEntry>,
    ) -> futures::future::BoxFuture<'_, Result<(), String>> {
        let status = {
            let mut status = self.status.lock().expect("sync status");
            status.inventory = entries.clone();
            status.clone()
        };
        *self.recorded.lock().expect("planned inventory") = Some(entries);
        Box::pin(async move {
            super::record::write_status(self.api, self.name, self.writes, &status)
                .await
                .map_err(|e| e.to_string())?;
            *self.held.lock().expect("held status") = Some(status);
            Ok(())
        })
    }

    fn progress(&self, what: String) -> futures::future::BoxFuture<'_, ()> {
        let status = {
            let mut status = self.status.lock().expect("sync status");
            super::record::set(
                &mut status,
                crate::api::conditions::READY,
                crate::api::conditions::Status::Unknown,
                super::reasons::PROGRESSING,
                format!("syncing revision {}: {what}", self.revision),
                self.generation,
            );
            status.clone()
        };
        Box::pin(async move {
            // Best effort: the sync goes on whether or not its progress could be shown.
            match super::record::write_status(self.api, self.name, self.writes, &status).await {
                Ok(()) => *self.held.lock().expect("held status") = Some(status),
                Err(e) => tracing::debug!(error = %e, "progress not written"),
            }
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::apply::normalize::Desired;

    fn entry(name: &str) -> InventoryEntry {
        InventoryEntry {
            group: String::new(),
            version: "v1".into(),
            kind: "ConfigMap".into(),
            namespace: Some("ns".into()),
            name: name.into(),
        }
    }

    fn desired(name: &str) -> Desired {
        Desired {
            key: entry(name),
            object: serde_json::json!({}),
            namespaced: true,
        }
    }

    #[test]
    fn the_planned_inventory_is_the_union_and_only_when_it_adds_objects() {
        let previous = vec![entry("a"), entry("b")];
        assert_eq!(planned_inventory(&previous, &[desired("a")]), None);
        assert_eq!(
            planned_inventory(&previous, &[desired("c"), desired("a")]),
            Some(vec![entry("a"), entry("b"), entry("c")])
        );
    }
}
