//! `gantry plan --source NS/NAME --ref REF`: what merging REF would do to each Application
//! of the GitRepository, checked by the live API server as each Application's identity.
//! Exit code 0: no change, 1: changes, 2: something would be refused, or an error.

use std::process::ExitCode;

use kube::api::Api;

use super::common::parse_target;
use crate::api::GitRepository;
use crate::controller::revision_plan::{self, Request};
use crate::error::{Error, Result};
use crate::plan::{Plan, format};

#[derive(Clone, Copy, Debug, clap::ValueEnum)]
pub enum Output {
    Text,
    Markdown,
    Json,
}

#[derive(Debug, clap::Args)]
pub struct Args {
    /// The GitRepository whose Applications are planned.
    #[arg(long, value_name = "NS/NAME", required_unless_present = "schema")]
    pub source: Option<String>,
    /// The revision to plan: a branch, refs/heads/…, refs/tags/… or a commit.
    #[arg(long = "ref", value_name = "REF", required_unless_present = "schema")]
    pub reference: Option<String>,
    /// Compare with this revision instead of what each Application last applied.
    #[arg(long, value_name = "REF")]
    pub base: Option<String>,
    /// Plan only these Applications (repeatable; planned even when nothing changes).
    #[arg(long = "app", value_name = "NS/NAME")]
    pub apps: Vec<String>,
    /// Output format.
    #[arg(long, short = 'o', value_enum, default_value = "text")]
    pub output: Output,
    /// The time for each fetch and render.
    #[arg(long, default_value = "2m", value_parser = humantime::parse_duration)]
    pub timeout: std::time::Duration,
    /// Print the JSON schema of `-o json` and exit.
    #[arg(long)]
    pub schema: bool,
}

/// The JSON schema of a plan (`-o json`).
pub fn schema() -> String {
    let mut schema = serde_json::to_value(schemars::schema_for!(Plan)).expect("a schema");
    // Keys in one order whether or not serde_json keeps insertion order (a feature another
    // crate of the build may turn on).
    schema.sort_all_objects();
    serde_json::to_string_pretty(&schema).expect("a schema serializes") + "\n"
}

pub async fn run(args: Args) -> Result<ExitCode> {
    if args.schema {
        crate::out!("{}", schema());
        return Ok(ExitCode::SUCCESS);
    }
    let (source, reference) = match (&args.source, &args.reference) {
        (Some(s), Some(r)) => (s, r),
        _ => return Err(Error::Usage("--source and --ref are required".into())),
    };
    let (ns, name) = parse_target(source)?;
    let mut only = vec![];
    for app in &args.apps {
        let (app_ns, app_name) = parse_target(app)?;
        if app_ns != ns {
            return Err(Error::Usage(format!(
                "Application {app} is not in the GitRepository's namespace {ns}"
            )));
        }
        only.push(app_name);
    }
    // The controller's targets: each Application is dry-run on its own cluster as its own
    // identity.
    let (client, targets) = super::common::client_and_targets().await?;
    let repo = Api::<GitRepository>::namespaced(client.clone(), &ns)
        .get_opt(&name)
        .await?
        .ok_or_else(|| Error::Usage(format!("GitRepository {ns}/{name} not found")))?;
    let work = tempfile::tempdir().map_err(|e| Error::io("temporary directory", e))?;
    let plan = revision_plan::plan(Request {
        client: &client,
        targets: &targets,
        source: &repo,
        reference,
        base: args.base.as_deref(),
        also_fetch: &[],
        only: &only,
        work: work.path(),
        timeout: args.timeout,
    })
    .await
    .map_err(|e| Error::Usage(e.to_string()))?;
    match args.output {
        Output::Text => crate::out!("{}", format::text(&plan)),
        Output::Markdown => crate::out!("{}", format::markdown(&plan)),
        Output::Json => crate::outln!(
            "{}",
            serde_json::to_string_pretty(&plan).expect("a plan serializes")
        ),
    }
    Ok(ExitCode::from(plan.verdict().exit_code()))
}

#[cfg(test)]
mod tests {
    #[test]
    fn the_documented_schema_is_the_plan_types() {
        assert_eq!(
            include_str!("../../docs/plan.schema.json"),
            super::schema(),
            "docs/plan.schema.json is stale: run `make crds`"
        );
    }
}
