//! Chart versions in YAML text, pure: the `version:` of every mapping that names a chart
//! gets the selected version. A mapping names the chart when its sibling keys say so:
//! - `repository:` and `name:` (a dependency in `Chart.yaml`, or an Application's
//!   `spec.render.helm.chart` from a Helm repository), or
//! - `url: oci://…/<name>` (an Application's chart from a registry).
//!
//! Line-level like the image edits: only the value of `version:` changes, its quoting and
//! comment stay. Sibling keys are found by indentation (block style, as charts and
//! manifests are written); flow mappings (`{name: web, …}`) are left alone.

use std::sync::LazyLock;

use regex::Regex;

use super::update::{Change, ChartName};

static KEY_LINE: LazyLock<Regex> = LazyLock::new(|| {
    Regex::new(r#"^(?P<indent> *)(?P<dash>-\s+)?(?P<key>[A-Za-z][A-Za-z0-9_-]*):(?:[ \t]+(?P<q>["']?)(?P<val>[^"'#]*?)["']?)?[ \t]*(?:#.*)?$"#)
        .expect("key line regex")
});
static VERSION_LINE: LazyLock<Regex> = LazyLock::new(|| {
    Regex::new(r#"^(?P<pre> *(?:-\s+)?version:[ \t]*)(?P<q>["']?)(?P<val>[^"'#\s]*)["']?(?P<post>[ \t]*(?:#.*)?)$"#)
        .expect("version line regex")
});

/// One block mapping: its keys' column and the (key, line, value) of its scalar keys.
struct Mapping {
    column: usize,
    keys: Vec<(String, usize, String)>,
}

impl Mapping {
    fn get(&self, key: &str) -> Option<&(String, usize, String)> {
        self.keys.iter().find(|(k, _, _)| k == key)
    }

    /// Whether the mapping names `chart`.
    fn names(&self, chart: &ChartName) -> bool {
        let value = |k: &str| self.get(k).map(|(_, _, v)| v.trim());
        let same_repo = |r: &str| r.trim_end_matches('/') == chart.repository.trim_end_matches('/');
        match (value("repository"), value("name"), value("url")) {
            (Some(repo), Some(name), _) => same_repo(repo) && name == chart.name,
            (None, None, Some(url)) => ChartName::from_oci_url(url)
                .is_some_and(|c| same_repo(&c.repository) && c.name == chart.name),
            _ => false,
        }
    }
}

/// Closes the open mappings whose keys are right of `column` (all of them with `None`),
/// keeping the `version:` line of those that name `chart`.
fn close(
    open: &mut Vec<Mapping>,
    column: Option<usize>,
    chart: &ChartName,
    targets: &mut Vec<usize>,
) {
    while open
        .last()
        .is_some_and(|m| column.is_none_or(|c| m.column > c))
    {
        let m = open.pop().expect("checked");
        if m.names(chart)
            && let Some((_, line, _)) = m.get("version")
        {
            targets.push(*line);
        }
    }
}

/// Sets `version:` to `version` in every mapping of `lines` that names `chart`.
pub fn edit_versions(
    lines: &mut [String],
    chart: &ChartName,
    version: &str,
    changes: &mut Vec<Change>,
) {
    let mut targets = Vec::new();
    let mut open: Vec<Mapping> = Vec::new();
    for (i, line) in lines.iter().enumerate() {
        let trimmed = line.trim_start();
        if trimmed.is_empty() || trimmed.starts_with('#') {
            continue;
        }
        if line.starts_with("---") || line.starts_with("...") {
            close(&mut open, None, chart, &mut targets);
            continue;
        }
        let column = line.len() - trimmed.len();
        let Some(c) = KEY_LINE.captures(line) else {
            // A list scalar or text of a block scalar: it ends the mappings deeper than it.
            close(&mut open, Some(column), chart, &mut targets);
            continue;
        };
        let dash = c.name("dash").map(|d| d.as_str().len()).unwrap_or(0);
        let key_column = column + dash;
        // A new list item also ends the previous item's mapping at the same column.
        let keep = if dash > 0 { column } else { key_column };
        close(&mut open, Some(keep), chart, &mut targets);
        if open.last().is_none_or(|m| m.column != key_column) {
            open.push(Mapping {
                column: key_column,
                keys: Vec::new(),
            });
        }
        let value = c
            .name("val")
            .map(|v| v.as_str().to_string())
            .unwrap_or_default();
        open.last_mut()
            .expect("pushed")
            .keys
            .push((c["key"].to_string(), i, value));
    }
    close(&mut open, None, chart, &mut targets);
    for i in targets {
        let line = &lines[i];
        let Some(c) = VERSION_LINE.captures(line) else {
            continue;
        };
        if &c["val"] == version {
            continue;
        }
        let q = if c["q"].is_empty() { "" } else { &c["q"] };
        let new_line = format!("{}{q}{version}{q}{}", &c["pre"], &c["post"]);
        changes.push(Change {
            line: i + 1,
            old: line.clone(),
            new: new_line.clone(),
            old_value: c["val"].to_string(),
        });
        lines[i] = new_line;
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn edit(text: &str, chart: &ChartName, version: &str) -> (String, Vec<Change>) {
        let mut lines: Vec<String> = text.lines().map(str::to_string).collect();
        let mut changes = Vec::new();
        edit_versions(&mut lines, chart, version, &mut changes);
        (lines.join("\n") + "\n", changes)
    }

    fn repo_chart() -> ChartName {
        ChartName {
            repository: "https://charts.example.com".into(),
            name: "web".into(),
        }
    }

    const CHART_YAML: &str = "\
apiVersion: v2
name: shop
version: 0.3.0 # the umbrella's own version: never touched
dependencies:
  - name: web
    version: \"1.0.0\" # bumped by gantry
    repository: https://charts.example.com/
  - name: web
    repository: https://other.example.com
    version: 1.0.0
  - repository: https://charts.example.com
    name: api
    version: 1.0.0
";

    #[test]
    fn the_dependency_of_the_chart_gets_the_version_and_nothing_else_changes() {
        let (out, changes) = edit(CHART_YAML, &repo_chart(), "1.2.0");
        assert_eq!(changes.len(), 1, "{changes:?}");
        assert_eq!(changes[0].line, 6);
        assert_eq!(changes[0].old_value, "1.0.0");
        let expected = CHART_YAML.replace(
            "    version: \"1.0.0\" # bumped by gantry",
            "    version: \"1.2.0\" # bumped by gantry",
        );
        assert_eq!(out, expected);
    }

    const APPLICATIONS: &str = "\
apiVersion: gantry.dev/v1alpha1
kind: Application
metadata:
  name: web
spec:
  path: values
  render:
    helm:
      chart:
        repository: https://charts.example.com
        name: web
        version: 1.0.0
      values:
        name: web
        version: 9.9.9
---
apiVersion: gantry.dev/v1alpha1
kind: Application
metadata:
  name: cache
spec:
  render:
    helm:
      chart:
        version: '1.0.0'
        url: oci://127.0.0.1:5000/charts/web
";

    #[test]
    fn application_charts_from_a_repository_and_a_registry_get_the_version() {
        let (out, changes) = edit(APPLICATIONS, &repo_chart(), "1.1.0");
        assert_eq!(
            changes.len(),
            1,
            "values that only look alike stay: {changes:?}"
        );
        assert!(
            out.contains("        version: 1.1.0\n      values:"),
            "{out}"
        );
        assert!(out.contains("        version: 9.9.9"), "{out}");

        let oci = ChartName::from_oci_url("oci://127.0.0.1:5000/charts/web").unwrap();
        let (out, changes) = edit(APPLICATIONS, &oci, "1.1.0");
        assert_eq!(changes.len(), 1, "{changes:?}");
        assert!(
            out.contains("        version: '1.1.0'\n        url:"),
            "{out}"
        );
    }

    #[test]
    fn the_same_version_is_no_change() {
        let (_, changes) = edit(CHART_YAML, &repo_chart(), "1.0.0");
        assert!(changes.is_empty());
    }

    #[test]
    fn an_oci_url_splits_into_repository_and_name() {
        let c = ChartName::from_oci_url("oci://reg.example.com/team/charts/web").unwrap();
        assert_eq!(c.repository, "oci://reg.example.com/team/charts");
        assert_eq!(c.name, "web");
        assert!(ChartName::from_oci_url("oci://web").is_none());
    }
}
