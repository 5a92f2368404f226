//! Server-side apply with field manager `gantry`: dry-run to validate and to find what would
//! change, then apply only the objects that change.

use kube::Client;
use std::collections::{BTreeSet, HashMap};

use kube::api::{Api, DynamicObject, ListParams, Patch, PatchParams};
use serde_json::Value;

use super::concurrent;
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
    /// The Application the live object is labelled for, when it is another one.
    pub foreign_owner: Option<String>,
}

/// Live objects of the given items, read with one LIST per (resource, namespace) instead
/// of one GET per object. Keyed by (namespace, name, plural, group).
pub type LiveMap = HashMap<(Option<String>, String, String, String), Value>;

pub async fn list_live(
    client: &Client,
    items: &[(&Desired, &Resolved)],
) -> Result<LiveMap, String> {
    let mut scopes: BTreeSet<(Option<String>, String, String, String)> = BTreeSet::new();
    let mut resources: HashMap<(String, String), &Resolved> = HashMap::new();
    for (d, r) in items {
        let ns = if r.namespaced {
            d.key.namespace.clone()
        } else {
            None
        };
        scopes.insert((
            ns,
            r.resource.group.clone(),
            r.resource.version.clone(),
            r.resource.plural.clone(),
        ));
        resources.insert((r.resource.group.clone(), r.resource.plural.clone()), r);
    }
    let mut out = LiveMap::new();
    for (ns, group, _version, plural) in scopes {
        let r = resources[&(group.clone(), plural.clone())];
        let api = api_for(client, r, ns.as_deref());
        let list = api
            .list(&ListParams::default())
            .await
            .map_err(|e| format!("list {plural}: {}", api_message(&e)))?;
        for o in list.items {
            let name = o.metadata.name.clone().unwrap_or_default();
            let key_ns = if r.namespaced {
                o.metadata.namespace.clone()
            } else {
                None
            };
            out.insert(
                (key_ns, name, plural.clone(), group.clone()),
                serde_json::to_value(o).unwrap_or(Value::Null),
            );
        }
    }
    Ok(out)
}

fn live_key(d: &Desired, r: &Resolved) -> (Option<String>, String, String, String) {
    let ns = if r.namespaced {
        d.key.namespace.clone()
    } else {
        None
    };
    (
        ns,
        d.key.name.clone(),
        r.resource.plural.clone(),
        r.resource.group.clone(),
    )
}

/// Dry-runs every object (bounded concurrency). Returns per-object results in input order:
/// `Ok(change)` or `Err("<Kind ns/name>: <API message>")`. The live state comes from one
/// LIST per resource and namespace.
pub async fn dry_run(
    client: &Client,
    items: &[(&Desired, &Resolved)],
    force: bool,
    concurrency: usize,
) -> Vec<Result<Checked, String>> {
    let live = match list_live(client, items).await {
        Ok(l) => l,
        Err(e) => {
            return items
                .iter()
                .map(|(d, _)| Err(format!("{}: {e}", describe(&d.key))))
                .collect();
        }
    };
    let jobs: Vec<_> = items
        .iter()
        .map(|&(d, r)| {
            let api = api_for(client, r, d.key.namespace.as_deref());
            let live_value = live.get(&live_key(d, r));
            async move {
                let dry = api
                    .patch(&d.key.name, &params(force, true), &Patch::Apply(&d.object))
                    .await
                    .map_err(|e| format!("{}: {}", describe(&d.key), api_message(&e)))?;
                let dry_value = serde_json::to_value(dry).unwrap_or(Value::Null);
                Ok(Checked {
                    change: classify(live_value, &dry_value),
                    foreign_owner: live_value.and_then(|l| super::foreign_owner(&d.object, l)),
                })
            }
        })
        .collect();
    concurrent::run(jobs, concurrency).await
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
        .map(|&(d, r)| {
            let api = api_for(client, r, d.key.namespace.as_deref());
            async move {
                api.patch(&d.key.name, &params(force, false), &Patch::Apply(&d.object))
                    .await
                    .map(|o| serde_json::to_value(o).unwrap_or(Value::Null))
                    .map_err(|e| format!("{}: {}", describe(&d.key), api_message(&e)))
            }
        })
        .collect();
    concurrent::run(jobs, concurrency).await
}
