//! ImagePolicy reconciler: list the tags (one shared scan per image and credentials),
//! select with the policy, resolve the digest when pinning, report in status. Registry
//! failures keep the last selection and back off.

use std::sync::Arc;
use std::time::{Duration, SystemTime};

use futures::StreamExt;
use k8s_openapi::apimachinery::pkg::apis::meta::v1::Time;
use k8s_openapi::jiff::Timestamp;
use kube::ResourceExt;
use kube::api::Api;
use kube::runtime::controller::{Action, Controller};

use super::context::Context;
use super::status::{apply_status, with_jitter};
use crate::api::ImagePolicy;
use crate::api::conditions::{self, Status};
use crate::api::image_policy::{DigestMode, ImagePolicyStatus, SkippedTag};
use crate::api::reasons::image_policy as reasons;
use crate::error::{Error, Result};
use crate::source::cosign::{self, TrustedKeys, VerifyError};
use crate::source::helm_repo::{self, RepoAuth};
use crate::source::oci_chart::ChartError;
use crate::source::registry::{Credentials, ImageName, RegistryError};
use crate::source::tag_policy::Policy;
use crate::trigger::requested_at;

/// Why a reconcile produced no selection.
#[derive(Debug, thiserror::Error)]
enum Failure {
    #[error(transparent)]
    Registry(#[from] RegistryError),
    #[error("{0}")]
    Policy(String),
    #[error("{0}")]
    Secret(String),
    #[error("{0}")]
    Chart(String),
    #[error("none of the {count} tags of {image} matches the policy")]
    NoMatch { count: usize, image: String },
    #[error("none of the newest {} tags of {image} has a valid signature: {}", skipped.len(), describe_skipped(skipped))]
    Unverified {
        image: String,
        skipped: Vec<SkippedTag>,
    },
}

/// `v3 (no cosign signature); v2 (…)`, for messages.
fn describe_skipped(skipped: &[SkippedTag]) -> String {
    skipped
        .iter()
        .map(|s| format!("{} ({})", s.tag, s.reason))
        .collect::<Vec<_>>()
        .join("; ")
}

/// The most tags whose signatures one scan checks, newest first: a repository full of
/// unsigned tags costs a bounded number of requests per scan.
pub const MAX_VERIFIED_CANDIDATES: usize = 10;

impl From<ChartError> for Failure {
    fn from(e: ChartError) -> Self {
        match e {
            ChartError::Registry { source, .. } => Failure::Registry(source),
            // The chart error names `spec.render.helm.chart`; here it is `spec.chart`.
            ChartError::BadUrl { url, why } => Failure::Chart(format!("spec.chart {url:?}: {why}")),
            other => Failure::Chart(other.to_string()),
        }
    }
}

impl Failure {
    fn reason(&self) -> &'static str {
        match self {
            Failure::Registry(e) => e.reason(),
            Failure::Policy(_) => reasons::INVALID_POLICY,
            Failure::Secret(_) => reasons::SECRET_INVALID,
            Failure::Chart(_) => reasons::CHART_REPOSITORY_FAILED,
            Failure::NoMatch { .. } => reasons::NO_MATCHING_TAG,
            Failure::Unverified { .. } => reasons::VERIFICATION_FAILED,
        }
    }

    /// Whether the next attempt should come sooner than the interval.
    fn retry_soon(&self) -> bool {
        match self {
            Failure::Registry(e) => e.is_transient(),
            Failure::Secret(_) | Failure::Chart(_) => true,
            _ => false,
        }
    }
}

/// The credentials in the policy's `kubernetes.io/dockerconfigjson` Secret for `registry`.
async fn credentials(
    client: &kube::Client,
    ns: &str,
    policy: &ImagePolicy,
    registry: &str,
) -> Result<Credentials, Failure> {
    let Some(secret_ref) = &policy.spec.secret_ref else {
        return Ok(Credentials::Anonymous);
    };
    super::secrets::registry_credentials(client, ns, &secret_ref.name, registry)
        .await
        .map_err(Failure::Secret)
}

/// What one scan selected.
struct Selection {
    tag: String,
    digest: Option<String>,
    count: usize,
    /// Newer tags passed over for their signatures (with `spec.verify`).
    skipped: Vec<SkippedTag>,
}

async fn scan(
    ctx: &Context,
    ns: &str,
    policy: &ImagePolicy,
    interval: Duration,
) -> Result<Selection, Failure> {
    let compiled = Policy::compile(&policy.spec.policy, policy.spec.filter_tags.as_ref())
        .map_err(|e| Failure::Policy(e.to_string()))?;
    let timeout = policy
        .spec
        .timeout
        .parse()
        .unwrap_or(Duration::from_secs(30));
    let subject = policy.spec.subject();
    let (image, registry) = match (&policy.spec.image, &policy.spec.chart) {
        (Some(image), _) => (ImageName::parse(image)?, Registry::Image),
        (None, Some(chart)) => match (&chart.url, &chart.repository, &chart.name) {
            (Some(url), _, _) => {
                let repo = url.strip_prefix("oci://").ok_or_else(|| {
                    Failure::Chart(format!("spec.chart.url {url:?} is not oci://…"))
                })?;
                (ImageName::parse(repo)?, Registry::Chart)
            }
            (None, Some(repository), Some(name)) => {
                let auth = match &policy.spec.secret_ref {
                    None => RepoAuth::default(),
                    Some(secret) => super::secrets::repository_auth(&ctx.client, ns, &secret.name)
                        .await
                        .map_err(Failure::Secret)?,
                };
                let versions =
                    helm_repo::versions(repository, name, &auth, policy.spec.insecure, timeout)
                        .await?;
                return select(&compiled, &versions, &subject);
            }
            _ => {
                return Err(Failure::Chart(
                    "spec.chart: set url, or repository and name".into(),
                ));
            }
        },
        (None, None) => return Err(Failure::Chart("set spec.image or spec.chart".into())),
    };
    let creds = credentials(&ctx.client, ns, policy, &image.registry).await?;
    // A scan by another policy on the same image within half an interval is reused, unless
    // someone (a Receiver, `gantry`) asked for a fresh look after it.
    let mut not_before = SystemTime::now() - interval / 2;
    if let Some(asked) = requested_at(policy) {
        let asked = SystemTime::UNIX_EPOCH + Duration::from_nanos(asked.as_nanosecond() as u64);
        not_before = not_before.max(asked);
    }
    let listing = ctx
        .scanner
        .tags(&image, &creds, policy.spec.insecure, timeout, not_before)
        .await?;
    // Helm stores a version's `+` as `_` in its tag.
    let versions: Vec<String> = match registry {
        Registry::Chart => listing.tags.iter().map(|t| t.replace('_', "+")).collect(),
        Registry::Image => listing.tags.clone(),
    };
    if let Some(verify) = &policy.spec.verify {
        let keys = super::secrets::cosign_keys(&ctx.client, ns, &verify.secret_ref.name)
            .await
            .map_err(Failure::Secret)?;
        let checking = Checking {
            ctx,
            image: &image,
            creds: &creds,
            keys: &keys,
            insecure: policy.spec.insecure,
            timeout,
        };
        let mut sel = checking
            .newest_signed(&compiled, &versions, &subject, registry)
            .await?;
        if policy.spec.digest != DigestMode::Pin {
            sel.digest = None;
        }
        return Ok(sel);
    }
    if registry == Registry::Chart {
        return select(&compiled, &versions, &subject);
    }
    let mut sel = select(&compiled, &listing.tags, &subject)?;
    if policy.spec.digest == DigestMode::Pin {
        // A tag can be re-pushed, so the digest is looked up on every scan.
        sel.digest = Some(
            ctx.scanner
                .digest(&image, &sel.tag, &creds, policy.spec.insecure, timeout)
                .await?,
        );
    }
    Ok(sel)
}

/// What checking signatures needs.
struct Checking<'a> {
    ctx: &'a Context,
    image: &'a ImageName,
    creds: &'a Credentials,
    keys: &'a TrustedKeys,
    insecure: bool,
    timeout: Duration,
}

impl Checking<'_> {
    /// The newest of `versions` by the policy whose manifest is validly signed; the newer
    /// ones are listed as skipped. Registry failures fail the scan (they say nothing about
    /// a signature), and at most `MAX_VERIFIED_CANDIDATES` tags are checked.
    async fn newest_signed(
        &self,
        policy: &Policy,
        versions: &[String],
        subject: &str,
        registry: Registry,
    ) -> Result<Selection, Failure> {
        let candidates = policy.newest_first(versions.iter().map(String::as_str));
        if candidates.is_empty() {
            return Err(Failure::NoMatch {
                count: versions.len(),
                image: subject.to_string(),
            });
        }
        let mut skipped = vec![];
        for version in candidates.into_iter().take(MAX_VERIFIED_CANDIDATES) {
            let tag = match registry {
                Registry::Chart => version.replace('+', "_"),
                Registry::Image => version.to_string(),
            };
            let scanner = &self.ctx.scanner;
            let digest = scanner
                .digest(self.image, &tag, self.creds, self.insecure, self.timeout)
                .await?;
            let client = scanner.client(self.image, self.creds, self.insecure, self.timeout)?;
            let verified = cosign::verify(
                &client,
                self.image,
                &digest,
                self.creds,
                self.keys,
                self.timeout,
            )
            .await;
            match verified {
                Ok(key) => {
                    tracing::debug!(image = %subject, tag = %version, %digest, %key, "signature verified");
                    return Ok(Selection {
                        tag: version.to_string(),
                        digest: Some(digest),
                        count: versions.len(),
                        skipped,
                    });
                }
                Err(VerifyError::Unsigned(why)) => skipped.push(SkippedTag {
                    tag: version.to_string(),
                    digest: Some(digest),
                    reason: why.to_string(),
                }),
                Err(VerifyError::Registry(e)) => return Err(e.into()),
            }
        }
        Err(Failure::Unverified {
            image: subject.to_string(),
            skipped,
        })
    }
}

/// What a policy's registry repository holds.
#[derive(PartialEq, Eq, Clone, Copy)]
enum Registry {
    Image,
    Chart,
}

/// The newest of `tags` by the policy (pure).
fn select(policy: &Policy, tags: &[String], subject: &str) -> Result<Selection, Failure> {
    let tag = policy
        .select(tags.iter().map(String::as_str))
        .ok_or_else(|| Failure::NoMatch {
            count: tags.len(),
            image: subject.to_string(),
        })?
        .to_string();
    Ok(Selection {
        tag,
        digest: None,
        count: tags.len(),
        skipped: vec![],
    })
}

async fn reconcile(policy: Arc<ImagePolicy>, ctx: Arc<Context>) -> Result<Action> {
    let ns = policy.namespace().unwrap_or_default();
    let name = policy.name_any();
    let api: Api<ImagePolicy> = Api::namespaced(ctx.client.clone(), &ns);
    let interval = ctx.interval(&policy.spec.interval, Duration::from_secs(300));
    let generation = policy.metadata.generation;
    let mut status: ImagePolicyStatus = policy.status.clone().unwrap_or_default();
    status.observed_generation = generation;
    let now = Timestamp::now();
    let key = (ns.clone(), name.clone());

    if policy.spec.suspend {
        conditions::set_condition(
            &mut status.conditions,
            conditions::new_condition(
                conditions::READY,
                Status::Unknown,
                reasons::SUSPENDED,
                "scanning is suspended; the last selection stays",
                generation,
                now,
            ),
        );
        if Some(&status) != policy.status.as_ref() {
            apply_status(&api, &name, &status).await?;
        }
        return Ok(Action::await_change());
    }

    let started = std::time::Instant::now();
    let scanned = scan(&ctx, &ns, &policy, interval).await;
    ctx.metrics
        .registry_scans
        .with_label_values(&[if scanned.is_ok() { "ok" } else { "error" }])
        .observe(started.elapsed().as_secs_f64());
    let action = match scanned {
        Ok(sel) => {
            ctx.registry_failures
                .lock()
                .expect("registry failures")
                .remove(&key);
            let subject = policy.spec.subject();
            let latest = format!("{subject}:{}", sel.tag);
            if status.latest_image.as_deref() != Some(latest.as_str())
                || status.latest_digest != sel.digest
            {
                tracing::info!(namespace = %ns, name = %name, image = %latest, digest = ?sel.digest, "selected a new image");
            }
            selected(&mut status, &subject, sel, generation, now);
            Action::requeue(with_jitter(interval, &name))
        }
        Err(failure) => {
            tracing::warn!(namespace = %ns, name = %name, reason = failure.reason(), error = %failure, "image scan failed");
            let c = conditions::new_condition(
                conditions::READY,
                Status::False,
                failure.reason(),
                failure.to_string(),
                generation,
                now,
            );
            conditions::set_condition(&mut status.conditions, c);
            if let Failure::Unverified { skipped, .. } = &failure {
                status.skipped_tags = skipped.clone();
            }
            retry_after(&ctx, key, &failure, interval, &name)
        }
    };
    write_holds(&api, &name, policy.status.as_ref(), &status).await?;
    if Some(&status) != policy.status.as_ref() {
        apply_status(&api, &name, &status).await?;
    }
    Ok(action)
}

/// Records a selection: the image, its digest, the count, and Ready (pure). A hold lasts
/// while the held tag is still the newest; a strictly newer tag releases it.
fn selected(
    status: &mut ImagePolicyStatus,
    image: &str,
    sel: Selection,
    generation: Option<i64>,
    now: Timestamp,
) {
    status.held_tags.retain(|h| h.tag == sel.tag);
    let skipped = match sel.skipped.len() {
        0 => String::new(),
        n => format!(
            "; {n} newer {} skipped for {}: {}",
            crate::text::agree(n, "tag", "tags"),
            crate::text::agree(n, "its signature", "their signatures"),
            describe_skipped(&sel.skipped)
        ),
    };
    status.skipped_tags = sel.skipped;
    status.latest_image = Some(format!("{image}:{}", sel.tag));
    status.latest_digest = sel.digest;
    status.tag_count = Some(sel.count as i64);
    status.scanned_at = Some(Time(now));
    let held = status.held_tags.iter().any(|h| h.tag == sel.tag);
    let message = if held {
        format!(
            "selected {} of {} tags (held: it was rolled back in Git){skipped}",
            sel.tag, sel.count
        )
    } else {
        format!("selected {} of {} tags{skipped}", sel.tag, sel.count)
    };
    let c = conditions::new_condition(
        conditions::READY,
        Status::True,
        reasons::SUCCEEDED,
        message,
        generation,
        now,
    );
    conditions::set_condition(&mut status.conditions, c);
}

/// When to scan again after a failure: transient ones back off per policy, the others
/// wait for the interval.
fn retry_after(
    ctx: &Context,
    key: (String, String),
    failure: &Failure,
    interval: Duration,
    name: &str,
) -> Action {
    if !failure.retry_soon() {
        return Action::requeue(with_jitter(interval, name));
    }
    let attempts = {
        let mut failures = ctx.registry_failures.lock().expect("registry failures");
        let n = failures.entry(key).or_insert(0);
        *n = n.saturating_add(1);
        *n
    };
    let rate_limited = matches!(
        failure,
        Failure::Registry(RegistryError::RateLimited { .. })
    );
    Action::requeue(backoff(attempts, interval, rate_limited))
}

/// Holds are written by the Application's write-back with a merge patch (another field
/// owner), so releasing one takes a merge patch too.
async fn write_holds(
    api: &Api<ImagePolicy>,
    name: &str,
    before: Option<&ImagePolicyStatus>,
    status: &ImagePolicyStatus,
) -> Result<()> {
    let held_before = before.map(|s| s.held_tags.as_slice()).unwrap_or_default();
    if status.held_tags.as_slice() == held_before {
        return Ok(());
    }
    let held = if status.held_tags.is_empty() {
        serde_json::Value::Null
    } else {
        serde_json::to_value(&status.held_tags).map_err(|source| Error::Serialize {
            what: "held tags",
            source,
        })?
    };
    api.patch_status(
        name,
        &kube::api::PatchParams::default(),
        &kube::api::Patch::Merge(serde_json::json!({"status": {"heldTags": held}})),
    )
    .await?;
    Ok(())
}
/// 2 s, 4 s, 8 s … capped at the interval and at 5 minutes; at least 30 s after a 429
/// (oci-client does not surface `Retry-After`, so a rate limit gets a conservative floor).
pub fn backoff(attempts: u32, interval: Duration, rate_limited: bool) -> Duration {
    let exp = Duration::from_secs(2u64.saturating_pow(attempts.min(10)));
    let cap = interval.min(Duration::from_secs(300));
    let d = exp.min(cap);
    if rate_limited {
        d.max(Duration::from_secs(30))
    } else {
        d
    }
}

pub async fn run(ctx: Arc<Context>, api: Api<ImagePolicy>) {
    Controller::new(api, ctx.watch())
        .with_config(ctx.controller_config())
        .graceful_shutdown_on(super::shutdown_signal())
        .run(
            |obj, ctx| super::measured(obj, ctx, reconcile),
            super::error_policy,
            ctx,
        )
        .for_each(|_| futures::future::ready(()))
        .await;
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn backoff_grows_and_is_capped() {
        let hour = Duration::from_secs(3600);
        assert_eq!(backoff(1, hour, false), Duration::from_secs(2));
        assert_eq!(backoff(3, hour, false), Duration::from_secs(8));
        assert_eq!(backoff(30, hour, false), Duration::from_secs(300));
        assert_eq!(
            backoff(1, Duration::from_secs(10), false),
            Duration::from_secs(2)
        );
        assert_eq!(
            backoff(9, Duration::from_secs(10), false),
            Duration::from_secs(10)
        );
        assert_eq!(backoff(1, hour, true), Duration::from_secs(30));
    }
}
