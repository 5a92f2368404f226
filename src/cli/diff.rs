//! `gantry diff DIR | --app NS/NAME`: unified diff of Git against the cluster.
//! Exit code 0: no difference, 1: differences, 2: error.

use std::io::IsTerminal;
use std::path::PathBuf;
use std::process::ExitCode;

use std::sync::Arc;

use kube::Client;
use kube::api::Api;

use super::common::parse_target;
use crate::api::{Application, GitRepository};
use crate::apply::applier::Applier;
use crate::apply::normalize::{Desired, describe};
use crate::cluster::{Target, Targets};
use crate::controller::application::pipeline;
use crate::controller::context::revision_commit;
use crate::drift::diff::{mask, unified};
use crate::error::{Error, Result};
use crate::source::git;

#[derive(Debug, clap::Args)]
pub struct Args {
    /// Local directory with the desired manifests.
    #[arg(conflicts_with = "app", required_unless_present = "app")]
    pub dir: Option<PathBuf>,
    /// Compare the Application's current source revision with the cluster.
    #[arg(long, value_name = "NS/NAME")]
    pub app: Option<String>,
    /// Namespace for namespaced objects that name none (DIR mode).
    #[arg(long, short = 'n', default_value = "default")]
    pub namespace: String,
    /// Colour: auto (on a terminal), always or never.
    #[arg(long, default_value = "auto")]
    pub color: String,
    /// The repository root (DIR mode): files DIR refers to must be under it, as under a
    /// source's root for the controller. Default: DIR itself.
    #[arg(long, requires = "dir")]
    pub root: Option<PathBuf>,
    /// Release name for Helm charts (DIR mode).
    #[arg(long, default_value = "release", requires = "dir")]
    pub release_name: String,
    #[command(flatten)]
    pub render: super::render_flags::RenderFlags,
}

fn colorize(diff: &str, on: bool) -> String {
    if !on {
        return diff.to_string();
    }
    diff.lines()
        .map(|l| match l.chars().next() {
            Some('+') if !l.starts_with("+++") => format!("\x1b[32m{l}\x1b[0m"),
            Some('-') if !l.starts_with("---") => format!("\x1b[31m{l}\x1b[0m"),
            Some('@') => format!("\x1b[36m{l}\x1b[0m"),
            _ => l.to_string(),
        })
        .collect::<Vec<_>>()
        .join("\n")
        + "\n"
}

/// The desired set of an Application at its source's current revision, checked out locally,
/// and the Application's target (its cluster and identity).
async fn app_desired(
    targets: &Targets,
    client: &Client,
    ns: &str,
    name: &str,
) -> Result<(Vec<Desired>, Application, Arc<Target>)> {
    let app = Api::<Application>::namespaced(client.clone(), ns)
        .get(name)
        .await?;
    let target = targets
        .for_app(&app)
        .await
        .map_err(|e| Error::Usage(format!("Application {ns}/{name}: {e}")))?;
    let repo = Api::<GitRepository>::namespaced(client.clone(), ns)
        .get(&app.spec.source_ref.name)
        .await?;
    let revision = repo
        .status
        .as_ref()
        .and_then(|s| s.artifact.as_ref())
        .map(|a| a.revision.clone())
        .ok_or_else(|| {
            Error::Usage(format!(
                "GitRepository {ns}/{} has no artifact yet",
                app.spec.source_ref.name
            ))
        })?;
    let commit = revision_commit(&revision).unwrap_or_default().to_string();
    let work = tempfile::tempdir().map_err(|e| Error::io("tmp", e))?;
    let cache = work.path().join("repo");
    let url = repo.spec.url.clone();
    let reference = git::Reference::Commit {
        branch: repo.spec.git_ref.as_ref().and_then(|r| r.branch.clone()),
        commit: commit.clone(),
    };
    let cache2 = cache.clone();
    tokio::task::spawn_blocking(move || {
        let deadline = std::time::Instant::now() + std::time::Duration::from_secs(120);
        git::fetch(&cache2, &url, &reference, None, deadline).map(|_| ())
    })
    .await
    .map_err(|e| Error::Usage(e.to_string()))?
    .map_err(|e| Error::Usage(format!("cannot fetch {revision}: {e}")))?;
    let at = pipeline::CachedCommit {
        cache: &cache,
        commit: &commit,
        ignore: &repo.spec.ignore,
    };
    let timeout = app
        .spec
        .timeout
        .parse()
        .unwrap_or(std::time::Duration::from_secs(300));
    let (desired, _, _) = pipeline::render_commit(at, work.path(), &target, client, &app, timeout)
        .await
        .map_err(|e| Error::Usage(format!("{revision}: {e}")))?;
    Ok((desired, app, target))
}

async fn dir_desired(
    applier: &Applier,
    dir: &std::path::Path,
    args: &Args,
) -> Result<Vec<Desired>> {
    let (root, path) = super::render::root_and_path(dir, args.root.as_deref())?;
    // Helm renders against this cluster, as the controller renders against its target.
    let cluster = if crate::render::Capabilities::wanted(&root.join(&path), None) {
        Some(applier.capabilities().await?)
    } else {
        None
    };
    let prepared = super::render::render_in(
        &root,
        &path,
        &super::render::Local {
            namespace: &args.namespace,
            app_label: "local.diff",
            release: &args.release_name,
            flags: &args.render,
            capabilities: cluster.as_deref(),
        },
    )
    .await?;
    let local = prepared.desired;
    let mut out = vec![];
    for d in local {
        let Some(r) = applier.resolve_key(&d.key).await? else {
            return Err(Error::Usage(format!(
                "{}: the cluster has no kind {}",
                describe(&d.key),
                d.key.kind
            )));
        };
        let mut d = d;
        if !r.namespaced {
            d.key.namespace = None;
            if let Some(m) = d.object["metadata"].as_object_mut() {
                m.remove("namespace");
            }
        }
        d.namespaced = r.namespaced;
        // Local diffs compare content only. The ownership labels are the live object's
        // (a synced object keeps the ones its Application gave it, so they are no
        // difference); an object no Application applied gets none.
        let live = applier.live(&r, &d.key).await?;
        for label in [
            crate::apply::APPLICATION_LABEL,
            crate::apply::MANAGED_BY_LABEL,
        ] {
            let owned = live
                .as_ref()
                .and_then(|l| l["metadata"]["labels"][label].as_str())
                .map(str::to_string);
            match owned {
                Some(v) => d.object["metadata"]["labels"][label] = v.into(),
                None => {
                    if let Some(l) = d.object["metadata"]["labels"].as_object_mut() {
                        l.remove(label);
                    }
                }
            }
        }
        if d.object["metadata"]["labels"]
            .as_object()
            .is_some_and(|l| l.is_empty())
        {
            d.object["metadata"]
                .as_object_mut()
                .map(|m| m.remove("labels"));
        }
        out.push(d);
    }
    Ok(out)
}

pub async fn run(args: Args) -> Result<ExitCode> {
    // The same targets as the controller's: `--app` diffs as the Application's identity on
    // its cluster.
    let (client, targets) = super::common::client_and_targets().await?;
    let (desired, app, target) = match (&args.app, &args.dir) {
        (Some(target), _) => {
            let (ns, name) = parse_target(target)?;
            let (d, app, target) = app_desired(&targets, &client, &ns, &name).await?;
            (d, Some(app), target)
        }
        (None, Some(dir)) => {
            let target = targets.local();
            let d = dir_desired(&target.applier, dir, &args).await?;
            (d, None, target)
        }
        _ => return Err(Error::Usage("give a DIR or --app NS/NAME".into())),
    };
    let applier = &target.applier;
    let color = match args.color.as_str() {
        "always" => true,
        "never" => false,
        _ => std::io::stdout().is_terminal(),
    };
    // A diff shows what applying Git would change, hand edits of other field managers
    // included (audit mode exists to show them): the dry-run takes the fields over, as a
    // heal would, instead of stopping at the conflict. Nothing is written.
    let force = true;
    let mut differences = 0;
    for d in &desired {
        let Some(diffed) = applier
            .diff(d, force)
            .await
            .map_err(|e| Error::Usage(e.to_string()))?
        else {
            continue;
        };
        let title = format!(
            "{}/{}",
            d.object["apiVersion"].as_str().unwrap_or_default(),
            describe(&d.key).replace(' ', "/")
        );
        if let Some(text) = unified(&title, diffed.live.as_ref(), Some(&diffed.after)) {
            differences += 1;
            crate::out!("{}", colorize(&text, color));
        }
    }
    // With --app, objects in the inventory that Git no longer has would be pruned.
    if let Some(app) = &app
        && app.spec.prune
    {
        let keys: Vec<_> = desired.iter().map(|d| d.key.clone()).collect();
        for e in crate::apply::inventory::stale(
            &app.status
                .as_ref()
                .map(|s| s.inventory.clone())
                .unwrap_or_default(),
            &keys,
        ) {
            let Some(r) = applier.resolve_key(&e).await? else {
                continue;
            };
            if let Some(live) = applier.live(&r, &e).await? {
                let live = mask(live);
                if let Some(text) = unified(&describe(&e).replace(' ', "/"), Some(&live), None) {
                    differences += 1;
                    crate::out!("{}", colorize(&text, color));
                }
            }
        }
    }
    Ok(if differences > 0 {
        ExitCode::from(1)
    } else {
        ExitCode::SUCCESS
    })
}
