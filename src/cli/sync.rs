//! `gantry sync NS/NAME [--wait]`: ask for a sync now (also for `syncPolicy: manual`).

use std::process::ExitCode;
use std::time::Duration;

use kube::Client;
use kube::api::Api;

use super::common::parse_target;
use crate::api::Application;
use crate::api::conditions;
use crate::controller::trigger::request_reconcile;
use crate::error::{Error, Result};

#[derive(Debug, clap::Args)]
pub struct Args {
    /// The Application, as NAMESPACE/NAME.
    pub target: String,
    /// Wait until the sync finished and print the outcome.
    #[arg(long)]
    pub wait: bool,
    /// How long to wait.
    #[arg(long, default_value = "5m", value_parser = humantime::parse_duration)]
    pub timeout: Duration,
}

pub async fn run(args: Args) -> Result<ExitCode> {
    let (ns, name) = parse_target(&args.target)?;
    let client = Client::try_default().await?;
    let api: Api<Application> = Api::namespaced(client, &ns);
    let stamp = request_reconcile(&api, &name).await?;
    eprintln!("sync of {ns}/{name} requested");
    if !args.wait {
        return Ok(ExitCode::SUCCESS);
    }
    let deadline = tokio::time::Instant::now() + args.timeout;
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
            eprintln!("  {line}");
            last = line;
        }
        if st.last_handled_request.as_deref() == Some(stamp.as_str()) {
            match (ready, healthy) {
                (Some(r), Some(h)) if r.status == "True" && h.status == "True" => {
                    crate::outln!("{ns}/{name}: {}", r.message);
                    return Ok(ExitCode::SUCCESS);
                }
                (Some(r), _) if r.status == "False" => {
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
