//! The reasons of an Application's conditions and Events, in one place: logic that
//! branches on a reason (the reconciler's own, a Notifier's reports) and the code that
//! writes it name the same constant.

// A sync that stopped, one per stage.
pub const ARTIFACT_FAILED: &str = "ArtifactFailed";
pub const RENDER_FAILED: &str = "RenderFailed";
pub const VALIDATION_FAILED: &str = "ValidationFailed";
pub const APPLY_FAILED: &str = "ApplyFailed";
/// A Helm or Argo CD hook failed or did not finish in time (pre hooks: nothing applied).
pub const HOOK_FAILED: &str = "HookFailed";
/// The chart of `spec.render.helm.chart` could not be fetched or unpacked.
pub const CHART_FAILED: &str = "ChartFailed";
/// A sync wave was not healthy in time; the waves after it were not applied.
pub const WAVE_NOT_HEALTHY: &str = "WaveNotHealthy";
pub const EMPTY_RENDER: &str = "EmptyRender";
pub const OWNERSHIP_CONFLICT: &str = "OwnershipConflict";

// A sync's outcome.
pub const SUCCEEDED: &str = "Succeeded";
pub const SYNCED: &str = "Synced";
pub const PRUNE_FAILED: &str = "PruneFailed";
pub const PRUNED: &str = "Pruned";

// Steps that stop before the artifact.
pub const SUSPENDED: &str = "Suspended";
pub const DEPENDENCY_NOT_READY: &str = "DependencyNotReady";
pub const MANUAL_SYNC_REQUIRED: &str = "ManualSyncRequired";
// A target (cluster, identity) the controller cannot act as: see the cluster module.

// Health (HEALTH_CHECK_FAILED is also a reason of Ready).
pub const HEALTHY: &str = "Healthy";
pub const HEALTH_CHECK_FAILED: &str = "HealthCheckFailed";
pub const PROGRESSING: &str = "Progressing";
/// Health is not known (no signal from an object, or a health rule that cannot be
/// evaluated); never turned into a failure by waiting.
pub const HEALTH_UNKNOWN: &str = "HealthUnknown";
/// A `spec.healthChecks` rule does not compile (Ready=False, nothing applied).
pub const INVALID_HEALTH_CHECK: &str = "InvalidHealthCheck";
pub const ANALYSING: &str = "Analysing";

// Drift.
pub const DRIFT_HEALED: &str = "DriftHealed";
pub const DRIFT_HEAL_FAILED: &str = "DriftHealFailed";
pub const DRIFT_CLEARED: &str = "DriftCleared";
pub const NO_DRIFT: &str = "NoDrift";
pub const DRIFT_DETECTED: &str = "DriftDetected";
/// Drifted=True: the last sync of Git's revision failed, so the cluster does not have it.
pub const REVISION_NOT_APPLIED: &str = "RevisionNotApplied";

// Rollouts.
pub const ROLLOUT_ABORTED: &str = "RolloutAborted";
pub const CANARY_BLOCKED: &str = "CanaryBlocked";
pub const CANARY_STARTED: &str = "CanaryStarted";
pub const ROLLOUT_PAUSED: &str = "RolloutPaused";
pub const ROLLOUT_PROGRESSING: &str = "RolloutProgressing";
pub const ROLLOUT_PROMOTING: &str = "RolloutPromoting";
pub const ROLLOUT_PROMOTED: &str = "RolloutPromoted";
pub const PROMOTED: &str = "Promoted";
