//! Drift handling of the Application reconciler: watches for the inventory, the check of
//! what changed (or everything, at the interval), and heal or audit of what it found.

use std::time::Duration;

use k8s_openapi::apimachinery::pkg::apis::meta::v1::Time;
use k8s_openapi::jiff::Timestamp;
use kube::ResourceExt;
use kube::runtime::events::EventType;

use super::drift_check;
use super::memory::AppContext;
use super::pipeline::{SyncError, SyncInput};
use super::reasons;
use super::record::{publish, set};
use crate::api::application::{
    Application, ApplicationStatus, DriftMode, DriftStatus, DriftedObject, InventoryEntry,
};
use crate::api::conditions::{self, Status};
use crate::cluster::Target;

pub(super) async fn ensure_watches(target: &Target, inventory: &[InventoryEntry]) {
    let mut resources = std::collections::HashMap::new();
    for e in inventory {
        if let Ok(Some(r)) = target.applier.resolve_key(e).await {
            resources.insert(
                (e.group.clone(), e.version.clone(), e.kind.clone()),
                r.resource,
            );
        }
    }
    target.drift.ensure(inventory, |e| {
        resources
            .get(&(e.group.clone(), e.version.clone(), e.kind.clone()))
            .cloned()
    });
}

fn describe_all(objs: &[DriftedObject]) -> String {
    objs.iter()
        .map(|o| {
            format!(
                "{} ({})",
                crate::apply::normalize::describe(&o.object),
                o.paths.join(", ")
            )
        })
        .collect::<Vec<_>>()
        .join("; ")
}

/// Heals or reports drift and updates status (written by the caller only when it changed).
pub(super) async fn report_drift(
    ctx: &AppContext,
    target: &Target,
    app: &Application,
    status: &mut ApplicationStatus,
    findings: Vec<drift_check::Finding>,
    checked: &[InventoryEntry],
) {
    match app.spec.drift.mode {
        DriftMode::Heal if !findings.is_empty() => heal(ctx, target, app, status, &findings).await,
        DriftMode::Heal => {}
        DriftMode::Audit => {
            let previous: Vec<DriftedObject> = status
                .drift
                .as_ref()
                .map(|d| d.objects.clone())
                .unwrap_or_default();
            // Objects not checked this time keep their earlier verdict; checked ones get
            // the new one.
            let mut objects: Vec<DriftedObject> = previous
                .iter()
                .filter(|o| !checked.iter().any(|c| c.same_object(&o.object)))
                .cloned()
                .collect();
            objects.extend(findings.iter().map(|f| f.report()));
            objects.sort_by(|a, b| a.object.cmp(&b.object));
            if objects != previous {
                audit(ctx, app, status, objects).await;
            }
        }
    }
}

/// Re-applies what drifted and says so.
async fn heal(
    ctx: &AppContext,
    target: &Target,
    app: &Application,
    status: &mut ApplicationStatus,
    findings: &[drift_check::Finding],
) {
    let generation = app.metadata.generation;
    let errors = drift_check::heal(target, app, findings).await;
    let healed: Vec<DriftedObject> = findings.iter().map(|f| f.report()).collect();
    if errors.is_empty() {
        let note = format!("re-applied {}", describe_all(&healed));
        publish(ctx, app, EventType::Normal, reasons::DRIFT_HEALED, note).await;
        status.drift = None;
        let m = format!("re-applied {} drifted objects", healed.len());
        set(
            status,
            conditions::DRIFTED,
            Status::False,
            reasons::DRIFT_HEALED,
            m,
            generation,
        );
    } else {
        let m = crate::apply::join_errors(&errors);
        publish(
            ctx,
            app,
            EventType::Warning,
            reasons::DRIFT_HEAL_FAILED,
            m.clone(),
        )
        .await;
        status.drift = Some(DriftStatus {
            checked_at: Some(Time(Timestamp::now())),
            objects: healed,
        });
        set(
            status,
            conditions::DRIFTED,
            Status::True,
            reasons::DRIFT_HEAL_FAILED,
            m,
            generation,
        );
    }
}

/// No drift: none reported, and Drifted is False.
pub(super) fn matches_git(status: &mut ApplicationStatus, generation: Option<i64>) {
    status.drift = None;
    let m = "the cluster matches Git";
    set(
        status,
        conditions::DRIFTED,
        Status::False,
        reasons::NO_DRIFT,
        m,
        generation,
    );
}

/// Reports the drifted objects (audit mode); `objects` differ from what status says.
async fn audit(
    ctx: &AppContext,
    app: &Application,
    status: &mut ApplicationStatus,
    objects: Vec<DriftedObject>,
) {
    let generation = app.metadata.generation;
    if objects.is_empty() {
        let note = "the cluster matches Git again".to_string();
        publish(ctx, app, EventType::Normal, reasons::DRIFT_CLEARED, note).await;
        matches_git(status, generation);
        return;
    }
    let all = describe_all(&objects);
    publish(
        ctx,
        app,
        EventType::Warning,
        reasons::DRIFT_DETECTED,
        all.clone(),
    )
    .await;
    let m = format!(
        "{} {} from Git: {all}",
        crate::text::counted(objects.len(), "object"),
        crate::text::agree(objects.len(), "differs", "differ")
    );
    set(
        status,
        conditions::DRIFTED,
        Status::True,
        reasons::DRIFT_DETECTED,
        m,
        generation,
    );
    status.drift = Some(DriftStatus {
        checked_at: Some(Time(Timestamp::now())),
        objects,
    });
}

/// Drift check of the inventory: every object at `interval`, the ones the watches saw change
/// in between. Deployments named in `held` (their template is held back by a canary) are
/// left out.
pub(super) async fn check_drift(
    ctx: &AppContext,
    app: &Application,
    status: &mut ApplicationStatus,
    revision: &str,
    input: &SyncInput<'_>,
    interval: Duration,
    held: &[String],
) {
    let ns = app.namespace().unwrap_or_default();
    let name = app.name_any();
    let target = input.target;
    ensure_watches(target, &status.inventory).await;
    let key = (ns.clone(), name.clone());
    let full = ctx
        .memory
        .last_full_check
        .lock()
        .expect("full check map")
        .get(&key)
        .is_none_or(|t| t.elapsed() >= interval);
    let dirty = target.drift.take_dirty(&ns, &name);
    let is_held =
        |e: &InventoryEntry| e.group == "apps" && e.kind == "Deployment" && held.contains(&e.name);
    let candidates: Vec<InventoryEntry> = status
        .inventory
        .iter()
        .filter(|e| !is_held(e))
        .filter(|e| full || dirty.iter().any(|d| d.same_object(e)))
        .cloned()
        .collect();
    if full {
        ctx.memory
            .last_full_check
            .lock()
            .expect("full check map")
            .insert(key, std::time::Instant::now());
    }
    if candidates.is_empty() {
        return;
    }
    let cannot_render = |dirty, e: SyncError| {
        target.drift.mark_dirty(&ns, &name, dirty);
        tracing::warn!(namespace = %ns, name = %name, error = %e, "cannot render for the drift check");
    };
    let (packed, rendered) = match drift_check::packed_for(ctx, app, revision, input).await {
        Ok(found) => found,
        Err(e) => return cannot_render(dirty, e),
    };
    // The full check reads only what the watches cannot vouch for; what they saw change
    // is read whatever they hold. The set is parsed only when something must be read.
    let candidates: Vec<InventoryEntry> = candidates
        .into_iter()
        .filter(|e| {
            dirty.iter().any(|d| d.same_object(e))
                || !packed
                    .declared(e)
                    .is_some_and(|declared| target.drift.vouches_for(e, declared))
        })
        .collect();
    if candidates.is_empty() {
        return;
    }
    let desired = match drift_check::unpacked(ctx, app, revision, input, &packed, rendered).await {
        Ok(desired) => desired,
        Err(e) => return cannot_render(dirty, e),
    };
    match drift_check::check(target, app, &desired, &candidates).await {
        Ok(findings) => {
            tracing::debug!(namespace = %ns, name = %name, full, candidates = candidates.len(), drifted = findings.len(), "drift check");
            report_drift(ctx, target, app, status, findings, &candidates).await
        }
        Err(e) => {
            // Looked at again at the next reconcile, not only at the next interval.
            target.drift.mark_dirty(&ns, &name, dirty);
            tracing::warn!(namespace = %ns, name = %name, error = %e, "drift check failed")
        }
    }
}
