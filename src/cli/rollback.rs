//! `gantry rollback NS/NAME [--to REVISION] [--dry-run] [--wait]`: revert, in Git, the
//! commits after REVISION that touched the Application's path, push them (no force), and
//! let the controller deploy the revert. Git keeps describing what runs.

use std::process::ExitCode;
use std::time::Duration;

use kube::api::Api;
use kube::{Client, ResourceExt};

use super::common::parse_target;
use crate::api::conditions::{self, Status, is};
use crate::api::{Application, GitRepository};
use crate::controller::context::revision_commit;
use crate::error::{Error, Result};
use crate::rollout::plan;
use crate::source::git::Reference;
use crate::trigger::request_reconcile;
use crate::writeback::revert;

#[derive(Debug, clap::Args)]
pub struct Args {
    /// The Application, as NAMESPACE/NAME.
    pub target: String,
    /// Revision (`branch@sha1:<commit>` or a commit id) to return to; default: the last
    /// healthy revision before the current one.
    #[arg(long)]
    pub to: Option<String>,
    /// Print the commits and the diff that would be reverted; change nothing.
    #[arg(long)]
    pub dry_run: bool,
    /// Wait until the Application is Ready at the revert commit.
    #[arg(long)]
    pub wait: bool,
    /// How long to wait.
    #[arg(long, default_value = "5m", value_parser = humantime::parse_duration)]
    pub timeout: Duration,
    /// Author of the revert commits.
    #[arg(long, default_value = "Gantry Rollback")]
    pub author_name: String,
    #[arg(long, default_value = "gantry-rollback@localhost")]
    pub author_email: String,
}

pub async fn run(args: Args) -> Result<ExitCode> {
    let (ns, name) = parse_target(&args.target)?;
    let client = Client::try_default().await?;
    let apps: Api<Application> = Api::namespaced(client.clone(), &ns);
    let app = apps
        .get_opt(&name)
        .await?
        .ok_or_else(|| Error::Usage(format!("Application {ns}/{name} not found")))?;
    let status = app.status.clone().unwrap_or_default();
    let current = status
        .last_applied_revision
        .clone()
        .or_else(|| status.last_attempted_revision.clone())
        .ok_or_else(|| Error::Usage(format!("Application {ns}/{name} has not synced yet")))?;
    let to = match &args.to {
        Some(r) => revision_commit(r).unwrap_or(r).to_string(),
        None => {
            let rec = plan::last_healthy(&status.history, &current).ok_or_else(|| {
                Error::Usage(format!(
                    "Application {ns}/{name} has no healthy revision before {current} in its history; pass --to"
                ))
            })?;
            revision_commit(&rec.revision)
                .unwrap_or(&rec.revision)
                .to_string()
        }
    };
    let repos: Api<GitRepository> = Api::namespaced(client.clone(), &ns);
    let source_name = app.spec.source_ref.name.clone();
    let source = repos
        .get_opt(&source_name)
        .await?
        .ok_or_else(|| Error::Usage(format!("GitRepository {ns}/{source_name} not found")))?;
    let branch = Reference::from_spec(source.spec.git_ref.as_ref())
        .branch()
        .unwrap_or("main")
        .to_string();
    let creds = crate::controller::git_repository::credentials(&client, &ns, &source)
        .await
        .map_err(|e| Error::Usage(e.to_string()))?;
    let dry_run = args.dry_run;
    let work = tempfile::tempdir().map_err(|e| Error::io("temporary directory", e))?;
    // Signed as the Application's write-back commits are, when it names a key (read with
    // your rights).
    let signing_key = match app
        .spec
        .image_automation
        .as_ref()
        .and_then(|a| a.write_back.signing_key.as_ref())
    {
        Some(k) => Some(
            crate::controller::application::write_back::signing_key(
                &client,
                &ns,
                &k.secret_ref.name,
            )
            .await
            .map_err(Error::Usage)?,
        ),
        None => None,
    };
    let result = revert::run(revert::Request {
        signing_key,
        cache: work.path().join("repo"),
        url: source.spec.url.clone(),
        branch,
        creds,
        path: app.spec.path.clone(),
        to: to.clone(),
        author: (args.author_name.clone(), args.author_email.clone()),
        note: format!(
            "{} {ns}/{name}` to {to}.",
            crate::api::annotations::ROLLBACK_NOTE
        ),
        dry_run,
        timeout: Duration::from_secs(120),
    })
    .await
    .map_err(|e| Error::Usage(format!("rollback of {ns}/{name}: {e}")))?;

    if result.commits.is_empty() {
        crate::errln!(
            "nothing to revert: no commit after {to} touched {}",
            app.spec.path
        );
        return Ok(ExitCode::SUCCESS);
    }
    let verb = if dry_run { "would revert" } else { "reverted" };
    crate::outln!(
        "{verb} {} commit(s) to return {} to {to}:",
        result.commits.len(),
        app.spec.path
    );
    for c in &result.commits {
        crate::outln!("  {} {}", &c.id[..12], c.summary);
    }
    if dry_run {
        crate::outln!();
        crate::out!("{}", result.diff);
        return Ok(ExitCode::SUCCESS);
    }
    let pushed = result.pushed.clone().unwrap_or_default();
    crate::outln!("pushed {pushed}");
    request_reconcile(&repos, &source.name_any()).await?;
    if !args.wait {
        return Ok(ExitCode::SUCCESS);
    }
    let deadline = tokio::time::Instant::now() + args.timeout;
    let mut last = String::new();
    loop {
        let app = apps.get(&name).await?;
        let st = app.status.clone().unwrap_or_default();
        let ready = conditions::find(&st.conditions, conditions::READY);
        let line = format!(
            "revision {} — {}",
            st.last_applied_revision.as_deref().unwrap_or("-"),
            ready
                .map(|c| format!("{}: {}", c.reason, c.message))
                .unwrap_or_default()
        );
        if line != last {
            crate::errln!("{line}");
            last = line;
        }
        let at_revert = st
            .last_applied_revision
            .as_deref()
            .is_some_and(|r| r.ends_with(&pushed));
        let healthy = conditions::find(&st.conditions, conditions::HEALTHY)
            .is_some_and(|c| is(c, Status::True));
        if at_revert && ready.is_some_and(|c| is(c, Status::True)) && healthy {
            crate::outln!("{ns}/{name} is Ready at {pushed}");
            return Ok(ExitCode::SUCCESS);
        }
        if tokio::time::Instant::now() >= deadline {
            return Err(Error::Usage(format!(
                "{ns}/{name} was not Ready at {pushed} within {:?}",
                args.timeout
            )));
        }
        tokio::time::sleep(Duration::from_millis(500)).await;
    }
}
