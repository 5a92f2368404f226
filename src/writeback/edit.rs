//! Image and chart-version edits in YAML text, pure. Line-level and minimal: comments, key
//! order, quoting and indentation stay as they are; only the image reference (or tag, or
//! chart version) changes.
//!
//! For an image, three places are recognised:
//! - `image:` fields of containers and init containers in workload documents (Deployment,
//!   StatefulSet, DaemonSet, ReplicaSet, Job, CronJob, Pod) whose repository is the policy's;
//! - `images:` entries of a `kustomization.yaml` whose `name` (or `newName`) is the
//!   policy's repository: `newTag`, and `digest` when pinning;
//! - any line marked `# gantry:image <policy>` (for Helm values and the like). The marker
//!   may name what to write: `<policy>:tag`, `<policy>:name`, `<policy>:digest`,
//!   `<policy>:image`; without it, a value that looks like an image reference gets the full
//!   reference and anything else the tag.
//!
//! For a chart (a policy on a chart's versions), the `version:` of every mapping that names
//! the chart (see [`super::chart_edit`]) and lines marked `# gantry:chart <policy>` (or
//! `# gantry:image <policy>`) get the version.

use std::sync::LazyLock;

use regex::Regex;

use super::update::{Change, Update};

/// An image reference split into repository, tag and digest.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ImageRef<'a> {
    pub repository: &'a str,
    pub tag: Option<&'a str>,
    pub digest: Option<&'a str>,
}

pub fn split_image(value: &str) -> ImageRef<'_> {
    let (rest, digest) = match value.split_once('@') {
        Some((r, d)) => (r, Some(d)),
        None => (value, None),
    };
    let slash = rest.rfind('/').map(|i| i + 1).unwrap_or(0);
    match rest[slash..].rfind(':') {
        Some(i) => ImageRef {
            repository: &rest[..slash + i],
            tag: Some(&rest[slash + i + 1..]),
            digest,
        },
        None => ImageRef {
            repository: rest,
            tag: None,
            digest,
        },
    }
}

const WORKLOAD_KINDS: &[&str] = &[
    "Deployment",
    "StatefulSet",
    "DaemonSet",
    "ReplicaSet",
    "Job",
    "CronJob",
    "Pod",
];

static IMAGE_LINE: LazyLock<Regex> = LazyLock::new(|| {
    Regex::new(r#"^(?P<pre>\s*(?:-\s+)?image:\s*)(?P<q>["']?)(?P<val>[^"'\s#]+)["']?(?P<post>\s*(?:#.*)?)$"#)
        .expect("image line regex")
});
static KIND_LINE: LazyLock<Regex> =
    LazyLock::new(|| Regex::new(r#"^kind:\s*["']?(?P<kind>[A-Za-z]+)"#).expect("kind regex"));
static MARKER: LazyLock<Regex> = LazyLock::new(|| {
    Regex::new(r"#\s*gantry:(?P<kind>image|chart)\s+(?P<policy>[a-z0-9][a-z0-9.-]*)(?::(?P<field>tag|name|digest|image|version))?\s*$")
        .expect("marker regex")
});
static KEY_VALUE: LazyLock<Regex> = LazyLock::new(|| {
    Regex::new(r#"^(?P<pre>\s*(?:-\s+)?[A-Za-z0-9_.-]+:[ \t]*)(?P<q>["']?)(?P<val>[^"'#]*?)["']?(?P<post>[ \t]*(?:#.*)?)$"#)
        .expect("key value regex")
});
static ITEM_KEY: LazyLock<Regex> = LazyLock::new(|| {
    Regex::new(r#"^(?P<indent>\s*)(?P<dash>-\s+)?(?P<key>[A-Za-z]+):[ \t]*(?P<q>["']?)(?P<val>[^"'#]*?)["']?[ \t]*(?:#.*)?$"#)
        .expect("item key regex")
});

/// Whether a bare YAML scalar would not read as a string (`1.4` is a float, `true` a bool).
fn needs_quotes(v: &str) -> bool {
    v.parse::<f64>().is_ok()
        || matches!(
            v.to_ascii_lowercase().as_str(),
            "true" | "false" | "yes" | "no" | "on" | "off" | "y" | "n" | "null" | "~" | ""
        )
}

/// `value` quoted as the old value was, or double-quoted where a bare scalar would change
/// type.
fn quoted(q: &str, value: &str) -> String {
    if !q.is_empty() {
        format!("{q}{value}{q}")
    } else if needs_quotes(value) {
        format!("\"{value}\"")
    } else {
        value.to_string()
    }
}

fn line_ending(text: &str) -> &'static str {
    if text.contains("\r\n") { "\r\n" } else { "\n" }
}

/// Applies `update` to one file. Returns the new text and the changed lines, or `None`
/// when nothing refers to the policy's image (or it is already there).
pub fn edit_file(path: &str, text: &str, update: &Update) -> Option<(String, Vec<Change>)> {
    let eol = line_ending(text);
    let trailing_newline = text.ends_with('\n');
    let mut lines: Vec<String> = text.lines().map(str::to_string).collect();
    let mut changes = Vec::new();

    let file_name = path.rsplit('/').next().unwrap_or(path);
    let is_kustomization = matches!(
        file_name,
        "kustomization.yaml" | "kustomization.yml" | "Kustomization"
    );

    edit_markers(&mut lines, update, &mut changes);
    if let Some(chart) = &update.chart {
        super::chart_edit::edit_versions(&mut lines, chart, &update.tag, &mut changes);
    } else if is_kustomization {
        edit_kustomize_images(&mut lines, update, &mut changes);
    } else {
        edit_workload_images(&mut lines, update, &mut changes);
    }
    if changes.is_empty() {
        return None;
    }
    changes.sort_by_key(|c| c.line);
    let mut out = lines.join(eol);
    if trailing_newline {
        out.push_str(eol);
    }
    Some((out, changes))
}

/// Whether `text` refers to the policy's repository at all (in a place this module edits).
pub fn refers_to(path: &str, text: &str, update: &Update) -> bool {
    let probe = Update {
        tag: format!("{}-probe-never-a-tag", update.tag),
        digest: None,
        ..update.clone()
    };
    edit_file(path, text, &probe).is_some()
}

fn edit_markers(lines: &mut [String], update: &Update, changes: &mut Vec<Change>) {
    for (i, line) in lines.iter_mut().enumerate() {
        let Some(m) = MARKER.captures(line) else {
            continue;
        };
        if &m["policy"] != update.policy.as_str() {
            continue;
        }
        let field = match (&m["kind"], m.name("field").map(|f| f.as_str())) {
            // A chart marker (or a chart policy) writes the version.
            ("chart", _) | (_, Some("version")) => Some("tag".to_string()),
            (_, _) if update.chart.is_some() => Some("tag".to_string()),
            (_, f) => f.map(str::to_string),
        };
        let Some(kv) = KEY_VALUE.captures(line) else {
            continue;
        };
        let old_val = kv["val"].trim().to_string();
        let new_val = match field.as_deref() {
            Some("tag") => update.tag.clone(),
            Some("name") => update.repository.clone(),
            Some("digest") => match &update.digest {
                Some(d) => d.clone(),
                None => continue,
            },
            Some("image") => update.image(),
            _ => {
                if old_val.contains('/') || old_val.contains(':') {
                    update.image()
                } else {
                    update.tag.clone()
                }
            }
        };
        if old_val == new_val {
            continue;
        }
        let new_line = format!(
            "{}{}{}",
            &kv["pre"],
            quoted(&kv["q"], &new_val),
            &kv["post"]
        );
        changes.push(Change {
            line: i + 1,
            old: line.clone(),
            new: new_line.clone(),
            old_value: old_val,
        });
        *line = new_line;
    }
}

fn edit_workload_images(lines: &mut [String], update: &Update, changes: &mut Vec<Change>) {
    // Documents are separated by `---`; the kind decides whether `image:` fields are
    // container images.
    let mut start = 0;
    while start < lines.len() {
        let end = (start..lines.len())
            .find(|&i| i > start && lines[i].starts_with("---"))
            .unwrap_or(lines.len());
        let workload = lines[start..end].iter().any(|l| {
            KIND_LINE
                .captures(l)
                .is_some_and(|c| WORKLOAD_KINDS.contains(&&c["kind"]))
        });
        if workload {
            for (i, line) in lines.iter_mut().enumerate().take(end).skip(start) {
                if MARKER.is_match(line) {
                    continue; // handled by the marker rule
                }
                let Some(c) = IMAGE_LINE.captures(line) else {
                    continue;
                };
                let old = split_image(&c["val"]);
                if old.repository != update.repository {
                    continue;
                }
                let new_val = update.image();
                if c["val"] == new_val {
                    continue;
                }
                let new_line = format!("{}{}{}", &c["pre"], quoted(&c["q"], &new_val), &c["post"]);
                changes.push(Change {
                    line: i + 1,
                    old: line.clone(),
                    new: new_line.clone(),
                    old_value: c["val"].to_string(),
                });
                *line = new_line;
            }
        }
        start = end;
    }
}

/// One entry of a kustomization's `images:` list: line index per key.
#[derive(Default, Debug)]
struct ImageEntry {
    keys: Vec<(String, usize, String)>,
    key_indent: usize,
    last_line: usize,
}

fn edit_kustomize_images(lines: &mut Vec<String>, update: &Update, changes: &mut Vec<Change>) {
    let Some(start) = lines.iter().position(|l| {
        l.trim_end() == "images:"
            || l.starts_with("images:") && l[7..].trim_start().starts_with('#')
    }) else {
        return;
    };
    let mut entries: Vec<ImageEntry> = Vec::new();
    let mut i = start + 1;
    while i < lines.len() {
        let l = &lines[i];
        let t = l.trim_start();
        if t.is_empty() || t.starts_with('#') {
            i += 1;
            continue;
        }
        let top_level = !l.starts_with(' ') && !l.starts_with('\t') && !l.starts_with('-');
        if top_level {
            break;
        }
        if let Some(c) = ITEM_KEY.captures(l) {
            let indent = c["indent"].len();
            let dash = c.name("dash").map(|d| d.as_str().len()).unwrap_or(0);
            if dash > 0 {
                entries.push(ImageEntry {
                    key_indent: indent + dash,
                    ..Default::default()
                });
            }
            if let Some(e) = entries.last_mut()
                && (dash > 0 || indent == e.key_indent)
            {
                e.keys
                    .push((c["key"].to_string(), i, c["val"].trim().to_string()));
                e.last_line = i;
            }
        }
        i += 1;
    }

    // Insertions shift later lines; apply from the last entry backwards.
    for e in entries.iter().rev() {
        let get = |k: &str| e.keys.iter().find(|(key, _, _)| key == k);
        let effective = get("newName")
            .or_else(|| get("name"))
            .map(|(_, _, v)| v.as_str());
        if effective != Some(update.repository.as_str()) {
            continue;
        }
        let mut inserts: Vec<(usize, String)> = Vec::new();
        let mut set =
            |key: &str, value: Option<&str>, lines: &mut Vec<String>| match (get(key), value) {
                (Some((_, idx, old)), Some(v)) => {
                    if old == v {
                        return;
                    }
                    let c = ITEM_KEY.captures(&lines[*idx]).expect("matched before");
                    let q = c["q"].to_string();
                    let val = c.name("val").expect("val");
                    let line = &lines[*idx];
                    let end = if q.is_empty() {
                        val.end()
                    } else {
                        val.end() + 1
                    };
                    let start = if q.is_empty() {
                        val.start()
                    } else {
                        val.start() - 1
                    };
                    let new_line = format!("{}{}{}", &line[..start], quoted(&q, v), &line[end..]);
                    changes.push(Change {
                        line: idx + 1,
                        old: line.clone(),
                        new: new_line.clone(),
                        old_value: old.clone(),
                    });
                    lines[*idx] = new_line;
                }
                (None, Some(v)) => {
                    inserts.push((
                        e.last_line + 1,
                        format!("{}{}: {}", " ".repeat(e.key_indent), key, quoted("", v)),
                    ));
                }
                (Some((_, idx, _)), None) => {
                    changes.push(Change {
                        line: idx + 1,
                        old: lines[*idx].clone(),
                        new: String::new(),
                        old_value: String::new(),
                    });
                    lines[*idx] = String::from("\u{0}");
                }
                (None, None) => {}
            };
        set("newTag", Some(update.tag.as_str()), lines);
        set("digest", update.digest.as_deref(), lines);
        for (at, text) in inserts.into_iter().rev() {
            changes.push(Change {
                line: at + 1,
                old: String::new(),
                new: text.clone(),
                old_value: String::new(),
            });
            lines.insert(at, text);
        }
    }
    lines.retain(|l| l != "\u{0}");
}

#[cfg(test)]
mod tests {
    use super::*;

    fn update(digest: Option<&str>) -> Update {
        Update {
            policy: "web".into(),
            repository: "127.0.0.1:5000/team/web".into(),
            tag: "1.4.0".into(),
            digest: digest.map(str::to_string),
            chart: None,
        }
    }

    const DEPLOYMENT: &str = "\
# The web front end.
apiVersion: apps/v1
kind: Deployment
metadata:
  name: web # keep this comment
spec:
  template:
    spec:
      initContainers:
        - name: migrate
          image: \"127.0.0.1:5000/team/web:1.3.0\"   # same image, quoted
      containers:
        - name: web
          image: 127.0.0.1:5000/team/web:1.3.0 # pinned by gantry
          ports: [{containerPort: 80}]
        - name: sidecar
          image: 127.0.0.1:5000/team/web-sidecar:1.3.0
---
apiVersion: v1
kind: ConfigMap
metadata:
  name: notes
data:
  image: 127.0.0.1:5000/team/web:1.3.0
";

    #[test]
    fn split_image_references() {
        let r = split_image("127.0.0.1:5000/team/web:1.3.0@sha256:ab");
        assert_eq!(r.repository, "127.0.0.1:5000/team/web");
        assert_eq!(r.tag, Some("1.3.0"));
        assert_eq!(r.digest, Some("sha256:ab"));
        let r = split_image("127.0.0.1:5000/team/web");
        assert_eq!((r.repository, r.tag), ("127.0.0.1:5000/team/web", None));
        assert_eq!(split_image("nginx:1.25").tag, Some("1.25"));
    }

    #[test]
    fn workload_image_fields_change_and_nothing_else() {
        let (out, changes) = edit_file("apps/web/deploy.yaml", DEPLOYMENT, &update(None)).unwrap();
        assert_eq!(changes.len(), 2, "{changes:?}");
        let expected = DEPLOYMENT
            .replace(
                "image: \"127.0.0.1:5000/team/web:1.3.0\"   # same",
                "image: \"127.0.0.1:5000/team/web:1.4.0\"   # same",
            )
            .replace(
                "image: 127.0.0.1:5000/team/web:1.3.0 # pinned",
                "image: 127.0.0.1:5000/team/web:1.4.0 # pinned",
            );
        assert_eq!(out, expected);
        // The ConfigMap's look-alike and the sidecar's repository are untouched.
        assert!(out.contains("web-sidecar:1.3.0"));
        assert!(out.contains("  image: 127.0.0.1:5000/team/web:1.3.0\n"));
    }

    #[test]
    fn digest_pinning_writes_tag_and_digest() {
        let (out, _) = edit_file("d.yaml", DEPLOYMENT, &update(Some("sha256:abc"))).unwrap();
        assert!(out.contains("image: 127.0.0.1:5000/team/web:1.4.0@sha256:abc # pinned"));
        // And once pinned, the same update is a no-op.
        assert!(edit_file("d.yaml", &out, &update(Some("sha256:abc"))).is_none());
    }

    #[test]
    fn already_current_is_none() {
        let current = DEPLOYMENT.replace(":1.3.0", ":1.4.0");
        assert!(edit_file("d.yaml", &current, &update(None)).is_none());
        assert!(refers_to("d.yaml", &current, &update(None)));
        assert!(!refers_to("d.yaml", "kind: Deployment\n", &update(None)));
    }

    #[test]
    fn kustomization_images_entries() {
        let k = "\
apiVersion: kustomize.config.k8s.io/v1beta1
kind: Kustomization
resources:
  - deploy.yaml
images:
  # the web image
  - name: 127.0.0.1:5000/team/web
    newTag: \"1.3.0\"
  - name: other
    newTag: 2.0.0
";
        let (out, changes) =
            edit_file("overlays/prod/kustomization.yaml", k, &update(None)).unwrap();
        assert_eq!(out, k.replace("newTag: \"1.3.0\"", "newTag: \"1.4.0\""));
        assert_eq!(changes.len(), 1);

        // newName decides, and a missing newTag / digest is inserted at the entry's indent.
        let k2 = "\
images:
- name: web
  newName: 127.0.0.1:5000/team/web
resources: [deploy.yaml]
";
        let (out, _) = edit_file("kustomization.yaml", k2, &update(Some("sha256:d1"))).unwrap();
        assert_eq!(
            out,
            "\
images:
- name: web
  newName: 127.0.0.1:5000/team/web
  newTag: 1.4.0
  digest: sha256:d1
resources: [deploy.yaml]
"
        );
        // A stale digest is removed when the policy does not pin.
        let (out, _) = edit_file("kustomization.yaml", &out, &update(None)).unwrap();
        assert!(!out.contains("digest"));
        assert!(out.contains("  newTag: 1.4.0\nresources"));
    }

    #[test]
    fn marked_lines_in_helm_values() {
        let v = "\
image:
  repository: 127.0.0.1:5000/team/web
  tag: 1.3.0 # gantry:image web
other:
  tag: 1.3.0 # gantry:image api
full: '127.0.0.1:5000/team/web:1.3.0' # gantry:image web
digest: \"\" # gantry:image web:digest
version: \"1.2\"   # gantry:image web:tag
";
        let (out, changes) = edit_file("chart/values.yaml", v, &update(Some("sha256:ee"))).unwrap();
        assert_eq!(
            out,
            "\
image:
  repository: 127.0.0.1:5000/team/web
  tag: 1.4.0 # gantry:image web
other:
  tag: 1.3.0 # gantry:image api
full: '127.0.0.1:5000/team/web:1.4.0@sha256:ee' # gantry:image web
digest: \"sha256:ee\" # gantry:image web:digest
version: \"1.4.0\"   # gantry:image web:tag
"
        );
        assert_eq!(changes.len(), 4);
    }

    #[test]
    fn numeric_looking_tags_are_quoted_when_bare() {
        let v = "tag: main # gantry:image web\n";
        let u = Update {
            tag: "1.4".into(),
            ..update(None)
        };
        let (out, _) = edit_file("values.yaml", v, &u).unwrap();
        assert_eq!(out, "tag: \"1.4\" # gantry:image web\n");
    }

    #[test]
    fn crlf_and_missing_final_newline_are_kept() {
        let v = "kind: Pod\r\nspec:\r\n  containers:\r\n  - image: 127.0.0.1:5000/team/web:1.3.0";
        let (out, _) = edit_file("pod.yaml", v, &update(None)).unwrap();
        assert_eq!(out, v.replace("1.3.0", "1.4.0"));
    }

    #[test]
    fn a_chart_policy_writes_its_version_on_marked_lines_and_in_chart_mappings() {
        let u = Update {
            policy: "web-chart".into(),
            repository: "oci://127.0.0.1:5000/charts/web".into(),
            tag: "1.2.0".into(),
            digest: None,
            chart: crate::writeback::update::ChartName::from_oci_url(
                "oci://127.0.0.1:5000/charts/web",
            ),
        };
        let text = "\
chartVersion: 1.0.0 # gantry:chart web-chart
other: 1.0.0 # gantry:chart api-chart
image: 127.0.0.1:5000/charts/web:1.0.0
chart:
  url: oci://127.0.0.1:5000/charts/web
  version: \"1.0.0\"
";
        let (out, changes) = edit_file("apps/web.yaml", text, &u).unwrap();
        assert_eq!(changes.len(), 2, "{changes:?}");
        assert_eq!(
            out,
            text.replace("chartVersion: 1.0.0", "chartVersion: 1.2.0")
                .replace("\"1.0.0\"", "\"1.2.0\"")
        );
        assert_eq!(u.written(), "1.2.0");
        assert_eq!(u.image(), "oci://127.0.0.1:5000/charts/web:1.2.0");
    }
}
