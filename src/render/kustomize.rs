//! Kustomize: `kustomize build` or `kubectl kustomize`, load restrictor root-only, with
//! remote bases refused unless the Application allows them and every local reference
//! checked to stay inside the repository before the tool runs.

use std::path::{Component, Path, PathBuf};

use serde_json::Value;

use super::{RenderError, RenderRequest, plain, tool};

const KUSTOMIZATION_FILES: [&str; 3] = ["kustomization.yaml", "kustomization.yml", "Kustomization"];

/// Whether an entry is spelled as a remote location (URL, `git@…`, scp-like
/// `host:owner/repo`, or a well-known forge). Entries of `resources`, `bases` and
/// `components` that do not exist in the repository count as remote too, whatever their
/// spelling: kustomize would try to fetch them.
fn is_remote(entry: &str) -> bool {
    let first = entry.split('/').next().unwrap_or_default();
    entry.contains("://")
        || entry.starts_with("git@")
        || first.contains(':')
        || first.contains('.') && first != "." && first != ".." && entry.contains("//")
        || entry.starts_with("github.com/")
        || entry.starts_with("gitlab.com/")
        || entry.starts_with("bitbucket.org/")
}

/// Lexically resolves `entry` relative to `dir`; `None` when it leaves `root`.
fn stays_inside(root: &Path, dir: &Path, entry: &str) -> Option<PathBuf> {
    if Path::new(entry).is_absolute() || entry.contains('%') {
        return None;
    }
    let mut parts: Vec<_> = dir.strip_prefix(root).ok()?.components().collect();
    for c in Path::new(entry).components() {
        match c {
            Component::Normal(_) => parts.push(c),
            Component::ParentDir => {
                parts.pop()?;
            }
            Component::CurDir => {}
            _ => return None,
        }
    }
    Some(parts.iter().fold(root.to_path_buf(), |p, c| p.join(c)))
}

fn kustomization_in(dir: &Path) -> Option<PathBuf> {
    KUSTOMIZATION_FILES
        .iter()
        .map(|f| dir.join(f))
        .find(|p| p.is_file())
}

/// Walks the kustomization graph from `dir`, refusing remote and escaping references.
pub fn check_references(
    root: &Path,
    dir: &Path,
    allow_remote: bool,
    seen: &mut Vec<PathBuf>,
) -> Result<(), RenderError> {
    if seen.iter().any(|s| s == dir) {
        return Ok(());
    }
    seen.push(dir.to_path_buf());
    let Some(file) = kustomization_in(dir) else {
        return Ok(());
    };
    let text = std::fs::read_to_string(&file).map_err(|e| RenderError::io(&file, e))?;
    let doc: Value = serde_yaml::from_str(&text).map_err(|e| RenderError::Parse {
        source_name: file
            .strip_prefix(root)
            .unwrap_or(&file)
            .display()
            .to_string(),
        message: e.to_string(),
    })?;
    let rel = |p: &Path| p.strip_prefix(root).unwrap_or(p).display().to_string();
    // (entry, whether kustomize would fetch it when it is not a local path)
    let mut entries: Vec<(String, bool)> = vec![];
    for field in [
        "resources",
        "bases",
        "components",
        "crds",
        "patchesStrategicMerge",
    ] {
        let fetchable = matches!(field, "resources" | "bases" | "components");
        for v in doc
            .get(field)
            .and_then(Value::as_array)
            .into_iter()
            .flatten()
        {
            if let Some(s) = v.as_str() {
                entries.push((s.to_string(), fetchable));
            }
        }
    }
    // Plugins and their configuration: kustomize loads these entries as it loads
    // resources (a directory, a file or a URL), or takes them inline as YAML text, whose
    // own `path` fields it loads in turn.
    for field in ["transformers", "generators", "validators", "configurations"] {
        for v in doc
            .get(field)
            .and_then(Value::as_array)
            .into_iter()
            .flatten()
        {
            match v.as_str() {
                Some(inline) if inline.contains('\n') => {
                    let config: Value = serde_yaml::from_str(inline).unwrap_or_default();
                    for path in [&config["path"], &config["spec"]["path"]] {
                        if let Some(p) = path.as_str() {
                            entries.push((p.to_string(), false));
                        }
                    }
                }
                Some(entry) => entries.push((entry.to_string(), true)),
                None => {}
            }
        }
    }
    for field in ["patches", "patchesJson6902", "replacements"] {
        for p in doc
            .get(field)
            .and_then(Value::as_array)
            .into_iter()
            .flatten()
        {
            if let Some(s) = p.get("path").and_then(Value::as_str) {
                entries.push((s.to_string(), false));
            }
        }
    }
    if let Some(s) = doc["openapi"]["path"].as_str() {
        entries.push((s.to_string(), false));
    }
    for generator in ["configMapGenerator", "secretGenerator"] {
        for g in doc
            .get(generator)
            .and_then(Value::as_array)
            .into_iter()
            .flatten()
        {
            for key in ["files", "envs"] {
                for f in g.get(key).and_then(Value::as_array).into_iter().flatten() {
                    if let Some(s) = f.as_str() {
                        // `files` entries may be `key=path`
                        let path = s.rsplit_once('=').map(|(_, p)| p).unwrap_or(s);
                        entries.push((path.to_string(), false));
                    }
                }
            }
        }
    }
    for (entry, fetchable) in entries {
        let local = stays_inside(root, dir, &entry);
        let missing = local
            .as_ref()
            .is_some_and(|p| std::fs::symlink_metadata(p).is_err());
        if is_remote(&entry) || fetchable && missing {
            if allow_remote {
                continue;
            }
            return Err(RenderError::Refused(format!(
                "{}: {entry:?} is not a path in the repository and kustomize would fetch it; \
                 remote references are refused (set spec.render.kustomize.allowRemoteBases to allow them)",
                rel(&file)
            )));
        }
        let target = local.ok_or_else(|| RenderError::UnsafePath {
            field: rel(&file),
            path: entry.clone(),
            why: "it points outside the repository".into(),
        })?;
        if let Ok(real) = target.canonicalize() {
            if !real.starts_with(root) {
                return Err(RenderError::UnsafePath {
                    field: rel(&file),
                    path: entry.clone(),
                    why: "it resolves (through a symlink) outside the repository".into(),
                });
            }
            if real.is_dir() {
                check_references(root, &real, allow_remote, seen)?;
            }
        }
    }
    Ok(())
}

pub async fn render(
    root: &Path,
    dir: &Path,
    req: &RenderRequest<'_>,
) -> Result<Vec<Value>, RenderError> {
    let root = root.canonicalize().map_err(|e| RenderError::io(root, e))?;
    let allow_remote = req
        .spec
        .and_then(|s| s.kustomize.as_ref())
        .is_some_and(|k| k.allow_remote_bases);
    let mut seen = vec![];
    check_references(&root, dir, allow_remote, &mut seen)?;
    let secrets = secret_values(&seen);

    let (program, mut args) = if let Some(k) = tool::find("GANTRY_KUSTOMIZE", &["kustomize"]) {
        (k, vec!["build".to_string()])
    } else if let Some(k) = tool::find("GANTRY_KUBECTL", &["kubectl"]) {
        (k, vec!["kustomize".to_string()])
    } else {
        return Err(RenderError::ToolMissing {
            tool: "kustomize",
            hint: "install `kustomize` or `kubectl` on the controller's PATH (or set GANTRY_KUSTOMIZE / GANTRY_KUBECTL)",
        });
    };
    let tmp = tool::copy_to_temp(&root)?;
    let rel = dir.strip_prefix(&root).unwrap_or(Path::new(""));
    let work_dir = tmp.path().join(rel);
    args.push("--load-restrictor=LoadRestrictionsRootOnly".into());
    args.push(work_dir.display().to_string());
    let network = if allow_remote {
        tool::Network::Allowed
    } else {
        tool::Network::Denied
    };
    let out = tool::run(
        "kustomize",
        &program,
        &args,
        tmp.path(),
        &[],
        network,
        req.limits.timeout,
        req.limits.max_total_bytes,
    )
    .await
    .map_err(|e| tool::redact(e, &secrets))?;
    let mut objects = vec![];
    if !super::sops::is_encrypted(&out) {
        plain::parse_documents("kustomize output", &out, &req.limits, &mut objects)?;
    } else {
        // Encrypted documents pass through kustomize as they are: each is decrypted alone.
        for (i, doc) in super::sops::documents(&out).iter().enumerate() {
            let source = format!("kustomize output (document {})", i + 1);
            super::parse_decrypted(&source, doc, super::sops::Format::Yaml, req, &mut objects)
                .await?;
        }
    }
    refuse_generated_ciphertext(&objects)?;
    Ok(objects)
}

/// A generator's object made of an encrypted file (see `sops::ciphertext_in`) stops the set:
/// ciphertext is never applied.
fn refuse_generated_ciphertext(objects: &[Value]) -> Result<(), RenderError> {
    for o in objects {
        if let Some(key) = super::sops::ciphertext_in(o) {
            let kind = o.get("kind").and_then(Value::as_str).unwrap_or("object");
            let name = o
                .pointer("/metadata/name")
                .and_then(Value::as_str)
                .unwrap_or_default();
            return Err(RenderError::Decryption {
                source_name: format!("kustomize output ({kind} {name})"),
                message: format!(
                    "its entry {key} holds SOPS ciphertext: a generator read an encrypted file, and such files are not decrypted (kustomize reads them from disk, where plaintext is never written); encrypt the {kind} manifest itself instead. Refusing to apply ciphertext"
                ),
            });
        }
    }
    Ok(())
}

/// The values a `secretGenerator` of the visited kustomizations would put into Secrets
/// (`literals` and the lines of `envs` files), so tool errors can be redacted of them.
fn secret_values(dirs: &[PathBuf]) -> Vec<String> {
    let mut out = vec![];
    for dir in dirs {
        let Some(file) = kustomization_in(dir) else {
            continue;
        };
        let Some(doc) = std::fs::read_to_string(&file)
            .ok()
            .and_then(|t| serde_yaml::from_str::<Value>(&t).ok())
        else {
            continue;
        };
        for g in doc
            .get("secretGenerator")
            .and_then(Value::as_array)
            .into_iter()
            .flatten()
        {
            for lit in g
                .get("literals")
                .and_then(Value::as_array)
                .into_iter()
                .flatten()
            {
                // `key=value`; a malformed literal is redacted whole
                if let Some(l) = lit.as_str() {
                    out.push(l.split_once('=').map_or(l, |(_, v)| v).to_string());
                }
            }
            for env in g
                .get("envs")
                .and_then(Value::as_array)
                .into_iter()
                .flatten()
            {
                let Some(text) = env
                    .as_str()
                    .and_then(|p| stays_inside(dir, dir, p))
                    .and_then(|p| std::fs::read_to_string(p).ok())
                else {
                    continue;
                };
                out.extend(
                    text.lines()
                        .filter_map(|l| l.split_once('='))
                        .map(|(_, v)| v.to_string()),
                );
            }
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    fn write(root: &Path, path: &str, text: &str) {
        let p = root.join(path);
        std::fs::create_dir_all(p.parent().unwrap()).unwrap();
        std::fs::write(p, text).unwrap();
    }

    #[test]
    fn overlay_with_base_inside_is_fine() {
        let root = tempfile::tempdir().unwrap();
        let root_path = root.path().canonicalize().unwrap();
        write(
            &root_path,
            "base/kustomization.yaml",
            "resources: [cm.yaml]\n",
        );
        write(
            &root_path,
            "base/cm.yaml",
            "apiVersion: v1\nkind: ConfigMap\nmetadata: {name: a}\n",
        );
        write(
            &root_path,
            "overlays/prod/kustomization.yaml",
            "resources: [../../base]\n",
        );
        check_references(
            &root_path,
            &root_path.join("overlays/prod"),
            false,
            &mut vec![],
        )
        .unwrap();
    }

    #[test]
    fn escaping_and_remote_references_are_refused() {
        let root = tempfile::tempdir().unwrap();
        let root_path = root.path().canonicalize().unwrap();
        write(
            &root_path,
            "a/kustomization.yaml",
            "resources: [../../../etc]\n",
        );
        let err =
            check_references(&root_path, &root_path.join("a"), false, &mut vec![]).unwrap_err();
        assert!(err.to_string().contains("outside the repository"), "{err}");

        write(
            &root_path,
            "b/kustomization.yaml",
            "resources:\n- https://github.com/org/repo//base?ref=v1\n",
        );
        let err =
            check_references(&root_path, &root_path.join("b"), false, &mut vec![]).unwrap_err();
        assert!(err.to_string().contains("allowRemoteBases"), "{err}");
        check_references(&root_path, &root_path.join("b"), true, &mut vec![]).unwrap();

        write(
            &root_path,
            "c/kustomization.yaml",
            "configMapGenerator:\n- name: x\n  files: [key=/etc/passwd]\n",
        );
        assert!(check_references(&root_path, &root_path.join("c"), false, &mut vec![]).is_err());

        // scp-like and bare host/path remotes, and anything that is not a local path
        for (i, entry) in [
            "github.com:owner/repo//path",
            "example.org/owner/repo//base?ref=v1",
            "owner/repo-that-is-not-here",
        ]
        .iter()
        .enumerate()
        {
            let d = format!("r{i}");
            write(
                &root_path,
                &format!("{d}/kustomization.yaml"),
                &format!("resources:\n- {entry}\n"),
            );
            let err =
                check_references(&root_path, &root_path.join(&d), false, &mut vec![]).unwrap_err();
            assert!(
                err.to_string().contains("kustomize would fetch it"),
                "{entry}: {err}"
            );
        }
    }

    #[test]
    fn plugin_and_configuration_entries_are_checked_like_resources() {
        let root = tempfile::tempdir().unwrap();
        let root_path = root.path().canonicalize().unwrap();
        let cases = [
            (
                "transformers:\n- http://127.0.0.1:9/t.yaml\n",
                "kustomize would fetch it",
            ),
            (
                "generators:\n- https://example.com/g.yaml\n",
                "kustomize would fetch it",
            ),
            ("validators:\n- ../../../etc\n", "outside the repository"),
            (
                "transformers:\n- ../../../../etc/t.yaml\n",
                "outside the repository",
            ),
            (
                "configurations:\n- https://example.com/c.yaml\n",
                "kustomize would fetch it",
            ),
            ("configurations:\n- /etc/passwd\n", "outside the repository"),
            (
                "transformers:\n- not-here.yaml\n",
                "kustomize would fetch it",
            ),
            (
                "transformers:\n- |\n  apiVersion: builtin\n  kind: PatchTransformer\n  metadata: {name: p}\n  path: https://example.com/p.yaml\n",
                "kustomize would fetch it",
            ),
            (
                "patchesJson6902:\n- path: ../../x.yaml\n  target: {kind: A, name: a}\n",
                "outside the repository",
            ),
            (
                "replacements:\n- path: /etc/r.yaml\n",
                "outside the repository",
            ),
            (
                "openapi:\n  path: https://example.com/schema.json\n",
                "kustomize would fetch it",
            ),
        ];
        for (i, (text, expected)) in cases.iter().enumerate() {
            let d = format!("p{i}");
            write(&root_path, &format!("{d}/kustomization.yaml"), text);
            let err = check_references(&root_path, &root_path.join(&d), false, &mut vec![])
                .unwrap_err()
                .to_string();
            assert!(err.contains(expected), "{text}: {err}");
        }
        // A local transformer file is fine.
        write(
            &root_path,
            "ok/t.yaml",
            "apiVersion: builtin\nkind: LabelTransformer\n",
        );
        write(
            &root_path,
            "ok/kustomization.yaml",
            "transformers: [t.yaml]\n",
        );
        check_references(&root_path, &root_path.join("ok"), false, &mut vec![]).unwrap();
    }

    #[test]
    fn secret_generator_values_are_collected_for_redaction() {
        let root = tempfile::tempdir().unwrap();
        let root_path = root.path().canonicalize().unwrap();
        write(
            &root_path,
            "s/kustomization.yaml",
            "secretGenerator:\n- name: s\n  literals: [password=hunter2-literal]\n  envs: [s.env]\n",
        );
        write(&root_path, "s/s.env", "TOKEN=from-env-file\n");
        let values = secret_values(&[root_path.join("s")]);
        assert_eq!(values, vec!["hunter2-literal", "from-env-file"]);
    }
}
