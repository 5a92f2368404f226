//! Signed commits (GitRepository `spec.verify`), made as a team makes them: `git commit -S`
//! with an SSH key (`gpg.format=ssh`) and with an OpenPGP key of GnuPG, both made in the
//! test. A commit signed by either trusted key is deployed; an unsigned one on top, and one
//! signed by a key the Secret does not hold, become no artifact (Ready=False,
//! VerificationFailed naming the commit and the signer) while the last good artifact keeps
//! serving: the cluster keeps the last signed revision.

use std::path::Path;
use std::process::Command;
use std::time::Duration;

use gantry::api::{Application, GitRepository};
use k8s_openapi::ByteString;
use k8s_openapi::api::core::v1::{ConfigMap, Secret};
use kube::api::{Api, PostParams};
use serde_json::json;

use crate::support::app::{Workspace, condition, wait_synced_healthy};
use crate::support::cluster::{TestNamespace, client, install_crds};
use crate::support::controller::GantryController;
use crate::support::eventually;
use crate::support::git::{GitServer, git};

fn run(cmd: &mut Command) -> String {
    let out = cmd.output().unwrap();
    assert!(out.status.success(), "{cmd:?}: {out:?}");
    String::from_utf8_lossy(&out.stdout).into_owned()
}

/// An SSH key pair in `dir`: (private key path, public key line).
fn ssh_key(dir: &Path, name: &str) -> (String, String) {
    let path = dir.join(name);
    run(Command::new("ssh-keygen")
        .args(["-q", "-t", "ed25519", "-N", "", "-C", name, "-f"])
        .arg(&path));
    let public = std::fs::read_to_string(path.with_extension("pub")).unwrap();
    (path.display().to_string(), public.trim().to_string())
}

/// A GnuPG home with a new signing key: (its fingerprint, the armored public key).
fn gpg_key(home: &Path) -> (String, String) {
    use crate::support::gpg;
    let uid = "Team Release <release@example.com>";
    let fingerprint = gpg::new_key(home, uid, "ed25519", "sign", "");
    let public = gpg::gpg(home, "", &["--armor", "--export", &fingerprint]);
    (fingerprint, public)
}

/// Commits everything in `ws` and pushes: signed (`-S`) with the git options `sign` (an
/// SSH key, or GnuPG's key), or unsigned when `sign` is `None`.
fn commit(ws: &Workspace, sign: Option<&[String]>, gnupg: &Path, message: &str) -> String {
    git(ws.path(), &["add", "-A"]);
    let mut cmd = Command::new("git");
    cmd.current_dir(ws.path())
        .env("GIT_CONFIG_GLOBAL", "/dev/null")
        .env("GIT_CONFIG_NOSYSTEM", "1")
        .env("GNUPGHOME", gnupg)
        .args(["-c", "user.name=Team", "-c", "user.email=team@example.com"])
        .args(sign.unwrap_or_default())
        .args(["commit", "--quiet", "-m", message]);
    if sign.is_some() {
        cmd.arg("-S");
    }
    run(&mut cmd);
    git(ws.path(), &["push", "--quiet", "origin", "HEAD:main"]);
    git(ws.path(), &["rev-parse", "HEAD"]).trim().to_string()
}

fn config(round: &str) -> String {
    format!(
        "apiVersion: v1\nkind: ConfigMap\nmetadata:\n  name: settings\ndata:\n  round: \"{round}\"\n"
    )
}

/// The round the cluster's ConfigMap says.
async fn round(cms: &Api<ConfigMap>) -> Option<String> {
    cms.get_opt("settings")
        .await
        .ok()
        .flatten()
        .and_then(|c| c.data)
        .and_then(|d| d.get("round").cloned())
}

#[tokio::test]
async fn only_commits_signed_by_a_trusted_key_are_deployed() {
    let client = client().await;
    install_crds(&client).await;
    let ns = TestNamespace::new(&client, "signed").await;
    let _controller = GantryController::start(&ns.name);
    let keys = tempfile::tempdir().unwrap();
    let (team_ssh, team_ssh_public) = ssh_key(keys.path(), "team-ssh");
    let (stranger_ssh, _) = ssh_key(keys.path(), "stranger");
    let gnupg = keys.path().join("gnupg");
    std::fs::create_dir_all(&gnupg).unwrap();
    std::fs::set_permissions(&gnupg, std::os::unix::fs::PermissionsExt::from_mode(0o700)).unwrap();
    let (fingerprint, gpg_public) = gpg_key(&gnupg);
    let ssh = |key: &str| {
        vec![
            "-c".to_string(),
            "gpg.format=ssh".to_string(),
            "-c".to_string(),
            format!("user.signingkey={key}"),
        ]
    };
    let openpgp = vec![
        "-c".to_string(),
        "gpg.program=gpg".to_string(),
        "-c".to_string(),
        format!("user.signingkey={fingerprint}"),
    ];

    let server = GitServer::start();
    server.create_repo("app", &[("deploy/cm.yaml", &config("0"))]);
    let ws = Workspace::clone_from(&server, "app");
    ws.write("deploy/cm.yaml", &config("ssh"));
    let by_ssh = commit(&ws, Some(&ssh(&team_ssh)), &gnupg, "signed with SSH");

    let secrets: Api<Secret> = Api::namespaced(client.clone(), &ns.name);
    let secret: Secret = serde_json::from_value(json!({
        "apiVersion": "v1", "kind": "Secret", "metadata": {"name": "team-keys"},
        "data": {"ssh": ByteString(team_ssh_public.into_bytes()),
                 "release.asc": ByteString(gpg_public.into_bytes())}
    }))
    .unwrap();
    secrets
        .create(&PostParams::default(), &secret)
        .await
        .unwrap();
    let repos: Api<GitRepository> = Api::namespaced(client.clone(), &ns.name);
    let repo: GitRepository = serde_json::from_value(json!({
        "apiVersion": "gantry.dev/v1alpha1", "kind": "GitRepository", "metadata": {"name": "app"},
        "spec": {"url": server.file_url("app"), "interval": "1s", "ref": {"branch": "main"},
                 "verify": {"mode": "HEAD", "secretRef": {"name": "team-keys"}}}
    }))
    .unwrap();
    repos.create(&PostParams::default(), &repo).await.unwrap();
    let apps: Api<Application> = Api::namespaced(client.clone(), &ns.name);
    let app: Application = serde_json::from_value(json!({
        "apiVersion": "gantry.dev/v1alpha1", "kind": "Application", "metadata": {"name": "app"},
        "spec": {"sourceRef": {"kind": "GitRepository", "name": "app"}, "path": "deploy",
                 "interval": "10m", "timeout": "2m"}
    }))
    .unwrap();
    apps.create(&PostParams::default(), &app).await.unwrap();
    wait_synced_healthy(&apps, "app", &by_ssh).await;
    let cms: Api<ConfigMap> = Api::namespaced(client.clone(), &ns.name);
    assert_eq!(round(&cms).await.as_deref(), Some("ssh"));

    // Signed with the team's OpenPGP key: deployed too.
    ws.write("deploy/cm.yaml", &config("openpgp"));
    let by_gpg = commit(&ws, Some(&openpgp), &gnupg, "signed with OpenPGP");
    wait_synced_healthy(&apps, "app", &by_gpg).await;
    assert_eq!(round(&cms).await.as_deref(), Some("openpgp"));

    // Unsigned, then signed by a stranger's key: neither becomes an artifact.
    for (sign, says, what) in [
        (None, "is not signed", "unsigned"),
        (Some(ssh(&stranger_ssh)), "which is not trusted", "stranger"),
    ] {
        ws.write("deploy/cm.yaml", &config(what));
        let head = commit(&ws, sign.as_deref(), &gnupg, what);
        let ready = eventually(
            &format!("{what}: VerificationFailed"),
            Duration::from_secs(60),
            || async {
                let repo = repos.get("app").await.ok()?;
                let status = repo.status?;
                let c = status
                    .conditions
                    .iter()
                    .find(|c| c.type_ == "Ready")?
                    .clone();
                (c.reason == "VerificationFailed" && c.message.contains(&head[..12]))
                    .then_some((c, status.artifact))
            },
        )
        .await;
        assert_eq!(ready.0.status, "False");
        assert!(ready.0.message.contains(says), "{}", ready.0.message);
        // The last good artifact keeps serving, and the cluster keeps its revision.
        let artifact = ready.1.expect("the last good artifact");
        assert!(
            artifact.revision.ends_with(&by_gpg),
            "{}",
            artifact.revision
        );
        tokio::time::sleep(Duration::from_secs(3)).await;
        assert_eq!(round(&cms).await.as_deref(), Some("openpgp"));
        let app = apps.get("app").await.unwrap();
        assert_eq!(
            condition(&app, "Ready").map(|c| c.status),
            Some("True".to_string())
        );
    }
}
