//! `gantry ui`: the web view on 127.0.0.1, through the kubeconfig's user and its rights.

use std::process::ExitCode;

use kube::Client;
use kube::api::{Api, ListParams};

use crate::api::Application;
use crate::error::{Error, Result};
use crate::ui::server::{Access, Scope, local_hosts, serve};

#[derive(Debug, clap::Args)]
pub struct Args {
    /// The port on 127.0.0.1 (0: any free port).
    #[arg(long, default_value_t = 8080)]
    pub port: u16,
    /// Only these namespaces (repeatable). Default: every namespace the user may list
    /// Applications in, or the kubeconfig's namespace when that is not allowed.
    #[arg(long = "namespace", short = 'n')]
    pub namespaces: Vec<String>,
}

pub async fn run(args: Args) -> Result<ExitCode> {
    let config = kube::Config::infer().await?;
    let client = Client::try_from(config.clone())?;
    let scope = if !args.namespaces.is_empty() {
        Scope::Namespaces(args.namespaces.clone())
    } else {
        let all: Api<Application> = Api::all(client.clone());
        match all.list(&ListParams::default().limit(1)).await {
            Ok(_) => Scope::All,
            Err(kube::Error::Api(e)) if e.code == 403 => {
                let ns = client.default_namespace().to_string();
                crate::errln!(
                    "gantry ui: you may not list Applications in every namespace; showing namespace {ns} (add more with -n)"
                );
                Scope::Namespaces(vec![ns])
            }
            Err(e) => return Err(e.into()),
        }
    };
    let listener = tokio::net::TcpListener::bind(("127.0.0.1", args.port))
        .await
        .map_err(|e| Error::io(format!("127.0.0.1:{}", args.port), e))?;
    let addr = listener
        .local_addr()
        .map_err(|e| Error::io("listener", e))?;
    crate::outln!("Gantry's web view: http://{addr}/   (Ctrl-C to stop)");
    let access = Access::Local {
        viewer: crate::ui::viewer::Viewer::start(None, config, client, scope),
        hosts: local_hosts(addr),
    };
    let metrics = crate::ui::metrics::UiMetrics::unregistered();
    let stop = async {
        let _ = tokio::signal::ctrl_c().await;
    };
    serve(access, metrics, listener, stop)
        .await
        .map_err(|e| Error::io("web view", e))?;
    Ok(ExitCode::SUCCESS)
}
