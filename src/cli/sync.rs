//! `gantry sync NS/NAME [--wait]`: ask for a sync now (also for `syncPolicy: manual`).

use std::process::ExitCode;
use std::time::Duration;

use kube::Client;
use kube::api::Api;

use super::common::parse_target;
use crate::api::conditions::{self, Status, is};
use crate::api::{Application, GitRepository};
use crate::error::{Error, Result};
use crate::trigger::request_reconcile;

#[derive(Debug, clap::Args)]
pub struct Args {
    /// The Application, as NAMESPACE/NAME.
    pub target: String,
    /// Wait until the sync finished and print the outcome.
    #[arg(long)]
    pub wait: bool,
    /// How long to wait (for the fetch of the source, and with --wait for the sync).
    #[arg(long, default_value = "5m", value_parser = humantime::parse_duration)]
    pub timeout: Duration,
    /// Sync the artifact the source has now, without fetching it first.
    #[arg(long)]
    pub no_fetch: bool,
}

/// Asks the GitRepository for a fetch now and waits until it is done; a fetch that fails
/// is reported and the sync goes on with the last artifact.
async fn fetch_source(
    client: &Client,
    ns: &str,
    source: &str,
    deadline: tokio::time::Instant,
) -> Result<()> {
    let repos: Api<GitRepository> = Api::namespaced(client.clone(), ns);
    let stamp = request_reconcile(&repos, source).await?;
    crate::errln!("fetching GitRepository {ns}/{source}");
    loop {
        let repo = repos.get(source).await?;
        let st = repo.status.unwrap_or_default();
        if st.last_handled_request.as_deref() == Some(stamp.as_str()) {
            let ready = conditions::find(&st.conditions, conditions::READY);
            match (ready, &st.artifact) {
                (Some(r), Some(a)) if is(r, Status::True) => {
                    crate::errln!("  fetched {}", a.revision)
                }
                (Some(r), _) => crate::errln!(
                    "  warning: the fetch failed ({}: {}); syncing the last artifact",
                    r.reason,
                    r.message
                ),
                _ => {}
            }
            return Ok(());
        }
        if tokio::time::Instant::now() >= deadline {
            return Err(Error::Usage(format!(
                "GitRepository {ns}/{source} was not fetched in time (is the controller running?)"
            )));
        }
        tokio::time::sleep(Duration::from_millis(300)).await;
    }
}

pub async fn run(args: Args) -> Result<ExitCode> {
    let (ns, name) = parse_target(&args.target)?;
    let client = Client::try_default().await?;
    let api: Api<Application> = Api::namespaced(client.clone(), &ns);
    let deadline = tokio::time::Instant::now() + args.timeout;
    // The source is fetched first, so a sync right after a push applies the push.
    let app = api.get(&name).await?;
    if !args.no_fetch {
        fetch_source(&client, &ns, &app.spec.source_ref.name, deadline).await?;
    }
    let stamp = request_reconcile(&api, &name).await?;
    crate::errln!("sync of {ns}/{name} requested");
    if !args.wait {
        return Ok(ExitCode::SUCCESS);
    }
    let mut last = String::new();
    loop {
        let app = api.get(&name).await?;
        let st = app.status.clone().unwrap_or_default();
        let ready = conditions::find(&st.conditions, conditions::READY).cloned();
        let healthy = conditions::find(&st.conditions, conditions::HEALTHY).cloned();
        let line = format!(
            "ready={} ({}) healthy={} revision={}",
            ready.as_ref().map(|c| c.status.as_str()).unwrap_or("-"),
            ready.as_ref().map(|c| c.reason.as_str()).unwrap_or("-"),
            healthy.as_ref().map(|c| c.status.as_str()).unwrap_or("-"),
            st.last_applied_revision.as_deref().unwrap_or("-")
        );
        if line != last {
            crate::errln!("  {line}");
            last = line;
        }
        if st.last_handled_request.as_deref() == Some(stamp.as_str()) {
            match (ready, healthy) {
                (Some(r), Some(h)) if is(&r, Status::True) && is(&h, Status::True) => {
                    crate::outln!("{ns}/{name}: {}", r.message);
                    return Ok(ExitCode::SUCCESS);
                }
                (Some(r), _) if is(&r, Status::False) => {
                    return Err(Error::Usage(format!(
                        "{ns}/{name}: {}: {}",
                        r.reason, r.message
                    )));
                }
                _ => {}
            }
        }
        if tokio::time::Instant::now() >= deadline {
            return Err(Error::Usage(format!(
                "{ns}/{name}: not synced within {:?}",
                args.timeout
            )));
        }
        tokio::time::sleep(Duration::from_millis(500)).await;
    }
}
