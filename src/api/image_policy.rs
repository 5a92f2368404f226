//! `ImagePolicy`: watches one image repository (or the versions of one Helm chart) and
//! selects the newest acceptable tag.

use k8s_openapi::apimachinery::pkg::apis::meta::v1::Time;
use kube::{CustomResource, KubeSchema};
use schemars::JsonSchema;
use serde::{Deserialize, Serialize};

use super::conditions::Condition;
use super::duration::GoDuration;
use super::refs::{SecretRef, SignatureVerification};

/// Watches an image repository in a registry (or a Helm chart's versions) and selects the
/// newest acceptable tag.
#[derive(CustomResource, KubeSchema, Clone, Debug, PartialEq, Serialize, Deserialize)]
#[kube(
    group = "gantry.dev",
    version = "v1alpha1",
    kind = "ImagePolicy",
    namespaced,
    status = "ImagePolicyStatus",
    shortname = "imgpol",
    category = "gantry",
    doc = "Watches an image repository in a registry, or the versions of a Helm chart, and selects the newest acceptable tag or version.",
    printcolumn = r#"{"name": "Image", "type": "string", "jsonPath": ".spec.image"}"#,
    printcolumn = r#"{"name": "Chart", "type": "string", "jsonPath": ".spec.chart.name", "priority": 1}"#,
    printcolumn = r#"{"name": "Latest", "type": "string", "jsonPath": ".status.latestImage"}"#,
    printcolumn = r#"{"name": "Ready", "type": "string", "jsonPath": ".status.conditions[?(@.type==\"Ready\")].status"}"#,
    printcolumn = r#"{"name": "Status", "type": "string", "jsonPath": ".status.conditions[?(@.type==\"Ready\")].message", "priority": 1}"#,
    printcolumn = r#"{"name": "Age", "type": "date", "jsonPath": ".metadata.creationTimestamp"}"#
)]
#[x_kube(validation = Rule::new("has(self.image) != has(self.chart)").message("set either image or chart"))]
#[x_kube(validation = Rule::new("!has(self.verify) || has(self.chart) || (has(self.digest) && self.digest == 'pin')").message("verify needs digest: pin, so that what runs is the digest whose signature was checked (a tag can be pushed again)"))]
#[x_kube(validation = Rule::new("!has(self.verify) || !has(self.chart) || has(self.chart.url)").message("signatures are checked for images and oci:// charts; a Helm repository's charts carry none cosign can check"))]
#[x_kube(validation = Rule::new("!has(self.chart) || !has(self.digest) || self.digest != 'pin'").message("digest pinning is for images; a chart's archive is verified against its repository's digest whenever it is fetched"))]
#[serde(rename_all = "camelCase")]
pub struct ImagePolicySpec {
    /// Image repository without tag or digest, e.g. `registry.example.com/team/web`.
    #[x_kube(validation = Rule::new("!self.contains('@') && !self.matches(':[^/]*$')").message("image must not carry a tag or digest"))]
    #[schemars(length(min = 1, max = 1024))]
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub image: Option<String>,

    /// A Helm chart instead of an image: its published versions take the place of tags, and
    /// image automation writes the selected version to Git (the `version:` of a chart
    /// dependency in `Chart.yaml` or of an Application's `spec.render.helm.chart`, and lines
    /// marked `# gantry:chart <policy>`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub chart: Option<PolicyChart>,

    /// How often to list the tags.
    /// At least 1s; periodic runs are never closer than the controller's `--min-interval`
    /// (10s by default). Receivers and `gantry sync` act at once.
    #[serde(default = "default_interval")]
    #[x_kube(validation = Rule::new("duration(self) >= duration('1s')").message("interval must be at least 1s (the controller's --min-interval, 10s by default, applies on top)"))]
    pub interval: GoDuration,

    /// Time limit of each registry request.
    #[serde(default = "default_timeout")]
    pub timeout: GoDuration,

    /// Credentials: for a registry (an image, or an `oci://` chart) a
    /// `kubernetes.io/dockerconfigjson` Secret; for a Helm chart repository `username` and
    /// `password` (basic auth) and/or `ca.crt`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub secret_ref: Option<SecretRef>,

    /// Allow plain HTTP to a registry or chart repository that is not on loopback.
    #[serde(default)]
    pub insecure: bool,

    /// How tags are ordered to find the newest.
    pub policy: TagPolicy,

    /// Which tags take part, and which part of them is ordered.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub filter_tags: Option<FilterTags>,

    /// `pin` records the digest of the chosen tag so deployments reference `repo:tag@sha256:…`;
    /// `none` references `repo:tag` only. (Not `off`: YAML 1.1 parsers such as kubectl's read
    /// an unquoted `off` as the boolean false.)
    #[serde(default)]
    pub digest: DigestMode,
    /// Signatures a tag must carry to be selected: the newest tags are checked in order
    /// (at most 10 per scan) and the newest one whose digest is validly signed is selected;
    /// the newer ones are listed in `status.skippedTags` with why.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub verify: Option<SignatureVerification>,

    /// Stops scanning while true; the last selection stays.
    #[serde(default)]
    pub suspend: bool,
}

/// A Helm chart whose versions a policy orders: `url: oci://registry/repository/chart`, or
/// `repository: https://…` (where its `index.yaml` is) with `name`, as in an Application's
/// `spec.render.helm.chart`.
#[derive(KubeSchema, Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
#[x_kube(validation = Rule::new("has(self.url) != has(self.repository)").message("set either url (oci://…) or repository (https://…, with name)"))]
#[x_kube(validation = Rule::new("has(self.repository) == has(self.name)").message("name goes with repository (an OCI url names its chart itself)"))]
#[serde(rename_all = "camelCase")]
pub struct PolicyChart {
    /// `oci://registry/repository/chart`, without a tag.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[x_kube(validation = Rule::new("self.startsWith('oci://') && !self.contains('@') && !self.matches('^oci://.*/[^/]*:[^/]*$')").message("url is oci://registry/repository/chart, without a tag or digest"))]
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
}

impl PolicyChart {
    /// `<repository>/<name>` or the `oci://` url: what the selected version is appended to
    /// (`…:<version>`) in the policy's status.
    pub fn subject(&self) -> String {
        match (&self.url, &self.repository, &self.name) {
            (Some(url), _, _) => url.trim_end_matches('/').to_string(),
            (None, Some(repo), Some(name)) => format!("{}/{name}", repo.trim_end_matches('/')),
            _ => String::new(),
        }
    }
}

impl ImagePolicySpec {
    /// What the policy selects among: the image repository, or the chart's
    /// [`PolicyChart::subject`].
    pub fn subject(&self) -> String {
        match (&self.image, &self.chart) {
            (Some(image), _) => image.clone(),
            (None, Some(chart)) => chart.subject(),
            (None, None) => String::new(),
        }
    }
}

/// Exactly one ordering.
#[derive(KubeSchema, Clone, Debug, PartialEq, Serialize, Deserialize)]
#[x_kube(validation = Rule::new("[has(self.semver), has(self.alphabetical), has(self.numerical)].filter(x, x).size() == 1").message("set exactly one of semver, alphabetical and numerical"))]
#[serde(rename_all = "camelCase")]
pub struct TagPolicy {
    /// Newest version within a semver range; pre-releases only when the range names one.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub semver: Option<SemverPolicy>,
    /// Lexical order of the tag (or the extracted part).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub alphabetical: Option<OrderPolicy>,
    /// Numerical order of the tag (or the extracted part).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub numerical: Option<OrderPolicy>,
}

#[derive(Clone, Debug, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct SemverPolicy {
    /// A range such as `>=1.0.0 <2.0.0` or `^1.4`.
    #[schemars(length(min = 1))]
    pub range: String,
}

#[derive(Clone, Debug, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct OrderPolicy {
    /// `asc` picks the last tag in ascending order (the usual newest); `desc` the first.
    #[serde(default)]
    pub order: SortOrder,
}

#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "lowercase")]
pub enum SortOrder {
    #[default]
    Asc,
    Desc,
}

#[derive(Clone, Debug, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct FilterTags {
    /// Regular expression a tag must match, e.g. `^main-(?P<ts>[0-9]+)$`.
    #[schemars(length(min = 1))]
    pub pattern: String,
    /// Named group of `pattern` whose value is ordered instead of the whole tag, e.g. `ts`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub extract: Option<String>,
}

#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "lowercase")]
pub enum DigestMode {
    /// Record the digest and reference `repo:tag@sha256:…`.
    Pin,
    /// Reference `repo:tag` only.
    #[default]
    None,
}

/// Observed state of an ImagePolicy.
#[derive(KubeSchema, Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct ImagePolicyStatus {
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub observed_generation: Option<i64>,
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    #[x_kube(merge_strategy = ListMerge::Map(vec!["type".into()]))]
    pub conditions: Vec<Condition>,
    /// The selected image, `repo:tag`; for a chart `<repository>/<name>:<version>` (or the
    /// `oci://` url with `:<version>`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub latest_image: Option<String>,
    /// Digest of the selected tag, `sha256:…` (with `digest: pin`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub latest_digest: Option<String>,
    /// Number of tags seen in the last scan.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub tag_count: Option<i64>,
    /// When the registry was last scanned successfully.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub scanned_at: Option<Time>,
    /// Tags that were rolled back in Git and are not written again until a newer tag appears.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub held_tags: Vec<HeldTag>,
    /// With `spec.verify`: the tags newer than the selected one that were passed over in
    /// the last scan, and why (no signature, or not by a trusted key).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub skipped_tags: Vec<SkippedTag>,
}

/// A tag passed over because its signature did not verify.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct SkippedTag {
    pub tag: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub digest: Option<String>,
    pub reason: String,
}

#[derive(Clone, Debug, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct HeldTag {
    pub tag: String,
    /// Why it is held, e.g. the revert commit.
    pub reason: String,
    pub since: Time,
}

fn default_interval() -> GoDuration {
    GoDuration::new("5m")
}

fn default_timeout() -> GoDuration {
    GoDuration::new("30s")
}
