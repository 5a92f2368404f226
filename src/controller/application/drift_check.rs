//! Drift check of an Application whose revision is applied: local comparison of the
//! declared fields first, confirmation by server-side dry-run only for suspects, then heal
//! (re-apply) or audit (report).

use std::sync::Arc;

use super::memory::AppContext;
use super::packed_set::PackedSet;
use super::pipeline::{self, SyncError, SyncInput};
use crate::api::application::{Application, DriftedObject, InventoryEntry};
use crate::apply::applier::ObjectError;
use crate::apply::normalize::Desired;
use crate::apply::plan::{Change, classify};
use crate::cluster::Target;
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
    ctx: &AppContext,
    app: &Application,
    revision: &str,
    input: &SyncInput<'_>,
) -> Result<Arc<Vec<Desired>>, SyncError> {
    if let Some(set) = cached(ctx, app, revision) {
        return Ok(set);
    }
    Ok(Arc::new(render(ctx, app, revision, input).await?.1))
}

/// The packed set at the applied revision: from the cache, or rendered again (no writes),
/// with the set as rendered in that case.
pub async fn packed_for(
    ctx: &AppContext,
    app: &Application,
    revision: &str,
    input: &SyncInput<'_>,
) -> Result<(Arc<PackedSet>, Option<Vec<Desired>>), SyncError> {
    if let Some((packed, _)) = remembered(ctx, app, revision) {
        return Ok((packed, None));
    }
    let (packed, desired) = render(ctx, app, revision, input).await?;
    Ok((packed, Some(desired)))
}

/// The set a drift check compares with: the one just rendered, else the packed one parsed,
/// else (should it not parse) rendered again.
pub async fn unpacked(
    ctx: &AppContext,
    app: &Application,
    revision: &str,
    input: &SyncInput<'_>,
    packed: &PackedSet,
    rendered: Option<Vec<Desired>>,
) -> Result<Vec<Desired>, SyncError> {
    match rendered.or_else(|| packed.unpack()) {
        Some(set) => Ok(set),
        None => Ok(render(ctx, app, revision, input).await?.1),
    }
}

async fn render(
    ctx: &AppContext,
    app: &Application,
    revision: &str,
    input: &SyncInput<'_>,
) -> Result<(Arc<PackedSet>, Vec<Desired>), SyncError> {
    let (desired, hooks, _) = pipeline::desired_and_hooks(input).await?;
    let packed = remember(ctx, app, revision, &desired, pipeline::hooks_digest(&hooks));
    Ok((packed, desired))
}

fn cache_key(app: &Application) -> (String, String) {
    (
        app.metadata.namespace.clone().unwrap_or_default(),
        app.metadata.name.clone().unwrap_or_default(),
    )
}

/// The rendered set remembered for `revision`, if any (no render).
pub fn cached(ctx: &AppContext, app: &Application, revision: &str) -> Option<Arc<Vec<Desired>>> {
    cached_with_hooks(ctx, app, revision).map(|(set, _)| set)
}

/// The rendered set remembered for `revision` and the digest of its hooks.
pub fn cached_with_hooks(
    ctx: &AppContext,
    app: &Application,
    revision: &str,
) -> Option<(Arc<Vec<Desired>>, u64)> {
    remembered(ctx, app, revision).and_then(|(set, hooks)| Some((Arc::new(set.unpack()?), hooks)))
}

/// The packed set remembered for `revision` and the digest of its hooks, not parsed.
fn remembered(
    ctx: &AppContext,
    app: &Application,
    revision: &str,
) -> Option<(Arc<PackedSet>, u64)> {
    let key = cache_key(app);
    ctx.memory
        .desired
        .lock()
        .expect("desired cache")
        .get(&key)
        .filter(|(rev, generation, ..)| rev == revision && *generation == app.metadata.generation)
        .map(|(_, _, set, hooks)| (set.clone(), *hooks))
}

/// Keeps the set rendered at `revision`, packed; returns what it keeps.
pub fn remember(
    ctx: &AppContext,
    app: &Application,
    revision: &str,
    set: &[Desired],
    hooks: u64,
) -> Arc<PackedSet> {
    let key = cache_key(app);
    let packed = Arc::new(PackedSet::pack(set));
    ctx.memory.desired.lock().expect("desired cache").insert(
        key,
        (
            revision.to_string(),
            app.metadata.generation,
            packed.clone(),
            hooks,
        ),
    );
    packed
}

/// Compares the candidates with the cluster through the Application's target. Reads only,
/// plus dry-runs for suspects.
pub async fn check(
    target: &Target,
    app: &Application,
    desired: &[Desired],
    candidates: &[InventoryEntry],
) -> Result<Vec<Finding>, SyncError> {
    let applier = &target.applier;
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
        let Some(resolved) = applier.resolve_key(&d.key).await? else {
            continue;
        };
        let Some(live) = applier.live(&resolved, &d.key).await? else {
            findings.push(Finding {
                desired: d.clone(),
                paths: vec!["(deleted)".into()],
            });
            continue;
        };
        // Labelled for another Application (taken over on purpose): no longer ours to heal.
        if crate::apply::foreign_owner(&d.object, &live).is_some() {
            continue;
        }
        let suspects = compare::without_ignored(
            compare::differing_paths(&compare::comparable(&d.object), &live),
            rules,
            &d.key,
        );
        if suspects.is_empty() {
            continue;
        }
        // Confirm with the API server: defaulting and normalisation are its business. When
        // another manager took fields Gantry declares (409), that is drift too; the local
        // comparison found the differing fields.
        let confirmed = match applier
            .dry_apply(&resolved, d, pipeline::force_conflicts(app))
            .await
        {
            Ok(dry) => classify(Some(&live), &dry) != Change::Unchanged,
            Err(kube::Error::Api(s)) if s.code == 409 => true,
            Err(e) => return Err(e.into()),
        };
        if confirmed {
            findings.push(Finding {
                desired: d.clone(),
                paths: suspects,
            });
        }
    }
    Ok(findings)
}

/// Re-applies drifted objects through the Application's target; returns per-object errors.
pub async fn heal(target: &Target, app: &Application, findings: &[Finding]) -> Vec<ObjectError> {
    let applier = &target.applier;
    let mut errors = vec![];
    for f in findings {
        let Ok(Some(resolved)) = applier.resolve_key(&f.desired.key).await else {
            continue;
        };
        let items = [(&f.desired, &resolved)];
        for r in applier.apply(&items, pipeline::force_conflicts(app)).await {
            if let Err(e) = r {
                errors.push(e);
            }
        }
    }
    errors
}
