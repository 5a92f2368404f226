//! `Receiver`: a webhook endpoint that triggers reconciles at once.

use kube::{CustomResource, KubeSchema};
use schemars::JsonSchema;
use serde::{Deserialize, Serialize};

use super::conditions::Condition;
use super::refs::SecretRef;

/// A webhook endpoint; a valid event reconciles the listed resources at once.
#[derive(CustomResource, KubeSchema, Clone, Debug, PartialEq, Serialize, Deserialize)]
#[kube(
    group = "gantry.dev",
    version = "v1alpha1",
    kind = "Receiver",
    namespaced,
    status = "ReceiverStatus",
    shortname = "grcv",
    category = "gantry",
    doc = "A webhook endpoint; a valid event reconciles the listed resources at once.",
    printcolumn = r#"{"name": "Type", "type": "string", "jsonPath": ".spec.type"}"#,
    printcolumn = r#"{"name": "Path", "type": "string", "jsonPath": ".status.webhookPath"}"#,
    printcolumn = r#"{"name": "Ready", "type": "string", "jsonPath": ".status.conditions[?(@.type==\"Ready\")].status"}"#,
    printcolumn = r#"{"name": "Age", "type": "date", "jsonPath": ".metadata.creationTimestamp"}"#
)]
#[serde(rename_all = "camelCase")]
pub struct ReceiverSpec {
    /// Payload and signature format.
    #[serde(rename = "type")]
    pub kind: ReceiverType,
    /// Secret with the key `token`: the HMAC key or shared token.
    pub secret_ref: SecretRef,
    /// What to reconcile when a valid event arrives.
    #[schemars(length(min = 1))]
    pub resources: Vec<ReceiverTarget>,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "kebab-case")]
pub enum ReceiverType {
    /// GitHub push events, `X-Hub-Signature-256`.
    Github,
    /// GitLab push events, `X-Gitlab-Token`.
    Gitlab,
    /// Gitea and Forgejo push events, `X-Gitea-Signature` (HMAC-SHA256 of the body).
    Gitea,
    /// HMAC-SHA256 of the body in `X-Signature`.
    GenericHmac,
    /// CNCF distribution notifications with a bearer token.
    Registry,
}

#[derive(Clone, Debug, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct ReceiverTarget {
    pub kind: TargetKind,
    /// Name in the Receiver's namespace, or `*` for every object of the kind.
    #[schemars(length(min = 1, max = 253))]
    pub name: String,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, Serialize, Deserialize, JsonSchema)]
pub enum TargetKind {
    GitRepository,
    ImagePolicy,
    Application,
}

/// Observed state of a Receiver.
#[derive(KubeSchema, Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct ReceiverStatus {
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub observed_generation: Option<i64>,
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    #[x_kube(merge_strategy = ListMerge::Map(vec!["type".into()]))]
    pub conditions: Vec<Condition>,
    /// `/hook/<token>`: the path to configure in the sender.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub webhook_path: Option<String>,
}
