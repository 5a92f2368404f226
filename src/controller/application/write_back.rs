//! The write-back step of the Application reconciler: when an ImagePolicy it lists selected
//! an image that its files under `path` do not reference yet, commit the edit to Git and
//! push; Git, not the cluster, stays the record of what runs.

use std::path::Path;
use std::time::{Duration, Instant};

use k8s_openapi::apimachinery::pkg::apis::meta::v1::Time;
use k8s_openapi::jiff::Timestamp;
use kube::ResourceExt;
use kube::api::{Api, Patch, PatchParams};
use kube::runtime::events::EventType;
use serde_json::json;

use super::memory::AppContext;
use super::record::{publish, set};
use crate::api::application::{ApplicationStatus, WriteBack};
use crate::api::conditions::Status;
use crate::api::image_policy::{HeldTag, PolicyChart};
use crate::api::{Application, GitRepository, ImagePolicy};
use crate::controller::git_repository::credentials;
use crate::source::git::Reference;
use crate::trigger::request_reconcile;
use crate::writeback::edit;
use crate::writeback::repo::{self, Author, Target};
use crate::writeback::update::{ChartName, Update};

/// The Application condition that reports image automation.
pub const IMAGE_AUTOMATION: &str = "ImageAutomation";

/// What the selections of the listed policies mean for this Application's files.
struct Plan {
    /// Updates that some file still needs.
    pending: Vec<Update>,
    /// Policies whose image no file refers to.
    unreferenced: Vec<String>,
    /// Policies with nothing selected yet, or missing.
    waiting: Vec<String>,
    /// `policy:tag` selections held after a revert.
    held: Vec<String>,
}

async fn plan(
    ctx: &AppContext,
    ns: &str,
    app: &Application,
    artifact_root: &Path,
) -> crate::error::Result<Plan> {
    let automation = app
        .spec
        .image_automation
        .as_ref()
        .expect("checked by caller");
    let policies: Api<ImagePolicy> = Api::namespaced(ctx.client.clone(), ns);
    let mut updates = Vec::new();
    let mut waiting = Vec::new();
    let mut held = Vec::new();
    for name in &automation.policies {
        let Some(policy) = policies.get_opt(name).await? else {
            waiting.push(format!("{name} (not found)"));
            continue;
        };
        let status = policy.status.unwrap_or_default();
        let Some(latest) = status.latest_image.as_deref() else {
            waiting.push(format!("{name} (nothing selected yet)"));
            continue;
        };
        let Some(tag) = edit::split_image(latest).tag.map(str::to_string) else {
            continue;
        };
        if status.held_tags.iter().any(|h| h.tag == tag) {
            // rolled back in Git; not written again until a newer tag
            held.push(format!("{name}:{tag}"));
            continue;
        }
        let chart = policy.spec.chart.as_ref().and_then(chart_name);
        updates.push(Update {
            policy: name.clone(),
            repository: policy.spec.subject(),
            tag,
            digest: status.latest_digest.clone().filter(|_| chart.is_none()),
            chart,
        });
    }
    let files = read_yaml_files(&artifact_root.join(&app.spec.path));
    let mut pending = Vec::new();
    let mut unreferenced = Vec::new();
    for u in updates {
        if files
            .iter()
            .any(|(p, t)| edit::edit_file(p, t, &u).is_some())
        {
            pending.push(u);
        } else if !files.iter().any(|(p, t)| edit::refers_to(p, t, &u)) {
            unreferenced.push(u.policy.clone());
        }
    }
    Ok(Plan {
        pending,
        unreferenced,
        waiting,
        held,
    })
}

/// The chart of a policy as `Chart.yaml` dependencies name it.
fn chart_name(chart: &PolicyChart) -> Option<ChartName> {
    match (&chart.url, &chart.repository, &chart.name) {
        (Some(url), _, _) => ChartName::from_oci_url(url),
        (None, Some(repository), Some(name)) => Some(ChartName {
            repository: repository.clone(),
            name: name.clone(),
        }),
        _ => None,
    }
}

/// The YAML files under `dir` of the artifact (the fast check before any Git work).
fn read_yaml_files(dir: &Path) -> Vec<(String, String)> {
    let mut out = Vec::new();
    let mut stack = vec![dir.to_path_buf()];
    while let Some(d) = stack.pop() {
        for entry in std::fs::read_dir(&d).into_iter().flatten().flatten() {
            let path = entry.path();
            let Ok(meta) = std::fs::symlink_metadata(&path) else {
                continue;
            };
            if meta.is_dir() {
                stack.push(path);
                continue;
            }
            let name = entry.file_name().to_string_lossy().into_owned();
            let yaml = name.ends_with(".yaml") || name.ends_with(".yml") || name == "Kustomization";
            if !meta.is_file() || !yaml || meta.len() > 1024 * 1024 {
                continue;
            }
            if let Ok(text) = std::fs::read_to_string(&path) {
                out.push((path.to_string_lossy().into_owned(), text));
            }
        }
    }
    out
}

/// Reasons of the `ImageAutomation` condition and of its Events.
pub mod reason {
    pub const NOT_REFERENCED: &str = "NotReferenced";
    pub const HELD: &str = "Held";
    pub const WAITING_FOR_POLICY: &str = "WaitingForPolicy";
    pub const UP_TO_DATE: &str = "UpToDate";
    pub const WRITE_BACK_FAILED: &str = "WriteBackFailed";
    pub const PUSHED: &str = "Pushed";
    pub const IMAGE_UPDATED: &str = "ImageUpdated";
    pub const IMAGE_HELD: &str = "ImageHeld";
}

/// The condition when no file needs an update (pure).
fn settled(plan: &Plan, path: &str) -> (Status, &'static str, String) {
    if !plan.unreferenced.is_empty() {
        (
            Status::False,
            reason::NOT_REFERENCED,
            format!(
                "no file under {path} refers to the image or chart of {}; nothing to update",
                plan.unreferenced.join(", ")
            ),
        )
    } else if !plan.held.is_empty() {
        (
            Status::True,
            reason::HELD,
            format!("held after a revert in Git: {}", plan.held.join(", ")),
        )
    } else if !plan.waiting.is_empty() {
        (
            Status::Unknown,
            reason::WAITING_FOR_POLICY,
            format!("waiting for ImagePolicy {}", plan.waiting.join(", ")),
        )
    } else {
        (
            Status::True,
            reason::UP_TO_DATE,
            "Git references the selected images".to_string(),
        )
    }
}

/// The condition after a write-back that pushed nothing (pure).
fn unpushed(report: &repo::Report, path: &str, branch: &str) -> (Status, &'static str, String) {
    if !report.unreferenced.is_empty() {
        (
            Status::False,
            reason::NOT_REFERENCED,
            format!(
                "no file under {path} refers to the image or chart of {} any more; nothing to update",
                report.unreferenced.join(", ")
            ),
        )
    } else if !report.held.is_empty() {
        let held: Vec<String> = report
            .held
            .iter()
            .map(|h| format!("{}:{}", h.policy, h.tag))
            .collect();
        (
            Status::True,
            reason::HELD,
            format!("held after a revert in Git: {}", held.join(", ")),
        )
    } else {
        (
            Status::True,
            reason::UP_TO_DATE,
            format!("branch {branch} already references the selected images"),
        )
    }
}

/// The message of a pushed write-back (pure).
fn pushed_message(report: &repo::Report, commit: &str, branch: &str) -> String {
    let summary: Vec<String> = report
        .bumps
        .iter()
        .map(|b| format!("{}: {} → {}", b.policy, b.old, b.new))
        .collect();
    let retries = if report.attempts > 1 {
        format!(" (after {} non-fast-forward retries)", report.attempts - 1)
    } else {
        String::new()
    };
    format!(
        "pushed {} to {branch}: {}{retries}",
        &commit[..12.min(commit.len())],
        summary.join("; ")
    )
}

/// Runs the write-back for `app` and reports in its status. Never fails the sync: problems
/// are reported in the `ImageAutomation` condition and as Events.
pub(super) async fn run(
    ctx: &AppContext,
    app: &Application,
    source: &GitRepository,
    artifact_root: &Path,
    status: &mut ApplicationStatus,
) {
    let Some(automation) = app.spec.image_automation.as_ref() else {
        return;
    };
    let ns = app.namespace().unwrap_or_default();
    let generation = app.metadata.generation;
    let plan = match plan(ctx, &ns, app, artifact_root).await {
        Ok(p) => p,
        Err(e) => {
            tracing::warn!(namespace = %ns, name = %app.name_any(), error = %e, "cannot read the image policies");
            return;
        }
    };
    if plan.pending.is_empty() {
        let (s, why, message) = settled(&plan, &app.spec.path);
        set(status, IMAGE_AUTOMATION, s, why, message, generation);
        return;
    }
    // Without an explicit branch, only a source that follows a branch can be written to.
    let branch = automation.write_back.branch.clone().or_else(|| {
        match Reference::from_spec(source.spec.git_ref.as_ref()) {
            Reference::Branch(b) => Some(b),
            _ => None,
        }
    });
    let Some(branch) = branch else {
        let m = format!(
            "GitRepository {} follows a tag, semver range or commit; set imageAutomation.writeBack.branch",
            source.name_any()
        );
        set(
            status,
            IMAGE_AUTOMATION,
            Status::False,
            reason::WRITE_BACK_FAILED,
            m,
            generation,
        );
        return;
    };
    match write_back(
        ctx,
        app,
        source,
        &automation.write_back,
        &branch,
        plan.pending,
    )
    .await
    {
        Err(message) => {
            tracing::warn!(namespace = %ns, name = %app.name_any(), error = %message, "image write-back failed");
            ctx.metrics
                .image_updates(crate::metrics::UpdateResult::Failed, 1);
            let why = reason::WRITE_BACK_FAILED;
            publish(ctx, app, EventType::Warning, why, message.clone()).await;
            set(
                status,
                IMAGE_AUTOMATION,
                Status::False,
                why,
                message,
                generation,
            );
        }
        Ok(report) => reported(ctx, app, source, status, &report, &branch).await,
    }
}

/// Commits the updates to `branch` and pushes them (in a blocking task, bounded by the
/// source's timeout).
async fn write_back(
    ctx: &AppContext,
    app: &Application,
    source: &GitRepository,
    write_back: &WriteBack,
    branch: &str,
    updates: Vec<Update>,
) -> Result<repo::Report, String> {
    let ns = app.namespace().unwrap_or_default();
    ctx.check_file_url(&source.spec.url)
        .map_err(|e| e.to_string())?;
    let creds = credentials(&ctx.client, &ns, source)
        .await
        .map_err(|e| e.to_string())?;
    let timeout = source
        .spec
        .timeout
        .parse()
        .unwrap_or(Duration::from_secs(60))
        .max(Duration::from_secs(30));
    let signing_key = match &write_back.signing_key {
        Some(k) => Some(signing_key(&ctx.client, &ns, &k.secret_ref.name).await?),
        None => None,
    };
    let cache = ctx.writeback_cache(&ns, &app.name_any());
    let url = source.spec.url.clone();
    let path = app.spec.path.clone();
    let write_back = write_back.clone();
    let branch = branch.to_string();
    // The controller never reconciles one Application twice at once, so this cache has a
    // single writer.
    let task = tokio::task::spawn_blocking(move || {
        if let Some(parent) = cache.parent() {
            let _ = std::fs::create_dir_all(parent);
        }
        let target = Target {
            url: &url,
            branch: &branch,
            creds: creds.as_ref(),
            deadline: Instant::now() + timeout,
        };
        let author = Author {
            name: &write_back.author.name,
            email: &write_back.author.email,
            message_template: &write_back.message_template,
            signing_key: signing_key.as_ref(),
        };
        repo::write_back(&cache, &target, &path, &updates, &author)
    });
    match tokio::time::timeout(timeout + Duration::from_secs(5), task).await {
        Ok(Ok(r)) => r.map_err(|e| e.to_string()),
        Ok(Err(join)) => Err(format!("write-back task failed: {join}")),
        Err(_) => Err(format!("write-back did not finish within {timeout:?}")),
    }
}

/// The SSH private key in the `identity` of Secret `name` (in `ns`).
pub async fn signing_key(
    client: &kube::Client,
    ns: &str,
    name: &str,
) -> Result<ssh_key::PrivateKey, String> {
    let data = crate::controller::secrets::read(client, ns, name).await?;
    let identity = data
        .get("identity")
        .ok_or_else(|| format!("Secret {ns}/{name} has no identity (the signing key)"))?;
    let text = std::str::from_utf8(&identity.0)
        .map_err(|_| format!("Secret {ns}/{name}: identity is not text"))?;
    let key = ssh_key::PrivateKey::from_openssh(text)
        .map_err(|e| format!("Secret {ns}/{name}: identity is not an OpenSSH private key: {e}"))?;
    if key.is_encrypted() {
        return Err(format!(
            "Secret {ns}/{name}: identity is encrypted with a passphrase"
        ));
    }
    Ok(key)
}

/// Reports a write-back that ran: held tags, the pushed commit (and fetches it at once), or
/// why nothing was pushed.
async fn reported(
    ctx: &AppContext,
    app: &Application,
    source: &GitRepository,
    status: &mut ApplicationStatus,
    report: &repo::Report,
    branch: &str,
) {
    let (ns, name) = (app.namespace().unwrap_or_default(), app.name_any());
    let generation = app.metadata.generation;
    for held in &report.held {
        ctx.metrics
            .image_updates(crate::metrics::UpdateResult::Held, 1);
        hold(ctx, &ns, held).await;
        let note = format!(
            "not writing {} tag {} again: commit {} reverted it",
            held.policy,
            held.tag,
            &held.revert[..12.min(held.revert.len())]
        );
        publish(ctx, app, EventType::Normal, reason::IMAGE_HELD, note).await;
    }
    let Some(commit) = &report.pushed else {
        let (s, why, message) = unpushed(report, &app.spec.path, branch);
        set(status, IMAGE_AUTOMATION, s, why, message, generation);
        return;
    };
    let message = pushed_message(report, commit, branch);
    tracing::info!(namespace = %ns, name = %name, %message, "image write-back");
    ctx.metrics.image_updates(
        crate::metrics::UpdateResult::Pushed,
        report.bumps.len() as u64,
    );
    publish(
        ctx,
        app,
        EventType::Normal,
        reason::IMAGE_UPDATED,
        message.clone(),
    )
    .await;
    set(
        status,
        IMAGE_AUTOMATION,
        Status::True,
        reason::PUSHED,
        message,
        generation,
    );
    // Fetch the new commit now rather than at the source's next interval.
    let repos: Api<GitRepository> = Api::namespaced(ctx.client.clone(), &ns);
    if let Err(e) = request_reconcile(&repos, &source.name_any()).await {
        tracing::warn!(namespace = %ns, name = %name, error = %e, "cannot trigger the GitRepository");
    }
}

/// Records a held tag in the ImagePolicy's status.
async fn hold(ctx: &AppContext, ns: &str, held: &repo::Held) {
    let api: Api<ImagePolicy> = Api::namespaced(ctx.client.clone(), ns);
    let Ok(Some(policy)) = api.get_opt(&held.policy).await else {
        return;
    };
    let mut tags = policy
        .status
        .as_ref()
        .map(|s| s.held_tags.clone())
        .unwrap_or_default();
    if tags.iter().any(|t| t.tag == held.tag) {
        return;
    }
    tags.push(HeldTag {
        tag: held.tag.clone(),
        reason: format!("commit {} reverted the update to it", held.revert),
        since: Time(Timestamp::now()),
    });
    if let Err(e) = api
        .patch_status(
            &held.policy,
            &PatchParams::default(),
            &Patch::Merge(json!({"status": {"heldTags": tags}})),
        )
        .await
    {
        tracing::warn!(namespace = %ns, policy = %held.policy, error = %e, "cannot record the held tag");
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn plan() -> Plan {
        Plan {
            pending: vec![],
            unreferenced: vec![],
            waiting: vec![],
            held: vec![],
        }
    }

    #[test]
    fn a_settled_plan_says_what_keeps_it_from_updating_first() {
        let mut p = plan();
        assert_eq!(settled(&p, "app").1, reason::UP_TO_DATE);
        p.waiting.push("web (nothing selected yet)".into());
        assert_eq!(settled(&p, "app").0, Status::Unknown);
        p.held.push("web:2".into());
        assert_eq!(settled(&p, "app").1, reason::HELD);
        p.unreferenced.push("web".into());
        let (s, why, m) = settled(&p, "app");
        assert_eq!((s, why), (Status::False, reason::NOT_REFERENCED));
        assert!(m.contains("under app") && m.contains("web"), "{m}");
    }
}
