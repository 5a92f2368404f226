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
    /// Release name for Helm charts (default: the Application's name in --app-label, as
    /// the controller names a release after its Application).
    #[arg(long)]
    pub release_name: Option<String>,
    /// The repository root: files DIR refers to (kustomize `../base`, Helm values files)
    /// must be under it, as they must be under the source's root for the controller.
    /// Default: DIR itself.
    #[arg(long)]
    pub root: Option<PathBuf>,
}

/// The release name the controller would use: the Application's name, the part of the
/// ownership label `<namespace>.<application>` after the namespace.
fn release_of(app_label: &str) -> &str {
    app_label
        .split_once('.')
        .map(|(_, app)| app)
        .unwrap_or(app_label)
}

/// Renders a local directory and normalizes it with the built-in scope table.
pub async fn render_dir(
    dir: &std::path::Path,
    namespace: &str,
    app_label: &str,
    release: &str,
) -> Result<Vec<normalize::Desired>> {
    render_in(
        dir,
        std::path::Path::new("."),
        namespace,
        app_label,
        release,
    )
    .await
}

/// Renders `path` (relative to `root`, which bounds what the render may read).
pub async fn render_in(
    root: &std::path::Path,
    path: &std::path::Path,
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
        chart: None,
    };
    let objects = render::render(root, &path.to_string_lossy(), &req)
        .await
        .map_err(|e| Error::Usage(e.to_string()))?;
    normalize::normalize(objects, namespace, app_label, |g, _, k| {
        Some(!cluster_scoped(g, k))
    })
    .map_err(|e| Error::Usage(e.to_string()))
}

pub async fn run(args: Args) -> Result<ExitCode> {
    let release = args
        .release_name
        .clone()
        .unwrap_or_else(|| release_of(&args.app_label).to_string());
    let (root, path) = match &args.root {
        None => (args.dir.clone(), PathBuf::from(".")),
        Some(root) => {
            let (root_real, dir_real) = (root.canonicalize(), args.dir.canonicalize());
            let (Ok(root_real), Ok(dir_real)) = (root_real, dir_real) else {
                return Err(Error::Usage(format!(
                    "{} or {} does not exist",
                    root.display(),
                    args.dir.display()
                )));
            };
            let rel = dir_real.strip_prefix(&root_real).map_err(|_| {
                Error::Usage(format!(
                    "{} is not under --root {}",
                    args.dir.display(),
                    root.display()
                ))
            })?;
            let rel = if rel.as_os_str().is_empty() {
                PathBuf::from(".")
            } else {
                rel.to_path_buf()
            };
            (root_real, rel)
        }
    };
    let set = render_in(&root, &path, &args.namespace, &args.app_label, &release).await?;
    for d in set {
        crate::outln!("---");
        crate::out!("{}", serde_yaml::to_string(&d.object)?);
    }
    Ok(ExitCode::SUCCESS)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_release_is_named_after_the_application_as_the_controller_does() {
        assert_eq!(release_of("shop.web"), "web");
        assert_eq!(release_of("local.render"), "render");
        assert_eq!(release_of("bare"), "bare");
    }
}
