//! `gantry render` shows what the controller applies: for every kind of chart the tests
//! use (values files and inline values, capabilities, `file://` dependencies, hooks with
//! `generateName`), the CLI's output is the Application's applied set, object for object.

use std::collections::BTreeMap;

use gantry::api::Application;
use k8s_openapi::api::core::v1::ConfigMap;
use kube::api::Api;
use serde_json::{Value, json};

use crate::support::app::{Workspace, create_source_and_app, wait_synced_healthy};
use crate::support::cluster::{TestNamespace, client, install_crds, kubeconfig_path};
use crate::support::controller::GantryController;
use crate::support::git::GitServer;

const CM: &str = "apiVersion: v1\nkind: ConfigMap\nmetadata:\n  name: {{ .Release.Name }}-PART\ndata:\n  from: PART\n";

fn files() -> Vec<(String, String)> {
    let cm = |part: &str| CM.replace("PART", part);
    let caps = "apiVersion: v1\nkind: ConfigMap\nmetadata:\n  name: caps\ndata:\n  \
        version: {{ .Capabilities.KubeVersion.Version | quote }}\n  \
        gantry: {{ .Capabilities.APIVersions.Has \"gantry.dev/v1alpha1/Application\" | quote }}\n  \
        missing: {{ .Capabilities.APIVersions.Has \"example.com/v9\" | quote }}\n";
    let hook = "apiVersion: batch/v1\nkind: Job\nmetadata:\n  generateName: migrate-\n  annotations:\n    helm.sh/hook: pre-install,pre-upgrade\nspec:\n  backoffLimit: 0\n  template:\n    spec:\n      restartPolicy: Never\n      containers:\n      - name: m\n        image: registry.example.com/migrate:1\n";
    [
        ("values/Chart.yaml", "apiVersion: v2\nname: values\nversion: 0.1.0\n".to_string()),
        ("values/values.yaml", "message: default\ncolor: blue\nreplicas: 1\n".into()),
        ("values/values-prod.yaml", "message: from-file\n".into()),
        (
            "values/templates/cm.yaml",
            "apiVersion: v1\nkind: ConfigMap\nmetadata:\n  name: {{ .Release.Name }}-settings\ndata:\n  message: {{ .Values.message | quote }}\n  color: {{ .Values.color | quote }}\n  replicas: {{ .Values.replicas | quote }}\n".into(),
        ),
        (
            "caps/Chart.yaml",
            "apiVersion: v2\nname: caps\nversion: 0.1.0\nkubeVersion: \">=1.33.0-0\"\n".into(),
        ),
        ("caps/templates/cm.yaml", caps.into()),
        ("base/Chart.yaml", "apiVersion: v2\nname: base\nversion: 0.1.0\n".into()),
        ("base/templates/cm.yaml", cm("base")),
        (
            "umbrella/Chart.yaml",
            "apiVersion: v2\nname: umbrella\nversion: 0.1.0\ndependencies:\n- name: base\n  version: \">=0.1.0\"\n  repository: file://../base\n".into(),
        ),
        ("umbrella/templates/cm.yaml", cm("umbrella")),
        ("hooks/Chart.yaml", "apiVersion: v2\nname: hooks\nversion: 0.1.0\n".into()),
        ("hooks/templates/cm.yaml", cm("hooks")),
        ("hooks/templates/migrate.yaml", hook.into()),
    ]
    .into_iter()
    .map(|(p, c)| (p.to_string(), c))
    .collect()
}

/// (kind, name) → the object, from `gantry render`'s output.
fn rendered(out: &str) -> BTreeMap<(String, String), Value> {
    serde_yaml::Deserializer::from_str(out)
        .filter_map(|d| {
            let v: Value = serde::Deserialize::deserialize(d).ok()?;
            let key = (
                v["kind"].as_str()?.to_string(),
                v["metadata"]["name"].as_str()?.to_string(),
            );
            Some((key, v))
        })
        .collect()
}

#[tokio::test]
async fn gantry_render_equals_the_applied_set_for_every_chart() {
    let client = client().await;
    install_crds(&client).await;
    let ns = TestNamespace::new(&client, "parity").await;
    let _controller = GantryController::start(&ns.name);
    let server = GitServer::start();
    let files = files();
    let refs: Vec<(&str, &str)> = files
        .iter()
        .map(|(p, c)| (p.as_str(), c.as_str()))
        .collect();
    let head = server.create_repo("charts", &refs);
    let checkout = Workspace::clone_from(&server, "charts");
    let version = client.apiserver_version().await.unwrap().git_version;
    // (Application and chart path, its render spec, the same as CLI flags)
    let cases: Vec<(&str, Value, Vec<String>)> = vec![
        (
            "values",
            json!({"helm": {"releaseName": "shop", "valuesFiles": ["values-prod.yaml"], "values": {"color": "green", "replicas": 3}}}),
            [
                "--release-name",
                "shop",
                "--values",
                "values-prod.yaml",
                "--set",
                "color=green",
                "--set",
                "replicas=3",
            ]
            .map(String::from)
            .to_vec(),
        ),
        (
            "caps",
            json!({}),
            vec![
                "--kube-version".into(),
                version.clone(),
                "--api-versions".into(),
                "gantry.dev/v1alpha1,gantry.dev/v1alpha1/Application".into(),
            ],
        ),
        ("umbrella", json!({}), vec![]),
        ("hooks", json!({}), vec![]),
    ];
    let apps: Api<Application> = Api::namespaced(client.clone(), &ns.name);
    for (name, render, _) in &cases {
        create_source_and_app(
            &client,
            &ns.name,
            name,
            &server.file_url("charts"),
            json!({"path": name, "render": render}),
        )
        .await;
    }
    let cms: Api<ConfigMap> = Api::namespaced(client.clone(), &ns.name);
    for (name, _, flags) in &cases {
        wait_synced_healthy(&apps, name, &head).await;
        let dir = checkout.path().join(name);
        let label = format!("{}.{name}", ns.name);
        let mut args: Vec<String> = vec![
            "render".into(),
            dir.display().to_string(),
            "--root".into(),
            checkout.path().display().to_string(),
            "-n".into(),
            ns.name.clone(),
            "--app-label".into(),
            label.clone(),
        ];
        args.extend(flags.iter().cloned());
        let out = std::process::Command::new(env!("CARGO_BIN_EXE_gantry"))
            .args(&args)
            .env("KUBECONFIG", kubeconfig_path())
            .env("PATH", crate::support::controller::path_with_tools())
            .output()
            .unwrap();
        let text = String::from_utf8_lossy(&out.stdout).into_owned();
        assert!(
            out.status.success(),
            "{name}: {}",
            String::from_utf8_lossy(&out.stderr)
        );
        let objects = rendered(&text);
        let app = apps.get(name).await.unwrap();
        let inventory: Vec<(String, String)> = app
            .status
            .unwrap()
            .inventory
            .into_iter()
            .map(|e| (e.kind, e.name))
            .collect();
        let shown: Vec<(String, String)> = objects.keys().cloned().collect();
        assert_eq!(
            shown, inventory,
            "{name}: gantry render and the applied set differ"
        );
        for ((kind, object), want) in &objects {
            assert_eq!(kind, "ConfigMap");
            let live = cms.get(object).await.unwrap();
            let data: Value = serde_json::to_value(live.data.unwrap()).unwrap();
            assert_eq!(data, want["data"], "{name}: {object}");
            assert_eq!(
                live.metadata.labels.unwrap()["gantry.dev/application"],
                want["metadata"]["labels"]["gantry.dev/application"]
                    .as_str()
                    .unwrap()
            );
        }
        if *name == "hooks" {
            let err = String::from_utf8_lossy(&out.stderr);
            assert!(err.contains("Job migrate-*"), "the hook is named: {err}");
        }
    }
}
