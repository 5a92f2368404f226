//! The reasons of every kind's conditions and Events, in one place: logic that branches on
//! a reason (the reconciler's own, a Notifier's reports) and the code that writes it name
//! the same constant. The Application's are at the top; the other kinds' in their modules
//! below (a target the controller cannot act as: `cluster::reason`).

// A sync that stopped, one per stage.
pub const ARTIFACT_FAILED: &str = "ArtifactFailed";
pub const RENDER_FAILED: &str = "RenderFailed";
/// A SOPS-encrypted manifest could not be decrypted (or no keys were given).
pub const DECRYPTION_FAILED: &str = "DecryptionFailed";
pub const VALIDATION_FAILED: &str = "ValidationFailed";
pub const APPLY_FAILED: &str = "ApplyFailed";
/// A Helm or Argo CD hook failed or did not finish in time (pre hooks: nothing applied).
pub const HOOK_FAILED: &str = "HookFailed";
/// The chart of `spec.render.helm.chart` could not be fetched or unpacked.
pub const CHART_FAILED: &str = "ChartFailed";
/// The chart of `spec.render.helm.chart` is not signed as its `verify` requires.
pub const CHART_VERIFICATION_FAILED: &str = "ChartVerificationFailed";
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

/// A source's and an image policy's failures, named the same for both kinds.
pub mod fetch {
    pub const URL_REFUSED: &str = "URLRefused";
    pub const AUTHENTICATION_FAILED: &str = "AuthenticationFailed";
    pub const TIMEOUT: &str = "Timeout";
    pub const SECRET_INVALID: &str = "SecretInvalid";
}

/// A GitRepository's Ready condition.
pub mod git_repository {
    pub use super::fetch::{AUTHENTICATION_FAILED, SECRET_INVALID, TIMEOUT, URL_REFUSED};
    pub const SUCCEEDED: &str = "Succeeded";
    pub const SUSPENDED: &str = "Suspended";
    pub const REF_NOT_FOUND: &str = "RefNotFound";
    pub const FETCH_FAILED: &str = "FetchFailed";
    /// One source's fetch waited for a slot longer than its timeout.
    pub const FETCH_STALLED: &str = "FetchStalled";
    pub const HOST_KEY_REJECTED: &str = "HostKeyRejected";
    /// A link out of the tree, a path that is not safe, a tree over the limits.
    pub const UNSAFE_CONTENT: &str = "UnsafeContent";
    pub const STORAGE_FAILED: &str = "StorageFailed";
    /// A commit that `spec.verify` requires signed is not signed by a trusted key.
    pub const VERIFICATION_FAILED: &str = "VerificationFailed";
}

/// An ImagePolicy's Ready condition.
pub mod image_policy {
    pub use super::fetch::{AUTHENTICATION_FAILED, SECRET_INVALID, TIMEOUT, URL_REFUSED};
    pub const SUCCEEDED: &str = "Succeeded";
    pub const SUSPENDED: &str = "Suspended";
    pub const INVALID_IMAGE: &str = "InvalidImage";
    pub const INVALID_POLICY: &str = "InvalidPolicy";
    pub const IMAGE_NOT_FOUND: &str = "ImageNotFound";
    pub const RATE_LIMITED: &str = "RateLimited";
    pub const REGISTRY_UNAVAILABLE: &str = "RegistryUnavailable";
    pub const TOO_MANY_TAGS: &str = "TooManyTags";
    pub const CHART_REPOSITORY_FAILED: &str = "ChartRepositoryFailed";
    pub const NO_MATCHING_TAG: &str = "NoMatchingTag";
    /// With `spec.verify`: none of the newest tags has a valid signature.
    pub const VERIFICATION_FAILED: &str = "VerificationFailed";
}

/// A Receiver's Ready condition.
pub mod receiver {
    pub use super::fetch::SECRET_INVALID;
    pub const READY: &str = "Ready";
    /// The controller runs without `--receiver-addr`.
    pub const SERVER_DISABLED: &str = "ServerDisabled";
}

/// A Notifier's Ready condition.
pub mod notifier {
    pub use super::fetch::SECRET_INVALID;
    pub const SUCCEEDED: &str = "Succeeded";
    pub const SUSPENDED: &str = "Suspended";
    /// A forge's repository cannot be derived from the Application's source.
    pub const REPOSITORY_UNKNOWN: &str = "RepositoryUnknown";
    /// The address is one Gantry never sends to (metadata, the Service network, plain http).
    pub const ADDRESS_REFUSED: &str = "AddressRefused";
    /// The provider answered an error or did not answer.
    pub const DELIVERY_FAILED: &str = "DeliveryFailed";
    /// More reports were owed than a Notifier keeps; the oldest were dropped.
    pub const DROPPING: &str = "Dropping";
}
