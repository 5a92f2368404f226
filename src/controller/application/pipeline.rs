//! The sync pipeline of one Application revision:
//! render → normalize → apply the set in stages (apply/set.rs) → prune.
//! Each failing stage has its own reason; nothing of the set is applied when validation fails.

use std::collections::{BTreeSet, HashMap};
use std::path::Path;
use std::time::Duration;

use super::guards::{self, RecordPlanned};
use super::reasons;
use crate::api::application::{Application, ChartStatus, InventoryEntry};
use crate::apply::normalize::{self, Desired, NormalizeError};
use crate::apply::set::{BeforeWrite, SetError, SetOptions};
use crate::apply::{hooks, inventory, prepare};
use crate::cluster::Target;
use crate::health::rules::Rules;
use crate::render::{self, Capabilities, Limits, RenderRequest};
use crate::source::oci_chart;

/// Why a sync stopped, with the condition reason for each stage.
#[derive(Debug, thiserror::Error)]
pub enum SyncError {
    #[error("{0}")]
    Artifact(String),
    #[error("{0}")]
    Render(#[from] render::RenderError),
    #[error("{0}")]
    Normalize(#[from] NormalizeError),
    #[error("{0}")]
    Set(#[from] SetError),
    #[error(
        "the render is empty while {0} objects are applied; refusing to prune everything (set spec.allowEmpty to allow it)"
    )]
    EmptyRender(usize),
    #[error("Kubernetes API: {0}")]
    Kube(#[from] kube::Error),
    #[error("{0}")]
    Hook(#[from] hooks::HookError),
    #[error("{0}")]
    Chart(#[from] oci_chart::ChartError),
    #[error("post hooks not run: the set is not healthy: {0}")]
    PostHooksHeld(String),
}

impl SyncError {
    pub fn reason(&self) -> &'static str {
        match self {
            SyncError::Artifact(_) => reasons::ARTIFACT_FAILED,
            SyncError::Render(render::RenderError::Decryption { .. }) => reasons::DECRYPTION_FAILED,
            SyncError::Render(_) => reasons::RENDER_FAILED,
            SyncError::Normalize(_) => reasons::VALIDATION_FAILED,
            SyncError::Set(SetError::Validation { .. } | SetError::UnknownKind { .. }) => {
                reasons::VALIDATION_FAILED
            }
            SyncError::Set(SetError::Ownership { .. }) => reasons::OWNERSHIP_CONFLICT,
            SyncError::Set(SetError::WaveNotHealthy { .. }) => reasons::WAVE_NOT_HEALTHY,
            SyncError::Set(SetError::BeforeWrite(_) | SetError::Apply(_) | SetError::Kube(_)) => {
                reasons::APPLY_FAILED
            }
            SyncError::EmptyRender(_) => reasons::EMPTY_RENDER,
            SyncError::Kube(_) => reasons::APPLY_FAILED,
            SyncError::Hook(e) | SyncError::Set(SetError::Hook(e)) if e.ownership_conflict => {
                reasons::OWNERSHIP_CONFLICT
            }
            SyncError::Hook(_) | SyncError::Set(SetError::Hook(_)) => reasons::HOOK_FAILED,
            SyncError::Chart(oci_chart::ChartError::Unverified { .. }) => {
                reasons::CHART_VERIFICATION_FAILED
            }
            SyncError::Chart(_) => reasons::CHART_FAILED,
            SyncError::PostHooksHeld(_) => reasons::HOOK_FAILED,
        }
    }

    /// A failure of the API connection rather than of the revision: retried soon.
    pub fn is_transient(&self) -> bool {
        match self {
            SyncError::Kube(_) | SyncError::Set(SetError::Kube(_)) => true,
            SyncError::Chart(e) => e.is_transient(),
            _ => false,
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
    /// The digest of the hooks this sync ran (see [`hooks_digest`]).
    pub hooks_digest: u64,
    /// Hand edits the revision overwrote: `Kind ns/name (the conflict)`.
    pub overwritten: Vec<String>,
    /// The remote chart this sync rendered, if any.
    pub chart: Option<ChartStatus>,
}

/// The fields and manager of a server-side apply conflict, without the API server's
/// preamble ("Apply failed with 1 conflict: conflict with \"kubectl-set\" …").
fn overwritten_fields(message: &str) -> &str {
    message
        .split_once(": ")
        .filter(|(head, _)| head.starts_with("Apply failed with"))
        .map(|(_, rest)| rest)
        .unwrap_or(message)
        .trim()
}

/// A digest of a render's hooks (their objects and phases), so that a new revision whose
/// objects and hooks are both unchanged runs no hook again.
pub fn hooks_digest(hooks: &[hooks::Hook]) -> u64 {
    use std::hash::{Hash, Hasher};
    let mut h = std::collections::hash_map::DefaultHasher::new();
    for hook in hooks {
        (hook.phase as u8).hash(&mut h);
        hook.object.to_string().hash(&mut h);
    }
    h.finish()
}

pub struct SyncInput<'a> {
    /// The Application's cluster and identity: every request of the sync goes through it.
    pub target: &'a Target,
    /// The client of the Application's own cluster, for the Secrets it references (they
    /// live beside the Application, whichever cluster it deploys to).
    pub local: &'a kube::Client,
    pub app: &'a Application,
    pub artifact_root: &'a Path,
    /// The artifact's store and digest: the tree is verified against it before it is
    /// rendered.
    pub artifact_check: Option<(&'a crate::source::store::ArtifactStore, &'a str)>,
    /// Objects validated but not applied (stable Deployments whose new template runs as a
    /// canary first).
    pub hold: Option<&'a (dyn Fn(&Desired) -> bool + Sync)>,
    /// Records an inventory in the Application's status before the first write that may
    /// create objects not in the previous inventory (see [`sync`]).
    pub record_planned: Option<&'a dyn RecordPlanned>,
    /// The sync's time limit (`spec.timeout`, capped by `--max-timeout`).
    pub timeout: Duration,
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

/// The objects of the set, rendered and normalized (hooks left out: they are never part
/// of it).
pub async fn desired_set(input: &SyncInput<'_>) -> Result<Vec<Desired>, SyncError> {
    Ok(desired_and_hooks(input).await?.0)
}

/// Why a revision could not be rendered from a Git cache.
#[derive(Debug, thiserror::Error)]
pub enum RenderCommitError {
    #[error("cannot create a scratch directory: {0}")]
    Scratch(std::io::Error),
    #[error("cannot check out {commit} from the Git cache: {error}")]
    Checkout {
        commit: String,
        error: crate::source::artifact::ArtifactError,
    },
    #[error("cannot render {commit}: {error}")]
    Render { commit: String, error: SyncError },
}

/// A commit in a Git cache, and the source's `ignore` patterns.
pub struct CachedCommit<'a> {
    pub cache: &'a Path,
    pub commit: &'a str,
    pub ignore: &'a [String],
}

/// `at`, checked out into a scratch directory under `scratch_in` (removed afterwards) and
/// rendered exactly as a sync renders it: the set and its hooks. The one "render revision
/// X" of the controller's re-apply after an abort and of `gantry diff`.
pub async fn render_commit(
    at: CachedCommit<'_>,
    scratch_in: &Path,
    target: &Target,
    local: &kube::Client,
    app: &Application,
    timeout: Duration,
) -> Result<Rendered, RenderCommitError> {
    let commit = at.commit.to_string();
    let scratch = tempfile::tempdir_in(scratch_in).map_err(RenderCommitError::Scratch)?;
    let tree = scratch.path().join("tree");
    crate::source::artifact::checkout_commit(at.cache, at.commit, &tree, at.ignore)
        .await
        .map_err(|error| RenderCommitError::Checkout {
            commit: commit.clone(),
            error,
        })?;
    let input = SyncInput {
        target,
        local,
        app,
        artifact_root: &tree,
        artifact_check: None,
        hold: None,
        record_planned: None,
        timeout,
    };
    desired_and_hooks(&input)
        .await
        .map_err(|error| RenderCommitError::Render { commit, error })
}

/// The set and the hooks to run around it.
pub async fn desired_and_hooks(input: &SyncInput<'_>) -> Result<Rendered, SyncError> {
    let app = input.app;
    let name = app.metadata.name.clone().unwrap_or_default();
    let ns = default_namespace(app);
    // Helm renders against the target cluster's version and API versions.
    let capabilities = if Capabilities::wanted(
        &input.artifact_root.join(&app.spec.path),
        app.spec.render.as_ref(),
    ) {
        Some(
            input
                .target
                .applier
                .capabilities()
                .await
                .map_err(SyncError::Kube)?,
        )
    } else {
        None
    };
    let mut repository_auth = vec![];
    for c in app
        .spec
        .render
        .as_ref()
        .and_then(|r| r.helm.as_ref())
        .map(|h| h.repository_credentials.as_slice())
        .unwrap_or_default()
    {
        let ns = app.metadata.namespace.as_deref().unwrap_or("default");
        let auth = crate::controller::secrets::repository_auth(input.local, ns, &c.secret_ref.name)
            .await
            .map_err(oci_chart::ChartError::Secret)?;
        repository_auth.push((c.url.clone(), auth));
    }
    let (chart, chart_status) = match render::oci_chart(app.spec.render.as_ref()) {
        Some(spec) => {
            let (fetched, status) = super::chart::fetch(input.local, app, spec).await?;
            (Some(fetched), Some(status))
        }
        None => (None, None),
    };
    let decryptor = match &app.spec.decryption {
        Some(d) => {
            let app_ns = app.metadata.namespace.as_deref().unwrap_or("default");
            let secret = format!("{app_ns}/{}", d.secret_ref.name);
            let data = crate::controller::secrets::read(input.local, app_ns, &d.secret_ref.name)
                .await
                .map_err(|why| render::RenderError::Decryption {
                    source_name: "spec.decryption".into(),
                    message: why,
                })?;
            Some(
                render::sops::Decryptor::from_secret_data(&secret, &data, Duration::from_secs(30))
                    .map_err(|why| render::RenderError::Decryption {
                        source_name: "spec.decryption".into(),
                        message: why,
                    })?,
            )
        }
        None => None,
    };
    let req = RenderRequest {
        decryptor: decryptor.as_ref(),
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
        capabilities: capabilities.as_deref(),
        chart: chart.as_ref(),
        repository_auth: &repository_auth,
    };
    if let Some((store, digest)) = input.artifact_check {
        let scope = render::plain_scope(
            input.artifact_root,
            &app.spec.path,
            app.spec.render.as_ref(),
        );
        guards::verify_artifact(store, input.artifact_root, digest, scope)
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
    // Helm's install hooks run when the Application has applied nothing yet.
    let installing = app
        .status
        .as_ref()
        .is_none_or(|s| s.inventory.is_empty() && s.last_applied_revision.is_none());
    // Every kind the render names (hooks too) is resolved first, so the split and the
    // normalization are the CLI's own (apply/prepare.rs).
    let mut gvks: BTreeSet<(String, String, String)> = BTreeSet::new();
    for o in &objects {
        let (g, v) = normalize::split_api_version(o["apiVersion"].as_str().unwrap_or_default())?;
        gvks.insert((g, v, o["kind"].as_str().unwrap_or_default().to_string()));
    }
    let mut namespaced = HashMap::new();
    for (g, v, k) in gvks {
        if let Some(r) = input.target.applier.resolve(&g, &v, &k).await? {
            namespaced.insert((g, v, k), r.namespaced);
        }
    }
    let prepared = prepare::prepare(objects, installing, &ns, &app_label(app), |g, v, k| {
        namespaced
            .get(&(g.to_string(), v.to_string(), k.to_string()))
            .copied()
    })?;
    if prepared.skipped > 0 {
        tracing::debug!(
            skipped = prepared.skipped,
            "hooks not applied (test, delete, rollback, Skip)"
        );
    }
    Ok((prepared.desired, prepared.hooks, chart_status))
}

/// The planned inventory, written by a [`RecordPlanned`] before the set's first write.
struct Planned<'a> {
    recorder: &'a dyn RecordPlanned,
    entries: Vec<InventoryEntry>,
}

impl BeforeWrite for Planned<'_> {
    fn before_write(&self) -> futures::future::BoxFuture<'_, Result<(), String>> {
        self.recorder.record(self.entries.clone())
    }
}

/// A render of the artifact: the set, the hooks to run around it, and the remote chart it
/// used (if any).
pub type Rendered = (Vec<Desired>, Vec<hooks::Hook>, Option<ChartStatus>);

/// Runs the whole pipeline for the artifact at `input.artifact_root`; `rendered` is its
/// render when the caller made it already.
pub async fn sync(
    input: &SyncInput<'_>,
    rendered: Option<Rendered>,
) -> Result<SyncOutcome, SyncError> {
    let app = input.app;
    let previous = app
        .status
        .as_ref()
        .map(|s| s.inventory.clone())
        .unwrap_or_default();
    let started = std::time::Instant::now();
    let (desired, hooks, chart) = match rendered {
        Some(r) => r,
        None => desired_and_hooks(input).await?,
    };
    let result = sync_rendered(input, &previous, started, desired, &hooks)
        .await
        .map(|mut outcome| {
            outcome.chart = chart;
            outcome
        });
    if let Err(e) = &result
        && hooks.iter().any(|h| h.phase == hooks::Phase::Fail)
    {
        // Argo CD's SyncFail hooks: run once the sync has failed, best effort (their own
        // failure is logged; the sync's error is what the status reports).
        let timeout = input.timeout;
        if let Err(hook_error) = input
            .target
            .applier
            .run_hooks(
                &hooks,
                hooks::Phase::Fail,
                None,
                &default_namespace(app),
                &app_label(app),
                timeout,
            )
            .await
        {
            tracing::warn!(error = %hook_error, sync_error = %e, "SyncFail hook failed");
        }
    }
    result
}

/// The sync after the render: pre hooks, the staged apply, prune, post hooks.
async fn sync_rendered(
    input: &SyncInput<'_>,
    previous: &[InventoryEntry],
    started: std::time::Instant,
    desired: Vec<Desired>,
    hooks: &[hooks::Hook],
) -> Result<SyncOutcome, SyncError> {
    let app = input.app;
    tracing::debug!(
        objects = desired.len(),
        ms = started.elapsed().as_millis() as u64,
        "rendered"
    );
    if desired.is_empty() && !previous.is_empty() && !app.spec.allow_empty && app.spec.prune {
        return Err(SyncError::EmptyRender(previous.len()));
    }

    // Before the first write: every object this sync may create is in the inventory, so
    // a crash from here on leaves nothing a later prune cannot see.
    let planned = input.record_planned.and_then(|recorder| {
        guards::planned_inventory(previous, &desired).map(|entries| Planned { recorder, entries })
    });
    let owner = app_label(app);
    let hook_timeout = input.timeout;
    let namespace = default_namespace(app);
    let gate = super::health_gate::HealthGate {
        target: input.target,
        rules: Rules::compile(&app.spec.health_checks).unwrap_or_default(),
        timeout: hook_timeout,
        hooks,
        namespace: &namespace,
        owner: &owner,
        progress: input.record_planned,
    };
    // Pre hooks run (and are awaited) before anything of the set is written; hooks are not
    // in the inventory, so the planned one is recorded by the set's first write as before.
    let pre = hooks
        .iter()
        .filter(|h| h.phase == hooks::Phase::Pre)
        .count();
    if pre > 0 {
        gate.report(format!("running {pre} pre hooks")).await;
    }
    input
        .target
        .applier
        .run_hooks(
            hooks,
            hooks::Phase::Pre,
            None,
            &namespace,
            &owner,
            hook_timeout,
        )
        .await?;
    let set = input
        .target
        .applier
        .apply_set(
            &desired,
            &SetOptions {
                force: force_conflicts(app),
                take_ownership: app.spec.take_ownership,
                owner: &owner,
                hold: input.hold,
                before_write: planned.as_ref().map(|p| p as &dyn BeforeWrite),
                recreate_on_immutable: app.spec.recreate_on_immutable,
                wave_gate: Some(&gate),
                // A sync applies Git's revision (new, or asked for): it is the team's
                // decision and wins over hand edits, which it reports. Between revisions,
                // audit mode's drift checks still only report them.
                overwrite_hand_edits: true,
            },
        )
        .await?;
    let counts = set.counts();
    tracing::debug!(
        applied = set.applied.len(),
        ms = started.elapsed().as_millis() as u64,
        "applied"
    );
    let mut outcome = SyncOutcome {
        created: counts.created,
        configured: counts.configured,
        unchanged: counts.unchanged,
        applied: set.applied,
        held: set.held,
        overwritten: set
            .overwritten
            .iter()
            .map(|e| format!("{} ({})", e.object, overwritten_fields(&e.message)))
            .collect(),
        ..SyncOutcome::default()
    };

    // Prune what the previous sync applied and this one does not render.
    let desired_keys: Vec<InventoryEntry> = desired.iter().map(|d| d.key.clone()).collect();
    let mut inventory_entries = desired_keys.clone();
    if app.spec.prune {
        let stale = inventory::stale(previous, &desired_keys);
        let result = input.target.applier.prune(&stale, &owner).await;
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
    // Post hooks run once the set is healthy (Helm with --wait, Argo CD's PostSync).
    let post = hooks
        .iter()
        .filter(|h| h.phase == hooks::Phase::Post)
        .count();
    if post > 0 {
        gate.report(format!(
            "waiting for the set to be healthy, then running {post} post hooks"
        ))
        .await;
        let settled: Vec<InventoryEntry> = desired_keys
            .iter()
            .filter(|k| !outcome.held.contains(k))
            .cloned()
            .collect();
        gate.healthy(&settled)
            .await
            .map_err(SyncError::PostHooksHeld)?;
    }
    input
        .target
        .applier
        .run_hooks(
            hooks,
            hooks::Phase::Post,
            None,
            &namespace,
            &owner,
            hook_timeout,
        )
        .await?;
    inventory_entries.sort();
    inventory_entries.dedup();
    outcome.inventory = inventory_entries;
    outcome.desired = desired;
    outcome.hooks_digest = hooks_digest(hooks);
    Ok(outcome)
}
