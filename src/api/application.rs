//! `Application`: what to deploy from a source, and how.

use std::collections::BTreeMap;

use k8s_openapi::apimachinery::pkg::apis::meta::v1::Time;
use kube::{CustomResource, KubeSchema};
use schemars::JsonSchema;
use serde::{Deserialize, Serialize};

use super::conditions::Condition;
use super::duration::GoDuration;
use super::refs::LocalRef;
use super::rollout::{RolloutSpec, RolloutStatus};

/// Deploys the manifests at a path of a source into the cluster and keeps them there.
#[derive(CustomResource, KubeSchema, Clone, Debug, PartialEq, Serialize, Deserialize)]
#[kube(
    group = "gantry.dev",
    version = "v1alpha1",
    kind = "Application",
    namespaced,
    status = "ApplicationStatus",
    shortname = "gapp",
    category = "gantry",
    doc = "Deploys the manifests at a path of a source into the cluster and keeps them there.",
    printcolumn = r#"{"name": "Source", "type": "string", "jsonPath": ".spec.sourceRef.name"}"#,
    printcolumn = r#"{"name": "Cluster", "type": "string", "jsonPath": ".status.cluster"}"#,
    printcolumn = r#"{"name": "Revision", "type": "string", "jsonPath": ".status.runningRevision"}"#,
    printcolumn = r#"{"name": "Ready", "type": "string", "jsonPath": ".status.conditions[?(@.type==\"Ready\")].status"}"#,
    printcolumn = r#"{"name": "Healthy", "type": "string", "jsonPath": ".status.conditions[?(@.type==\"Healthy\")].status"}"#,
    printcolumn = r#"{"name": "Drifted", "type": "string", "jsonPath": ".status.conditions[?(@.type==\"Drifted\")].status"}"#,
    printcolumn = r#"{"name": "Status", "type": "string", "jsonPath": ".status.conditions[?(@.type==\"Ready\")].message", "priority": 1}"#,
    printcolumn = r#"{"name": "Age", "type": "date", "jsonPath": ".metadata.creationTimestamp"}"#
)]
#[serde(rename_all = "camelCase")]
pub struct ApplicationSpec {
    /// The source whose artifact holds the manifests.
    pub source_ref: SourceRef,

    /// Directory inside the source, relative to its root.
    #[serde(default = "default_path")]
    #[x_kube(validation = Rule::new("!self.startsWith('/') && !self.matches('(^|/)\\\\.\\\\.(/|$)') && !self.contains('%') && !self.contains('\\\\')").message("path must be relative to the source root and must not contain '..', '%' or backslashes"))]
    pub path: String,

    /// How the manifests are rendered; detected from the files when omitted.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub render: Option<RenderSpec>,

    /// Namespace given to namespaced objects that do not name one.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(length(max = 63))]
    pub target_namespace: Option<String>,

    /// Delete objects that were applied before and are no longer rendered.
    #[serde(default = "default_true")]
    pub prune: bool,

    /// Allow a render with no objects to prune everything (refused otherwise).
    #[serde(default)]
    pub allow_empty: bool,

    /// Take over fields owned by other field managers when applying.
    #[serde(default)]
    pub force: bool,

    /// Apply over objects that carry another Application's ownership label (they become
    /// this Application's). Without it such an object stops the sync with
    /// `OwnershipConflict`, naming both Applications, and nothing is applied.
    #[serde(default)]
    pub take_ownership: bool,

    /// Delete and create again an object whose change the API server refuses because an
    /// immutable field changed (a Job's template, a Service's clusterIP, a Deployment's
    /// selector), instead of stopping the sync. Per object: the annotation
    /// `gantry.dev/recreate-on-immutable: "true"`. Only objects this Application owns are
    /// recreated.
    #[serde(default)]
    pub recreate_on_immutable: bool,

    /// How often to reconcile even without a new revision (drift safety net).
    /// At least 1s; periodic runs are never closer than the controller's `--min-interval`
    /// (10s by default). Receivers and `gantry sync` act at once.
    #[serde(default = "default_interval")]
    #[x_kube(validation = Rule::new("duration(self) >= duration('1s')").message("interval must be at least 1s (the controller's --min-interval, 10s by default, applies on top)"))]
    pub interval: GoDuration,

    /// Time limit of one sync, hooks and health waits included; at most 1h (the
    /// controller's `--max-timeout` may lower that). Waits do not hold a reconcile slot.
    #[serde(default = "default_timeout")]
    #[x_kube(validation = Rule::new("duration(self) <= duration('1h')").message("timeout must be at most 1h"))]
    pub timeout: GoDuration,

    /// `automatic` applies each new revision; `manual` only on `gantry sync`.
    #[serde(default)]
    pub sync_policy: SyncPolicy,

    /// What to do about changes made to managed objects outside Git.
    #[serde(default)]
    pub drift: DriftSpec,

    /// Applications (same namespace) that must be Ready at their current revision first.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub depends_on: Vec<LocalRef>,

    /// ServiceAccount (same namespace) that every request for the Application impersonates
    /// (dry-run, apply, prune, health and drift reads, canaries, cleanup), on the target
    /// cluster. It must exist there (else Ready=False, ServiceAccountNotFound).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub service_account_name: Option<String>,

    /// Deploy to another cluster through the kubeconfig in a Secret (same namespace). Only
    /// credentials inside the kubeconfig are accepted (token, client certificate and CA
    /// data); exec, auth-provider and file paths are refused (Ready=False,
    /// KubeConfigRefused).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub kube_config: Option<KubeConfigRef>,

    /// Decrypt SOPS-encrypted manifests while rendering, with the age keys of a Secret in
    /// the Application's namespace. Without it, an encrypted manifest stops the sync
    /// (Ready=False, DecryptionFailed) instead of being applied as ciphertext.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub decryption: Option<Decryption>,

    /// Health rules in CEL for kinds whose health Gantry cannot read by itself (custom
    /// resources without `Ready`/`Available`/`Stalled`/`Reconciling` conditions), or to
    /// replace the built-in check of a kind. A rule that does not compile stops the
    /// Application (Ready=False, InvalidHealthCheck) before anything is applied. Each
    /// expression is at most 2,048 bytes, nests at most 24 deep and at most two iterating
    /// macros (`all`, `exists`, `map`, `filter`) deep; an expression that could take more
    /// than 200,000 steps on an object (its size times the object's longest list to the
    /// power of that nesting) is not evaluated and leaves the health Unknown.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    #[schemars(length(max = 32))]
    pub health_checks: Vec<HealthCheck>,

    /// Stops all writes while true.
    #[serde(default)]
    pub suspend: bool,

    /// How workload changes are rolled out.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub rollout: Option<RolloutSpec>,

    /// Write new image tags selected by ImagePolicies back to Git.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub image_automation: Option<ImageAutomation>,
}

/// The health of one kind, as CEL expressions over the live object (its top-level fields
/// `metadata`, `spec`, `status` are the variables). `failed`, then `inProgress`, then
/// `current` are evaluated; the first that is true decides (Degraded, Progressing,
/// Healthy); when none is, the object is progressing. An expression that cannot be
/// evaluated on the object leaves its health Unknown, with the cause.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct HealthCheck {
    /// apiVersion of the kind, e.g. `example.com/v1` (the version is not compared).
    #[schemars(length(min = 1))]
    pub api_version: String,
    #[schemars(length(min = 1))]
    pub kind: String,
    /// True when the object is healthy, e.g. `status.phase == 'Running'`.
    #[schemars(length(min = 1, max = 2048))]
    pub current: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(length(max = 2048))]
    pub in_progress: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(length(max = 2048))]
    pub failed: Option<String>,
}

#[derive(Clone, Debug, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct SourceRef {
    /// Kind of the source.
    #[serde(default)]
    pub kind: SourceKind,
    /// Name of the source in the Application's namespace.
    #[schemars(length(min = 1, max = 253))]
    pub name: String,
}

#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
pub enum SourceKind {
    #[default]
    GitRepository,
}

#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct RenderSpec {
    /// `auto` picks kustomize for `kustomization.yaml`, helm for `Chart.yaml`, else plain files.
    #[serde(default, rename = "type")]
    pub kind: RenderKind,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub helm: Option<HelmRender>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub kustomize: Option<KustomizeRender>,
}

#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "lowercase")]
pub enum RenderKind {
    #[default]
    Auto,
    Plain,
    Kustomize,
    Helm,
}

#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct HelmRender {
    /// Release name; defaults to the Application's name.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub release_name: Option<String>,
    /// Values files inside the source, relative to the chart directory, applied in order.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub values_files: Vec<String>,
    /// Inline values, applied after the files.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(schema_with = "preserve_unknown_object")]
    pub values: Option<serde_json::Value>,
    /// Allow chart dependencies to be fetched from the network (chart repositories and
    /// OCI registries; Gantry fetches them, with the same caps and digest checks as
    /// `chart`).
    #[serde(default)]
    pub allow_network_dependencies: bool,
    /// Credentials for the chart repositories dependencies come from: the entry whose `url`
    /// is the longest prefix of a dependency's repository is used.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub repository_credentials: Vec<RepositoryCredentials>,
    /// A chart from an OCI registry or a Helm chart repository instead of the one at
    /// `path`; `path` then holds only the values files (if any).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub chart: Option<RemoteChart>,
}

/// A Secret for the chart repositories under `url`.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct RepositoryCredentials {
    /// A repository URL, or a prefix of several (`https://charts.example.com/`).
    #[schemars(length(min = 8, max = 1024))]
    pub url: String,
    /// `username` and `password` (basic auth) and/or `ca.crt`, in the Application's
    /// namespace.
    pub secret_ref: super::refs::SecretRef,
}

/// A Helm chart stored in an OCI registry (`url: oci://…`, as `helm push` stores it) or
/// in a Helm chart repository (`repository: https://…` and `name`, an `index.yaml`).
#[derive(KubeSchema, Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
#[x_kube(validation = Rule::new("has(self.url) != has(self.repository)").message("set either url (oci://…) or repository (https://…, with name)"))]
#[x_kube(validation = Rule::new("has(self.repository) == has(self.name)").message("name goes with repository (an OCI url names its chart itself)"))]
#[x_kube(validation = Rule::new("!has(self.verify) || has(self.url)").message("signatures are checked for oci:// charts; a Helm repository's charts carry none cosign can check"))]
#[serde(rename_all = "camelCase")]
pub struct RemoteChart {
    /// `oci://registry/repository/chart`, without a tag.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(length(min = 7, max = 1024))]
    pub url: Option<String>,
    /// A Helm chart repository: the URL its `index.yaml` is under (`https://…`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(length(min = 8, max = 1024))]
    pub repository: Option<String>,
    /// The chart's name in the repository.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(length(min = 1, max = 253))]
    pub name: Option<String>,
    /// An exact version (`1.4.2`) or a semver range (`~1.4`, `>=1.4 <2`, `^1 || ^2`): the
    /// highest version in the range is deployed, and a newer one in the range when it is
    /// published.
    #[schemars(length(min = 1, max = 128))]
    pub version: String,
    /// A Secret in the Application's namespace: for a registry a
    /// `kubernetes.io/dockerconfigjson` one; for a repository `username` and `password`
    /// (basic auth) and/or `ca.crt` (a CA to trust besides the system's).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub secret_ref: Option<super::refs::SecretRef>,
    /// Signatures the chart must carry (an `oci://` chart only): the manifest of the
    /// version to be deployed must be signed by one of the keys, or nothing is applied
    /// (`ChartFailed`, the last applied version stays).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub verify: Option<super::refs::SignatureVerification>,
    /// Allow plain HTTP to a registry or repository that is not on loopback.
    #[serde(default)]
    pub insecure: bool,
}

#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct KustomizeRender {
    /// Allow remote bases (URLs) in kustomizations.
    #[serde(default)]
    pub allow_remote_bases: bool,
}

#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "lowercase")]
pub enum SyncPolicy {
    #[default]
    Automatic,
    Manual,
}

#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct DriftSpec {
    /// `heal` re-applies drifted objects; `audit` only reports them.
    #[serde(default)]
    pub mode: DriftMode,
    /// Differences that are expected and never reported.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub ignore: Vec<DriftIgnore>,
}

#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "lowercase")]
pub enum DriftMode {
    #[default]
    Heal,
    Audit,
}

#[derive(Clone, Debug, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct DriftIgnore {
    /// API group; empty for the core group. Omitted matches every group.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub group: Option<String>,
    /// Kind; omitted matches every kind.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub kind: Option<String>,
    /// Object name; omitted matches every name.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub name: Option<String>,
    /// RFC 6901 pointers of the ignored fields, e.g. `/spec/replicas`.
    #[schemars(length(min = 1))]
    pub json_pointers: Vec<String>,
}

/// How encrypted manifests are decrypted.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct Decryption {
    pub provider: DecryptionProvider,
    /// Secret (same namespace) whose keys ending in `.agekey` hold age identities
    /// (`AGE-SECRET-KEY-1…`, one or more per key) and whose keys ending in `.asc` hold
    /// armored OpenPGP secret keys without a passphrase, as Flux reads them.
    pub secret_ref: crate::api::refs::SecretRef,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "lowercase")]
pub enum DecryptionProvider {
    /// Mozilla SOPS (YAML and JSON manifests, age keys), by the `sops` binary.
    Sops,
}

#[derive(Clone, Debug, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct KubeConfigRef {
    /// Secret holding the kubeconfig. `exec` and auth-provider entries are refused.
    pub secret_ref: KubeConfigSecretRef,
}

#[derive(Clone, Debug, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct KubeConfigSecretRef {
    pub name: String,
    /// Key in the Secret; defaults to `value`.
    #[serde(default = "default_kubeconfig_key")]
    pub key: String,
}

#[derive(Clone, Debug, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct ImageAutomation {
    /// ImagePolicies (same namespace) whose selections are written back.
    #[schemars(length(min = 1))]
    pub policies: Vec<String>,
    pub write_back: WriteBack,
}

#[derive(Clone, Debug, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct WriteBack {
    /// Branch to push to; defaults to the source's branch.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub branch: Option<String>,
    pub author: CommitAuthor,
    /// Sign the commits with an SSH key (as `git commit -S` with `gpg.format=ssh`), so a
    /// GitRepository that requires signed commits (`spec.verify`) accepts them: these
    /// write-back commits, and the reverts of `onFailure: revert` and `gantry rollback`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub signing_key: Option<SigningKey>,
    /// Commit message; `{{policy}}`, `{{old}}` and `{{new}}` are replaced.
    #[serde(default = "default_message_template")]
    pub message_template: String,
}

/// The key Gantry signs its commits with.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct SigningKey {
    /// Secret (same namespace) whose `identity` holds an unencrypted OpenSSH private key.
    pub secret_ref: crate::api::refs::SecretRef,
}

#[derive(Clone, Debug, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct CommitAuthor {
    #[schemars(length(min = 1))]
    pub name: String,
    #[schemars(length(min = 3))]
    pub email: String,
}

/// Observed state of an Application.
#[derive(KubeSchema, Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct ApplicationStatus {
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub observed_generation: Option<i64>,
    /// The API server (host:port) the Application deploys to: the controller's own, or the
    /// one of `spec.kubeConfig`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub cluster: Option<String>,
    /// Ready, Healthy, Drifted, Progressing.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    #[x_kube(merge_strategy = ListMerge::Map(vec!["type".into()]))]
    pub conditions: Vec<Condition>,
    /// Revision whose objects were all applied.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub last_applied_revision: Option<String>,
    /// Revision whose workload templates run: the last applied one, except after an
    /// aborted rollout or canary, where the last healthy revision's templates were
    /// restored or kept (the `Revision` column).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub running_revision: Option<String>,
    /// Revision of the latest attempt, successful or not.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub last_attempted_revision: Option<String>,
    /// Every object applied by the last successful sync.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub inventory: Vec<InventoryEntry>,
    /// Objects that differ from Git.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub drift: Option<DriftStatus>,
    /// State of the running or last rollout.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub rollout: Option<RolloutStatus>,
    /// The last syncs, newest first (at most 10).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub history: Vec<SyncRecord>,
    /// Value of the `gantry.dev/requested-at` annotation last handled (manual sync).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub last_handled_request: Option<String>,
    /// The chart of `spec.render.helm.chart` last applied: the version its range resolved
    /// to and the archive's digest.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub chart: Option<ChartStatus>,
}

/// A chart as resolved and verified for a sync.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct ChartStatus {
    /// Where it came from: `oci://…` or the repository URL and the chart's name.
    pub source: String,
    pub version: String,
    /// `sha256:…` of the archive (a repository) or of the manifest (a registry).
    pub digest: String,
}

/// One applied object: enough to find and delete it.
#[derive(
    Clone, Debug, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize, JsonSchema,
)]
#[serde(rename_all = "camelCase")]
pub struct InventoryEntry {
    /// API group, empty for the core group.
    #[serde(default)]
    pub group: String,
    pub version: String,
    pub kind: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub namespace: Option<String>,
    pub name: String,
}

impl InventoryEntry {
    /// The same object in the cluster, whatever the API version it is named by.
    pub fn same_object(&self, other: &InventoryEntry) -> bool {
        self.group == other.group
            && self.kind == other.kind
            && self.namespace == other.namespace
            && self.name == other.name
    }
}

#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct DriftStatus {
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub checked_at: Option<Time>,
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub objects: Vec<DriftedObject>,
}

#[derive(Clone, Debug, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct DriftedObject {
    #[serde(flatten)]
    pub object: InventoryEntry,
    /// JSON pointers of the fields that differ.
    pub paths: Vec<String>,
}

#[derive(Clone, Debug, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct SyncRecord {
    pub revision: String,
    pub started_at: Time,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub finished_at: Option<Time>,
    pub result: SyncResult,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub message: Option<String>,
    #[serde(default)]
    pub created: u32,
    #[serde(default)]
    pub configured: u32,
    #[serde(default)]
    pub unchanged: u32,
    #[serde(default)]
    pub pruned: u32,
    /// Hashes of the pod templates that were healthy at this revision (rollback fast path).
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub template_hashes: BTreeMap<String, String>,
    /// Whether the workloads became healthy at this revision (unset while unknown).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub healthy: Option<bool>,
    /// The chart version of `spec.render.helm.chart` this sync applied, if any.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub chart_version: Option<String>,
    /// The commit Gantry pushed to revert this revision (`onFailure: revert`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub reverted_by: Option<String>,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
pub enum SyncResult {
    Succeeded,
    Failed,
    Promoted,
    Aborted,
    RolledBack,
}

fn default_path() -> String {
    "./".to_string()
}

fn default_true() -> bool {
    true
}

fn default_interval() -> GoDuration {
    GoDuration::new("5m")
}

fn default_timeout() -> GoDuration {
    GoDuration::new("5m")
}

fn default_kubeconfig_key() -> String {
    "value".to_string()
}

fn default_message_template() -> String {
    "Update {{policy}} to {{new}}\n\nPrevious image: {{old}}".to_string()
}

fn preserve_unknown_object(_: &mut schemars::SchemaGenerator) -> schemars::Schema {
    schemars::json_schema!({
        "type": "object",
        "x-kubernetes-preserve-unknown-fields": true
    })
}
