//! `gantry render DIR`: the rendered, normalized set, without a cluster.

use std::path::PathBuf;
use std::process::ExitCode;

use super::common::cluster_scoped;
use crate::api::application::{RenderKind, RenderSpec};
use crate::apply::normalize;
use crate::error::{Error, Result};
use crate::render::{self, Limits, RenderRequest};

#[derive(Debug, clap::Args)]
pub struct Args {
    /// Directory to render (plain YAML, kustomization or Helm chart, detected).
    pub dir: PathBuf,
    /// Namespace for namespaced objects that name none.
    #[arg(long, short = 'n', default_value = "default")]
    pub namespace: String,
    /// Ownership label value (`<namespace>.<application>`).
    #[arg(long, default_value = "local.render")]
    pub app_label: String,
    /// Release name for Helm charts.
    #[arg(long, default_value = "release")]
    pub release_name: String,
}

/// Renders a local directory and normalizes it with the built-in scope table.
pub async fn render_dir(
    dir: &std::path::Path,
    namespace: &str,
    app_label: &str,
    release: &str,
) -> Result<Vec<normalize::Desired>> {
    let spec = RenderSpec {
        kind: RenderKind::Auto,
        ..Default::default()
    };
    let req = RenderRequest {
        release_name: release,
        namespace,
        spec: Some(&spec),
        limits: Limits::default(),
        // No cluster: Helm's own defaults.
        capabilities: None,
    };
    let objects = render::render(dir, ".", &req)
        .await
        .map_err(|e| Error::Usage(e.to_string()))?;
    normalize::normalize(objects, namespace, app_label, |g, _, k| {
        Some(!cluster_scoped(g, k))
    })
    .map_err(|e| Error::Usage(e.to_string()))
}

pub async fn run(args: Args) -> Result<ExitCode> {
    let set = render_dir(
        &args.dir,
        &args.namespace,
        &args.app_label,
        &args.release_name,
    )
    .await?;
    for d in set {
        crate::outln!("---");
        crate::out!("{}", serde_yaml::to_string(&d.object)?);
    }
    Ok(ExitCode::SUCCESS)
}
