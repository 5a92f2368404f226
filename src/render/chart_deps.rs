//! A chart's dependencies, as `helm dependency build` would gather them, but offline for
//! what the repository holds: `file://` dependencies (an umbrella chart naming a sibling
//! chart) are built from the copy of the repository, depth first, with no network; only
//! dependencies from a chart repository need the network, and only when the Application
//! allows it.

use std::collections::BTreeSet;
use std::path::{Path, PathBuf};

use serde_json::Value;

use super::RenderError;

/// `file://` dependencies are followed this deep (an umbrella of umbrellas of charts).
const MAX_DEPTH: usize = 5;
/// At most this many charts have their dependencies built in one render.
const MAX_BUILDS: usize = 16;

/// One entry of `Chart.yaml`'s `dependencies`.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Dependency {
    pub name: String,
    pub repository: String,
    /// Already under `charts/` (a directory or an archive): nothing to build.
    pub vendored: bool,
}

impl Dependency {
    /// The directory of a `file://` dependency, relative to its chart.
    pub fn local_path(&self) -> Option<&str> {
        self.repository.strip_prefix("file://")
    }
}

/// The dependencies `Chart.yaml` in `chart_dir` declares (none without a `Chart.yaml`).
pub fn dependencies(chart_dir: &Path) -> Result<Vec<Dependency>, RenderError> {
    let file = chart_dir.join("Chart.yaml");
    let text = match std::fs::read_to_string(&file) {
        Ok(t) => t,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(vec![]),
        Err(e) => return Err(RenderError::io(&file, e)),
    };
    let chart: Value = serde_yaml::from_str(&text).map_err(|e| RenderError::Parse {
        source_name: "Chart.yaml".into(),
        message: e.to_string(),
    })?;
    let charts = chart_dir.join("charts");
    let mut out = vec![];
    for dep in chart
        .get("dependencies")
        .and_then(Value::as_array)
        .into_iter()
        .flatten()
    {
        let name = dep.get("name").and_then(Value::as_str).unwrap_or_default();
        let repository = dep
            .get("repository")
            .and_then(Value::as_str)
            .unwrap_or_default();
        let vendored = charts.join(name).is_dir()
            || std::fs::read_dir(&charts)
                .into_iter()
                .flatten()
                .flatten()
                .any(|e| {
                    let f = e.file_name().to_string_lossy().into_owned();
                    f.starts_with(&format!("{name}-")) && f.ends_with(".tgz")
                });
        out.push(Dependency {
            name: name.to_string(),
            repository: repository.to_string(),
            vendored,
        });
    }
    Ok(out)
}

/// Dependencies that are neither vendored nor in the repository: fetched from the network.
pub fn network(deps: &[Dependency]) -> Vec<String> {
    deps.iter()
        .filter(|d| !d.vendored && d.local_path().is_none() && !d.repository.is_empty())
        .map(|d| format!("{} from {}", d.name, d.repository))
        .collect()
}

/// The charts whose dependencies must be built before `chart_dir` renders, in the order to
/// build them (dependencies first, `chart_dir` last; empty when nothing is missing). Every
/// `file://` path must stay inside `root` (the copy of the repository).
pub fn build_order(root: &Path, chart_dir: &Path) -> Result<Vec<PathBuf>, RenderError> {
    let root = root.canonicalize().map_err(|e| RenderError::io(root, e))?;
    let mut order = vec![];
    let mut visiting = BTreeSet::new();
    visit(&root, chart_dir, 0, &mut visiting, &mut order)?;
    if order.len() > MAX_BUILDS {
        return Err(RenderError::TooLarge(format!(
            "more than {MAX_BUILDS} charts with dependencies to build"
        )));
    }
    Ok(order)
}

/// Adds `chart_dir` (after the local charts it needs) to `order` when something of it is
/// missing; `true` when it was added.
fn visit(
    root: &Path,
    chart_dir: &Path,
    depth: usize,
    visiting: &mut BTreeSet<PathBuf>,
    order: &mut Vec<PathBuf>,
) -> Result<bool, RenderError> {
    let real = chart_dir
        .canonicalize()
        .map_err(|e| RenderError::io(chart_dir, e))?;
    if order.contains(&real) {
        return Ok(true);
    }
    if !visiting.insert(real.clone()) {
        return Err(RenderError::Refused(format!(
            "chart dependencies form a cycle at {}",
            shown(root, &real)
        )));
    }
    let deps = dependencies(&real)?;
    let mut missing = false;
    for d in deps.iter().filter(|d| !d.vendored) {
        missing = true;
        let Some(path) = d.local_path() else { continue };
        if depth + 1 > MAX_DEPTH {
            return Err(RenderError::TooLarge(format!(
                "file:// chart dependencies nested more than {MAX_DEPTH} deep"
            )));
        }
        let dir = real.join(path);
        let dep_real = dir.canonicalize().map_err(|_| RenderError::NotFound {
            field: format!("dependency {} of {}", d.name, shown(root, &real)),
            path: d.repository.clone(),
        })?;
        if !dep_real.starts_with(root) {
            return Err(RenderError::UnsafePath {
                field: format!("dependency {} of {}", d.name, shown(root, &real)),
                path: d.repository.clone(),
                why: "it resolves outside the repository".into(),
            });
        }
        if !dep_real.join("Chart.yaml").is_file() {
            return Err(RenderError::NotFound {
                field: format!("Chart.yaml of dependency {}", d.name),
                path: d.repository.clone(),
            });
        }
        visit(root, &dep_real, depth + 1, visiting, order)?;
    }
    visiting.remove(&real);
    if missing {
        order.push(real);
    }
    Ok(missing)
}

fn shown(root: &Path, p: &Path) -> String {
    match p.strip_prefix(root) {
        Ok(rel) if rel.as_os_str().is_empty() => ".".into(),
        Ok(rel) => rel.display().to_string(),
        Err(_) => p.display().to_string(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn chart(dir: &Path, name: &str, deps: &[(&str, &str)]) {
        std::fs::create_dir_all(dir).unwrap();
        let mut text = format!("apiVersion: v2\nname: {name}\nversion: 0.1.0\n");
        if !deps.is_empty() {
            text.push_str("dependencies:\n");
            for (n, repo) in deps {
                text.push_str(&format!(
                    "- name: {n}\n  version: \">=0.1.0\"\n  repository: {repo}\n"
                ));
            }
        }
        std::fs::write(dir.join("Chart.yaml"), text).unwrap();
    }

    #[test]
    fn local_dependencies_are_built_depth_first() {
        let root = tempfile::tempdir().unwrap();
        let r = root.path();
        chart(&r.join("charts/base"), "base", &[]);
        chart(
            &r.join("charts/common"),
            "common",
            &[("base", "file://../base")],
        );
        chart(
            &r.join("apps/shop"),
            "shop",
            &[
                ("common", "file://../../charts/common"),
                ("redis", "https://charts.example.com"),
            ],
        );
        let order = build_order(r, &r.join("apps/shop")).unwrap();
        let real = r.canonicalize().unwrap();
        assert_eq!(
            order,
            [real.join("charts/common"), real.join("apps/shop")],
            "base needs nothing; common needs base; shop needs both"
        );
        assert_eq!(
            network(&dependencies(&r.join("apps/shop")).unwrap()),
            ["redis from https://charts.example.com"]
        );
        // A vendored dependency needs nothing.
        std::fs::create_dir_all(r.join("charts/common/charts/base")).unwrap();
        std::fs::create_dir_all(r.join("apps/shop/charts")).unwrap();
        std::fs::write(r.join("apps/shop/charts/common-0.1.0.tgz"), b"").unwrap();
        std::fs::write(r.join("apps/shop/charts/redis-1.0.0.tgz"), b"").unwrap();
        assert!(build_order(r, &r.join("apps/shop")).unwrap().is_empty());
    }

    #[test]
    fn paths_outside_the_repository_and_cycles_are_refused() {
        let outer = tempfile::tempdir().unwrap();
        let r = outer.path().join("repo");
        chart(&outer.path().join("secret"), "secret", &[]);
        chart(&r.join("app"), "app", &[("secret", "file://../../secret")]);
        let e = build_order(&r, &r.join("app")).unwrap_err().to_string();
        assert!(e.contains("outside the repository"), "{e}");

        chart(&r.join("a"), "a", &[("b", "file://../b")]);
        chart(&r.join("b"), "b", &[("a", "file://../a")]);
        let e = build_order(&r, &r.join("a")).unwrap_err().to_string();
        assert!(e.contains("cycle"), "{e}");

        chart(&r.join("c"), "c", &[("gone", "file://../gone")]);
        let e = build_order(&r, &r.join("c")).unwrap_err().to_string();
        assert!(e.contains("does not exist"), "{e}");
    }
}
