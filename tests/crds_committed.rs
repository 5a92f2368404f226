//! The CRDs committed under `crds/` (and in the chart) must equal what the Rust types
//! generate. Regenerate with `make crds`.

use std::path::Path;

#[test]
fn committed_crds_match_the_rust_types() {
    let root = Path::new(env!("CARGO_MANIFEST_DIR"));
    for dir in ["crds", "charts/gantry/crds"] {
        let mut expected_files = vec![];
        for crd in gantry::api::crds() {
            let file = gantry::api::crd_file_name(&crd);
            let path = root.join(dir).join(&file);
            let committed = std::fs::read_to_string(&path)
                .unwrap_or_else(|e| panic!("{}: {e}; run `make crds`", path.display()));
            let generated = gantry::api::crd_yaml(&crd).unwrap();
            assert!(
                committed == generated,
                "{} differs from the Rust types; run `make crds` and commit the result",
                path.display()
            );
            expected_files.push(file);
        }
        let mut present: Vec<String> = std::fs::read_dir(root.join(dir))
            .unwrap()
            .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
            .collect();
        present.sort();
        expected_files.sort();
        assert_eq!(present, expected_files, "stray or missing files in {dir}/");
    }
}

#[test]
fn gantry_crds_prints_every_kind() {
    let out = std::process::Command::new(env!("CARGO_BIN_EXE_gantry"))
        .arg("crds")
        .output()
        .unwrap();
    assert!(out.status.success());
    let text = String::from_utf8(out.stdout).unwrap();
    let docs: Vec<serde_yaml::Value> = serde_yaml::Deserializer::from_str(&text)
        .map(|d| serde::Deserialize::deserialize(d).unwrap())
        .collect();
    let kinds: Vec<&str> = docs
        .iter()
        .map(|d| d["spec"]["names"]["kind"].as_str().unwrap())
        .collect();
    assert_eq!(
        kinds,
        [
            "GitRepository",
            "ImagePolicy",
            "Application",
            "Receiver",
            "Notifier"
        ]
    );
    for d in &docs {
        assert_eq!(d["spec"]["group"].as_str(), Some("gantry.dev"));
        assert_eq!(d["spec"]["scope"].as_str(), Some("Namespaced"));
        assert_eq!(d["spec"]["names"]["categories"][0].as_str(), Some("gantry"));
        let version = &d["spec"]["versions"][0];
        assert_eq!(version["name"].as_str(), Some("v1alpha1"));
        assert!(version["subresources"]["status"].is_mapping());
        assert!(
            version["additionalPrinterColumns"]
                .as_sequence()
                .unwrap()
                .len()
                >= 3
        );
    }
}

#[test]
fn examples_parse_as_the_rust_types() {
    use gantry::api::{Application, GitRepository, ImagePolicy, Receiver};
    let dir = Path::new(env!("CARGO_MANIFEST_DIR")).join("examples");
    let read = |f: &str| std::fs::read_to_string(dir.join(f)).unwrap();
    let repo: GitRepository = serde_yaml::from_str(&read("gitrepository.yaml")).unwrap();
    assert_eq!(repo.spec.interval.parse().unwrap().as_secs(), 60);
    let app: Application = serde_yaml::from_str(&read("application.yaml")).unwrap();
    assert_eq!(app.spec.source_ref.name, "web");
    assert!(app.spec.rollout.is_some());
    let _: ImagePolicy = serde_yaml::from_str(&read("imagepolicy.yaml")).unwrap();
    let _: Receiver = serde_yaml::from_str(&read("receiver.yaml")).unwrap();
}

/// Every Gantry object in every file under examples/ parses as its Rust type (a missing
/// required field or a value of the wrong shape fails here).
#[test]
fn every_example_object_parses_as_its_type() {
    use gantry::api::{Application, GitRepository, ImagePolicy, Notifier, Receiver};
    fn files(dir: &Path, out: &mut Vec<std::path::PathBuf>) {
        for entry in std::fs::read_dir(dir).unwrap() {
            let path = entry.unwrap().path();
            if path.is_dir() {
                files(&path, out);
            } else if path.extension().is_some_and(|e| e == "yaml" || e == "yml") {
                out.push(path);
            }
        }
    }
    let mut all = vec![];
    files(
        &Path::new(env!("CARGO_MANIFEST_DIR")).join("examples"),
        &mut all,
    );
    let mut checked = 0;
    for path in all {
        let text = std::fs::read_to_string(&path).unwrap();
        for doc in serde_yaml::Deserializer::from_str(&text) {
            let value = <serde_yaml::Value as serde::Deserialize>::deserialize(doc).unwrap();
            let api = value.get("apiVersion").and_then(|v| v.as_str());
            if !api.is_some_and(|a| a.starts_with("gantry.dev/")) {
                continue;
            }
            let kind = value["kind"].as_str().unwrap_or_default().to_string();
            let parsed = match kind.as_str() {
                "Application" => serde_yaml::from_value::<Application>(value).map(|_| ()),
                "GitRepository" => serde_yaml::from_value::<GitRepository>(value).map(|_| ()),
                "ImagePolicy" => serde_yaml::from_value::<ImagePolicy>(value).map(|_| ()),
                "Receiver" => serde_yaml::from_value::<Receiver>(value).map(|_| ()),
                "Notifier" => serde_yaml::from_value::<Notifier>(value).map(|_| ()),
                other => panic!("{}: unknown kind {other}", path.display()),
            };
            parsed.unwrap_or_else(|e| panic!("{} ({kind}): {e}", path.display()));
            checked += 1;
        }
    }
    assert!(checked >= 20, "{checked} example objects");
}

/// kubectl and Helm read YAML 1.1, where unquoted `on`, `off`, `yes`, `no`, `y` and `n` are
/// booleans. No enum value or string default may be one of them, or users writing the
/// value unquoted would send a boolean.
#[test]
fn no_enum_value_is_a_yaml_1_1_boolean() {
    const BOOLEAN_WORDS: [&str; 6] = ["on", "off", "yes", "no", "y", "n"];
    fn walk(v: &serde_json::Value, path: &str, found: &mut Vec<String>) {
        match v {
            serde_json::Value::Object(map) => {
                for (k, child) in map {
                    if k == "enum" || k == "default" {
                        let values = child
                            .as_array()
                            .cloned()
                            .unwrap_or_else(|| vec![child.clone()]);
                        for value in values {
                            if let Some(s) = value.as_str()
                                && BOOLEAN_WORDS.contains(&s.to_ascii_lowercase().as_str())
                            {
                                found.push(format!("{path}.{k}: {s}"));
                            }
                        }
                    }
                    walk(child, &format!("{path}.{k}"), found);
                }
            }
            serde_json::Value::Array(items) => items.iter().for_each(|i| walk(i, path, found)),
            _ => {}
        }
    }
    let mut found = vec![];
    for crd in gantry::api::crds() {
        let json = serde_json::to_value(&crd).unwrap();
        walk(&json, crd.metadata.name.as_deref().unwrap(), &mut found);
    }
    assert!(
        found.is_empty(),
        "YAML 1.1 boolean words used as values: {found:?}"
    );
}

/// Every integer property carries the bounds of its Rust type, so the API server refuses a
/// value the controller could not read (TESTING.md row 13: one bad object must not stall
/// the watch of its kind).
#[test]
fn integers_are_bounded_by_their_rust_types() {
    fn walk(v: &serde_json::Value, path: &str, missing: &mut Vec<String>) {
        if let Some(o) = v.as_object() {
            if o.get("type").and_then(|t| t.as_str()) == Some("integer")
                && (o.get("maximum").is_none() || o.get("minimum").is_none())
                && o.get("format").and_then(|f| f.as_str()) != Some("int64")
            {
                missing.push(path.to_string());
            }
            for (k, c) in o {
                walk(c, &format!("{path}.{k}"), missing);
            }
        } else if let Some(a) = v.as_array() {
            a.iter().for_each(|c| walk(c, path, missing));
        }
    }
    let mut missing = vec![];
    for crd in gantry::api::crds() {
        walk(
            &serde_json::to_value(&crd).unwrap(),
            crd.metadata.name.as_deref().unwrap(),
            &mut missing,
        );
    }
    assert!(missing.is_empty(), "unbounded integers: {missing:?}");
}

/// The tenant examples (examples/tenant/) parse as the Rust types, and say what the
/// README says: the Application acts as the tenant's ServiceAccount; the remote one also
/// names its kubeconfig Secret, whose kubeconfig passes the controller's checks.
#[test]
fn tenant_examples_parse_as_the_rust_types() {
    use gantry::api::{Application, GitRepository};
    use serde::Deserialize;
    let dir = Path::new(env!("CARGO_MANIFEST_DIR")).join("examples/tenant");
    let docs = |f: &str| -> Vec<serde_yaml::Value> {
        let text = std::fs::read_to_string(dir.join(f)).unwrap();
        serde_yaml::Deserializer::from_str(&text)
            .map(|d| serde_yaml::Value::deserialize(d).unwrap())
            .collect()
    };
    let tenant = docs("tenant.yaml");
    let kinds: Vec<&str> = tenant.iter().map(|d| d["kind"].as_str().unwrap()).collect();
    assert_eq!(kinds, ["Namespace", "ServiceAccount", "RoleBinding"]);
    let own = docs("application.yaml");
    let _: GitRepository = serde_yaml::from_value(own[0].clone()).unwrap();
    let app: Application = serde_yaml::from_value(own[1].clone()).unwrap();
    assert_eq!(app.spec.service_account_name.as_deref(), Some("deployer"));
    let remote = docs("remote-application.yaml");
    let kubeconfig = remote[0]["stringData"]["value"].as_str().unwrap();
    gantry::cluster::kubeconfig::parse(kubeconfig).expect("the example kubeconfig is accepted");
    let app: Application = serde_yaml::from_value(remote[1].clone()).unwrap();
    assert_eq!(
        app.spec.kube_config.unwrap().secret_ref.name,
        remote[0]["metadata"]["name"].as_str().unwrap()
    );
}
