//! `gantry promote|abort NS/NAME`: act on a running canary. The request is an annotation
//! the controller handles on its next look (at once: the annotation wakes it).

use std::process::ExitCode;

use kube::Client;
use kube::api::{Api, Patch, PatchParams};
use serde_json::json;

use super::common::parse_target;
use crate::api::Application;
use crate::api::annotations::ROLLOUT_ACTION_ANNOTATION;
use crate::api::rollout::RolloutPhase;
use crate::error::{Error, Result};

#[derive(Debug, clap::Args)]
pub struct Args {
    /// The Application, as NAMESPACE/NAME.
    pub target: String,
}

pub async fn run(args: Args, action: &str) -> Result<ExitCode> {
    let (ns, name) = parse_target(&args.target)?;
    let api: Api<Application> = Api::namespaced(Client::try_default().await?, &ns);
    let app = api
        .get_opt(&name)
        .await?
        .ok_or_else(|| Error::Usage(format!("Application {ns}/{name} not found")))?;
    let rollout = app.status.and_then(|s| s.rollout);
    let running = rollout.as_ref().is_some_and(|r| {
        matches!(r.phase, RolloutPhase::Progressing | RolloutPhase::Paused)
            && !r.canaries.is_empty()
    });
    if !running {
        return Err(Error::Usage(format!(
            "{ns}/{name} has no canary running (phase {:?})",
            rollout.map(|r| r.phase).unwrap_or_default()
        )));
    }
    let stamp = format!("{action}@{}", k8s_openapi::jiff::Timestamp::now());
    api.patch(
        &name,
        &PatchParams::default(),
        &Patch::Merge(json!({"metadata": {"annotations": {ROLLOUT_ACTION_ANNOTATION: stamp}}})),
    )
    .await?;
    crate::outln!("{action} of the canary of {ns}/{name} requested");
    Ok(ExitCode::SUCCESS)
}
