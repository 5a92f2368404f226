//! Helpers for Application tests: a Git repository the test can commit to, and waits on
//! Application status.

use std::path::{Path, PathBuf};
use std::time::Duration;

use gantry::api::Application;
use gantry::api::conditions::Condition;
use kube::api::{Api, PostParams};
use serde_json::{Value, json};

use super::eventually;
use super::git::{GitServer, git};

/// A working clone of a repository on the test Git server, for committing changes.
pub struct Workspace {
    pub dir: tempfile::TempDir,
}

impl Workspace {
    pub fn clone_from(server: &GitServer, name: &str) -> Self {
        let dir = tempfile::tempdir().unwrap();
        git(
            dir.path(),
            &["clone", "--quiet", &server.file_url(name), "."],
        );
        Self { dir }
    }

    pub fn path(&self) -> &Path {
        self.dir.path()
    }

    pub fn write(&self, rel: &str, content: &str) {
        let p: PathBuf = self.dir.path().join(rel);
        std::fs::create_dir_all(p.parent().unwrap()).unwrap();
        std::fs::write(p, content).unwrap();
    }

    pub fn remove(&self, rel: &str) {
        let p = self.dir.path().join(rel);
        if p.is_dir() {
            std::fs::remove_dir_all(p).unwrap();
        } else {
            std::fs::remove_file(p).unwrap();
        }
    }

    /// Commits everything and pushes to main; returns the commit id.
    pub fn commit_and_push(&self, message: &str) -> String {
        git(self.path(), &["add", "-A"]);
        git(
            self.path(),
            &["commit", "--quiet", "--allow-empty", "-m", message],
        );
        git(self.path(), &["push", "--quiet", "origin", "HEAD:main"]);
        git(self.path(), &["rev-parse", "HEAD"]).trim().to_string()
    }
}

/// Creates a GitRepository (interval 1s) and an Application on it.
pub async fn create_source_and_app(
    client: &kube::Client,
    ns: &str,
    name: &str,
    url: &str,
    app_spec: Value,
) {
    let repos: Api<gantry::api::GitRepository> = Api::namespaced(client.clone(), ns);
    let repo = serde_json::from_value(json!({
        "apiVersion": "gantry.dev/v1alpha1", "kind": "GitRepository",
        "metadata": {"name": name},
        "spec": {"url": url, "interval": "1s", "ref": {"branch": "main"}}
    }))
    .unwrap();
    repos.create(&PostParams::default(), &repo).await.unwrap();
    let mut spec = json!({"sourceRef": {"kind": "GitRepository", "name": name}, "interval": "10m", "timeout": "2m"});
    for (k, v) in app_spec.as_object().unwrap() {
        spec[k] = v.clone();
    }
    let apps: Api<Application> = Api::namespaced(client.clone(), ns);
    let app = serde_json::from_value(json!({
        "apiVersion": "gantry.dev/v1alpha1", "kind": "Application",
        "metadata": {"name": name}, "spec": spec
    }))
    .unwrap();
    apps.create(&PostParams::default(), &app).await.unwrap();
}

pub fn condition(app: &Application, type_: &str) -> Option<Condition> {
    app.status
        .as_ref()?
        .conditions
        .iter()
        .find(|c| c.type_ == type_)
        .cloned()
}

/// Waits until the Application's `Ready` condition has `reason` at `revision` (commit).
pub async fn wait_ready_reason(
    api: &Api<Application>,
    name: &str,
    reason: &str,
    commit: &str,
) -> Application {
    eventually(
        &format!("{name} Ready reason {reason} at {commit}"),
        Duration::from_secs(60),
        || async {
            let app = api.get(name).await.ok()?;
            let c = condition(&app, "Ready")?;
            let attempted = app
                .status
                .as_ref()?
                .last_attempted_revision
                .clone()
                .unwrap_or_default();
            (c.reason == reason && attempted.ends_with(commit)).then_some(app)
        },
    )
    .await
}

/// Waits until the Application is Ready and Healthy at `commit`.
pub async fn wait_synced_healthy(api: &Api<Application>, name: &str, commit: &str) -> Application {
    eventually(
        &format!("{name} Ready and Healthy at {commit}"),
        Duration::from_secs(90),
        || async {
            let app = api.get(name).await.ok()?;
            let ready = condition(&app, "Ready")?;
            let healthy = condition(&app, "Healthy")?;
            let applied = app
                .status
                .as_ref()?
                .last_applied_revision
                .clone()
                .unwrap_or_default();
            (ready.status == "True" && healthy.status == "True" && applied.ends_with(commit))
                .then_some(app)
        },
    )
    .await
}
