//! `make bench-notify`: what notifications cost a fleet. N Applications (`GANTRY_NOTIFY_N`,
//! 500 by default), each a path of one repository on a real Gitea (served over its smart
//! HTTP, built from its Go module) with one ConfigMap, on one controller. Each round pushes
//! a commit that changes all N twice: once without Notifiers (time until all N are Ready
//! at it), once with a commit-status Notifier on that Gitea and a signed-webhook Notifier
//! (time until all N are Ready, and until both Notifiers have delivered `success` for all
//! N: their cursors, written after each delivery). Figures: the medians and their ratio
//! (target ≤ 1.2), the forge requests per Application and commit (pending + success) and
//! how many were repeats, the controller's resident memory with the Notifiers minus
//! without (target < 10 MiB at 500), and the CPU seconds the controller and the forge
//! spent on each commit (on a small machine the forge shares the cores with the cluster:
//! its work for the statuses slows the syncs too). `GANTRY_NOTIFY_ONLY=webhook` (or
//! `gitea`) runs one Notifier.

#[path = "../tests/e2e/support/mod.rs"]
#[allow(dead_code)]
mod support;

#[allow(dead_code)]
mod common;

use std::time::{Duration, Instant};

use gantry::api::{Application, Notifier};
use k8s_openapi::api::core::v1::Secret;
use kube::api::{Api, DeleteParams, ListParams, PostParams};
use serde_json::json;

use common::{env_or, median, rss_mib, runs, start_controller};
use support::cluster::{TestNamespace, client, install_crds};
use support::gitea::Gitea;
use support::webhook_sink::WebhookSink;

fn file(i: usize, round: &str) -> (String, String) {
    (
        format!("apps/a{i:04}/cm.yaml"),
        format!(
            "apiVersion: v1\nkind: ConfigMap\nmetadata:\n  name: a{i:04}\ndata:\n  round: \"{round}\"\n"
        ),
    )
}

fn files(n: usize, round: &str) -> Vec<(String, String)> {
    (0..n).map(|i| file(i, round)).collect()
}

/// `files` as the Gitea harness takes them.
fn refs(files: &[(String, String)]) -> Vec<(&str, &str)> {
    files
        .iter()
        .map(|(p, t)| (p.as_str(), t.as_str()))
        .collect()
}

/// CPU seconds (user + system) a process used so far.
fn cpu_s(pid: Option<u32>) -> f64 {
    let Some(pid) = pid else { return 0.0 };
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).unwrap_or_default();
    // Fields after the command (which may hold spaces) in parentheses.
    let rest = stat.rsplit_once(')').map(|(_, r)| r).unwrap_or_default();
    let f: Vec<f64> = rest
        .split_whitespace()
        .map(|x| x.parse().unwrap_or(0.0))
        .collect();
    // utime and stime are fields 14 and 15 of the whole line, 12 and 13 after the command.
    (f.get(11).copied().unwrap_or(0.0) + f.get(12).copied().unwrap_or(0.0)) / 100.0
}

/// Seconds from `start` until every Application is Ready at `commit`.
async fn all_ready(apps: &Api<Application>, n: usize, commit: &str, start: Instant) -> f64 {
    loop {
        let list = apps.list(&ListParams::default()).await.unwrap();
        let ready = list
            .items
            .iter()
            .filter(|a| {
                let st = a.status.as_ref();
                st.and_then(|s| s.last_applied_revision.as_deref())
                    .is_some_and(|r| r.ends_with(commit))
                    && st.is_some_and(|s| {
                        s.conditions
                            .iter()
                            .any(|c| c.type_ == "Ready" && c.status == "True")
                    })
            })
            .count();
        if ready >= n {
            return start.elapsed().as_secs_f64();
        }
        assert!(
            start.elapsed() < Duration::from_secs(900),
            "{ready}/{n} Ready at {commit} after 15 minutes"
        );
        tokio::time::sleep(Duration::from_millis(250)).await;
    }
}

/// Seconds from `start` until Notifier `name` delivered `state` at `commit` for all N.
async fn all_delivered(
    notifiers: &Api<Notifier>,
    name: &str,
    n: usize,
    commit: &str,
    state: &str,
    start: Instant,
) -> f64 {
    loop {
        let done = notifiers
            .get(name)
            .await
            .ok()
            .and_then(|x| x.status)
            .map(|s| {
                s.delivered
                    .iter()
                    .filter(|d| d.revision.ends_with(commit) && d.state == state)
                    .count()
            })
            .unwrap_or(0);
        if done >= n {
            return start.elapsed().as_secs_f64();
        }
        assert!(
            start.elapsed() < Duration::from_secs(900),
            "Notifier {name}: {done}/{n} delivered {state} at {commit} after 15 minutes"
        );
        tokio::time::sleep(Duration::from_millis(250)).await;
    }
}

/// Every status Gitea holds for `commit` (all pages): (context, state).
fn forge_statuses(forge: &Gitea, repo: &str, commit: &str) -> Vec<(String, String)> {
    let mut out = Vec::new();
    for page in 1.. {
        let v = forge
            .api(
                "GET",
                &format!("/repos/gantry/{repo}/statuses/{commit}?limit=50&page={page}"),
                None,
            )
            .unwrap_or(serde_json::Value::Null);
        let Some(items) = v.as_array().filter(|a| !a.is_empty()) else {
            break;
        };
        out.extend(items.iter().map(|s| {
            (
                s["context"].as_str().unwrap_or_default().to_string(),
                s["status"].as_str().unwrap_or_default().to_string(),
            )
        }));
    }
    out
}

#[tokio::main]
async fn main() {
    let _ = rustls::crypto::ring::default_provider().install_default();
    let n = env_or("GANTRY_NOTIFY_N", 500);
    let client = client().await;
    install_crds(&client).await;
    let ns = TestNamespace::new(&client, "bench-notify").await;
    let forge = Gitea::start();
    let sink = WebhookSink::start();
    let initial = files(n, "0");
    let mut commit = forge.create_repo("fleet", &refs(&initial));

    let repos: Api<gantry::api::GitRepository> = Api::namespaced(client.clone(), &ns.name);
    repos
        .create(
            &PostParams::default(),
            &serde_json::from_value(json!({
                "apiVersion": "gantry.dev/v1alpha1", "kind": "GitRepository",
                "metadata": {"name": "fleet"},
                "spec": {"url": forge.clone_url("fleet"), "interval": "1s", "ref": {"branch": "main"}}
            }))
            .unwrap(),
        )
        .await
        .unwrap();
    let apps: Api<Application> = Api::namespaced(client.clone(), &ns.name);
    for i in 0..n {
        apps.create(
            &PostParams::default(),
            &serde_json::from_value(json!({
                "apiVersion": "gantry.dev/v1alpha1", "kind": "Application",
                "metadata": {"name": format!("a{i:04}")},
                "spec": {"sourceRef": {"kind": "GitRepository", "name": "fleet"},
                         "path": format!("apps/a{i:04}"), "interval": "10m", "timeout": "1m"}
            }))
            .unwrap(),
        )
        .await
        .unwrap();
    }
    let data = tempfile::tempdir().unwrap();
    let log = data.path().join("controller.log");
    let controller = start_controller(&ns.name, &data.path().join("data"), &log, "off", "info");
    let pid = controller.child.id();
    let first = all_ready(&apps, n, &commit, Instant::now()).await;
    eprintln!("{n} Applications Ready in {first:.1}s");

    let token = forge.create_token("bench-notify");
    let secrets: Api<Secret> = Api::namespaced(client.clone(), &ns.name);
    for (name, data) in [
        ("forge", json!({"token": token})),
        ("hook", json!({"token": "k", "address": sink.url("/hook")})),
    ] {
        secrets
            .create(
                &PostParams::default(),
                &serde_json::from_value(json!({
                    "apiVersion": "v1", "kind": "Secret",
                    "metadata": {"name": name}, "stringData": data
                }))
                .unwrap(),
            )
            .await
            .unwrap();
    }
    let notifiers: Api<Notifier> = Api::namespaced(client.clone(), &ns.name);
    // `GANTRY_NOTIFY_ONLY=webhook` or `=gitea` runs one Notifier (to see what each costs).
    let only = std::env::var("GANTRY_NOTIFY_ONLY").unwrap_or_default();
    let kinds: Vec<(&str, &str, &str)> = [("forge", "gitea", "forge"), ("hook", "webhook", "hook")]
        .into_iter()
        .filter(|(_, kind, _)| only.is_empty() || only == *kind)
        .collect();
    let with_forge = kinds.iter().any(|(name, _, _)| *name == "forge");

    let (mut ready_without, mut ready_with, mut delivered_with) = (vec![], vec![], vec![]);
    let (mut rss_without, mut rss_with) = (vec![], vec![]);
    let (mut per_app, mut repeats) = (vec![], vec![]);
    let (mut forge_cpu_without, mut forge_cpu_with) = (vec![], vec![]);
    let (mut cpu_without, mut cpu_with) = (vec![], vec![]);
    for round in 0..runs() {
        // Without Notifiers.
        let changed = files(n, &format!("{round}a"));
        let start = Instant::now();
        let (forge_cpu, own_cpu) = (cpu_s(forge.pid()), cpu_s(Some(pid)));
        commit = forge.push("fleet", &refs(&changed), &format!("round {round}: without"));
        ready_without.push(all_ready(&apps, n, &commit, start).await);
        forge_cpu_without.push(cpu_s(forge.pid()) - forge_cpu);
        cpu_without.push(cpu_s(Some(pid)) - own_cpu);
        tokio::time::sleep(Duration::from_secs(2)).await;
        rss_without.push(rss_mib(pid));

        // With a commit-status Notifier and a webhook Notifier, each caught up first.
        for (name, kind, secret) in kinds.clone() {
            notifiers
                .create(
                    &PostParams::default(),
                    &serde_json::from_value(json!({
                        "apiVersion": "gantry.dev/v1alpha1", "kind": "Notifier",
                        "metadata": {"name": name},
                        "spec": {"type": kind, "secretRef": {"name": secret}}
                    }))
                    .unwrap(),
                )
                .await
                .unwrap();
        }
        for (name, _, _) in kinds.clone() {
            all_delivered(&notifiers, name, n, &commit, "success", Instant::now()).await;
        }
        let changed = files(n, &format!("{round}b"));
        let start = Instant::now();
        let (forge_cpu, own_cpu) = (cpu_s(forge.pid()), cpu_s(Some(pid)));
        commit = forge.push("fleet", &refs(&changed), &format!("round {round}: with"));
        let ready = all_ready(&apps, n, &commit, start).await;
        let mut forge_done = 0.0;
        let mut hook_done = 0.0;
        for (name, _, _) in kinds.clone() {
            let t = all_delivered(&notifiers, name, n, &commit, "success", start).await;
            if name == "forge" {
                forge_done = t;
            } else {
                hook_done = t;
            }
        }
        forge_cpu_with.push(cpu_s(forge.pid()) - forge_cpu);
        cpu_with.push(cpu_s(Some(pid)) - own_cpu);
        ready_with.push(ready);
        delivered_with.push(forge_done.max(hook_done));
        rss_with.push(rss_mib(pid));
        let statuses = if with_forge {
            forge_statuses(&forge, "fleet", &commit)
        } else {
            (0..n)
                .map(|i| (format!("a{i}"), "success".to_string()))
                .collect()
        };
        let mut distinct = statuses.clone();
        distinct.sort();
        distinct.dedup();
        per_app.push(statuses.len() as f64 / n as f64);
        repeats.push((statuses.len() - distinct.len()) as f64);
        let successes = distinct.iter().filter(|(_, s)| s == "success").count();
        assert_eq!(
            successes, n,
            "every Application's commit shows success on the forge"
        );
        eprintln!(
            "round {round}: Ready without {:.1}s, with {ready:.1}s; all statuses {forge_done:.1}s, all webhooks {hook_done:.1}s; {} forge statuses",
            ready_without[round],
            statuses.len()
        );
        for (name, _, _) in kinds.clone() {
            notifiers
                .delete(name, &DeleteParams::default())
                .await
                .unwrap();
        }
        tokio::time::sleep(Duration::from_secs(2)).await;
    }
    let without = median(ready_without);
    let delivered = median(delivered_with);
    println!("RESULT notify_apps={n}");
    println!("RESULT notify_ready_without_s={without:.2}");
    println!("RESULT notify_ready_with_s={:.2}", median(ready_with));
    println!("RESULT notify_all_success_s={delivered:.2}");
    println!("RESULT notify_ratio_vs_ready={:.2}", delivered / without);
    println!(
        "RESULT notify_forge_requests_per_app={:.2}",
        median(per_app)
    );
    println!("RESULT notify_forge_repeats={:.0}", median(repeats));
    println!(
        "RESULT notify_memory_added_mib={:.1}",
        median(rss_with) - median(rss_without)
    );
    println!("RESULT notify_webhook_requests={}", sink.requests().len());
    println!(
        "RESULT notify_controller_cpu_s_without={:.1}",
        median(cpu_without)
    );
    println!(
        "RESULT notify_controller_cpu_s_with={:.1}",
        median(cpu_with)
    );
    println!(
        "RESULT notify_forge_cpu_s_without={:.1}",
        median(forge_cpu_without)
    );
    println!(
        "RESULT notify_forge_cpu_s_with={:.1}",
        median(forge_cpu_with)
    );
    drop(controller);
}
