//! `make bench-failover` (part of `make bench`): how long a shard has no writer when its
//! leader goes away. Two replicas (`--leader-elect`, the chart's defaults: a 15 s Lease)
//! and one Application; the leader is stopped and the time is taken from the stop to the
//! standby's first write of the change that waits in Git (a commit pushed right after the
//! stop), from the API server's audit log (each replica authenticates as its
//! own user). SIGKILL (the Lease must expire) and SIGTERM (the leader releases it)
//! alternate; medians of `GANTRY_BENCH_RUNS` (3) runs. The peer is the Lease duration
//! itself: what a controller-runtime manager at its defaults (15 s) waits after a crash.

#[path = "../tests/e2e/support/mod.rs"]
#[allow(dead_code)]
mod support;

#[allow(dead_code)]
mod common;

use std::path::PathBuf;
use std::process::{Command, Stdio};
use std::time::{Duration, Instant, SystemTime};

use gantry::api::Application;
use serde_json::json;

use common::{median, poll, runs};
use support::app::{condition, create_source_and_app};
use support::cluster::{TestNamespace, client, install_crds, kubeconfig_path};
use support::git::GitServer;
use support::process::{ChildGuard, free_port};

fn state_file(name: &str) -> PathBuf {
    kubeconfig_path().parent().unwrap().join(name)
}

struct Replica {
    process: ChildGuard,
    metrics_port: u16,
    _data: tempfile::TempDir,
}

fn start(ns: &str, replica: &str) -> Replica {
    let data = tempfile::tempdir().unwrap();
    let metrics_port = free_port();
    let log = std::fs::File::create(data.path().join("log")).unwrap();
    let child = Command::new(common::controller_binary())
        .args(["controller", "--namespace", ns, "--data-dir"])
        .arg(data.path())
        .arg("--receiver-addr=off")
        .arg(format!("--metrics-addr=127.0.0.1:{metrics_port}"))
        .arg("--min-interval=1s")
        .arg(format!(
            "--file-sources-root={}",
            std::env::temp_dir().display()
        ))
        .args([
            "--leader-elect",
            &format!("--leader-election-identity={replica}"),
        ])
        .env(
            "KUBECONFIG",
            state_file(&format!("replica-{replica}.kubeconfig")),
        )
        .env("GANTRY_LOG", "info")
        .stdout(Stdio::null())
        .stderr(log)
        .spawn()
        .unwrap();
    Replica {
        process: ChildGuard::new(format!("replica {replica}"), child),
        metrics_port,
        _data: data,
    }
}

async fn leads(r: &Replica) -> bool {
    support::cluster::is_leader(r.metrics_port).await == Some(true)
}

/// The first write of a ConfigMap in `ns` by `user` at or after `since`, from the audit log.
fn first_write(ns: &str, user: &str, since: SystemTime) -> Option<SystemTime> {
    let since = chrono::DateTime::<chrono::Utc>::from(since);
    support::cluster::audit_events()
        .into_iter()
        .filter(|e| {
            e["objectRef"]["namespace"] == ns
                && e["objectRef"]["resource"] == "configmaps"
                && e["user"]["username"] == user
        })
        .filter_map(|e| {
            chrono::DateTime::parse_from_rfc3339(e["requestReceivedTimestamp"].as_str()?).ok()
        })
        .map(|t| t.with_timezone(&chrono::Utc))
        .filter(|t| *t >= since)
        .min()
        .map(SystemTime::from)
}

#[tokio::main]
async fn main() {
    let client = client().await;
    install_crds(&client).await;
    let mut kill = vec![];
    let mut term = vec![];
    for run in 0..runs() {
        for sigkill in [true, false] {
            let ns = TestNamespace::new(&client, "bench-failover").await;
            let server = GitServer::start();
            let files: Vec<(String, String)> = (0..20)
                .map(|i| {
                    (
                        format!("app/cm-{i}.yaml"),
                        format!("apiVersion: v1\nkind: ConfigMap\nmetadata:\n  name: cm-{i}\n"),
                    )
                })
                .collect();
            let refs: Vec<(&str, &str)> = files
                .iter()
                .map(|(p, c)| (p.as_str(), c.as_str()))
                .collect();
            server.create_repo("app", &refs);
            let mut a = start(&ns.name, "a");
            poll(
                "a to lead",
                Duration::from_secs(60),
                Duration::from_millis(50),
                || async { leads(&a).await.then_some(()) },
            )
            .await;
            let b = start(&ns.name, "b");
            // The standby's metrics endpoint is up before the leader goes.
            poll(
                "b to serve metrics",
                Duration::from_secs(30),
                Duration::from_millis(50),
                || async {
                    reqwest::get(format!("http://127.0.0.1:{}/metrics", b.metrics_port))
                        .await
                        .ok()
                        .map(|_| ())
                },
            )
            .await;
            create_source_and_app(
                &client,
                &ns.name,
                "app",
                &server.http_url("app"),
                json!({"path": "app", "interval": "1s"}),
            )
            .await;
            let apps: kube::Api<Application> = kube::Api::namespaced(client.clone(), &ns.name);
            poll(
                "the Application Ready",
                Duration::from_secs(60),
                Duration::from_millis(100),
                || async {
                    let app = apps.get("app").await.ok()?;
                    (condition(&app, "Ready")?.status == "True").then_some(())
                },
            )
            .await;
            let stopped = SystemTime::now();
            let t0 = Instant::now();
            if sigkill {
                a.process.kill();
            } else {
                a.process.terminate();
            }
            // A change waits in Git: the standby's first write applies it.
            let ws = support::app::Workspace::clone_from(&server, "app");
            ws.write(
                "app/cm-new.yaml",
                "apiVersion: v1\nkind: ConfigMap\nmetadata:\n  name: cm-new\n",
            );
            ws.commit_and_push("after the leader went");
            poll(
                "b to lead",
                Duration::from_secs(60),
                Duration::from_millis(20),
                || async { leads(&b).await.then_some(()) },
            )
            .await;
            let lead_s = t0.elapsed().as_secs_f64();
            let first = poll(
                "b's first write",
                Duration::from_secs(60),
                Duration::from_millis(100),
                || async { first_write(&ns.name, "gantry-replica-b", stopped) },
            )
            .await;
            let write_s = first
                .duration_since(stopped)
                .unwrap_or_default()
                .as_secs_f64();
            println!(
                "run {run} {}: leader after {lead_s:.2} s, first write after {write_s:.2} s",
                if sigkill { "SIGKILL" } else { "SIGTERM" }
            );
            if sigkill {
                kill.push(write_s);
            } else {
                term.push(write_s);
            }
        }
    }
    println!("per run (s): SIGKILL {kill:?}, SIGTERM {term:?}");
    let (k, t) = (median(kill), median(term));
    println!("RESULT failover_sigkill_first_write_s={k:.2}");
    println!("RESULT failover_sigterm_first_write_s={t:.2}");
    println!("RESULT failover_sigkill_vs_lease_duration={:.2}", k / 15.0);
}
