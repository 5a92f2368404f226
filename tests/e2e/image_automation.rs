//! Deploy on image push: a tag pushed to the local registry becomes a commit in the Git
//! server (the tag change alone), and from there a rollout in the cluster.

use std::time::Duration;

use gantry::api::{Application, ImagePolicy};
use k8s_openapi::api::apps::v1::Deployment;
use kube::api::{Api, PostParams};
use serde_json::json;

use crate::image_policy::{docker_secret, policy_object, wait_latest};
use crate::support::app::{Workspace, condition, create_source_and_app, wait_synced_healthy};
use crate::support::cluster::{TestNamespace, client, install_crds};
use crate::support::controller::GantryController;
use crate::support::eventually;
use crate::support::git::{GitServer, git};
use crate::support::registry::Registry;

fn deployment_yaml(name: &str, image: &str) -> String {
    format!(
        "# {name}: the web front end\n\
         apiVersion: apps/v1\n\
         kind: Deployment\n\
         metadata:\n  name: {name} # do not rename\n\
         spec:\n  replicas: 2\n  selector:\n    matchLabels: {{app: {name}}}\n\
         \x20 template:\n    metadata:\n      labels: {{app: {name}}}\n\
         \x20   spec:\n      containers:\n        - name: web\n\
         \x20         image: {image} # bumped by gantry\n"
    )
}

struct Fixture {
    registry: Registry,
    server: GitServer,
    ns: TestNamespace,
    client: kube::Client,
    controller: GantryController,
    image: String,
}

impl Fixture {
    async fn new(prefix: &str, files: &[(&str, &str)], pin: bool) -> Self {
        let registry = Registry::start_with_basic_auth("ci", "push-Pass-9");
        registry.push_image("team/web", "1.3.0");
        let image = format!("{}/team/web", registry.host());
        let client = client().await;
        install_crds(&client).await;
        let ns = TestNamespace::new(&client, prefix).await;
        docker_secret(&client, &ns.name, &registry.docker_config_json()).await;
        let policies: Api<ImagePolicy> = Api::namespaced(client.clone(), &ns.name);
        policies
            .create(
                &PostParams::default(),
                &policy_object("web", &image, ">=1.0.0 <2.0.0", pin),
            )
            .await
            .unwrap();
        let server = GitServer::start();
        let files: Vec<(String, String)> = files
            .iter()
            .map(|(p, c)| (p.to_string(), c.replace("IMAGE", &image)))
            .collect();
        let refs: Vec<(&str, &str)> = files
            .iter()
            .map(|(p, c)| (p.as_str(), c.as_str()))
            .collect();
        server.create_repo("config", &refs);
        let controller = GantryController::start(&ns.name);
        Fixture {
            registry,
            server,
            ns,
            client,
            controller,
            image,
        }
    }

    async fn app(&self, name: &str, path: &str, source: &str) {
        let spec = json!({
            "path": path,
            "targetNamespace": self.ns.name,
            "imageAutomation": {
                "policies": ["web"],
                "writeBack": {
                    "author": {"name": "Gantry Bot", "email": "bot@gantry.test"},
                    "messageTemplate": "Deploy {{new}} ({{policy}}, was {{old}})"
                }
            }
        });
        if source == name {
            create_source_and_app(
                &self.client,
                &self.ns.name,
                name,
                &self.server.http_url("config"),
                spec,
            )
            .await;
        } else {
            let apps: Api<Application> = Api::namespaced(self.client.clone(), &self.ns.name);
            let mut full = json!({"sourceRef": {"kind": "GitRepository", "name": source}, "interval": "10m", "timeout": "2m"});
            for (k, v) in spec.as_object().unwrap() {
                full[k] = v.clone();
            }
            let app = serde_json::from_value(json!({
                "apiVersion": "gantry.dev/v1alpha1", "kind": "Application",
                "metadata": {"name": name}, "spec": full
            }))
            .unwrap();
            apps.create(&PostParams::default(), &app).await.unwrap();
        }
    }

    fn head(&self) -> String {
        git(
            &self.server.bare_path("config"),
            &["rev-parse", "refs/heads/main"],
        )
        .trim()
        .to_string()
    }

    /// Lines removed and added by a commit (no context).
    fn changed_lines(&self, commit: &str) -> Vec<String> {
        git(
            &self.server.bare_path("config"),
            &["show", "--format=", "-U0", commit],
        )
        .lines()
        .filter(|l| {
            (l.starts_with('+') || l.starts_with('-'))
                && !l.starts_with("+++")
                && !l.starts_with("---")
        })
        .map(str::to_string)
        .collect()
    }

    async fn push_and_ask(&self, tags: &[&str]) -> Vec<String> {
        let digests = tags
            .iter()
            .map(|t| self.registry.push_image("team/web", t))
            .collect();
        let policies: Api<ImagePolicy> = Api::namespaced(self.client.clone(), &self.ns.name);
        gantry::trigger::request_reconcile(&policies, "web")
            .await
            .unwrap();
        digests
    }

    async fn wait_new_head(&self, than: &str) -> String {
        eventually(
            "a write-back commit on main",
            Duration::from_secs(60),
            || async {
                let h = self.head();
                (h != than).then_some(h)
            },
        )
        .await
    }

    async fn wait_image(&self, deployment: &str, image: &str) {
        let api: Api<Deployment> = Api::namespaced(self.client.clone(), &self.ns.name);
        eventually(
            &format!("Deployment {deployment} to run {image}"),
            Duration::from_secs(60),
            || async {
                let d = api.get(deployment).await.ok()?;
                let c = &d.spec?.template.spec?.containers[0];
                (c.image.as_deref() == Some(image)).then_some(())
            },
        )
        .await;
    }
}

#[tokio::test]
async fn a_new_tag_becomes_one_commit_changing_only_the_tag_and_is_deployed() {
    let deploy = deployment_yaml("web", "IMAGE:1.3.0");
    let f = Fixture::new(
        "wb-plain",
        &[("apps/web/deploy.yaml", &deploy), ("README.md", "config\n")],
        false,
    )
    .await;
    let initial = f.head();
    f.app("web", "apps/web", "web").await;
    let apps: Api<Application> = Api::namespaced(f.client.clone(), &f.ns.name);
    wait_synced_healthy(&apps, "web", &initial).await;
    f.wait_image("web", &format!("{}:1.3.0", f.image)).await;

    f.push_and_ask(&["1.4.0", "2.0.0"]).await;
    let bump = f.wait_new_head(&initial).await;
    assert_eq!(
        f.changed_lines(&bump),
        vec![
            format!("-          image: {}:1.3.0 # bumped by gantry", f.image),
            format!("+          image: {}:1.4.0 # bumped by gantry", f.image),
        ],
        "the commit changes the tag and nothing else"
    );
    let bare = f.server.bare_path("config");
    let message = git(&bare, &["log", "-1", "--format=%an <%ae>%n%B", &bump]);
    assert!(
        message.starts_with("Gantry Bot <bot@gantry.test>\n"),
        "{message}"
    );
    assert!(
        message.contains(&format!("Deploy {0}:1.4.0 (web, was {0}:1.3.0)", f.image)),
        "{message}"
    );
    assert_eq!(
        git(&bare, &["rev-parse", &format!("{bump}~1")]).trim(),
        initial,
        "exactly one commit on top"
    );

    f.wait_image("web", &format!("{}:1.4.0", f.image)).await;
    wait_synced_healthy(&apps, "web", &bump).await;
    let app = apps.get("web").await.unwrap();
    assert_eq!(
        condition(&app, "ImageAutomation").unwrap().reason,
        "UpToDate"
    );
    assert_eq!(f.head(), bump, "no second commit once Git has the image");
    assert!(!f.controller.log().contains("push-Pass-9"));
}

#[tokio::test]
async fn kustomize_images_and_marked_helm_values_are_bumped() {
    let kustomization = "\
apiVersion: kustomize.config.k8s.io/v1beta1
kind: Kustomization
resources:
  - deploy.yaml
images:
  # pinned by CI
  - name: web
    newName: IMAGE
    newTag: 1.3.0
";
    let kdeploy = deployment_yaml("web-k", "web");
    let chart = "apiVersion: v2\nname: web\nversion: 0.1.0\n";
    let values = "\
image:
  repository: IMAGE
  tag: 1.3.0 # gantry:image web
replicas: 1
";
    let template = "\
apiVersion: apps/v1
kind: Deployment
metadata:
  name: web-h
spec:
  replicas: {{ .Values.replicas }}
  selector:
    matchLabels: {app: web-h}
  template:
    metadata:
      labels: {app: web-h}
    spec:
      containers:
        - name: web
          image: \"{{ .Values.image.repository }}:{{ .Values.image.tag }}\"
";
    let f = Fixture::new(
        "wb-kh",
        &[
            ("kust/kustomization.yaml", kustomization),
            ("kust/deploy.yaml", &kdeploy),
            ("helm/Chart.yaml", chart),
            ("helm/values.yaml", values),
            ("helm/templates/deployment.yaml", template),
        ],
        false,
    )
    .await;
    let initial = f.head();
    f.app("kust", "kust", "kust").await;
    f.app("helm", "helm", "kust").await;
    f.wait_image("web-k", &format!("{}:1.3.0", f.image)).await;
    f.wait_image("web-h", &format!("{}:1.3.0", f.image)).await;

    f.push_and_ask(&["1.4.0"]).await;
    // Two Applications push to the same branch: two commits, whichever lands first.
    let bare = f.server.bare_path("config");
    eventually("both bump commits", Duration::from_secs(60), || async {
        let n = git(&bare, &["rev-list", "--count", &format!("{initial}..main")]);
        (n.trim() == "2").then_some(())
    })
    .await;
    let diff: Vec<String> = git(&bare, &["diff", "-U0", &initial, "main"])
        .lines()
        .filter(|l| {
            (l.starts_with('+') || l.starts_with('-'))
                && !l.starts_with("+++")
                && !l.starts_with("---")
        })
        .map(str::to_string)
        .collect();
    assert_eq!(
        diff,
        vec![
            "-  tag: 1.3.0 # gantry:image web".to_string(),
            "+  tag: 1.4.0 # gantry:image web".to_string(),
            "-    newTag: 1.3.0".to_string(),
            "+    newTag: 1.4.0".to_string(),
        ]
    );
    f.wait_image("web-k", &format!("{}:1.4.0", f.image)).await;
    f.wait_image("web-h", &format!("{}:1.4.0", f.image)).await;
}

#[tokio::test]
async fn digest_pinning_writes_the_registry_digest() {
    let deploy = deployment_yaml("web", "IMAGE:1.3.0");
    let f = Fixture::new("wb-pin", &[("app/deploy.yaml", &deploy)], true).await;
    let initial = f.head();
    f.app("web", "app", "web").await;
    // With `digest: pin` the running 1.3.0 is pinned at once (a first commit), so the
    // Deployment may show `:1.3.0` only for an instant: wait for 1.3.0 in either form.
    let deployments: Api<Deployment> = Api::namespaced(f.client.clone(), &f.ns.name);
    let prefix = format!("{}:1.3.0", f.image);
    eventually(
        "the Deployment on 1.3.0",
        Duration::from_secs(60),
        || async {
            let d = deployments.get("web").await.ok()?;
            let image = d.spec?.template.spec?.containers[0].image.clone()?;
            image.starts_with(&prefix).then_some(())
        },
    )
    .await;
    let digests = f.push_and_ask(&["1.4.0"]).await;
    let pinned = format!("{}:1.4.0@{}", f.image, digests[0]);
    // With `digest: pin` the running 1.3.0 is pinned first; then 1.4.0 arrives.
    let bare = f.server.bare_path("config");
    let bump = eventually("1.4.0 pinned in Git", Duration::from_secs(60), || async {
        let text = git(&bare, &["show", "main:app/deploy.yaml"]);
        text.contains(&pinned).then(|| f.head())
    })
    .await;
    assert_ne!(bump, initial);
    assert_eq!(
        f.changed_lines(&bump)[1],
        format!("+          image: {pinned} # bumped by gantry")
    );
    f.wait_image("web", &pinned).await;
}

#[tokio::test]
async fn a_commit_landing_between_fetch_and_push_is_kept_and_the_bump_goes_on_top() {
    let deploy = deployment_yaml("web", "IMAGE:1.3.0");
    let f = Fixture::new("wb-race", &[("app/deploy.yaml", &deploy)], false).await;
    let initial = f.head();
    f.app("web", "app", "web").await;
    f.wait_image("web", &format!("{}:1.3.0", f.image)).await;

    // Someone else pushes right when Gantry is about to push.
    let file_url = f.server.file_url("config");
    let concurrent = std::sync::Arc::new(std::sync::Mutex::new(String::new()));
    let slot = concurrent.clone();
    f.server.before_next_push(move || {
        let dir = tempfile::tempdir().unwrap();
        git(dir.path(), &["clone", "--quiet", &file_url, "."]);
        std::fs::write(dir.path().join("NOTES.md"), "a teammate's change\n").unwrap();
        git(dir.path(), &["add", "-A"]);
        git(dir.path(), &["commit", "--quiet", "-m", "teammate"]);
        git(dir.path(), &["push", "--quiet", "origin", "HEAD:main"]);
        *slot.lock().unwrap() = git(dir.path(), &["rev-parse", "HEAD"]).trim().to_string();
    });
    f.push_and_ask(&["1.4.0"]).await;
    let bare = f.server.bare_path("config");
    let bump = eventually(
        "the bump on top of the teammate's commit",
        Duration::from_secs(60),
        || async {
            let c = concurrent.lock().unwrap().clone();
            if c.is_empty() {
                return None;
            }
            let head = f.head();
            let parent = git(&bare, &["rev-parse", &format!("{head}~1")]);
            (parent.trim() == c).then_some(head)
        },
    )
    .await;
    let teammate = concurrent.lock().unwrap().clone();
    assert_eq!(
        git(&bare, &["rev-parse", &format!("{teammate}~1")]).trim(),
        initial
    );
    assert_eq!(f.changed_lines(&bump).len(), 2);
    assert_eq!(
        git(&bare, &["show", &format!("{bump}:NOTES.md")]),
        "a teammate's change\n",
        "nothing lost"
    );
    f.wait_image("web", &format!("{}:1.4.0", f.image)).await;
    let log = f.controller.log();
    assert!(log.contains("rebasing the edit"), "the retry is logged");
}

#[tokio::test]
async fn reverting_a_bump_holds_the_tag_until_a_newer_one_appears() {
    let deploy = deployment_yaml("web", "IMAGE:1.3.0");
    let f = Fixture::new("wb-revert", &[("app/deploy.yaml", &deploy)], false).await;
    let initial = f.head();
    f.app("web", "app", "web").await;
    f.wait_image("web", &format!("{}:1.3.0", f.image)).await;
    f.push_and_ask(&["1.4.0"]).await;
    let bump = f.wait_new_head(&initial).await;
    f.wait_image("web", &format!("{}:1.4.0", f.image)).await;

    // The team rolls back in Git.
    let ws = Workspace::clone_from(&f.server, "config");
    git(ws.path(), &["revert", "--no-edit", &bump]);
    git(ws.path(), &["push", "--quiet", "origin", "HEAD:main"]);
    let revert = git(ws.path(), &["rev-parse", "HEAD"]).trim().to_string();
    f.wait_image("web", &format!("{}:1.3.0", f.image)).await;
    let policies: Api<ImagePolicy> = Api::namespaced(f.client.clone(), &f.ns.name);
    let held = eventually("1.4.0 held", Duration::from_secs(30), || async {
        let p = policies.get("web").await.ok()?;
        let s = p.status?;
        s.held_tags.iter().find(|h| h.tag == "1.4.0").cloned()
    })
    .await;
    assert!(held.reason.contains(&revert), "{}", held.reason);
    let apps: Api<Application> = Api::namespaced(f.client.clone(), &f.ns.name);
    eventually("ImageAutomation=Held", Duration::from_secs(30), || async {
        let app = apps.get("web").await.ok()?;
        (condition(&app, "ImageAutomation")?.reason == "Held").then_some(())
    })
    .await;
    tokio::time::sleep(Duration::from_secs(3)).await;
    assert_eq!(f.head(), revert, "the held tag is not written again");

    // A strictly newer tag releases the hold.
    f.push_and_ask(&["1.4.1"]).await;
    wait_latest(&policies, "web", &format!("{}:1.4.1", f.image)).await;
    f.wait_new_head(&revert).await;
    f.wait_image("web", &format!("{}:1.4.1", f.image)).await;
    let p = policies.get("web").await.unwrap();
    assert!(p.status.unwrap().held_tags.is_empty());
}
