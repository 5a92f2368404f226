//! The sync pipeline of one Application revision:
//! render → normalize → dry-run (whole set) → apply (changed only) → prune → health.
//! Each failing stage has its own reason; nothing of the set is applied when validation fails.

use std::collections::{BTreeSet, HashMap};
use std::path::Path;
use std::time::Duration;

use k8s_openapi::api::core::v1::Namespace;
use kube::Client;
use kube::api::Api;
use serde_json::Value;

use super::guards::{self, join_errors};
use crate::api::application::{Application, InventoryEntry};
use crate::apply::discovery::{Discovery, Resolved};
use crate::apply::normalize::{self, Desired, describe};
use crate::apply::plan::Change;
use crate::apply::{inventory, prune, ssa};
use crate::health::{self, Health};
use crate::render::{self, Limits, RenderRequest};

/// Why a sync stopped, with the condition reason for each stage.
#[derive(Debug, thiserror::Error)]
pub enum SyncError {
    #[error("{0}")]
    Artifact(String),
    #[error("{0}")]
    Render(#[from] render::RenderError),
    #[error("{0}")]
    Validation(String),
    #[error("{0}")]
    Apply(String),
    #[error(
        "the render is empty while {0} objects are applied; refusing to prune everything (set spec.allowEmpty to allow it)"
    )]
    EmptyRender(usize),
    #[error("Kubernetes API: {0}")]
    Kube(#[from] kube::Error),
    #[error("{0}")]
    OwnershipConflict(String),
}

impl SyncError {
    pub fn reason(&self) -> &'static str {
        match self {
            SyncError::Artifact(_) => "ArtifactFailed",
            SyncError::Render(_) => "RenderFailed",
            SyncError::Validation(_) => "ValidationFailed",
            SyncError::Apply(_) => "ApplyFailed",
            SyncError::EmptyRender(_) => "EmptyRender",
            SyncError::Kube(_) => "ApplyFailed",
            SyncError::OwnershipConflict(_) => "OwnershipConflict",
        }
    }
}

/// What a successful sync did.
#[derive(Debug, Default)]
pub struct SyncOutcome {
    pub inventory: Vec<InventoryEntry>,
    pub created: u32,
    pub configured: u32,
    pub unchanged: u32,
    pub pruned: u32,
    /// Prune failures (kept in the inventory) and skipped objects, as messages.
    pub prune_messages: Vec<String>,
    pub prune_failed: bool,
    /// Objects that were sent (created or configured).
    pub applied: BTreeSet<InventoryEntry>,
    /// The rendered, normalized set (kept for drift checks).
    pub desired: Vec<Desired>,
    /// Objects held back by `SyncInput::hold`.
    pub held: Vec<InventoryEntry>,
}

pub struct SyncInput<'a> {
    pub client: &'a Client,
    pub discovery: &'a Discovery,
    pub app: &'a Application,
    pub artifact_root: &'a Path,
    /// The artifact's digest: the tree is verified against it before it is rendered.
    pub artifact_digest: Option<&'a str>,
    pub concurrency: usize,
    /// Objects validated but not applied (stable Deployments whose new template runs as a
    /// canary first).
    pub hold: Option<&'a (dyn Fn(&Desired) -> bool + Sync)>,
    /// Records an inventory in the Application's status before the first write that may
    /// create objects not in the previous inventory (see [`sync`]).
    pub record_planned: Option<&'a dyn guards::RecordPlanned>,
}

/// The namespace given to namespaced objects without one.
pub fn default_namespace(app: &Application) -> String {
    app.spec.target_namespace.clone().unwrap_or_else(|| {
        app.metadata
            .namespace
            .clone()
            .unwrap_or_else(|| "default".into())
    })
}

/// Whether applies take over fields owned by other managers: `spec.force`, or drift mode
/// `heal` (Git wins over hand edits, which otherwise hold the fields they touched).
pub fn force_conflicts(app: &Application) -> bool {
    app.spec.force || app.spec.drift.mode == crate::api::application::DriftMode::Heal
}

pub fn app_label(app: &Application) -> String {
    crate::apply::owner_label(app)
}

/// Renders and normalizes the desired set; resolves kinds through discovery.
pub async fn desired_set(
    input: &SyncInput<'_>,
) -> Result<(Vec<Desired>, HashMap<(String, String, String), Resolved>), SyncError> {
    let app = input.app;
    let name = app.metadata.name.clone().unwrap_or_default();
    let ns = default_namespace(app);
    let req = RenderRequest {
        release_name: app
            .spec
            .render
            .as_ref()
            .and_then(|r| r.helm.as_ref())
            .and_then(|h| h.release_name.as_deref())
            .unwrap_or(&name),
        namespace: &ns,
        spec: app.spec.render.as_ref(),
        limits: Limits {
            timeout: app
                .spec
                .timeout
                .parse()
                .unwrap_or(Duration::from_secs(60))
                .min(Duration::from_secs(300)),
            ..Limits::default()
        },
    };
    if let Some(digest) = input.artifact_digest {
        guards::verify_artifact(input.artifact_root, digest)
            .await
            .map_err(SyncError::Artifact)?;
    }
    let objects = match render::render(input.artifact_root, &app.spec.path, &req).await {
        // With allowEmpty, a deleted path is an empty render (everything is pruned).
        Err(render::RenderError::NotFound { field, .. })
            if field == "path" && app.spec.allow_empty =>
        {
            vec![]
        }
        other => other?,
    };

    let mut gvks: BTreeSet<(String, String, String)> = BTreeSet::new();
    for o in &objects {
        let (g, v) = normalize::split_api_version(o["apiVersion"].as_str().unwrap_or_default())
            .map_err(|e| SyncError::Validation(e.to_string()))?;
        gvks.insert((g, v, o["kind"].as_str().unwrap_or_default().to_string()));
    }
    let mut resolved = HashMap::new();
    for (g, v, k) in gvks {
        if let Some(r) = input.discovery.resolve(input.client, &g, &v, &k).await? {
            resolved.insert((g, v, k), r);
        }
    }
    let desired = normalize::normalize(objects, &ns, &app_label(app), |g, v, k| {
        resolved
            .get(&(g.to_string(), v.to_string(), k.to_string()))
            .map(|r| r.namespaced)
    })
    .map_err(|e| SyncError::Validation(e.to_string()))?;
    Ok((desired, resolved))
}

fn key_of(d: &Desired) -> (String, String, String) {
    (
        d.key.group.clone(),
        d.key.version.clone(),
        d.key.kind.clone(),
    )
}

async fn wait_crds_established(client: &Client, names: &[String]) {
    use k8s_openapi::apiextensions_apiserver::pkg::apis::apiextensions::v1::CustomResourceDefinition;
    let api: Api<CustomResourceDefinition> = Api::all(client.clone());
    let deadline = tokio::time::Instant::now() + Duration::from_secs(30);
    for name in names {
        while tokio::time::Instant::now() < deadline {
            let ok = api
                .get_opt(name)
                .await
                .ok()
                .flatten()
                .and_then(|c| c.status)
                .and_then(|s| s.conditions)
                .is_some_and(|cs| {
                    cs.iter()
                        .any(|c| c.type_ == "Established" && c.status == "True")
                });
            if ok {
                break;
            }
            tokio::time::sleep(Duration::from_millis(200)).await;
        }
    }
}

/// Resolves a kind that may have been defined by a CRD of this sync a moment ago: API
/// discovery serves a new group shortly after the CRD is Established, so look a few times.
async fn resolve_new_kind(
    input: &SyncInput<'_>,
    k: &(String, String, String),
    crds_just_applied: bool,
) -> Result<Option<Resolved>, SyncError> {
    let deadline =
        tokio::time::Instant::now() + Duration::from_secs(if crds_just_applied { 15 } else { 0 });
    loop {
        if let Some(r) = input
            .discovery
            .resolve(input.client, &k.0, &k.1, &k.2)
            .await?
        {
            return Ok(Some(r));
        }
        if tokio::time::Instant::now() >= deadline {
            return Ok(None);
        }
        tokio::time::sleep(Duration::from_millis(250)).await;
    }
}

/// Runs the whole pipeline for the artifact at `input.artifact_root`.
pub async fn sync(input: &SyncInput<'_>) -> Result<SyncOutcome, SyncError> {
    let app = input.app;
    let previous = app
        .status
        .as_ref()
        .map(|s| s.inventory.clone())
        .unwrap_or_default();
    let started = std::time::Instant::now();
    let (desired, mut resolved) = desired_set(input).await?;
    let force = force_conflicts(app);
    tracing::debug!(
        objects = desired.len(),
        ms = started.elapsed().as_millis() as u64,
        "rendered"
    );

    if desired.is_empty() && !previous.is_empty() && !app.spec.allow_empty && app.spec.prune {
        return Err(SyncError::EmptyRender(previous.len()));
    }

    // Objects that cannot be validated before stage 0 is applied: kinds defined by CRDs in
    // this set, and objects in Namespaces this set creates.
    let namespaces_api: Api<Namespace> = Api::all(input.client.clone());
    let mut new_namespaces = BTreeSet::new();
    for d in desired
        .iter()
        .filter(|d| d.key.group.is_empty() && d.key.kind == "Namespace")
    {
        if namespaces_api.get_opt(&d.key.name).await?.is_none() {
            new_namespaces.insert(d.key.name.clone());
        }
    }
    let deferred_keys: BTreeSet<InventoryEntry> = desired
        .iter()
        .filter(|d| {
            !resolved.contains_key(&key_of(d))
                || d.key
                    .namespace
                    .as_ref()
                    .is_some_and(|n| new_namespaces.contains(n))
        })
        .map(|d| d.key.clone())
        .collect();
    let deferred = |d: &Desired| deferred_keys.contains(&d.key);

    // 1. Validate every object that can be validated now. Nothing is applied on failure.
    let now_items: Vec<(&Desired, &Resolved)> = desired
        .iter()
        .filter(|d| !deferred(d))
        .map(|d| (d, &resolved[&key_of(d)]))
        .collect();
    let phase = std::time::Instant::now();
    let checked = ssa::dry_run(input.client, &now_items, force, input.concurrency).await;
    tracing::debug!(
        objects = now_items.len(),
        ms = phase.elapsed().as_millis() as u64,
        "validated (server-side dry-run)"
    );
    let errors: Vec<String> = checked
        .iter()
        .filter_map(|r| r.as_ref().err().cloned())
        .collect();
    if !errors.is_empty() {
        return Err(SyncError::Validation(format!(
            "{} of {} objects failed validation, nothing was applied: {}",
            errors.len(),
            desired.len(),
            join_errors(errors)
        )));
    }
    guards::refuse_foreign(app, now_items.iter().map(|(d, _)| *d).zip(&checked))
        .map_err(SyncError::OwnershipConflict)?;
    let mut changes: HashMap<InventoryEntry, Change> = now_items
        .iter()
        .zip(checked)
        .map(|((d, _), c)| {
            (
                d.key.clone(),
                c.map(|c| c.change).unwrap_or(Change::Configured),
            )
        })
        .collect();

    // Before the first write: every object this sync may create is in the inventory, so
    // a crash from here on leaves nothing a later prune cannot see.
    if let (Some(recorder), Some(planned)) = (
        input.record_planned,
        guards::planned_inventory(&previous, &desired),
    ) {
        recorder
            .record(planned)
            .await
            .map_err(|e| SyncError::Apply(format!("cannot record the planned inventory: {e}")))?;
    }

    let mut outcome = SyncOutcome::default();
    let mut apply_errors = vec![];

    // 2. Stage 0: CRDs and Namespaces, applied and awaited.
    let stage0: Vec<(&Desired, &Resolved)> = desired
        .iter()
        .filter(|d| crate::apply::order::stage(&d.key.group, &d.key.kind) == 0 && !deferred(d))
        .filter(|d| changes.get(&d.key) != Some(&Change::Unchanged))
        .map(|d| (d, &resolved[&key_of(d)]))
        .collect();
    for ((d, _), r) in stage0
        .iter()
        .zip(ssa::apply(input.client, &stage0, force, input.concurrency).await)
    {
        match r {
            Ok(_) => {
                outcome.applied.insert(d.key.clone());
            }
            Err(e) => apply_errors.push(e),
        }
    }
    if !apply_errors.is_empty() {
        return Err(SyncError::Apply(join_errors(apply_errors)));
    }
    let new_crds: Vec<String> = stage0
        .iter()
        .filter(|(d, _)| d.key.kind == "CustomResourceDefinition")
        .map(|(d, _)| d.key.name.clone())
        .collect();
    if !new_crds.is_empty() {
        wait_crds_established(input.client, &new_crds).await;
        for (d, _) in &stage0 {
            if let Some(g) = d.object["spec"]["group"].as_str() {
                input.discovery.invalidate(g);
            }
        }
    }

    // 3. Deferred objects: resolve and validate now.
    let deferred_list: Vec<&Desired> = desired.iter().filter(|d| deferred(d)).collect();
    for d in &deferred_list {
        let k = key_of(d);
        if let std::collections::hash_map::Entry::Vacant(slot) = resolved.entry(k.clone()) {
            match resolve_new_kind(input, &k, !new_crds.is_empty()).await? {
                Some(r) => {
                    slot.insert(r);
                }
                None => {
                    return Err(SyncError::Validation(format!(
                        "{}: the API server has no kind {} in {}/{}",
                        describe(&d.key),
                        k.2,
                        k.0,
                        k.1
                    )));
                }
            }
        }
    }
    let later_items: Vec<(&Desired, &Resolved)> = deferred_list
        .iter()
        .map(|d| (*d, &resolved[&key_of(d)]))
        .collect();
    let later_checked = ssa::dry_run(input.client, &later_items, force, input.concurrency).await;
    let errors: Vec<String> = later_checked
        .iter()
        .filter_map(|r| r.as_ref().err().cloned())
        .collect();
    if !errors.is_empty() {
        return Err(SyncError::Validation(format!(
            "{} objects failed validation: {}",
            errors.len(),
            join_errors(errors)
        )));
    }
    guards::refuse_foreign(app, later_items.iter().map(|(d, _)| *d).zip(&later_checked))
        .map_err(SyncError::OwnershipConflict)?;
    for ((d, _), c) in later_items.iter().zip(later_checked) {
        changes.insert(
            d.key.clone(),
            c.map(|c| c.change).unwrap_or(Change::Configured),
        );
    }

    // 4. Everything else that changes, in order, concurrently within each rank; held
    // objects (validated above) stay as they are.
    let held = |d: &Desired| input.hold.is_some_and(|h| h(d));
    outcome.held = desired
        .iter()
        .filter(|d| held(d))
        .map(|d| d.key.clone())
        .collect();
    let rest: Vec<(&Desired, &Resolved)> = desired
        .iter()
        .filter(|d| crate::apply::order::stage(&d.key.group, &d.key.kind) != 0 || deferred(d))
        .filter(|d| changes.get(&d.key) != Some(&Change::Unchanged) && !held(d))
        .map(|d| (d, &resolved[&key_of(d)]))
        .collect();
    let mut by_rank: Vec<Vec<(&Desired, &Resolved)>> = vec![vec![]; crate::apply::order::RANKS];
    for item in rest {
        let rank = crate::apply::order::rank(&item.0.key.group, &item.0.key.kind, item.0.namespaced)
            as usize;
        by_rank[rank.min(crate::apply::order::RANKS - 1)].push(item);
    }
    for (rank, group) in by_rank.iter().enumerate().filter(|(_, g)| !g.is_empty()) {
        let phase = std::time::Instant::now();
        let results = ssa::apply(input.client, group, force, input.concurrency).await;
        tracing::debug!(
            rank,
            objects = group.len(),
            ms = phase.elapsed().as_millis() as u64,
            "applied rank"
        );
        for ((d, _), r) in group.iter().zip(results) {
            match r {
                Ok(_) => {
                    outcome.applied.insert(d.key.clone());
                }
                Err(e) => apply_errors.push(e),
            }
        }
    }
    for (key, change) in &changes {
        let applied = outcome.applied.contains(key);
        match change {
            Change::Created if applied => outcome.created += 1,
            Change::Configured if applied => outcome.configured += 1,
            Change::Unchanged => outcome.unchanged += 1,
            _ => {}
        }
    }
    let desired_keys: Vec<InventoryEntry> = desired.iter().map(|d| d.key.clone()).collect();
    if !apply_errors.is_empty() {
        return Err(SyncError::Apply(join_errors(apply_errors)));
    }

    tracing::debug!(
        applied = outcome.applied.len(),
        ms = started.elapsed().as_millis() as u64,
        "applied"
    );

    // 5. Prune what the previous sync applied and this one does not render.
    let mut inventory_entries = desired_keys.clone();
    if app.spec.prune {
        let stale = inventory::stale(&previous, &desired_keys);
        let result = prune::prune(input.client, input.discovery, &stale, &app_label(app)).await;
        outcome.pruned = result.deleted.len() as u32;
        for (entry, msg) in result.failed {
            inventory_entries.push(entry);
            outcome.prune_messages.push(msg);
            outcome.prune_failed = true;
        }
        for (_, msg) in result.skipped {
            outcome.prune_messages.push(msg);
        }
    }
    inventory_entries.sort();
    inventory_entries.dedup();
    outcome.inventory = inventory_entries;
    outcome.desired = desired;
    Ok(outcome)
}

/// Aggregated health of the inventory: objects whose kinds have health checks are read with
/// one LIST per kind and namespace.
pub async fn assess_health(
    client: &Client,
    discovery: &Discovery,
    inventory: &[InventoryEntry],
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
        .filter(|e| health::has_check(&e.group, &e.kind))
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
        let Ok(Some(r)) = discovery.resolve(client, &group, &version, &kind).await else {
            continue;
        };
        let Ok(list) = ssa::api_for(client, &r, ns.as_deref())
            .list(&kube::api::ListParams::default())
            .await
        else {
            worst = (Health::Unknown, format!("cannot list {kind}"));
            continue;
        };
        let by_name: HashMap<String, Value> = list
            .items
            .into_iter()
            .map(|o| {
                (
                    o.metadata.name.clone().unwrap_or_default(),
                    serde_json::to_value(o).unwrap_or(Value::Null),
                )
            })
            .collect();
        for entry in entries {
            let verdict = match by_name.get(&entry.name) {
                Some(live) => health::assess(&entry.group, &entry.kind, live),
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
