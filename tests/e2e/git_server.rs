//! The test Git server: clone and push over smart HTTP and over file://.

use crate::support::git::{GitServer, git};

#[test]
fn smart_http_clone_and_push() {
    let server = GitServer::start();
    let first = server.create_repo("app", &[("deploy/configmap.yaml", "kind: ConfigMap\n")]);

    let work = tempfile::tempdir().unwrap();
    git(
        work.path(),
        &["clone", "--quiet", &server.http_url("app"), "clone"],
    );
    let clone = work.path().join("clone");
    assert_eq!(git(&clone, &["rev-parse", "HEAD"]).trim(), first);
    assert!(clone.join("deploy/configmap.yaml").exists());

    std::fs::write(clone.join("deploy/extra.yaml"), "kind: Secret\n").unwrap();
    git(&clone, &["add", "-A"]);
    git(&clone, &["commit", "--quiet", "-m", "add a file"]);
    git(&clone, &["push", "--quiet", "origin", "main"]);
    let pushed = git(&clone, &["rev-parse", "HEAD"]).trim().to_string();

    // The bare repository has the pushed commit, and a fresh HTTP clone sees it.
    let bare = server.bare_path("app");
    assert_eq!(git(&bare, &["rev-parse", "refs/heads/main"]).trim(), pushed);
    git(
        work.path(),
        &["clone", "--quiet", &server.http_url("app"), "again"],
    );
    assert_eq!(
        git(&work.path().join("again"), &["rev-parse", "HEAD"]).trim(),
        pushed
    );
}

#[test]
fn file_url_clone() {
    let server = GitServer::start();
    let head = server.create_repo("plain", &[("a.yaml", "a: 1\n")]);
    let work = tempfile::tempdir().unwrap();
    git(
        work.path(),
        &["clone", "--quiet", &server.file_url("plain"), "c"],
    );
    assert_eq!(
        git(&work.path().join("c"), &["rev-parse", "HEAD"]).trim(),
        head
    );
}

#[test]
fn basic_auth_is_enforced() {
    let server = GitServer::start_with_basic_auth("ci", "s3cret");
    server.create_repo("private", &[("a.yaml", "a: 1\n")]);
    let work = tempfile::tempdir().unwrap();

    let anonymous = std::process::Command::new("git")
        .current_dir(work.path())
        .env("GIT_TERMINAL_PROMPT", "0")
        .env("GIT_CONFIG_GLOBAL", "/dev/null")
        .args(["clone", "--quiet", &server.http_url("private"), "anon"])
        .output()
        .unwrap();
    assert!(
        !anonymous.status.success(),
        "clone without credentials succeeded"
    );

    let url = server
        .http_url("private")
        .replace("http://", "http://ci:s3cret@");
    git(work.path(), &["clone", "--quiet", &url, "authed"]);
    assert!(work.path().join("authed/a.yaml").exists());
}
