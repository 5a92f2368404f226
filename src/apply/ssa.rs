//! Server-side apply with field manager `gantry`: dry-run to validate and to find what would
//! change, then apply only the objects that change.

use futures::{StreamExt, stream};
use kube::Client;
use kube::api::{Api, DynamicObject, Patch, PatchParams};
use serde_json::Value;

use super::discovery::Resolved;
use super::normalize::{Desired, describe};
use super::plan::{Change, classify};

pub const FIELD_MANAGER: &str = "gantry";

/// The API for one object, namespaced or cluster-scoped.
pub fn api_for(
    client: &Client,
    resolved: &Resolved,
    namespace: Option<&str>,
) -> Api<DynamicObject> {
    match (resolved.namespaced, namespace) {
        (true, Some(ns)) => Api::namespaced_with(client.clone(), ns, &resolved.resource),
        _ => Api::all_with(client.clone(), &resolved.resource),
    }
}

fn params(force: bool, dry_run: bool) -> PatchParams {
    let mut p = PatchParams::apply(FIELD_MANAGER);
    if force {
        p = p.force();
    }
    if dry_run {
        p = p.dry_run();
    }
    p
}

/// A human-readable error from the API server for one object.
pub fn api_message(e: &kube::Error) -> String {
    match e {
        kube::Error::Api(s) => s.message.clone(),
        other => other.to_string(),
    }
}

/// What the dry-run says about one object.
#[derive(Clone, Debug)]
pub struct Checked {
    pub change: Change,
}

/// Dry-runs every object (bounded concurrency). Returns per-object results in input order:
/// `Ok(change)` or `Err("<Kind ns/name>: <API message>")`.
pub async fn dry_run(
    client: &Client,
    items: &[(&Desired, &Resolved)],
    force: bool,
    concurrency: usize,
) -> Vec<Result<Checked, String>> {
    let jobs: Vec<_> = items
        .iter()
        .map(|(d, r)| {
            let api = api_for(client, r, d.key.namespace.as_deref());
            let (name, object, what) = (d.key.name.clone(), d.object.clone(), describe(&d.key));
            async move {
                let live = api
                    .get_opt(&name)
                    .await
                    .map_err(|e| format!("{what}: {}", api_message(&e)))?;
                let live_value = live.map(|l| serde_json::to_value(l).unwrap_or(Value::Null));
                let dry = api
                    .patch(&name, &params(force, true), &Patch::Apply(&object))
                    .await
                    .map_err(|e| format!("{what}: {}", api_message(&e)))?;
                let dry_value = serde_json::to_value(dry).unwrap_or(Value::Null);
                Ok(Checked {
                    change: classify(live_value.as_ref(), &dry_value),
                })
            }
        })
        .collect();
    stream::iter(jobs)
        .buffered(concurrency.max(1))
        .collect()
        .await
}

/// Applies every object (bounded concurrency); returns the live objects or per-object errors.
pub async fn apply(
    client: &Client,
    items: &[(&Desired, &Resolved)],
    force: bool,
    concurrency: usize,
) -> Vec<Result<Value, String>> {
    let jobs: Vec<_> = items
        .iter()
        .map(|(d, r)| {
            let api = api_for(client, r, d.key.namespace.as_deref());
            let (name, object, what) = (d.key.name.clone(), d.object.clone(), describe(&d.key));
            async move {
                api.patch(&name, &params(force, false), &Patch::Apply(&object))
                    .await
                    .map(|o| serde_json::to_value(o).unwrap_or(Value::Null))
                    .map_err(|e| format!("{what}: {}", api_message(&e)))
            }
        })
        .collect();
    stream::iter(jobs)
        .buffered(concurrency.max(1))
        .collect()
        .await
}
