//! Status writes: server-side apply of `{apiVersion, kind, status}` with Gantry's manager.

use kube::api::{Api, Patch, PatchParams};
use serde::Serialize;
use serde_json::json;

use super::kinds::GantryKind;
use crate::apply::applier::FIELD_MANAGER;
use crate::error::Result;

pub async fn apply_status<K: GantryKind, S: Serialize>(
    api: &Api<K>,
    name: &str,
    status: &S,
) -> Result<()> {
    apply_status_at(api, name, status).await.map(|_| ())
}

/// `apply_status`, answering the resourceVersion the object has after the write.
pub async fn apply_status_at<K: GantryKind, S: Serialize>(
    api: &Api<K>,
    name: &str,
    status: &S,
) -> Result<Option<String>> {
    let patch = json!({
        "apiVersion": K::api_version(&()),
        "kind": K::kind(&()),
        "status": status,
    });
    let written = api
        .patch_status(
            name,
            &PatchParams::apply(FIELD_MANAGER).force(),
            &Patch::Apply(&patch),
        )
        .await?;
    Ok(written.meta().resource_version.clone())
}

/// `interval` plus up to 10% jitter, so many objects do not fetch in lockstep.
pub fn with_jitter(interval: std::time::Duration, seed: &str) -> std::time::Duration {
    let mut h: u64 = 1469598103934665603;
    for b in seed.bytes() {
        h = (h ^ b as u64).wrapping_mul(1099511628211);
    }
    let nanos = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.subsec_nanos() as u64)
        .unwrap_or(0);
    let permille = (h ^ nanos) % 100;
    interval + interval * permille as u32 / 1000
}
