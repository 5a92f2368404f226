//! The chart's pod, run for real from the image `make image` built: the image is pushed to
//! a local registry and unpacked from it; its entrypoint runs chrooted into that filesystem
//! as uid 65532, with a read-only root, a writable `/tmp`, the chart's args and env, and
//! the service-account files where the kubelet puts them (a token of the chart's
//! ServiceAccount from the TokenRequest API, `ca.crt`, `namespace`), in-cluster config
//! pointing at the test API server. Through it, under the chart's own RBAC (cluster-admin,
//! and the locked-down multi-tenant mode): an Application syncs, an image push becomes a
//! commit and a canary that promotes, and a bad canary aborts. A missing permission shows
//! as `forbidden` in the controller's log and fails the test.

use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::Duration;

use gantry::api::{Application, ImagePolicy};
use k8s_openapi::api::apps::v1::Deployment;
use kube::api::{Api, PostParams};
use serde_json::{Value, json};

use crate::image_policy::{docker_secret, policy_object};
use crate::rollouts::SERVICE;
use crate::support::app::{
    Workspace, create_source_and_app, wait_ready_reason, wait_synced_healthy,
};
use crate::support::cluster::{TestNamespace, client, install_crds, kubeconfig_path};
use crate::support::eventually;
use crate::support::git::{GitServer, git};
use crate::support::process::{ChildGuard, free_port, helm, tool};
use crate::support::registry::Registry;

/// The image tarball `make image` writes.
fn image_tarball() -> PathBuf {
    let path = Path::new(env!("CARGO_MANIFEST_DIR")).join("target/image/gantry.tar");
    assert!(
        path.exists(),
        "{} is missing: run `make image` (make test does)",
        path.display()
    );
    path
}

fn run(cmd: &mut Command) -> String {
    let out = cmd.output().expect("run a tool");
    assert!(
        out.status.success(),
        "{cmd:?}: {}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8_lossy(&out.stdout).into_owned()
}

fn chart_dir() -> String {
    format!("{}/charts/gantry", env!("CARGO_MANIFEST_DIR"))
}

/// The image's filesystem and its config (entrypoint, user, env).
struct Image {
    _dir: tempfile::TempDir,
    root: PathBuf,
    config: Value,
}

impl Image {
    /// Pushes the image tarball to `registry`, then unpacks it from there.
    fn pull(registry: &Registry) -> Self {
        let reference = format!("{}/gantry/controller:test", registry.host());
        registry.crane(&["push", image_tarball().to_str().unwrap(), &reference]);
        let config: Value = serde_json::from_str(&registry.crane(&["config", &reference])).unwrap();
        let dir = tempfile::tempdir().unwrap();
        let layers = dir.path().join("fs.tar");
        registry.crane(&["export", &reference, layers.to_str().unwrap()]);
        let root = dir.path().join("root");
        std::fs::create_dir_all(&root).unwrap();
        run(Command::new("tar")
            .arg("-xf")
            .arg(&layers)
            .arg("--same-owner")
            .arg("-C")
            .arg(&root));
        std::fs::remove_file(&layers).unwrap();
        // An image built from older sources fails in confusing ways (the controller refuses
        // CRDs of another version): compare the CRDs it generates with this build's.
        let crds_of = |cmd: &mut Command| run(cmd.arg("crds"));
        let theirs = crds_of(
            Command::new("/usr/sbin/chroot")
                .arg(&root)
                .arg("/usr/local/bin/gantry"),
        );
        let ours = crds_of(&mut Command::new(env!("CARGO_BIN_EXE_gantry")));
        assert!(
            theirs == ours,
            "{} is older than the sources (its CRDs differ): run `make image`",
            image_tarball().display()
        );
        // The tools the renders run are in the image and run there.
        for (tool, args) in [
            ("helm", &["version"][..]),
            ("kustomize", &["version"]),
            ("sops", &["--version", "--disable-version-check"]),
        ] {
            let out = run(Command::new("/usr/sbin/chroot")
                .arg(&root)
                .arg(format!("/usr/local/bin/{tool}"))
                .args(args));
            assert!(!out.trim().is_empty(), "{tool} printed nothing");
        }
        Image {
            _dir: dir,
            root,
            config,
        }
    }

    fn entrypoint(&self) -> Vec<String> {
        serde_json::from_value(self.config["config"]["Entrypoint"].clone()).unwrap()
    }

    fn env(&self) -> Vec<(String, String)> {
        self.config["config"]["Env"]
            .as_array()
            .unwrap()
            .iter()
            .filter_map(|e| e.as_str()?.split_once('='))
            .map(|(k, v)| (k.to_string(), v.to_string()))
            .collect()
    }
}

/// A Helm release of the chart, uninstalled (with its cluster-wide RBAC) when dropped.
struct Release {
    name: String,
    namespace: String,
}

impl Release {
    fn install(namespace: &str, sets: &[String]) -> Self {
        let name = format!("ic{}", &namespace[namespace.len() - 6..]);
        let mut args: Vec<String> = vec![
            "install".into(),
            name.clone(),
            chart_dir(),
            "--namespace".into(),
            namespace.into(),
        ];
        args.extend(sets.iter().map(|s| format!("--set={s}")));
        helm(&args.iter().map(String::as_str).collect::<Vec<_>>());
        Release {
            name,
            namespace: namespace.to_string(),
        }
    }

    fn fullname(&self) -> String {
        format!("{}-gantry", self.name)
    }
}

impl Drop for Release {
    fn drop(&mut self) {
        let _ = Command::new(tool("helm"))
            .args(["uninstall", &self.name, "--namespace", &self.namespace])
            .env("KUBECONFIG", kubeconfig_path())
            .output();
    }
}

/// The chart's controller pod, running from the image's filesystem.
struct Pod {
    _process: ChildGuard,
    log: PathBuf,
    metrics_port: u16,
    /// The web view, when the chart enables it.
    ui_port: u16,
}

impl Pod {
    fn log(&self) -> String {
        std::fs::read_to_string(&self.log).unwrap_or_default()
    }
}

impl Drop for Pod {
    fn drop(&mut self) {
        if std::thread::panicking() {
            eprintln!("---- chart pod log ----\n{}", self.log());
        }
    }
}

/// A value of the API server's URL in the admin kubeconfig.
fn api_server_port() -> String {
    let kc = std::fs::read_to_string(kubeconfig_path()).unwrap();
    let server = kc
        .lines()
        .find_map(|l| l.trim().strip_prefix("server: "))
        .unwrap();
    server.rsplit(':').next().unwrap().to_string()
}

/// Runs the container of the release's Deployment as a kubelet would, from `image`.
fn run_pod(image: &Image, release: &Release) -> Pod {
    // The container spec exactly as the installed Deployment has it.
    let deployment = run(Command::new(tool("kubectl"))
        .arg("--kubeconfig")
        .arg(kubeconfig_path())
        .args([
            "get",
            "deployment",
            &release.fullname(),
            "-n",
            &release.namespace,
            "-o",
            "json",
        ]));
    let deployment: Value = serde_json::from_str(&deployment).unwrap();
    let pod_spec = &deployment["spec"]["template"]["spec"];
    let container = &pod_spec["containers"][0];
    assert_eq!(
        pod_spec["securityContext"]["runAsUser"], 65532,
        "the chart runs as 65532"
    );
    assert_eq!(container["securityContext"]["readOnlyRootFilesystem"], true);
    let (metrics_port, receiver_port, ui_port) = (free_port(), free_port(), free_port());
    let args: Vec<String> = container["args"]
        .as_array()
        .unwrap()
        .iter()
        .map(|a| {
            let a = a.as_str().unwrap();
            // Only loopback here: the chart's 0.0.0.0 listeners move to free loopback ports.
            if a.starts_with("--metrics-addr=") {
                format!("--metrics-addr=127.0.0.1:{metrics_port}")
            } else if a.starts_with("--receiver-addr=") {
                format!("--receiver-addr=127.0.0.1:{receiver_port}")
            } else if a.starts_with("--ui-addr=") {
                format!("--ui-addr=127.0.0.1:{ui_port}")
            } else {
                a.to_string()
            }
        })
        .collect();
    let pod_name = format!("{}-0", release.fullname());
    let mut env = image.env();
    for e in container["env"].as_array().unwrap() {
        let name = e["name"].as_str().unwrap().to_string();
        let value = match (
            e["value"].as_str(),
            e["valueFrom"]["fieldRef"]["fieldPath"].as_str(),
        ) {
            (Some(v), _) => v.to_string(),
            (None, Some("metadata.name")) => pod_name.clone(),
            (None, Some("metadata.namespace")) => release.namespace.clone(),
            other => panic!("env {name}: {other:?} is not something this test provides"),
        };
        env.push((name, value));
    }
    env.push(("HOSTNAME".into(), pod_name));
    env.push(("KUBERNETES_SERVICE_HOST".into(), "127.0.0.1".into()));
    env.push(("KUBERNETES_SERVICE_PORT".into(), api_server_port()));

    // What the kubelet mounts: the service-account token (TokenRequest API), the CA, the
    // namespace; and the mount points a runtime creates.
    let token =
        crate::support::cluster::service_account_token(&release.namespace, &release.fullname());
    let sa = image
        .root
        .join("var/run/secrets/kubernetes.io/serviceaccount");
    std::fs::create_dir_all(&sa).unwrap();
    std::fs::write(sa.join("token"), token.trim()).unwrap();
    std::fs::copy(
        kubeconfig_path().parent().unwrap().join("pki/ca.crt"),
        sa.join("ca.crt"),
    )
    .unwrap();
    std::fs::write(sa.join("namespace"), &release.namespace).unwrap();
    for dir in ["dev", "proc"] {
        std::fs::create_dir_all(image.root.join(dir)).unwrap();
    }

    // A private mount namespace: the root bound read-only, tmpfs on /tmp and /dev (with the
    // usual device nodes bound in), /proc; then chroot as 65532 and exec the entrypoint.
    let script = r#"set -e
R="$1"; shift
/usr/bin/mount --bind "$R" "$R"
/usr/bin/mount -o remount,bind,ro "$R"
/usr/bin/mount -t tmpfs -o mode=1777 tmpfs "$R/tmp"
/usr/bin/mount -t tmpfs -o mode=755 tmpfs "$R/dev"
for d in null zero random urandom; do : > "$R/dev/$d"; /usr/bin/mount --bind "/dev/$d" "$R/dev/$d"; done
/usr/bin/mount -t proc proc "$R/proc"
exec /usr/sbin/chroot --userspec=65532:65532 "$R" "$@"
"#;
    let log = image.root.parent().unwrap().join("pod.log");
    let child = Command::new("/usr/bin/unshare")
        .args([
            "--mount",
            "--propagation",
            "private",
            "/bin/sh",
            "-c",
            script,
            "pod",
        ])
        .arg(&image.root)
        .args(image.entrypoint())
        .args(&args)
        .env_clear()
        .envs(env)
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(std::fs::File::create(&log).unwrap())
        .spawn()
        .expect("start the pod (needs root: unshare, mount, chroot)");
    Pod {
        _process: ChildGuard::new("chart pod", child),
        log,
        metrics_port,
        ui_port,
    }
}

fn deployment(image: &str) -> String {
    format!(
        "apiVersion: apps/v1\nkind: Deployment\nmetadata:\n  name: web\nspec:\n  replicas: 4\n  \
         selector:\n    matchLabels: {{app: web}}\n  template:\n    metadata:\n      labels: {{app: web}}\n    \
         spec:\n      containers:\n        - name: web\n          image: {image} # image automation\n"
    )
}

/// Sync, image push → commit → promoted canary, bad canary → abort; through `pod`.
async fn the_story(client: &kube::Client, ns: &str, pod: &Pod, service_account: Option<&str>) {
    let registry = Registry::start_with_basic_auth("ci", "in-Cluster-7");
    registry.push_image("team/web", "1.3.0");
    let image = format!("{}/team/web", registry.host());
    docker_secret(client, ns, &registry.docker_config_json()).await;
    let policies: Api<ImagePolicy> = Api::namespaced(client.clone(), ns);
    policies
        .create(
            &PostParams::default(),
            &policy_object("web", &image, ">=1.0.0 <2.0.0", false),
        )
        .await
        .unwrap();
    let server = GitServer::start();
    let first = server.create_repo(
        "config",
        &[
            ("app/deploy.yaml", &deployment(&format!("{image}:1.3.0"))),
            ("app/service.yaml", SERVICE),
        ],
    );
    let mut spec = json!({
        "path": "app",
        "rollout": {
            "strategy": "Canary",
            "steps": [{"weight": 50}],
            "analysis": {"interval": "2s", "failureLimit": 2}
        },
        "imageAutomation": {
            "policies": ["web"],
            "writeBack": {"author": {"name": "Gantry", "email": "bot@gantry.test"}}
        }
    });
    if let Some(sa) = service_account {
        spec["serviceAccountName"] = json!(sa);
    }
    create_source_and_app(client, ns, "web", &server.http_url("config"), spec).await;
    let apps: Api<Application> = Api::namespaced(client.clone(), ns);
    wait_synced_healthy(&apps, "web", &first).await;
    let deployments: Api<Deployment> = Api::namespaced(client.clone(), ns);
    let running = |d: &Deployment| {
        d.spec.as_ref()?.template.spec.as_ref()?.containers[0]
            .image
            .clone()
    };
    // The healthy template is recorded before the next change goes through a canary.
    eventually(
        "the healthy template recorded",
        Duration::from_secs(30),
        || async {
            let app = apps.get("web").await.ok()?;
            (!app.status?.history.first()?.template_hashes.is_empty()).then_some(())
        },
    )
    .await;

    // An image push becomes a commit, and the commit a canary that is promoted.
    registry.push_image("team/web", "1.4.0");
    gantry::trigger::request_reconcile(&policies, "web")
        .await
        .unwrap();
    let bare = server.bare_path("config");
    let bump = eventually("the image bump in Git", Duration::from_secs(60), || async {
        let head = git(&bare, &["rev-parse", "main"]).trim().to_string();
        (head != first).then_some(head)
    })
    .await;
    assert!(
        git(&bare, &["show", "--format=", &bump]).contains(&format!("{image}:1.4.0")),
        "the commit bumps the tag"
    );
    wait_synced_healthy(&apps, "web", &bump).await;
    eventually("the canary promoted", Duration::from_secs(90), || async {
        let d = deployments.get("web").await.ok()?;
        let promoted = running(&d)? == format!("{image}:1.4.0");
        let gone = deployments.get_opt("web-canary").await.ok()?.is_none();
        (promoted && gone).then_some(())
    })
    .await;

    // A bad image: its canary crash-loops and is aborted; the stable version stays.
    let ws = Workspace::clone_from(&server, "config");
    ws.write("app/deploy.yaml", &deployment("example.test/web:bad-2"));
    let bad = ws.commit_and_push("bad image");
    wait_ready_reason(&apps, "web", "RolloutAborted", &bad).await;
    let d = deployments.get("web").await.unwrap();
    assert_eq!(running(&d).unwrap(), format!("{image}:1.4.0"));
    eventually(
        "the aborted canary removed",
        Duration::from_secs(30),
        || async {
            deployments
                .get_opt("web-canary")
                .await
                .ok()?
                .is_none()
                .then_some(())
        },
    )
    .await;

    // It ran as the leader, under the chart's RBAC, with nothing refused.
    let metrics = reqwest::get(format!("http://127.0.0.1:{}/metrics", pod.metrics_port))
        .await
        .unwrap()
        .text()
        .await
        .unwrap();
    assert!(metrics.contains("gantry_leader 1"), "{metrics}");
    let log = pod.log();
    assert!(
        !log.to_lowercase().contains("forbidden"),
        "a permission the chart does not grant:\n{log}"
    );
    assert!(!log.contains("in-Cluster-7"), "a secret in the log");
}

#[tokio::test]
async fn the_image_runs_the_charts_pod_with_cluster_admin() {
    let client = client().await;
    install_crds(&client).await;
    let system = TestNamespace::new(&client, "ic-admin-sys").await;
    let team = TestNamespace::new(&client, "ic-admin-team").await;
    let registry = Registry::start();
    let image = Image::pull(&registry);
    assert_eq!(image.entrypoint(), ["/usr/local/bin/gantry"]);
    assert_eq!(image.config["config"]["Cmd"], json!(["controller"]));
    assert_eq!(image.config["config"]["User"], "65532:65532");
    let release = Release::install(
        &system.name,
        &[
            format!("watchNamespace={}", team.name),
            "ui.enabled=true".into(),
        ],
    );
    let pod = run_pod(&image, &release);
    the_story(&client, &team.name, &pod, None).await;

    // The chart's web view, from the image: a sign-in form; a token with no rights sees
    // nothing, though the controller itself is cluster-admin here.
    let ui = format!("http://127.0.0.1:{}/", pod.ui_port);
    let http = reqwest::Client::builder()
        .redirect(reqwest::redirect::Policy::none())
        .build()
        .unwrap();
    let login = http.get(format!("{ui}login")).send().await.unwrap();
    assert_eq!(login.status(), 200);
    assert!(login.text().await.unwrap().contains("name=\"token\""));
    let invalid = http.get(&ui).bearer_auth("nope").send().await.unwrap();
    assert_eq!(invalid.status(), 401);
    let nobody = crate::support::cluster::service_account_token(&team.name, "default");
    let page = crate::support::eventually(
        "the view for a token without rights",
        Duration::from_secs(30),
        || {
            let (http, ui, nobody) = (http.clone(), ui.clone(), nobody.clone());
            async move {
                let res = http.get(&ui).bearer_auth(&nobody).send().await.ok()?;
                (res.status() == 200).then_some(())?;
                res.text().await.ok()
            }
        },
    )
    .await;
    assert!(page.contains("0</strong> in all"), "{page}");
}

#[tokio::test]
async fn the_image_runs_the_charts_pod_locked_down_for_tenants() {
    let client = client().await;
    install_crds(&client).await;
    let system = TestNamespace::new(&client, "ic-tenant-sys").await;
    let team = TestNamespace::new(&client, "ic-tenant-team").await;
    let registry = Registry::start();
    let image = Image::pull(&registry);
    let release = Release::install(
        &system.name,
        &[
            format!("watchNamespace={}", team.name),
            "rbac.clusterAdmin=false".into(),
            "tenancy.requireServiceAccount=true".into(),
        ],
    );
    // The tenant: admin of its namespace, nothing else.
    let kubectl = |args: &[&str]| {
        run(Command::new(tool("kubectl"))
            .arg("--kubeconfig")
            .arg(kubeconfig_path())
            .args(args))
    };
    kubectl(&["create", "serviceaccount", "deployer", "-n", &team.name]);
    kubectl(&[
        "create",
        "rolebinding",
        "deployer-admin",
        "-n",
        &team.name,
        "--clusterrole=admin",
        &format!("--serviceaccount={}:deployer", team.name),
    ]);
    let pod = run_pod(&image, &release);
    the_story(&client, &team.name, &pod, Some("deployer")).await;
}
