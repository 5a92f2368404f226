//! Drift check of an Application whose revision is applied: local comparison of the
//! declared fields first, confirmation by server-side dry-run only for suspects, then heal
//! (re-apply) or audit (report).

use std::sync::Arc;

use kube::api::{DynamicObject, Patch, PatchParams};
use serde_json::Value;

use super::context::Context;
use super::sync::{self, SyncError, SyncInput};
use crate::api::application::{Application, DriftedObject, InventoryEntry};
use crate::apply::normalize::Desired;
use crate::apply::plan::{Change, classify};
use crate::apply::ssa::{self, FIELD_MANAGER};
use crate::drift::compare;

/// One object that differs from Git.
#[derive(Debug, Clone)]
pub struct Finding {
    pub desired: Desired,
    pub paths: Vec<String>,
}

impl Finding {
    pub fn report(&self) -> DriftedObject {
        DriftedObject {
            object: self.desired.key.clone(),
            paths: self.paths.clone(),
        }
    }
}

/// The desired set at the applied revision: from the cache, or rendered again (no writes).
pub async fn desired_for(
    ctx: &Context,
    app: &Application,
    revision: &str,
    input: &SyncInput<'_>,
) -> Result<Arc<Vec<Desired>>, SyncError> {
    if let Some(set) = cached(ctx, app, revision) {
        return Ok(set);
    }
    let (desired, _) = sync::desired_set(input).await?;
    let set = Arc::new(desired);
    remember(ctx, app, revision, set.clone());
    Ok(set)
}

fn cache_key(app: &Application) -> (String, String) {
    (
        app.metadata.namespace.clone().unwrap_or_default(),
        app.metadata.name.clone().unwrap_or_default(),
    )
}

/// The rendered set remembered for `revision`, if any (no render).
pub fn cached(ctx: &Context, app: &Application, revision: &str) -> Option<Arc<Vec<Desired>>> {
    let key = cache_key(app);
    ctx.desired_cache
        .lock()
        .expect("desired cache")
        .get(&key)
        .filter(|(rev, generation, _)| rev == revision && *generation == app.metadata.generation)
        .map(|(_, _, set)| set.clone())
}

pub fn remember(ctx: &Context, app: &Application, revision: &str, set: Arc<Vec<Desired>>) {
    let key = cache_key(app);
    ctx.desired_cache
        .lock()
        .expect("desired cache")
        .insert(key, (revision.to_string(), app.metadata.generation, set));
}

/// Compares the candidates with the cluster. Reads only, plus dry-runs for suspects.
pub async fn check(
    ctx: &Context,
    app: &Application,
    desired: &[Desired],
    candidates: &[InventoryEntry],
) -> Result<Vec<Finding>, SyncError> {
    let mut findings = vec![];
    let rules = &app.spec.drift.ignore;
    for d in desired.iter().filter(|d| {
        candidates.iter().any(|c| {
            c.group == d.key.group
                && c.kind == d.key.kind
                && c.namespace == d.key.namespace
                && c.name == d.key.name
        })
    }) {
        let Some(resolved) = ctx
            .discovery
            .resolve(&ctx.client, &d.key.group, &d.key.version, &d.key.kind)
            .await?
        else {
            continue;
        };
        let api = ssa::api_for(&ctx.client, &resolved, d.key.namespace.as_deref());
        let live: Option<DynamicObject> = api.get_opt(&d.key.name).await?;
        let Some(live) = live else {
            findings.push(Finding {
                desired: d.clone(),
                paths: vec!["(deleted)".into()],
            });
            continue;
        };
        let live_value = serde_json::to_value(&live).unwrap_or(Value::Null);
        // Labelled for another Application (taken over on purpose): no longer ours to heal.
        if crate::apply::foreign_owner(&d.object, &live_value).is_some() {
            continue;
        }
        let suspects = compare::without_ignored(
            compare::differing_paths(&compare::comparable(&d.object), &live_value),
            rules,
            &d.key,
        );
        if suspects.is_empty() {
            continue;
        }
        // Confirm with the API server: defaulting and normalisation are its business.
        let mut params = PatchParams::apply(FIELD_MANAGER).dry_run();
        if sync::force_conflicts(app) {
            params = params.force();
        }
        let dry = match api
            .patch(&d.key.name, &params, &Patch::Apply(&d.object))
            .await
        {
            Ok(dry) => dry,
            // Another manager took fields Gantry declares: that is drift too. The local
            // comparison found the differing fields as JSON pointers.
            Err(kube::Error::Api(s)) if s.code == 409 => {
                findings.push(Finding {
                    desired: d.clone(),
                    paths: suspects,
                });
                continue;
            }
            Err(e) => return Err(e.into()),
        };
        let dry_value = serde_json::to_value(&dry).unwrap_or(Value::Null);
        if classify(Some(&live_value), &dry_value) == Change::Unchanged {
            continue;
        }
        let confirmed = compare::without_ignored(
            compare::differing_paths(&compare::comparable(&d.object), &live_value),
            rules,
            &d.key,
        );
        findings.push(Finding {
            desired: d.clone(),
            paths: if confirmed.is_empty() {
                suspects
            } else {
                confirmed
            },
        });
    }
    Ok(findings)
}

/// Re-applies drifted objects; returns per-object errors.
pub async fn heal(ctx: &Context, app: &Application, findings: &[Finding]) -> Vec<String> {
    let mut errors = vec![];
    for f in findings {
        let resolved = match ctx
            .discovery
            .resolve(
                &ctx.client,
                &f.desired.key.group,
                &f.desired.key.version,
                &f.desired.key.kind,
            )
            .await
        {
            Ok(Some(r)) => r,
            _ => continue,
        };
        let items = [(&f.desired, &resolved)];
        for r in ssa::apply(&ctx.client, &items, sync::force_conflicts(app), 1).await {
            if let Err(e) = r {
                errors.push(e);
            }
        }
    }
    errors
}
