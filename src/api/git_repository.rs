//! `GitRepository`: a Git source that produces an artifact (a checked-out tree) per revision.

use k8s_openapi::apimachinery::pkg::apis::meta::v1::Time;
use kube::{CustomResource, KubeSchema};
use serde::{Deserialize, Serialize};

use super::conditions::Condition;
use super::duration::GoDuration;
use super::refs::SecretRef;

/// A Git repository that Gantry fetches and turns into an artifact for Applications.
#[derive(CustomResource, KubeSchema, Clone, Debug, PartialEq, Serialize, Deserialize)]
#[kube(
    group = "gantry.dev",
    version = "v1alpha1",
    kind = "GitRepository",
    namespaced,
    status = "GitRepositoryStatus",
    shortname = "gitrepo",
    category = "gantry",
    doc = "A Git repository that Gantry fetches and turns into an artifact for Applications.",
    printcolumn = r#"{"name": "URL", "type": "string", "jsonPath": ".spec.url"}"#,
    printcolumn = r#"{"name": "Revision", "type": "string", "jsonPath": ".status.artifact.revision"}"#,
    printcolumn = r#"{"name": "Ready", "type": "string", "jsonPath": ".status.conditions[?(@.type==\"Ready\")].status"}"#,
    printcolumn = r#"{"name": "Status", "type": "string", "jsonPath": ".status.conditions[?(@.type==\"Ready\")].message", "priority": 1}"#,
    printcolumn = r#"{"name": "Age", "type": "date", "jsonPath": ".metadata.creationTimestamp"}"#
)]
#[serde(rename_all = "camelCase")]
pub struct GitRepositorySpec {
    /// Repository URL: `https://`, `http://` (loopback only), `ssh://` or `file://`.
    #[x_kube(validation = Rule::new("self.matches('^(https?|ssh|file)://')").message("url must start with https://, http://, ssh:// or file://"))]
    pub url: String,

    /// Which commit to check out. Defaults to the branch `main`.
    #[serde(default, rename = "ref", skip_serializing_if = "Option::is_none")]
    pub git_ref: Option<GitRef>,

    /// How often to look for new commits.
    /// At least 1s; periodic runs are never closer than the controller's `--min-interval`
    /// (10s by default). Receivers and `gantry sync` act at once.
    #[serde(default = "default_interval")]
    #[x_kube(validation = Rule::new("duration(self) >= duration('1s')").message("interval must be at least 1s (the controller's --min-interval, 10s by default, applies on top)"))]
    pub interval: GoDuration,

    /// Time limit of each fetch.
    #[serde(default = "default_timeout")]
    pub timeout: GoDuration,

    /// Secret with credentials: `username` and `password`, or `bearerToken` (HTTPS);
    /// `identity` and `known_hosts` (SSH, known_hosts is mandatory).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub secret_ref: Option<SecretRef>,

    /// gitignore-style patterns of files left out of the artifact.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub ignore: Vec<String>,

    /// Stops fetching while true; the last artifact stays available.
    #[serde(default)]
    pub suspend: bool,

    /// Deploy plans of pull requests: a Receiver's pull request events for the branch this
    /// source tracks are planned (`gantry plan`) and the plan is posted on the pull request
    /// through the namespace's commit-status Notifier.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub plan: Option<PlanSpec>,

    /// Require signed commits: an unsigned commit, or one signed by a key not in the
    /// Secret, becomes no artifact (Ready=False, VerificationFailed, naming the commit and
    /// the signer) and the last good artifact keeps serving.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub verify: Option<CommitVerification>,
}

/// Which commits must be signed, and by whom.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize, schemars::JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct CommitVerification {
    #[serde(default)]
    pub mode: VerifyMode,
    /// Secret (same namespace) whose values are the trusted public keys: OpenPGP keys
    /// (ASCII-armored) and SSH keys (`ssh-ed25519 AAAA… comment` lines), as
    /// `git verify-commit` accepts their signatures.
    pub secret_ref: SecretRef,
}

#[derive(
    Clone, Copy, Debug, Default, PartialEq, Eq, Serialize, Deserialize, schemars::JsonSchema,
)]
pub enum VerifyMode {
    /// The fetched commit must be signed by a trusted key.
    #[default]
    #[serde(rename = "HEAD")]
    Head,
    /// Every commit since the last artifact's (up to 1,000; all of the fetched history the
    /// first time, to the same bound) must be.
    #[serde(rename = "all-since-last")]
    AllSinceLast,
}

/// Which pull requests are planned.
#[derive(KubeSchema, Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct PlanSpec {
    /// Plan the pull requests that target the tracked branch.
    #[serde(default)]
    pub enabled: bool,
    /// Also plan pull requests whose head is in a fork. Off by default: a plan shows live
    /// state (object fields, refusals) to the pull request's author.
    #[serde(default)]
    pub from_forks: bool,
}

/// The reference to check out: one of branch, tag, semver or commit.
/// `commit` may be combined with `branch` to pin a commit on that branch.
#[derive(KubeSchema, Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
#[x_kube(validation = Rule::new("[has(self.branch), has(self.tag), has(self.semver)].filter(x, x).size() <= 1").message("set at most one of branch, tag and semver"))]
#[x_kube(validation = Rule::new("!(has(self.commit) && (has(self.tag) || has(self.semver)))").message("commit can only be combined with branch"))]
#[serde(rename_all = "camelCase")]
pub struct GitRef {
    /// Branch to follow, e.g. `main`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub branch: Option<String>,
    /// Tag to check out, e.g. `v1.2.0`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub tag: Option<String>,
    /// Semver range over tags; the newest matching tag is checked out, e.g. `>=1.0.0 <2.0.0`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub semver: Option<String>,
    /// Exact commit SHA-1 (40 hex characters).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[x_kube(validation = Rule::new("self.matches('^[0-9a-f]{40}$')").message("commit must be 40 lowercase hex characters"))]
    pub commit: Option<String>,
}

/// Observed state of a GitRepository.
#[derive(KubeSchema, Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct GitRepositoryStatus {
    /// Generation of the spec last acted on.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub observed_generation: Option<i64>,
    /// Ready and friends.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    #[x_kube(merge_strategy = ListMerge::Map(vec!["type".into()]))]
    pub conditions: Vec<Condition>,
    /// The last artifact produced; kept when a later fetch fails.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub artifact: Option<Artifact>,
    /// Value of the `gantry.dev/requested-at` annotation whose fetch is done (`gantry
    /// sync` fetches the source first and waits for it).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub last_handled_request: Option<String>,
    /// The plans of open pull requests (written by the plan reconciler, under its own
    /// field manager).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub plans: Vec<PlanRecord>,
}

/// The plan of one pull request's head.
#[derive(KubeSchema, Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct PlanRecord {
    /// The pull request's number.
    pub number: i64,
    /// The head commit planned.
    pub head: String,
    /// `success` (applies cleanly), `failure` (something would be refused), `skipped`
    /// (not planned, see message) or `error` (the plan could not be made or posted).
    pub result: String,
    /// One line: the counts, or why.
    #[serde(default)]
    pub message: String,
    /// The forge's id of the plan comment, edited on every push.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub comment_id: Option<String>,
    pub planned_at: Time,
}

/// A checked-out tree of one commit.
#[derive(KubeSchema, Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct Artifact {
    /// `<ref>@sha1:<40 hex>`, e.g. `main@sha1:0123…`.
    pub revision: String,
    /// Digest of the tree's content, `sha256:<hex>`.
    pub digest: String,
    /// When this artifact was produced.
    pub fetched_at: Time,
}

/// The commit id at the end of an artifact's revision `ref@sha1:<commit>`.
pub fn revision_commit(revision: &str) -> Option<&str> {
    revision.rsplit_once("@sha1:").map(|(_, c)| c)
}

fn default_interval() -> GoDuration {
    GoDuration::new("1m")
}

fn default_timeout() -> GoDuration {
    GoDuration::new("60s")
}
