//! The command line against the local control plane: render, diff (exit codes, Secret
//! masking), get, history, sync, suspend.

use std::process::{Command, Output};
use std::time::Duration;

use gantry::api::Application;
use k8s_openapi::api::core::v1::Secret;
use kube::api::{Api, Patch, PatchParams};
use serde_json::json;

use crate::support::app::{create_source_and_app, wait_synced_healthy};
use crate::support::cluster::{TestNamespace, client, install_crds, kubeconfig_path};
use crate::support::controller::GantryController;
use crate::support::eventually;
use crate::support::git::GitServer;

fn gantry(args: &[&str]) -> Output {
    Command::new(env!("CARGO_BIN_EXE_gantry"))
        .args(args)
        .env("KUBECONFIG", kubeconfig_path())
        .env("GANTRY_LOG", "warn")
        .output()
        .unwrap()
}

fn stdout(o: &Output) -> String {
    String::from_utf8_lossy(&o.stdout).into_owned()
}

#[test]
fn render_prints_the_normalized_set_without_a_cluster() {
    let dir = format!("{}/examples/apps/web", env!("CARGO_MANIFEST_DIR"));
    let out = Command::new(env!("CARGO_BIN_EXE_gantry"))
        .args(["render", &dir, "--namespace", "shop"])
        .env("KUBECONFIG", "/nonexistent")
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let text = stdout(&out);
    assert!(
        text.contains("kind: Deployment") && text.contains("kind: Service"),
        "{text}"
    );
    assert!(text.contains("namespace: shop"), "{text}");
    assert!(
        text.contains("app.kubernetes.io/managed-by: gantry"),
        "{text}"
    );
}

#[test]
fn render_of_a_path_without_manifests_fails_and_says_what_is_there() {
    let dir = tempfile::tempdir().unwrap();
    std::fs::write(dir.path().join("main.jsonnet"), "{}").unwrap();
    let out = Command::new(env!("CARGO_BIN_EXE_gantry"))
        .arg("render")
        .arg(dir.path())
        .env("KUBECONFIG", "/nonexistent")
        .output()
        .unwrap();
    let err = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(2), "{err}");
    assert!(
        err.contains("no manifests found at") && err.contains("(found: main.jsonnet)"),
        "{err}"
    );
    assert!(out.stdout.is_empty());
}

/// An object without a name (a Job written for Argo CD's generateName but not annotated as
/// a hook) is refused with its file and document named, and so is an object rendered twice.
#[test]
fn objects_gantry_cannot_identify_are_named_by_their_file() {
    let dir = tempfile::tempdir().unwrap();
    std::fs::create_dir(dir.path().join("jobs")).unwrap();
    std::fs::write(
        dir.path().join("jobs/migrate.yaml"),
        "apiVersion: v1\nkind: ConfigMap\nmetadata:\n  name: first\n---\napiVersion: batch/v1\nkind: Job\nmetadata:\n  generateName: migrate-\nspec: {}\n",
    )
    .unwrap();
    let render = |dir: &std::path::Path| {
        let out = Command::new(env!("CARGO_BIN_EXE_gantry"))
            .arg("render")
            .arg(dir)
            .env("KUBECONFIG", "/nonexistent")
            .output()
            .unwrap();
        assert_eq!(out.status.code(), Some(2));
        String::from_utf8_lossy(&out.stderr).into_owned()
    };
    let err = render(dir.path());
    assert!(
        err.contains("Job #2 from jobs/migrate.yaml (document 2) has no metadata.name")
            && err.contains("generateName is only for hooks"),
        "{err}"
    );
    std::fs::write(
        dir.path().join("jobs/migrate.yaml"),
        "apiVersion: v1\nkind: ConfigMap\nmetadata:\n  name: first\n",
    )
    .unwrap();
    std::fs::write(
        dir.path().join("again.yaml"),
        "apiVersion: v1\nkind: ConfigMap\nmetadata:\n  name: first\n",
    )
    .unwrap();
    let err = render(dir.path());
    assert!(
        err.contains("is rendered twice: from again.yaml (document 1) and from jobs/migrate.yaml (document 1)"),
        "{err}"
    );
}

/// `gantry render DIR | head -1`: the reader goes away; the command ends quietly (exit 0),
/// not with a panic (exit 101).
#[test]
fn a_closed_pipe_ends_output_quietly() {
    let dir = format!("{}/examples/apps/web", env!("CARGO_MANIFEST_DIR"));
    let mut child = Command::new(env!("CARGO_BIN_EXE_gantry"))
        .args(["render", &dir])
        .env("KUBECONFIG", "/nonexistent")
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::piped())
        .spawn()
        .unwrap();
    drop(child.stdout.take());
    let out = child.wait_with_output().unwrap();
    let err = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(0), "{err}");
    assert!(!err.contains("panicked"), "{err}");
}

/// `gantry diff … 2>&1 | head`: an error written to a closed stderr is lost, the exit code
/// stays the command's own (2), not a panic's (101).
#[test]
fn a_closed_stderr_keeps_the_exit_code() {
    let mut child = Command::new(env!("CARGO_BIN_EXE_gantry"))
        .args(["render", "/nonexistent/path"])
        .env("KUBECONFIG", "/nonexistent")
        .stdout(std::process::Stdio::null())
        .stderr(std::process::Stdio::piped())
        .spawn()
        .unwrap();
    drop(child.stderr.take());
    assert_eq!(child.wait().unwrap().code(), Some(2));
}

#[tokio::test]
async fn diff_get_history_sync_and_suspend() {
    let client = client().await;
    install_crds(&client).await;
    let ns = TestNamespace::new(&client, "cli").await;
    let _controller = GantryController::start(&ns.name);
    let server = GitServer::start();
    let head = server.create_repo(
        "app",
        &[
            ("deploy/cm.yaml", "apiVersion: v1\nkind: ConfigMap\nmetadata:\n  name: settings\ndata:\n  mode: \"safe\"\n"),
            ("deploy/secret.yaml", "apiVersion: v1\nkind: Secret\nmetadata:\n  name: creds\nstringData:\n  token: original-token-value\n"),
        ],
    );
    create_source_and_app(
        &client,
        &ns.name,
        "app",
        &server.file_url("app"),
        json!({"path": "deploy", "drift": {"mode": "audit"}}),
    )
    .await;
    let apps: Api<Application> = Api::namespaced(client.clone(), &ns.name);
    wait_synced_healthy(&apps, "app", &head).await;
    let target = format!("{}/app", ns.name);

    // In sync: exit 0, no output.
    let out = gantry(&["diff", "--app", &target]);
    assert_eq!(
        out.status.code(),
        Some(0),
        "{}{}",
        stdout(&out),
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(stdout(&out).trim().is_empty());

    // The same files diffed as a directory: no difference either (the ownership labels the
    // sync added are not reported).
    let checkout = crate::support::app::Workspace::clone_from(&server, "app");
    let dir = checkout.path().join("deploy");
    let out = gantry(&[
        "diff",
        dir.to_str().unwrap(),
        "--namespace",
        &ns.name,
        "--color",
        "never",
    ]);
    assert_eq!(
        out.status.code(),
        Some(0),
        "{}{}",
        stdout(&out),
        String::from_utf8_lossy(&out.stderr)
    );

    // A hand edit of the Secret: exit 1, the change is shown, no value appears.
    let secrets: Api<Secret> = Api::namespaced(client.clone(), &ns.name);
    secrets
        .patch(
            "creds",
            &PatchParams {
                field_manager: Some("kubectl-edit".into()),
                ..Default::default()
            },
            &Patch::Merge(json!({"stringData": {"token": "edited-token-value"}})),
        )
        .await
        .unwrap();
    let out = gantry(&["diff", "--app", &target, "--color", "never"]);
    assert_eq!(
        out.status.code(),
        Some(1),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let text = stdout(&out);
    assert!(
        text.contains("Secret") && text.contains("*** (after)"),
        "{text}"
    );
    for value in [
        "original-token-value",
        "edited-token-value",
        "b3JpZ2luYWw",
        "ZWRpdGVk",
    ] {
        assert!(!text.contains(value), "{value} leaked in:\n{text}");
    }

    // Errors exit 2.
    assert_eq!(
        gantry(&["diff", "--app", &format!("{}/missing", ns.name)])
            .status
            .code(),
        Some(2)
    );

    let out = gantry(&["get", "apps", "-n", &ns.name]);
    assert!(out.status.success());
    assert!(
        stdout(&out).contains("app") && stdout(&out).contains(&head),
        "{}",
        stdout(&out)
    );
    // The columns of `kubectl get gantry`: READY, HEALTHY and DRIFT with their statuses.
    let table = stdout(&out);
    let header: Vec<&str> = table.lines().next().unwrap().split_whitespace().collect();
    let row: Vec<&str> = table.lines().nth(1).unwrap().split_whitespace().collect();
    let at = |col: &str| row[header.iter().position(|h| *h == col).unwrap()];
    assert_eq!((at("READY"), at("HEALTHY")), ("True", "True"), "{table}");
    let out = gantry(&["get", "sources", "-n", &ns.name, "-o", "json"]);
    let sources: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(sources[0]["metadata"]["name"], "app");
    let out = gantry(&["history", &target]);
    assert!(
        stdout(&out).contains("Succeeded") && stdout(&out).contains(&head),
        "{}",
        stdout(&out)
    );

    // `gantry sync` right after a push applies the push: the source is fetched first
    // (it would otherwise wait an hour for its next fetch).
    let repos: Api<gantry::api::GitRepository> = Api::namespaced(client.clone(), &ns.name);
    let patched = repos
        .patch(
            "app",
            &PatchParams::default(),
            &Patch::Merge(json!({"spec": {"interval": "1h"}})),
        )
        .await
        .unwrap();
    let generation = patched.metadata.generation;
    eventually(
        "the hourly interval observed",
        Duration::from_secs(30),
        || async {
            let r = repos.get("app").await.ok()?;
            (r.status?.observed_generation == generation).then_some(())
        },
    )
    .await;
    checkout.write(
        "deploy/cm.yaml",
        "apiVersion: v1\nkind: ConfigMap\nmetadata:\n  name: settings\ndata:\n  mode: \"pushed\"\n",
    );
    let pushed = checkout.commit_and_push("a push right before gantry sync");
    let out = gantry(&["sync", &target, "--wait", "--timeout", "60s"]);
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(
        stdout(&out).contains("applied revision") && stdout(&out).contains(&pushed),
        "{}{}",
        stdout(&out),
        String::from_utf8_lossy(&out.stderr)
    );

    assert!(gantry(&["suspend", &target]).status.success());
    let app = eventually("suspend", Duration::from_secs(10), || async {
        let a = apps.get("app").await.ok()?;
        a.spec.suspend.then_some(a)
    })
    .await;
    assert!(app.spec.suspend);
    assert!(gantry(&["resume", &target]).status.success());
}

/// `source target/testcluster/env` (without `set -a`) is enough for kubectl to reach the
/// test cluster: the file exports its variables.
#[test]
fn sourcing_the_cluster_env_file_points_kubectl_at_the_cluster() {
    let env = kubeconfig_path().parent().unwrap().join("env");
    let out = Command::new("bash")
        .arg("-c")
        .arg(format!(
            "source '{}' && \"$GANTRY_TEST_BIN/kubectl\" get --raw /readyz",
            env.display()
        ))
        .env_clear()
        .env("PATH", "/usr/bin:/bin")
        .env("HOME", "/nonexistent")
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert_eq!(String::from_utf8_lossy(&out.stdout), "ok");
}

/// `gantry render DIR --root REPO`: a kustomization that uses `../base` renders as the
/// controller renders it from the repository root; without `--root` the base is outside
/// what the render may read. Helm releases are named after the Application (--app-label).
#[test]
fn render_takes_a_repository_root_and_names_releases_as_the_controller() {
    let repo = tempfile::tempdir().unwrap();
    let write = |rel: &str, text: &str| {
        let p = repo.path().join(rel);
        std::fs::create_dir_all(p.parent().unwrap()).unwrap();
        std::fs::write(p, text).unwrap();
    };
    write("base/kustomization.yaml", "resources:\n- cm.yaml\n");
    write(
        "base/cm.yaml",
        "apiVersion: v1\nkind: ConfigMap\nmetadata:\n  name: from-base\n",
    );
    write("overlay/kustomization.yaml", "resources:\n- ../base\n");
    write(
        "chart/Chart.yaml",
        "apiVersion: v2\nname: c\nversion: 0.1.0\n",
    );
    write(
        "chart/templates/cm.yaml",
        "apiVersion: v1\nkind: ConfigMap\nmetadata:\n  name: {{ .Release.Name }}-settings\n",
    );
    let render = |args: &[&str]| {
        Command::new(env!("CARGO_BIN_EXE_gantry"))
            .arg("render")
            .args(args)
            .env("KUBECONFIG", "/nonexistent")
            .env("GANTRY_KUBECTL", crate::support::process::tool("kubectl"))
            .env("GANTRY_HELM", crate::support::process::tool("helm"))
            .output()
            .unwrap()
    };
    let overlay = repo.path().join("overlay");
    let alone = render(&[overlay.to_str().unwrap()]);
    assert_eq!(alone.status.code(), Some(2), "the base is outside DIR");
    let rooted = render(&[
        overlay.to_str().unwrap(),
        "--root",
        repo.path().to_str().unwrap(),
    ]);
    assert!(
        rooted.status.success(),
        "{}",
        String::from_utf8_lossy(&rooted.stderr)
    );
    assert!(stdout(&rooted).contains("name: from-base"));
    let chart = render(&[
        repo.path().join("chart").to_str().unwrap(),
        "--app-label",
        "shop.web",
    ]);
    assert!(
        stdout(&chart).contains("name: web-settings"),
        "{}{}",
        stdout(&chart),
        String::from_utf8_lossy(&chart.stderr)
    );
}
