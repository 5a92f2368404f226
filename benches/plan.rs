//! `make bench-plan`: what pull request plans cost. N Applications (`GANTRY_PLAN_N`, 500 by
//! default) on one repository of a real Gitea, one controller with a Gitea Receiver and a
//! commit-status Notifier. Each round:
//! 1. a commit on main that changes M of them (`GANTRY_PLAN_M`, 50): time until those M are
//!    Ready at it (the sync the plan is compared with);
//! 2. a pull request that changes M: time from opening it (Gitea's webhook) until the plan
//!    comment names its head (target ≤ 2× the sync of step 1), and the controller's API
//!    requests per planned Application (from its request log);
//! 3. a commit on main that changes the other N−M, alone, then again while a pull request
//!    of M is planned: their time to Ready, and the ratio (target: < 1.1).

#[path = "../tests/e2e/support/mod.rs"]
#[allow(dead_code)]
mod support;

#[allow(dead_code)]
mod common;

use std::time::{Duration, Instant};

use gantry::api::Application;
use k8s_openapi::api::core::v1::Secret;
use kube::api::{Api, ListParams, PostParams};
use serde_json::json;

use common::{env_or, log_lines, median, requests_since, runs, start_controller};
use support::cluster::{TestNamespace, client, install_crds};
use support::gitea::Gitea;

fn file(i: usize, round: &str) -> (String, String) {
    (
        format!("apps/a{i:04}/cm.yaml"),
        format!(
            "apiVersion: v1\nkind: ConfigMap\nmetadata:\n  name: a{i:04}\ndata:\n  round: \"{round}\"\n"
        ),
    )
}

fn refs(files: &[(String, String)]) -> Vec<(&str, &str)> {
    files
        .iter()
        .map(|(p, t)| (p.as_str(), t.as_str()))
        .collect()
}

/// Seconds from `start` until the Applications `range` are Ready at `commit`.
async fn ready(
    apps: &Api<Application>,
    range: std::ops::Range<usize>,
    commit: &str,
    start: Instant,
) -> f64 {
    let names: std::collections::BTreeSet<String> =
        range.clone().map(|i| format!("a{i:04}")).collect();
    loop {
        let list = apps.list(&ListParams::default()).await.unwrap();
        let done = list
            .items
            .iter()
            .filter(|a| names.contains(a.metadata.name.as_deref().unwrap_or_default()))
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
        if done >= names.len() {
            return start.elapsed().as_secs_f64();
        }
        assert!(
            start.elapsed() < Duration::from_secs(900),
            "{done}/{} Ready at {commit} after 15 minutes",
            names.len()
        );
        tokio::time::sleep(Duration::from_millis(250)).await;
    }
}

/// Seconds from `start` until pull request `number`'s plan comment names `head`.
async fn planned(forge: &Gitea, number: u64, head: &str, start: Instant) -> f64 {
    loop {
        let done = forge
            .comments("fleet", number)
            .iter()
            .any(|(_, body)| body.contains("gantry-plan") && body.contains(&head[..12]));
        if done {
            return start.elapsed().as_secs_f64();
        }
        assert!(
            start.elapsed() < Duration::from_secs(900),
            "no plan of {head} after 15 minutes"
        );
        tokio::time::sleep(Duration::from_millis(250)).await;
    }
}

#[tokio::main]
async fn main() {
    let _ = rustls::crypto::ring::default_provider().install_default();
    let n = env_or("GANTRY_PLAN_N", 500);
    let m = env_or("GANTRY_PLAN_M", 50).min(n / 2);
    let client = client().await;
    install_crds(&client).await;
    let ns = TestNamespace::new(&client, "bench-plan").await;
    let forge = Gitea::start();
    let initial: Vec<_> = (0..n).map(|i| file(i, "0")).collect();
    let mut commit = forge.create_repo("fleet", &refs(&initial));
    let secrets: Api<Secret> = Api::namespaced(client.clone(), &ns.name);
    let token = forge.create_token("bench-plan");
    for (name, data) in [
        ("forge", json!({"token": token})),
        (
            "hook-token",
            json!({"token": "a-long-random-webhook-token-0123"}),
        ),
    ] {
        secrets
            .create(
                &PostParams::default(),
                &serde_json::from_value(json!({"metadata": {"name": name}, "stringData": data}))
                    .unwrap(),
            )
            .await
            .unwrap();
    }
    let create = |kind: &str, name: &str, spec: serde_json::Value| {
        let client = client.clone();
        let ns = ns.name.clone();
        let obj = json!({"apiVersion": "gantry.dev/v1alpha1", "kind": kind,
                         "metadata": {"name": name, "namespace": ns}, "spec": spec});
        let kind = kind.to_string();
        async move {
            let gvk = kube::api::GroupVersionKind::gvk("gantry.dev", "v1alpha1", &kind);
            let (ar, _) = kube::discovery::pinned_kind(&client, &gvk).await.unwrap();
            let api: Api<kube::api::DynamicObject> = Api::namespaced_with(client.clone(), &ns, &ar);
            api.create(
                &PostParams::default(),
                &serde_json::from_value(obj).unwrap(),
            )
            .await
            .unwrap();
        }
    };
    create(
        "GitRepository",
        "fleet",
        json!({"url": forge.clone_url("fleet"), "interval": "1s", "ref": {"branch": "main"},
               "plan": {"enabled": true}}),
    )
    .await;
    for i in 0..n {
        create(
            "Application",
            &format!("a{i:04}"),
            json!({"sourceRef": {"kind": "GitRepository", "name": "fleet"},
                   "path": format!("apps/a{i:04}"), "interval": "10m", "timeout": "1m"}),
        )
        .await;
    }
    create(
        "Notifier",
        "forge",
        json!({"type": "gitea", "secretRef": {"name": "forge"}, "severity": "error"}),
    )
    .await;
    create(
        "Receiver",
        "forge",
        json!({"type": "gitea", "secretRef": {"name": "hook-token"},
               "resources": [{"kind": "GitRepository", "name": "fleet"}]}),
    )
    .await;
    let port = support::process::free_port();
    let data = tempfile::tempdir().unwrap();
    let log = data.path().join("controller.log");
    let _controller = start_controller(
        &ns.name,
        &data.path().join("data"),
        &log,
        &format!("127.0.0.1:{port}"),
        "info,kube_client::client::builder=debug",
    );
    let apps: Api<Application> = Api::namespaced(client.clone(), &ns.name);
    let first = ready(&apps, 0..n, &commit, Instant::now()).await;
    eprintln!("{n} Applications Ready in {first:.1}s");
    let receivers: Api<gantry::api::Receiver> = Api::namespaced(client.clone(), &ns.name);
    let path = loop {
        if let Some(p) = receivers
            .get("forge")
            .await
            .ok()
            .and_then(|r| r.status)
            .and_then(|s| s.webhook_path)
        {
            break p;
        }
        tokio::time::sleep(Duration::from_millis(200)).await;
    };
    forge
        .api(
            "POST",
            "/repos/gantry/fleet/hooks",
            Some(json!({
                "type": "gitea", "active": true,
                "events": ["pull_request", "pull_request_sync"],
                "config": {"url": format!("http://127.0.0.1:{port}{path}"), "content_type": "json",
                           "secret": "a-long-random-webhook-token-0123"}
            })),
        )
        .expect("create the Gitea webhook");

    let (mut sync_m, mut plan_m, mut per_app) = (vec![], vec![], vec![]);
    let (mut others_alone, mut others_planned) = (vec![], vec![]);
    for round in 0..runs() {
        // 1. M Applications synced.
        let changed: Vec<_> = (0..m).map(|i| file(i, &format!("{round}s"))).collect();
        let start = Instant::now();
        commit = forge.push("fleet", &refs(&changed), &format!("round {round}: sync"));
        sync_m.push(ready(&apps, 0..m, &commit, start).await);

        // 2. A pull request of M planned.
        let branch = format!("change-{round}");
        let changed: Vec<_> = (0..m).map(|i| file(i, &format!("{round}p"))).collect();
        let head = forge.push_branch("fleet", &branch, &refs(&changed), &[], "a change");
        let from = log_lines(&log);
        let start = Instant::now();
        let number = forge.open_pull("fleet", &branch, "main");
        plan_m.push(planned(&forge, number, &head, start).await);
        let (requests, _, _) = requests_since(&log, from);
        per_app.push(requests as f64 / m as f64);

        // 3. The other N−M synced alone, then while a plan of M runs.
        let others = m..n;
        let changed: Vec<_> = others
            .clone()
            .map(|i| file(i, &format!("{round}a")))
            .collect();
        let start = Instant::now();
        commit = forge.push("fleet", &refs(&changed), &format!("round {round}: alone"));
        others_alone.push(ready(&apps, others.clone(), &commit, start).await);
        let changed: Vec<_> = (0..m).map(|i| file(i, &format!("{round}q"))).collect();
        let head = forge.push_branch("fleet", &branch, &refs(&changed), &[], "another change");
        let changed: Vec<_> = others
            .clone()
            .map(|i| file(i, &format!("{round}b")))
            .collect();
        let start = Instant::now();
        commit = forge.push("fleet", &refs(&changed), &format!("round {round}: planned"));
        others_planned.push(ready(&apps, others.clone(), &commit, start).await);
        planned(&forge, number, &head, start).await;
        eprintln!(
            "round {round}: sync of {m} {:.1}s, plan of {m} {:.1}s ({:.1} requests per Application); {} others {:.1}s alone, {:.1}s beside a plan",
            sync_m[round],
            plan_m[round],
            per_app[round],
            n - m,
            others_alone[round],
            others_planned[round]
        );
    }
    let (sync, plan) = (median(sync_m), median(plan_m));
    let (alone, beside) = (median(others_alone), median(others_planned));
    println!("RESULT plan_apps={n}");
    println!("RESULT plan_changed_apps={m}");
    println!("RESULT plan_sync_of_changed_s={sync:.2}");
    println!("RESULT plan_webhook_to_comment_s={plan:.2}");
    println!("RESULT plan_ratio_vs_sync={:.2}", plan / sync);
    println!(
        "RESULT plan_requests_per_planned_app={:.1}",
        median(per_app)
    );
    println!("RESULT plan_others_ready_alone_s={alone:.2}");
    println!("RESULT plan_others_ready_beside_plan_s={beside:.2}");
    println!("RESULT plan_others_ratio={:.2}", beside / alone);
}
