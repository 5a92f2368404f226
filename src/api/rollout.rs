//! Rollout settings and state of an Application (canary and rolling updates).

use k8s_openapi::apimachinery::pkg::apis::meta::v1::Time;
use kube::KubeSchema;
use schemars::JsonSchema;
use serde::{Deserialize, Serialize};

use super::duration::GoDuration;

#[derive(Clone, Debug, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct RolloutSpec {
    /// `RollingUpdate` waits for health and reverts on failure; `Canary` runs the new pod
    /// template beside the stable Deployment first.
    #[serde(default)]
    pub strategy: RolloutStrategy,
    /// Time for every workload to become healthy.
    #[serde(default = "default_progress_deadline")]
    pub progress_deadline: GoDuration,
    /// Canary steps, in order.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub steps: Vec<CanaryStep>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub analysis: Option<Analysis>,
    /// `revert` also commits a `git revert` of the failed revision.
    #[serde(default)]
    pub on_failure: OnFailure,
}

#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
pub enum RolloutStrategy {
    #[default]
    RollingUpdate,
    Canary,
}

#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "lowercase")]
pub enum OnFailure {
    /// Abort and keep the stable version; Git is left as it is.
    #[default]
    Abort,
    /// Abort and push a `git revert` of the offending commits.
    Revert,
}

/// One step: either a weight or a pause.
#[derive(KubeSchema, Clone, Debug, PartialEq, Serialize, Deserialize)]
#[x_kube(validation = Rule::new("has(self.weight) != has(self.pause)").message("a step is either a weight or a pause"))]
#[serde(rename_all = "camelCase")]
pub struct CanaryStep {
    /// Canary replicas as a percentage of the stable replica count (rounded up, at least 1).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(range(min = 1, max = 100))]
    pub weight: Option<u32>,
    /// Wait for `duration`, or until `gantry promote` when empty.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub pause: Option<Pause>,
}

#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct Pause {
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub duration: Option<GoDuration>,
}

#[derive(Clone, Debug, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct Analysis {
    /// Time between two runs of the checks.
    #[serde(default = "default_analysis_interval")]
    pub interval: GoDuration,
    /// Consecutive failed runs that abort the rollout.
    #[serde(default = "default_failure_limit")]
    #[schemars(range(min = 1))]
    pub failure_limit: u32,
    /// Container restarts of canary pods tolerated (pod readiness is always checked).
    #[serde(default)]
    pub max_restarts: u32,
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub http: Vec<HttpCheck>,
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub prometheus: Vec<PrometheusCheck>,
}

#[derive(Clone, Debug, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct HttpCheck {
    pub name: String,
    /// URL fetched with GET.
    pub url: String,
    /// Accepted status codes, inclusive; default 200-299.
    #[serde(default = "default_status_min")]
    pub min_status: u16,
    #[serde(default = "default_status_max")]
    pub max_status: u16,
    #[serde(default = "default_check_timeout")]
    pub timeout: GoDuration,
    /// Regular expression the body must match.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub body_regex: Option<String>,
}

#[derive(Clone, Debug, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct PrometheusCheck {
    pub name: String,
    /// Base URL of the Prometheus HTTP API.
    pub address: String,
    /// Instant query whose single value is compared.
    pub query: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub min: Option<f64>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub max: Option<f64>,
    #[serde(default = "default_check_timeout")]
    pub timeout: GoDuration,
}

/// Rollout state, kept in status so a restarted controller resumes.
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct RolloutStatus {
    #[serde(default)]
    pub phase: RolloutPhase,
    /// Revision being rolled out.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub revision: Option<String>,
    /// Index of the current canary step.
    #[serde(default)]
    pub step: u32,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub started_at: Option<Time>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub step_started_at: Option<Time>,
    #[serde(default)]
    pub consecutive_failures: u32,
    /// Latest check results (bounded).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub checks: Vec<CheckResult>,
    /// Revisions rejected until Git changes.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub failed_revisions: Vec<String>,
    /// Stable Deployments (in the target namespace) whose new template runs as a canary.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub canaries: Vec<String>,
    /// The last `gantry promote` / `gantry abort` request handled.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub last_action: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub message: Option<String>,
}

#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
pub enum RolloutPhase {
    #[default]
    Idle,
    Progressing,
    Paused,
    Promoting,
    Succeeded,
    Aborted,
}

#[derive(Clone, Debug, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct CheckResult {
    pub name: String,
    pub time: Time,
    pub passed: bool,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub message: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub status_code: Option<u16>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub value: Option<f64>,
}

fn default_progress_deadline() -> GoDuration {
    GoDuration::new("10m")
}

fn default_analysis_interval() -> GoDuration {
    GoDuration::new("30s")
}

fn default_failure_limit() -> u32 {
    2
}

fn default_status_min() -> u16 {
    200
}

fn default_status_max() -> u16 {
    299
}

fn default_check_timeout() -> GoDuration {
    GoDuration::new("5s")
}
