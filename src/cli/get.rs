//! `gantry get apps|sources|images|notifiers`: tables of Gantry resources, or YAML/JSON.

use std::process::ExitCode;

use kube::api::{Api, ListParams};
use kube::{Client, ResourceExt};

use super::common::{age, print_table};
use crate::api::conditions::{self, Condition};
use crate::api::{Application, GitRepository, ImagePolicy, Notifier};
use crate::error::Result;

#[derive(Debug, Clone, Copy, clap::ValueEnum)]
pub enum What {
    Apps,
    Sources,
    Images,
    Notifiers,
}

#[derive(Debug, Clone, Copy, clap::ValueEnum)]
pub enum Output {
    Table,
    Yaml,
    Json,
}

#[derive(Debug, clap::Args)]
pub struct Args {
    pub what: What,
    /// Namespace (default: the kubeconfig's).
    #[arg(long, short = 'n')]
    pub namespace: Option<String>,
    /// All namespaces.
    #[arg(long, short = 'A')]
    pub all_namespaces: bool,
    #[arg(long, short = 'o', value_enum, default_value = "table")]
    pub output: Output,
}

fn ready(conds: &[Condition]) -> String {
    conditions::find(conds, conditions::READY)
        .map(|c| c.status.clone())
        .unwrap_or_else(|| "-".into())
}

fn api<K>(client: &Client, args: &Args) -> Api<K>
where
    K: kube::Resource<Scope = kube::core::NamespaceResourceScope, DynamicType = ()>
        + Clone
        + serde::de::DeserializeOwned
        + std::fmt::Debug,
{
    match (&args.namespace, args.all_namespaces) {
        (_, true) => Api::all(client.clone()),
        (Some(ns), _) => Api::namespaced(client.clone(), ns),
        (None, false) => Api::default_namespaced(client.clone()),
    }
}

fn emit<T: serde::Serialize>(items: &[T], output: Output) -> Result<bool> {
    match output {
        Output::Yaml => crate::out!("{}", serde_yaml::to_string(items)?),
        Output::Json => crate::outln!(
            "{}",
            serde_json::to_string_pretty(items).unwrap_or_default()
        ),
        Output::Table => return Ok(false),
    }
    Ok(true)
}

pub async fn run(args: Args) -> Result<ExitCode> {
    let client = Client::try_default().await?;
    match args.what {
        What::Apps => {
            let items = api::<Application>(&client, &args)
                .list(&ListParams::default())
                .await?
                .items;
            if !emit(&items, args.output)? {
                let rows: Vec<Vec<String>> = items
                    .iter()
                    .map(|a| {
                        let st = a.status.clone().unwrap_or_default();
                        let status_of = |type_: &str| {
                            conditions::find(&st.conditions, type_)
                                .map(|c| c.status.clone())
                                .unwrap_or_else(|| "-".into())
                        };
                        let (healthy, drift) = (
                            status_of(conditions::HEALTHY),
                            status_of(conditions::DRIFTED),
                        );
                        let msg = conditions::find(&st.conditions, conditions::READY)
                            .map(|c| c.message.clone())
                            .unwrap_or_default();
                        vec![
                            a.namespace().unwrap_or_default(),
                            a.name_any(),
                            st.cluster.clone().unwrap_or_else(|| "-".into()),
                            st.running_revision
                                .or(st.last_applied_revision)
                                .unwrap_or_else(|| "-".into()),
                            ready(&st.conditions),
                            healthy,
                            drift,
                            age(a.metadata.creation_timestamp.as_ref()),
                            msg.chars().take(80).collect(),
                        ]
                    })
                    .collect();
                print_table(
                    &[
                        "NAMESPACE",
                        "NAME",
                        "CLUSTER",
                        "REVISION",
                        "READY",
                        "HEALTHY",
                        "DRIFT",
                        "AGE",
                        "MESSAGE",
                    ],
                    &rows,
                );
            }
        }
        What::Sources => {
            let items = api::<GitRepository>(&client, &args)
                .list(&ListParams::default())
                .await?
                .items;
            if !emit(&items, args.output)? {
                let rows: Vec<Vec<String>> = items
                    .iter()
                    .map(|r| {
                        let st = r.status.clone().unwrap_or_default();
                        let rev = st
                            .artifact
                            .as_ref()
                            .map(|a| a.revision.clone())
                            .unwrap_or_else(|| "-".into());
                        let msg = conditions::find(&st.conditions, conditions::READY)
                            .map(|c| c.message.clone())
                            .unwrap_or_default();
                        vec![
                            r.namespace().unwrap_or_default(),
                            r.name_any(),
                            rev,
                            ready(&st.conditions),
                            age(r.metadata.creation_timestamp.as_ref()),
                            msg.chars().take(80).collect(),
                        ]
                    })
                    .collect();
                print_table(
                    &["NAMESPACE", "NAME", "REVISION", "READY", "AGE", "MESSAGE"],
                    &rows,
                );
            }
        }
        What::Images => {
            let items = api::<ImagePolicy>(&client, &args)
                .list(&ListParams::default())
                .await?
                .items;
            if !emit(&items, args.output)? {
                let rows: Vec<Vec<String>> = items
                    .iter()
                    .map(|p| {
                        let st = p.status.clone().unwrap_or_default();
                        vec![
                            p.namespace().unwrap_or_default(),
                            p.name_any(),
                            p.spec.subject(),
                            st.latest_image.unwrap_or_else(|| "-".into()),
                            ready(&st.conditions),
                            age(p.metadata.creation_timestamp.as_ref()),
                        ]
                    })
                    .collect();
                print_table(
                    &["NAMESPACE", "NAME", "IMAGE/CHART", "LATEST", "READY", "AGE"],
                    &rows,
                );
            }
        }
        What::Notifiers => {
            let items = api::<Notifier>(&client, &args)
                .list(&ListParams::default())
                .await?
                .items;
            if !emit(&items, args.output)? {
                let describe = |d: &Option<crate::api::notifier::Delivery>| match d {
                    None => "-".to_string(),
                    Some(d) => {
                        let commit = d.revision.rsplit("@sha1:").next().unwrap_or(&d.revision);
                        let mut s = format!(
                            "{} {} {} ({} ago)",
                            d.application,
                            &commit[..12.min(commit.len())],
                            d.state,
                            age(Some(&d.at))
                        );
                        if let Some(e) = &d.error {
                            s.push_str(&format!(": {e}"));
                        }
                        s
                    }
                };
                let rows: Vec<Vec<String>> = items
                    .iter()
                    .map(|n| {
                        let st = n.status.clone().unwrap_or_default();
                        vec![
                            n.namespace().unwrap_or_default(),
                            n.name_any(),
                            serde_json::to_value(n.spec.kind)
                                .ok()
                                .and_then(|v| v.as_str().map(str::to_string))
                                .unwrap_or_default(),
                            ready(&st.conditions),
                            describe(&st.last_delivery),
                            describe(&st.last_failure),
                            age(n.metadata.creation_timestamp.as_ref()),
                        ]
                    })
                    .collect();
                print_table(
                    &[
                        "NAMESPACE",
                        "NAME",
                        "TYPE",
                        "READY",
                        "LAST DELIVERY",
                        "LAST FAILURE",
                        "AGE",
                    ],
                    &rows,
                );
            }
        }
    }
    Ok(ExitCode::SUCCESS)
}
