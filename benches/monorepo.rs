//! `make bench-monorepo` (part of `make bench`): Git at scale. A monorepo of
//! `GANTRY_MONO_FILES` files (50,000) made in `GANTRY_MONO_COMMITS` commits (5,000), served
//! over smart HTTP (`git http-backend`), fetched by a GitRepository of a fresh controller:
//! the first fetch (shallow fetch + the artifact: every file written and sealed) and, after
//! a commit that changes one file, the incremental fetch. Peers in the same run, on the same
//! server: `git clone --depth 1` (fetch + checkout) for the first, and in that clone
//! `git fetch` (the fetch alone) and `git merge --ff-only` after it (the checkout: `git
//! pull`) for the incremental one. Gantry's phases come from its log (`fetch_ms`,
//! `artifact_ms`); memory is peak RSS (VmHWM) of the controller and of `git` (with its
//! helpers, from `/usr/bin/time`).

#[path = "../tests/e2e/support/mod.rs"]
#[allow(dead_code)]
mod support;

#[allow(dead_code)]
mod common;

use std::io::Write;
use std::path::Path;
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use gantry::api::GitRepository;
use kube::api::{Api, DeleteParams, Patch, PatchParams, PostParams};
use serde_json::json;

use common::{env_or, median, peak_rss_mib, poll, runs, start_controller};
use support::cluster::{TestNamespace, client, install_crds};
use support::git::{GitServer, git};

/// A file of the monorepo: a small manifest, as the teams of a monorepo keep.
fn file_content(commit: usize, file: usize) -> String {
    format!(
        "apiVersion: v1\nkind: ConfigMap\nmetadata:\n  name: c{commit}-f{file}\ndata:\n  owner: team-{}\n  note: \"written by commit {commit}, file {file} of the monorepo benchmark\"\n",
        commit % 50
    )
}

fn file_path(commit: usize, file: usize) -> String {
    format!("teams/t{:02}/app{commit:04}/f{file}.yaml", commit % 50)
}

/// Writes one commit of a `git fast-import` stream.
fn commit_stream(
    out: &mut impl Write,
    mark: usize,
    parent: Option<&str>,
    files: &[(String, String)],
) {
    let message = format!("commit {mark}");
    writeln!(out, "commit refs/heads/main").unwrap();
    writeln!(out, "mark :{mark}").unwrap();
    writeln!(
        out,
        "committer Bench <bench@gantry.dev> {} +0000",
        1_700_000_000 + mark
    )
    .unwrap();
    writeln!(out, "data {}\n{message}", message.len()).unwrap();
    if let Some(p) = parent {
        writeln!(out, "from {p}").unwrap();
    }
    for (path, content) in files {
        writeln!(out, "M 100644 inline {path}").unwrap();
        writeln!(out, "data {}\n{content}", content.len()).unwrap();
    }
    writeln!(out).unwrap();
}

fn fast_import(bare: &Path, stream: &[u8]) {
    let mut child = Command::new("git")
        .args(["fast-import", "--quiet", "--force"])
        .current_dir(bare)
        .env("GIT_CONFIG_GLOBAL", "/dev/null")
        .env("GIT_CONFIG_NOSYSTEM", "1")
        .stdin(Stdio::piped())
        .spawn()
        .unwrap();
    child.stdin.take().unwrap().write_all(stream).unwrap();
    assert!(child.wait().unwrap().success(), "git fast-import failed");
}

/// The monorepo: `commits` commits adding `files / commits` files each, packed as a server
/// would hold it. Returns the head.
fn build_monorepo(bare: &Path, files: usize, commits: usize) -> String {
    let per = files.div_ceil(commits);
    let mut stream = Vec::new();
    for c in 1..=commits {
        let parent = (c > 1).then(|| format!(":{}", c - 1));
        let files: Vec<(String, String)> = (0..per)
            .map(|f| (file_path(c, f), file_content(c, f)))
            .collect();
        commit_stream(&mut stream, c, parent.as_deref(), &files);
    }
    fast_import(bare, &stream);
    git(bare, &["repack", "-a", "-d", "-q"]);
    git(bare, &["rev-parse", "refs/heads/main"])
        .trim()
        .to_string()
}

/// One commit on main that changes one file. Returns the new head.
fn change_one_file(bare: &Path, round: usize) -> String {
    let head = git(bare, &["rev-parse", "refs/heads/main"])
        .trim()
        .to_string();
    let mut stream = Vec::new();
    let content = format!("{}# changed in round {round}\n", file_content(1, 0));
    commit_stream(
        &mut stream,
        1_000_000 + round,
        Some(&head),
        &[(file_path(1, 0), content)],
    );
    fast_import(bare, &stream);
    git(bare, &["rev-parse", "refs/heads/main"])
        .trim()
        .to_string()
}

/// Runs `git args` in `dir` under `/usr/bin/time`: (seconds, peak RSS in MiB of git and
/// the helpers it waited for).
fn timed_git(dir: &Path, args: &[&str]) -> (f64, f64) {
    let rss_file = tempfile::NamedTempFile::new().unwrap();
    let start = Instant::now();
    let out = Command::new("/usr/bin/time")
        .arg("-f")
        .arg("%M")
        .arg("-o")
        .arg(rss_file.path())
        .arg("git")
        .args(args)
        .current_dir(dir)
        .env("GIT_CONFIG_GLOBAL", "/dev/null")
        .env("GIT_CONFIG_NOSYSTEM", "1")
        .output()
        .expect("/usr/bin/time runs git");
    let secs = start.elapsed().as_secs_f64();
    assert!(
        out.status.success(),
        "git {args:?}: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    let kib: f64 = std::fs::read_to_string(rss_file.path())
        .unwrap_or_default()
        .lines()
        .last()
        .and_then(|l| l.trim().parse().ok())
        .unwrap_or(0.0);
    (secs, kib / 1024.0)
}

/// The controller's phase timings of `revision` from its log: (fetch ms, artifact ms).
fn phases(log: &Path, revision: &str) -> (f64, f64) {
    let text = std::fs::read_to_string(log).unwrap_or_default();
    let line = text
        .lines()
        .rfind(|l| l.contains("fetched and wrote the artifact") && l.contains(revision))
        .unwrap_or_default();
    let field = |name: &str| {
        line.split_whitespace()
            .find_map(|w| w.strip_prefix(&format!("{name}=")))
            .and_then(|v| v.parse::<f64>().ok())
            .unwrap_or(f64::NAN)
    };
    (field("fetch_ms"), field("artifact_ms"))
}

async fn wait_artifact(repos: &Api<GitRepository>, commit: &str) -> f64 {
    let start = Instant::now();
    poll(
        "the artifact of the monorepo",
        Duration::from_secs(900),
        Duration::from_millis(50),
        || async {
            let r = repos.get("mono").await.ok()?;
            let rev = r.status?.artifact?.revision;
            rev.ends_with(commit).then_some(())
        },
    )
    .await;
    start.elapsed().as_secs_f64()
}

#[derive(Debug, Default, Clone)]
struct Run {
    gantry_first_s: f64,
    gantry_first_fetch_ms: f64,
    gantry_first_artifact_ms: f64,
    gantry_incr_s: f64,
    gantry_incr_fetch_ms: f64,
    gantry_incr_artifact_ms: f64,
    gantry_rss_mib: f64,
    gantry_idle_rss_mib: f64,
    clone_s: f64,
    clone_rss_mib: f64,
    fetch_s: f64,
    fetch_rss_mib: f64,
    merge_s: f64,
}

async fn run_once(client: &kube::Client, server: &GitServer, round: usize) -> Run {
    let bare = server.bare_path("mono");
    let url = server.http_url("mono");
    let head = git(&bare, &["rev-parse", "refs/heads/main"])
        .trim()
        .to_string();
    let mut run = Run::default();

    // git: a shallow clone, then (after the commit) fetch and fast-forward.
    let scratch = tempfile::tempdir().unwrap();
    (run.clone_s, run.clone_rss_mib) = timed_git(
        scratch.path(),
        &["clone", "--quiet", "--depth", "1", &url, "clone"],
    );
    let clone = scratch.path().join("clone");

    // Gantry: a fresh controller (no Git cache, no artifact) fetches the same repository.
    let ns = TestNamespace::new(client, "bench-mono").await;
    let data = tempfile::tempdir().unwrap();
    let log = data.path().join("controller.log");
    let controller = start_controller(&ns.name, &data.path().join("data"), &log, "off", "info");
    let pid = controller.child.id();
    tokio::time::sleep(Duration::from_secs(3)).await;
    run.gantry_idle_rss_mib = peak_rss_mib(pid);
    let repos: Api<GitRepository> = Api::namespaced(client.clone(), &ns.name);
    let repo = serde_json::from_value(json!({
        "apiVersion": "gantry.dev/v1alpha1", "kind": "GitRepository",
        "metadata": {"name": "mono"},
        "spec": {"url": url, "interval": "10m", "timeout": "10m", "ref": {"branch": "main"}}
    }))
    .unwrap();
    repos.create(&PostParams::default(), &repo).await.unwrap();
    run.gantry_first_s = wait_artifact(&repos, &head).await;
    (run.gantry_first_fetch_ms, run.gantry_first_artifact_ms) = phases(&log, &head);

    // One file changes.
    let next = change_one_file(&bare, round);
    (run.fetch_s, run.fetch_rss_mib) = timed_git(&clone, &["fetch", "--quiet", "origin"]);
    (run.merge_s, _) = timed_git(&clone, &["merge", "--quiet", "--ff-only", "FETCH_HEAD"]);
    let patch =
        json!({"metadata": {"annotations": {"gantry.dev/requested-at": format!("{round}")}}});
    repos
        .patch("mono", &PatchParams::default(), &Patch::Merge(patch))
        .await
        .unwrap();
    run.gantry_incr_s = wait_artifact(&repos, &next).await;
    (run.gantry_incr_fetch_ms, run.gantry_incr_artifact_ms) = phases(&log, &next);
    run.gantry_rss_mib = peak_rss_mib(pid);

    // The source's finalizer needs the controller: delete it first.
    repos
        .delete("mono", &DeleteParams::default())
        .await
        .unwrap();
    poll(
        "the GitRepository gone",
        Duration::from_secs(60),
        Duration::from_millis(200),
        || async { repos.get_opt("mono").await.ok()?.is_none().then_some(()) },
    )
    .await;
    drop(controller);
    eprintln!("run {round}: {run:?}");
    run
}

#[tokio::main]
async fn main() {
    let files = env_or("GANTRY_MONO_FILES", 50_000);
    let commits = env_or("GANTRY_MONO_COMMITS", 5_000);
    let client = client().await;
    install_crds(&client).await;
    let server = GitServer::start();
    let empty = tempfile::tempdir().unwrap();
    std::fs::write(empty.path().join("README.md"), "monorepo\n").unwrap();
    // A bare repository the server serves; its history is replaced by the monorepo's.
    server.create_repo_from_dir("mono", empty.path());
    let bare = server.bare_path("mono");
    let built = Instant::now();
    let head = build_monorepo(&bare, files, commits);
    let pack_mib: f64 = std::fs::read_dir(bare.join("objects/pack"))
        .unwrap()
        .flatten()
        .filter_map(|e| e.metadata().ok())
        .map(|m| m.len() as f64)
        .sum::<f64>()
        / 1048576.0;
    eprintln!(
        "monorepo: {files} files in {commits} commits, head {head}, pack {pack_mib:.1} MiB, built in {:.1}s",
        built.elapsed().as_secs_f64()
    );

    let all: Vec<Run> = {
        let mut v = vec![];
        for round in 0..runs() {
            v.push(run_once(&client, &server, round).await);
        }
        v
    };
    let med = |f: &dyn Fn(&Run) -> f64| median(all.iter().map(f).collect());
    let per_run = |f: &dyn Fn(&Run) -> f64| {
        all.iter()
            .map(|r| format!("{:.3}", f(r)))
            .collect::<Vec<_>>()
            .join(" / ")
    };
    let k = files / 1000;
    let line = |name: &str, f: &dyn Fn(&Run) -> f64| {
        println!(
            "RESULT monorepo_{k}k_{name}={:.3}   ({})",
            med(f),
            per_run(f)
        );
    };
    line("gantry_first_s", &|r| r.gantry_first_s);
    line("gantry_first_fetch_s", &|r| {
        r.gantry_first_fetch_ms / 1000.0
    });
    line("gantry_first_artifact_s", &|r| {
        r.gantry_first_artifact_ms / 1000.0
    });
    line("git_clone_depth1_s", &|r| r.clone_s);
    line("gantry_incremental_s", &|r| r.gantry_incr_s);
    line("gantry_incremental_fetch_s", &|r| {
        r.gantry_incr_fetch_ms / 1000.0
    });
    line("gantry_incremental_artifact_s", &|r| {
        r.gantry_incr_artifact_ms / 1000.0
    });
    line("git_fetch_s", &|r| r.fetch_s);
    line("git_pull_s", &|r| r.fetch_s + r.merge_s);
    line("gantry_peak_rss_mib", &|r| r.gantry_rss_mib);
    line("gantry_idle_rss_mib", &|r| r.gantry_idle_rss_mib);
    line("git_clone_peak_rss_mib", &|r| r.clone_rss_mib);
    line("git_fetch_peak_rss_mib", &|r| r.fetch_rss_mib);
    line("first_vs_git_clone", &|r| r.gantry_first_s / r.clone_s);
    line("incremental_fetch_vs_git_fetch", &|r| {
        r.gantry_incr_fetch_ms / 1000.0 / r.fetch_s
    });
    line("incremental_vs_git_pull", &|r| {
        r.gantry_incr_s / (r.fetch_s + r.merge_s)
    });
}
