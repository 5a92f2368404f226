//! `gantry diff DIR | --app NS/NAME`: unified diff of Git against the cluster.
//! Exit code 0: no difference, 1: differences, 2: error.

use std::io::IsTerminal;
use std::path::PathBuf;
use std::process::ExitCode;

use kube::Client;
use kube::api::{Api, Patch, PatchParams};
use serde_json::Value;

use super::common::parse_target;
use crate::api::{Application, GitRepository};
use crate::apply::discovery::Discovery;
use crate::apply::normalize::{Desired, describe};
use crate::apply::ssa::{self, FIELD_MANAGER};
use crate::controller::context::revision_commit;
use crate::drift::diff::{mask, unified};
use crate::error::{Error, Result};
use crate::source::{artifact, git};

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

/// The desired set of an Application at its source's current revision, checked out locally.
async fn app_desired(
    client: &Client,
    ns: &str,
    name: &str,
    discovery: &Discovery,
) -> Result<(Vec<Desired>, Application)> {
    let app = Api::<Application>::namespaced(client.clone(), ns)
        .get(name)
        .await?;
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
    let cache = tempfile::tempdir().map_err(|e| Error::io("tmp", e))?;
    let out = tempfile::tempdir().map_err(|e| Error::io("tmp", e))?;
    let url = repo.spec.url.clone();
    let ignore = repo.spec.ignore.clone();
    let reference = git::Reference::Commit {
        branch: repo.spec.git_ref.as_ref().and_then(|r| r.branch.clone()),
        commit: commit.clone(),
    };
    let (cache_path, out_path) = (cache.path().join("repo"), out.path().join("tree"));
    tokio::task::spawn_blocking(move || -> std::result::Result<(), String> {
        let deadline = std::time::Instant::now() + std::time::Duration::from_secs(120);
        git::fetch(&cache_path, &url, &reference, None, deadline).map_err(|e| e.to_string())?;
        let repo = git2::Repository::open_bare(&cache_path).map_err(|e| e.to_string())?;
        let oid = git2::Oid::from_str(&commit).map_err(|e| e.to_string())?;
        artifact::write_tree(&repo, oid, &out_path, &ignore)
            .map(|_| ())
            .map_err(|e| e.to_string())
    })
    .await
    .map_err(|e| Error::Usage(e.to_string()))?
    .map_err(|e| Error::Usage(format!("cannot fetch {revision}: {e}")))?;
    let input = crate::controller::sync::SyncInput {
        client,
        discovery,
        app: &app,
        artifact_root: &out.path().join("tree"),
        artifact_digest: None,
        concurrency: 8,
        hold: None,
        record_planned: None,
    };
    let (desired, _) = crate::controller::sync::desired_set(&input)
        .await
        .map_err(|e| Error::Usage(e.to_string()))?;
    Ok((desired, app))
}

async fn dir_desired(
    client: &Client,
    dir: &std::path::Path,
    namespace: &str,
    discovery: &Discovery,
) -> Result<Vec<Desired>> {
    let local = super::render::render_dir(dir, namespace, "local.diff", "release").await?;
    let mut out = vec![];
    for d in local {
        let Some(r) = discovery
            .resolve(client, &d.key.group, &d.key.version, &d.key.kind)
            .await?
        else {
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
        // Local diffs compare content only: no ownership labels were added by a sync.
        if let Some(l) = d.object["metadata"]["labels"].as_object_mut() {
            l.remove(crate::apply::APPLICATION_LABEL);
            l.remove(crate::apply::MANAGED_BY_LABEL);
            if l.is_empty() {
                d.object["metadata"]
                    .as_object_mut()
                    .map(|m| m.remove("labels"));
            }
        }
        out.push(d);
    }
    Ok(out)
}

pub async fn run(args: Args) -> Result<ExitCode> {
    let client = Client::try_default().await?;
    let discovery = Discovery::default();
    let (desired, app) = match (&args.app, &args.dir) {
        (Some(target), _) => {
            let (ns, name) = parse_target(target)?;
            let (d, app) = app_desired(&client, &ns, &name, &discovery).await?;
            (d, Some(app))
        }
        (None, Some(dir)) => (
            dir_desired(&client, dir, &args.namespace, &discovery).await?,
            None,
        ),
        _ => return Err(Error::Usage("give a DIR or --app NS/NAME".into())),
    };
    let color = match args.color.as_str() {
        "always" => true,
        "never" => false,
        _ => std::io::stdout().is_terminal(),
    };
    let force = app
        .as_ref()
        .is_some_and(crate::controller::sync::force_conflicts);
    let mut differences = 0;
    for d in &desired {
        let Some(r) = discovery
            .resolve(&client, &d.key.group, &d.key.version, &d.key.kind)
            .await?
        else {
            continue;
        };
        let api = ssa::api_for(&client, &r, d.key.namespace.as_deref());
        let title = format!(
            "{}/{}",
            d.object["apiVersion"].as_str().unwrap_or_default(),
            describe(&d.key).replace(' ', "/")
        );
        let live: Option<Value> = api
            .get_opt(&d.key.name)
            .await?
            .map(|o| serde_json::to_value(o).unwrap_or(Value::Null));
        let mut params = PatchParams::apply(FIELD_MANAGER).dry_run();
        if force || live.is_none() {
            params = params.force();
        }
        let after = match api
            .patch(&d.key.name, &params, &Patch::Apply(&d.object))
            .await
        {
            Ok(o) => serde_json::to_value(o).unwrap_or(Value::Null),
            Err(e) => {
                return Err(Error::Usage(format!(
                    "{}: {}",
                    describe(&d.key),
                    ssa::api_message(&e)
                )));
            }
        };
        if let Some(text) = unified(&title, live.as_ref(), Some(&after)) {
            differences += 1;
            print!("{}", colorize(&text, color));
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
            let Some(r) = discovery
                .resolve(&client, &e.group, &e.version, &e.kind)
                .await?
            else {
                continue;
            };
            if let Some(live) = ssa::api_for(&client, &r, e.namespace.as_deref())
                .get_opt(&e.name)
                .await?
            {
                let live = mask(serde_json::to_value(live).unwrap_or(Value::Null));
                if let Some(text) = unified(&describe(&e).replace(' ', "/"), Some(&live), None) {
                    differences += 1;
                    print!("{}", colorize(&text, color));
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
