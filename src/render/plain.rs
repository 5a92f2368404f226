//! Plain manifests: every `.yaml`, `.yml` and `.json` file under a directory, recursively,
//! multi-document, empty documents skipped, `kind: List` flattened.

use std::path::Path;

use serde::Deserialize;
use serde_json::Value;

use super::RenderError;
use super::sandbox::{Limits, depth};

fn is_manifest(path: &Path) -> bool {
    matches!(
        path.extension().and_then(|e| e.to_str()),
        Some("yaml" | "yml" | "json")
    )
}

/// Collects manifest files under `dir` in a stable order; symlinks that leave `root` and
/// files over the size cap are refused.
fn collect(
    root: &Path,
    dir: &Path,
    limits: &Limits,
    out: &mut Vec<std::path::PathBuf>,
) -> Result<(), RenderError> {
    let mut entries: Vec<_> = std::fs::read_dir(dir)
        .map_err(|e| RenderError::io(dir, e))?
        .collect::<Result<_, _>>()
        .map_err(|e| RenderError::io(dir, e))?;
    entries.sort_by_key(|e| e.file_name());
    for entry in entries {
        let path = entry.path();
        let name = entry.file_name();
        if name.to_string_lossy().starts_with('.') {
            continue;
        }
        let real = path.canonicalize().map_err(|e| RenderError::io(&path, e))?;
        if !real.starts_with(root) {
            return Err(RenderError::UnsafePath {
                field: "path".into(),
                path: path
                    .strip_prefix(root)
                    .unwrap_or(&path)
                    .display()
                    .to_string(),
                why: "it is a symlink that leaves the repository".into(),
            });
        }
        let meta = std::fs::metadata(&real).map_err(|e| RenderError::io(&path, e))?;
        if meta.is_dir() {
            collect(root, &path, limits, out)?;
        } else if is_manifest(&path) {
            if meta.len() > limits.max_file_bytes {
                return Err(RenderError::TooLarge(format!(
                    "{} is {} bytes; the limit is {}",
                    path.strip_prefix(root).unwrap_or(&path).display(),
                    meta.len(),
                    limits.max_file_bytes
                )));
            }
            out.push(path);
        }
    }
    Ok(())
}

/// Parses a stream of YAML (or JSON) documents into objects, enforcing the limits.
pub fn parse_documents(
    source: &str,
    text: &str,
    limits: &Limits,
    out: &mut Vec<Value>,
) -> Result<(), RenderError> {
    // Helm marks each document with the template it came from.
    let helm_sources: Vec<&str> = text
        .lines()
        .filter_map(|l| l.strip_prefix("# Source: "))
        .map(str::trim)
        .collect();
    let mut docs: Vec<(usize, usize)> = vec![]; // (index in out, document number)
    for (i, doc) in serde_yaml::Deserializer::from_str(text).enumerate() {
        let value = Value::deserialize(doc).map_err(|e| RenderError::Parse {
            source_name: source.to_string(),
            message: format!("document {}: {e}", i + 1),
        })?;
        if value.is_null() {
            continue;
        }
        if depth(&value) > limits.max_depth {
            return Err(RenderError::TooLarge(format!(
                "{source}: document {} nests deeper than {} levels",
                i + 1,
                limits.max_depth
            )));
        }
        let items = match value.get("kind").and_then(Value::as_str) {
            Some(kind)
                if kind.ends_with("List") && value.get("items").is_some_and(Value::is_array) =>
            {
                value["items"].as_array().cloned().unwrap_or_default()
            }
            _ => vec![value],
        };
        for item in items {
            if !item.is_object() || item.get("apiVersion").is_none() || item.get("kind").is_none() {
                return Err(RenderError::Parse {
                    source_name: source.to_string(),
                    message: format!(
                        "document {} is not a Kubernetes object (apiVersion and kind are required)",
                        i + 1
                    ),
                });
            }
            docs.push((out.len(), i + 1));
            out.push(item);
            if out.len() > limits.max_objects {
                return Err(RenderError::TooLarge(format!(
                    "more than {} objects",
                    limits.max_objects
                )));
            }
        }
    }
    // Where each object came from, for messages about objects without a usable identity.
    let mut ordinals: Vec<usize> = docs.iter().map(|&(_, d)| d).collect();
    ordinals.dedup();
    let by_helm = !helm_sources.is_empty() && helm_sources.len() == ordinals.len();
    for &(index, doc) in &docs {
        let origin = if by_helm {
            let nth = ordinals.iter().position(|&d| d == doc).unwrap_or(0);
            helm_sources[nth].to_string()
        } else {
            format!("{source} (document {doc})")
        };
        super::set_origin(&mut out[index], origin);
    }
    Ok(())
}

/// The error for a directory with files but not one YAML or JSON file: it names the path
/// and what is there instead (a format Gantry does not render, a wrong path), rather than
/// deploying nothing and reporting success. `None` for a directory without files.
fn no_manifests(root: &Path, dir: &Path) -> Option<RenderError> {
    let mut found = vec![];
    let mut stack = vec![dir.to_path_buf()];
    while let Some(d) = stack.pop() {
        for entry in std::fs::read_dir(&d).into_iter().flatten().flatten() {
            let path = entry.path();
            if entry.file_name().to_string_lossy().starts_with('.') {
                continue;
            }
            if entry.file_type().is_ok_and(|t| t.is_dir()) {
                stack.push(path);
            } else {
                found.push(
                    path.strip_prefix(dir)
                        .unwrap_or(&path)
                        .display()
                        .to_string(),
                );
            }
        }
    }
    found.sort();
    if found.is_empty() {
        return None;
    }
    let shown = if found.len() > 5 {
        format!("{}, and {} more", found[..5].join(", "), found.len() - 5)
    } else {
        found.join(", ")
    };
    let at = dir.strip_prefix(root).unwrap_or(dir).display().to_string();
    Some(RenderError::NoManifests {
        path: if at.is_empty() { ".".into() } else { at },
        found: shown,
    })
}

/// Renders every manifest under `dir` (inside `root`), none of them encrypted.
pub fn render(root: &Path, dir: &Path, limits: &Limits) -> Result<Vec<Value>, RenderError> {
    let mut objects = vec![];
    for (name, text) in read_files(root, dir, limits)? {
        parse_documents(&name, &text, limits, &mut objects)?;
    }
    Ok(objects)
}

/// Every manifest file under `dir` (inside `root`): its name from the root and its text.
pub fn read_files(
    root: &Path,
    dir: &Path,
    limits: &Limits,
) -> Result<Vec<(String, String)>, RenderError> {
    let root = root.canonicalize().map_err(|e| RenderError::io(root, e))?;
    let mut files = vec![];
    collect(&root, dir, limits, &mut files)?;
    // Files, but none Gantry renders (an empty directory is an empty render: allowEmpty).
    if files.is_empty()
        && let Some(e) = no_manifests(&root, dir)
    {
        return Err(e);
    }
    let mut total = 0u64;
    let mut out = vec![];
    for file in files {
        let text = std::fs::read_to_string(&file).map_err(|e| RenderError::io(&file, e))?;
        total += text.len() as u64;
        if total > limits.max_total_bytes {
            return Err(RenderError::TooLarge(format!(
                "manifests exceed {} bytes in total",
                limits.max_total_bytes
            )));
        }
        let name = file
            .strip_prefix(&root)
            .unwrap_or(&file)
            .display()
            .to_string();
        out.push((name, text));
    }
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn objects_name_the_file_or_the_helm_template_they_came_from() {
        let mut out = vec![];
        let cm = "apiVersion: v1\nkind: ConfigMap\n";
        parse_documents(
            "deploy/a.yaml",
            &format!("{cm}---\n---\n{cm}"),
            &Limits::default(),
            &mut out,
        )
        .unwrap();
        let helm = format!(
            "---\n# Source: web/templates/a.yaml\n{cm}---\n# Source: web/templates/b.yaml\n{cm}"
        );
        parse_documents("helm template output", &helm, &Limits::default(), &mut out).unwrap();
        let origins: Vec<String> = out
            .iter_mut()
            .filter_map(crate::render::take_origin)
            .collect();
        assert_eq!(
            origins,
            [
                "deploy/a.yaml (document 1)",
                "deploy/a.yaml (document 3)",
                "web/templates/a.yaml",
                "web/templates/b.yaml"
            ]
        );
        assert!(out.iter().all(|o| o.get(crate::render::ORIGIN).is_none()));
    }

    fn parse(text: &str) -> Result<Vec<Value>, RenderError> {
        let mut out = vec![];
        parse_documents("t.yaml", text, &Limits::default(), &mut out)?;
        for o in &mut out {
            assert!(crate::render::take_origin(o).is_some_and(|o| o.starts_with("t.yaml")));
        }
        Ok(out)
    }

    #[test]
    fn a_path_without_manifests_says_what_it_holds() {
        let root = tempfile::tempdir().unwrap();
        let app = root.path().join("app");
        std::fs::create_dir_all(app.join("lib")).unwrap();
        std::fs::write(app.join("main.jsonnet"), "{}").unwrap();
        std::fs::write(app.join("lib/k.libsonnet"), "{}").unwrap();
        let err = render(root.path(), &app, &Limits::default())
            .unwrap_err()
            .to_string();
        assert_eq!(
            err,
            "no manifests found at app (found: lib/k.libsonnet, main.jsonnet): Gantry renders YAML and JSON files, a kustomization.yaml or a Chart.yaml"
        );
    }

    #[test]
    fn multi_document_with_empty_documents() {
        let objs = parse("---\n---\napiVersion: v1\nkind: ConfigMap\nmetadata: {name: a}\n---\n# only a comment\n---\n{\"apiVersion\": \"v1\", \"kind\": \"Secret\", \"metadata\": {\"name\": \"b\"}}\n").unwrap();
        assert_eq!(objs.len(), 2);
        assert_eq!(objs[1]["kind"], "Secret");
    }

    #[test]
    fn lists_are_flattened() {
        let objs = parse("apiVersion: v1\nkind: List\nitems:\n- {apiVersion: v1, kind: ConfigMap, metadata: {name: a}}\n- {apiVersion: v1, kind: ConfigMap, metadata: {name: b}}\n").unwrap();
        assert_eq!(objs.len(), 2);
    }

    #[test]
    fn not_an_object_is_an_error() {
        let err = parse("just: a map\n").unwrap_err().to_string();
        assert!(
            err.contains("t.yaml") && err.contains("apiVersion"),
            "{err}"
        );
    }

    #[test]
    fn alias_bomb_is_refused() {
        let mut bomb =
            String::from("a: &a [\"x\",\"x\",\"x\",\"x\",\"x\",\"x\",\"x\",\"x\",\"x\"]\n");
        let names = ["b", "c", "d", "e", "f", "g", "h", "i"];
        let mut prev = "a";
        for n in names {
            bomb.push_str(&format!("{n}: &{n} [*{prev},*{prev},*{prev},*{prev},*{prev},*{prev},*{prev},*{prev},*{prev}]\n"));
            prev = n;
        }
        let start = std::time::Instant::now();
        assert!(parse(&bomb).is_err());
        assert!(start.elapsed() < std::time::Duration::from_secs(5));
    }

    #[test]
    fn deep_nesting_is_refused() {
        let deep = format!(
            "apiVersion: v1\nkind: ConfigMap\ndata: {}{}\n",
            "[".repeat(10_000),
            "]".repeat(10_000)
        );
        let err = parse(&deep).unwrap_err().to_string();
        assert!(err.contains("t.yaml"), "{err}");
    }

    #[test]
    fn object_count_is_capped() {
        let limits = Limits {
            max_objects: 3,
            ..Limits::default()
        };
        let text = "apiVersion: v1\nkind: ConfigMap\n---\n".repeat(5);
        let mut out = vec![];
        let err = parse_documents("t.yaml", &text, &limits, &mut out).unwrap_err();
        assert!(matches!(err, RenderError::TooLarge(_)));
    }
}
