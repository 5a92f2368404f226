//! `Notifier`: reports what the Applications of its namespace did, where the team looks: a
//! commit status on the forge that holds their source, or a message to a webhook or chat.

use std::collections::BTreeMap;

use k8s_openapi::apimachinery::pkg::apis::meta::v1::Time;
use kube::{CustomResource, KubeSchema};
use schemars::JsonSchema;
use serde::{Deserialize, Serialize};

use super::conditions::Condition;
use super::refs::SecretRef;

/// Reports the deployments of the Applications of its namespace: commit statuses on a forge,
/// or messages to a webhook or chat.
#[derive(CustomResource, KubeSchema, Clone, Debug, PartialEq, Serialize, Deserialize)]
#[kube(
    group = "gantry.dev",
    version = "v1alpha1",
    kind = "Notifier",
    namespaced,
    status = "NotifierStatus",
    shortname = "gnotify",
    category = "gantry",
    doc = "Reports the deployments of the Applications of its namespace: commit statuses on a forge, or messages to a webhook or chat.",
    printcolumn = r#"{"name": "Type", "type": "string", "jsonPath": ".spec.type"}"#,
    printcolumn = r#"{"name": "Ready", "type": "string", "jsonPath": ".status.conditions[?(@.type==\"Ready\")].status"}"#,
    printcolumn = r#"{"name": "Last delivery", "type": "date", "jsonPath": ".status.lastDelivery.at"}"#,
    printcolumn = r#"{"name": "Status", "type": "string", "jsonPath": ".status.conditions[?(@.type==\"Ready\")].message", "priority": 1}"#,
    printcolumn = r#"{"name": "Age", "type": "date", "jsonPath": ".metadata.creationTimestamp"}"#
)]
#[x_kube(validation = Rule::new("self.type in ['gitea', 'github', 'gitlab', 'bitbucket-server', 'github-deployment'] || !has(self.repository)").message("repository is for forges (gitea, github, gitlab, bitbucket-server, github-deployment)"))]
#[x_kube(validation = Rule::new("self.type == 'github-deployment' || !has(self.environment)").message("environment is for github-deployment"))]
#[serde(rename_all = "camelCase")]
pub struct NotifierSpec {
    /// Where reports go: a commit status on `gitea` (and Forgejo), `github`, `gitlab` or
    /// `bitbucket-server`; a GitHub deployment (`github-deployment`); a signed JSON
    /// `webhook` or a `cloudevents` event; a `slack`, `msteams`, `discord` or `googlechat`
    /// incoming webhook.
    #[serde(rename = "type")]
    pub kind: NotifierType,
    /// A Secret in the Notifier's namespace: `token` (the forge's API token, or the key a
    /// webhook's or CloudEvent's body is signed with), `address` (the webhook, CloudEvents
    /// or chat URL: a secret, as anyone who has it can post), and optionally `ca.crt` (a CA
    /// to trust instead of the system's).
    pub secret_ref: SecretRef,
    /// The forge's API base when it is not derived: `https://gitea.example.com` (Gitea's
    /// `/api/v1` is added), `https://api.github.com`, `https://gitlab.com`,
    /// `https://bitbucket.example.com`. By default the scheme and host of the source's URL
    /// (GitHub: `api.github.com` for `github.com`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(length(min = 8, max = 1024))]
    pub address: Option<String>,
    /// `owner/name` of the repository on the forge (Bitbucket Server: `PROJECT/slug`); by
    /// default derived from each Application's GitRepository URL (https and ssh forms).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(length(min = 3, max = 512))]
    pub repository: Option<String>,
    /// Which Applications of the namespace are reported (by label); all when empty.
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub selector: BTreeMap<String, String>,
    /// Which reports: `info` (everything) or `error` (failures only: a failed sync, an
    /// unhealthy revision, an aborted rollout).
    #[serde(default)]
    pub severity: Severity,
    /// The commit status's context; `{cluster}`, `{namespace}` and `{name}` are replaced.
    #[serde(default = "default_context")]
    #[schemars(length(min = 1, max = 255))]
    pub context: String,
    /// The GitHub environment of `github-deployment`; `{cluster}`, `{namespace}` and
    /// `{name}` are replaced (default `{namespace}/{name}`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(length(min = 1, max = 255))]
    pub environment: Option<String>,
    /// Allow plain HTTP to an address that is not on loopback.
    #[serde(default)]
    pub insecure: bool,
    /// Stops reporting while true; what happened meanwhile is reported on resume (the
    /// last syncs each Application keeps in its history).
    #[serde(default)]
    pub suspend: bool,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "kebab-case")]
pub enum NotifierType {
    /// Commit status through Gitea's (and Forgejo's) API.
    Gitea,
    /// Commit status through GitHub's API.
    Github,
    /// Commit status through GitLab's API.
    Gitlab,
    /// Build status through Bitbucket Server's (Data Center's) API.
    BitbucketServer,
    /// A GitHub deployment per revision and environment, with its statuses.
    GithubDeployment,
    /// A JSON body, signed with HMAC-SHA256 in `X-Gantry-Signature`.
    Webhook,
    /// A CloudEvent (structured mode), signed as the webhook when the Secret has a token.
    Cloudevents,
    /// A Slack incoming webhook.
    Slack,
    /// A Microsoft Teams (Workflows) webhook: an Adaptive Card.
    Msteams,
    /// A Discord webhook.
    Discord,
    /// A Google Chat space webhook.
    Googlechat,
}

impl NotifierType {
    /// The bounded label of the notification metrics: the type as written.
    pub fn label(self) -> &'static str {
        match self {
            NotifierType::Gitea => "gitea",
            NotifierType::Github => "github",
            NotifierType::Gitlab => "gitlab",
            NotifierType::BitbucketServer => "bitbucket-server",
            NotifierType::GithubDeployment => "github-deployment",
            NotifierType::Webhook => "webhook",
            NotifierType::Cloudevents => "cloudevents",
            NotifierType::Slack => "slack",
            NotifierType::Msteams => "msteams",
            NotifierType::Discord => "discord",
            NotifierType::Googlechat => "googlechat",
        }
    }

    /// The rate a provider documents for one webhook or token, as (requests, per seconds,
    /// burst); `None` for self-hosted forges and Gantry's own webhooks. GitHub: at most 80
    /// content-creating requests a minute (its secondary rate limits); Slack: one message a
    /// second per webhook; Discord: 30 a minute per webhook; Google Chat: 60 a minute per
    /// space; Teams (Workflows): a conservative one a second; GitLab.com: 2,000 a minute
    /// per user, kept well below.
    pub fn rate_limit(self) -> Option<(u32, u32, u32)> {
        match self {
            NotifierType::Github | NotifierType::GithubDeployment => Some((80, 60, 10)),
            NotifierType::Slack | NotifierType::Msteams | NotifierType::Googlechat => {
                Some((1, 1, 5))
            }
            NotifierType::Discord => Some((30, 60, 5)),
            NotifierType::Gitlab => Some((10, 1, 20)),
            NotifierType::Gitea
            | NotifierType::BitbucketServer
            | NotifierType::Webhook
            | NotifierType::Cloudevents => None,
        }
    }

    /// Whether it reports on the forge that holds the source (and needs a token and a
    /// repository); the others post to the Secret's `address`.
    pub fn is_forge(self) -> bool {
        matches!(
            self,
            NotifierType::Gitea
                | NotifierType::Github
                | NotifierType::Gitlab
                | NotifierType::BitbucketServer
                | NotifierType::GithubDeployment
        )
    }
}

#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "lowercase")]
pub enum Severity {
    #[default]
    Info,
    Error,
}

fn default_context() -> String {
    "gantry/{cluster}/{namespace}/{name}".to_string()
}

/// Observed state of a Notifier.
#[derive(KubeSchema, Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct NotifierStatus {
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub observed_generation: Option<i64>,
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    #[x_kube(merge_strategy = ListMerge::Map(vec!["type".into()]))]
    pub conditions: Vec<Condition>,
    /// The last report delivered.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub last_delivery: Option<Delivery>,
    /// The last report that could not be delivered, and why.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub last_failure: Option<Delivery>,
    /// What was delivered per Application and revision (the delivery cursor: a restart or
    /// another replica taking over sends neither less nor again).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub delivered: Vec<Delivered>,
}

#[derive(Clone, Debug, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct Delivery {
    /// `namespace/name` of the Application.
    pub application: String,
    pub revision: String,
    /// `pending`, `success` or `failure`.
    pub state: String,
    pub at: Time,
    /// Why it failed (never a token or an address).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub error: Option<String>,
}

#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct Delivered {
    /// Name of the Application (in the Notifier's namespace).
    pub application: String,
    pub revision: String,
    pub state: String,
}
