//! Path safety and resource limits for rendering (TESTING.md rows 2-4).

use std::path::{Component, Path, PathBuf};

use super::RenderError;

/// Caps that keep one render from exhausting the controller.
#[derive(Clone, Debug)]
pub struct Limits {
    /// Largest single manifest file.
    pub max_file_bytes: u64,
    /// All manifest bytes of one render together (also caps tool output).
    pub max_total_bytes: u64,
    /// Deepest nesting of a YAML/JSON document.
    pub max_depth: usize,
    /// Objects in one render.
    pub max_objects: usize,
    /// Wall-clock limit of external render tools.
    pub timeout: std::time::Duration,
}

impl Default for Limits {
    fn default() -> Self {
        Self {
            max_file_bytes: 8 * 1024 * 1024,
            max_total_bytes: 32 * 1024 * 1024,
            max_depth: 64,
            max_objects: 10_000,
            timeout: std::time::Duration::from_secs(60),
        }
    }
}

/// Checks a user-supplied relative path lexically: no absolute paths, no `..`, no
/// percent-encoding or backslashes. Done before any file is read.
pub fn check_relative(field: &str, rel: &str) -> Result<PathBuf, RenderError> {
    let refuse = |why: &str| RenderError::UnsafePath {
        field: field.to_string(),
        path: rel.to_string(),
        why: why.to_string(),
    };
    if rel.contains('%') {
        return Err(refuse("percent-encoded characters are not allowed"));
    }
    if rel.contains('\\') || rel.contains('\0') {
        return Err(refuse("backslashes and NUL are not allowed"));
    }
    let p = Path::new(rel);
    let mut clean = PathBuf::new();
    for c in p.components() {
        match c {
            Component::Normal(part) => clean.push(part),
            Component::CurDir => {}
            Component::ParentDir => return Err(refuse("'..' is not allowed")),
            Component::RootDir | Component::Prefix(_) => {
                return Err(refuse("absolute paths are not allowed"));
            }
        }
    }
    Ok(clean)
}

/// Resolves `rel` under `root` and verifies, after following symlinks, that it stays there.
pub fn resolve_inside(root: &Path, field: &str, rel: &str) -> Result<PathBuf, RenderError> {
    let clean = check_relative(field, rel)?;
    let root = root.canonicalize().map_err(|e| RenderError::io(root, e))?;
    let joined = root.join(&clean);
    let real = joined.canonicalize().map_err(|e| match e.kind() {
        std::io::ErrorKind::NotFound => RenderError::NotFound {
            field: field.to_string(),
            path: rel.to_string(),
        },
        _ => RenderError::io(&joined, e),
    })?;
    if !real.starts_with(&root) {
        return Err(RenderError::UnsafePath {
            field: field.to_string(),
            path: rel.to_string(),
            why: "it resolves (through a symlink) outside the repository".into(),
        });
    }
    Ok(real)
}

/// Depth of a JSON value (scalars are 0).
pub fn depth(v: &serde_json::Value) -> usize {
    match v {
        serde_json::Value::Array(a) => 1 + a.iter().map(depth).max().unwrap_or(0),
        serde_json::Value::Object(o) => 1 + o.values().map(depth).max().unwrap_or(0),
        _ => 0,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn lexical_checks() {
        assert_eq!(
            check_relative("path", "./apps/web").unwrap(),
            PathBuf::from("apps/web")
        );
        assert_eq!(check_relative("path", "").unwrap(), PathBuf::new());
        for bad in ["../x", "a/../../b", "/etc", "a%2F..%2Fb", "a\\..\\b"] {
            assert!(check_relative("path", bad).is_err(), "{bad}");
        }
    }

    #[test]
    fn symlinked_directory_outside_is_refused() {
        let root = tempfile::tempdir().unwrap();
        let outside = tempfile::tempdir().unwrap();
        std::os::unix::fs::symlink(outside.path(), root.path().join("out")).unwrap();
        std::fs::create_dir(root.path().join("in")).unwrap();
        assert!(resolve_inside(root.path(), "path", "in").is_ok());
        let err = resolve_inside(root.path(), "path", "out")
            .unwrap_err()
            .to_string();
        assert!(err.contains("outside the repository"), "{err}");
    }

    #[test]
    fn depth_counts_nesting() {
        assert_eq!(depth(&serde_json::json!({"a": [{"b": 1}]})), 3);
        assert_eq!(depth(&serde_json::json!(1)), 0);
    }
}
