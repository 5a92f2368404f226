//! `make bench`: Gantry against `kubectl apply --server-side` on the same local control
//! plane and the same 2,000 objects, plus no-op cost, drift detection latency and memory.
//! Prints `RESULT <name>=<value>` lines; medians of several runs where it matters.

#[path = "../tests/e2e/support/mod.rs"]
#[allow(dead_code)]
mod support;

#[allow(dead_code)]
mod common;

use std::path::Path;
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use gantry::api::{Application, GitRepository};
use k8s_openapi::api::core::v1::{ConfigMap, Namespace};
use kube::api::{Api, Patch, PatchParams};
use serde_json::json;

use common::{
    GROUPS, log_lines, median, peak_rss_mib, requests_since, runs, start_controller, wait_for_app,
    write_objects,
};
use support::app::{condition, create_source_and_app};
use support::cluster::{TestNamespace, client, install_crds, kubeconfig_path};
use support::git::GitServer;
use support::process::tool;

fn kubectl_apply(dir: &Path, ns: &str) -> f64 {
    let start = Instant::now();
    let out = Command::new(tool("kubectl"))
        .arg("--kubeconfig")
        .arg(kubeconfig_path())
        .args([
            "apply",
            "--server-side",
            "--field-manager",
            "bench",
            "-n",
            ns,
            "-f",
        ])
        .arg(dir)
        .stdout(Stdio::null())
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    start.elapsed().as_secs_f64()
}

/// Creates the bench's 500 Services (same spec) with a plain client; seconds taken.
async fn create_services(client: &kube::Client, ns: &str) -> f64 {
    use futures::StreamExt;
    let api: Api<k8s_openapi::api::core::v1::Service> = Api::namespaced(client.clone(), ns);
    let start = Instant::now();
    let results: Vec<_> = futures::stream::iter((0..GROUPS).map(|i| {
        let api = api.clone();
        async move {
            let name = format!("svc-{i:03}");
            let svc = serde_json::from_value(json!({
                "metadata": {"name": name},
                "spec": {"selector": {"app": name}, "ports": [{"port": 80}]}
            }))
            .unwrap();
            api.create(&kube::api::PostParams::default(), &svc).await
        }
    }))
    .buffer_unordered(8)
    .collect()
    .await;
    let t = start.elapsed().as_secs_f64();
    assert!(results.iter().all(|r| r.is_ok()), "service create failed");
    t
}

/// The floor for the whole set: the same 2,000 objects created by a plain client at
/// Gantry's apply concurrency (32), in Gantry's order (ServiceAccounts, ConfigMaps and
/// Services, then Deployments), without validation, diffing or anything else; seconds.
async fn create_floor(client: &kube::Client, dir: &Path, ns: &str) -> f64 {
    use futures::StreamExt;
    use kube::api::{ApiResource, DynamicObject, PostParams};
    use kube::core::GroupVersionKind;
    let mut first = vec![];
    let mut second = vec![];
    for entry in std::fs::read_dir(dir).unwrap() {
        let text = std::fs::read_to_string(entry.unwrap().path()).unwrap();
        for doc in serde_yaml::Deserializer::from_str(&text) {
            let v: serde_json::Value = serde::Deserialize::deserialize(doc).unwrap();
            if v["kind"] == "Deployment" {
                second.push(v);
            } else {
                first.push(v);
            }
        }
    }
    let resource = |v: &serde_json::Value| {
        let (group, version) = match v["apiVersion"].as_str().unwrap().split_once('/') {
            Some((g, v)) => (g.to_string(), v.to_string()),
            None => (String::new(), v["apiVersion"].as_str().unwrap().to_string()),
        };
        let kind = v["kind"].as_str().unwrap();
        let plural = format!("{}s", kind.to_lowercase());
        ApiResource::from_gvk_with_plural(&GroupVersionKind::gvk(&group, &version, kind), &plural)
    };
    // GANTRY_FLOOR_ORDER=kind: each group sorted by kind, as Gantry sends a rank (to see
    // what the order costs when the API server serializes one kind's creates).
    if std::env::var("GANTRY_FLOOR_ORDER").as_deref() == Ok("kind") {
        let key = |v: &serde_json::Value| {
            (
                v["kind"].as_str().unwrap_or_default().to_string(),
                v["metadata"]["name"]
                    .as_str()
                    .unwrap_or_default()
                    .to_string(),
            )
        };
        first.sort_by_key(key);
    }
    let start = Instant::now();
    for group in [first, second] {
        let results: Vec<_> = futures::stream::iter(group.into_iter().map(|v| {
            let api: Api<DynamicObject> = Api::namespaced_with(client.clone(), ns, &resource(&v));
            async move {
                let obj: DynamicObject = serde_json::from_value(v).unwrap();
                // GANTRY_FLOOR_VERB=apply: server-side apply instead of create (what the API
                // server's apply path costs by itself).
                if std::env::var("GANTRY_FLOOR_VERB").as_deref() == Ok("apply") {
                    let name = obj.metadata.name.clone().unwrap();
                    api.patch(
                        &name,
                        &kube::api::PatchParams::apply("floor"),
                        &kube::api::Patch::Apply(&obj),
                    )
                    .await
                } else {
                    api.create(&PostParams::default(), &obj).await
                }
            }
        }))
        .buffer_unordered(32)
        .collect()
        .await;
        assert!(results.iter().all(|r| r.is_ok()), "floor create failed");
    }
    start.elapsed().as_secs_f64()
}

/// (dry-run seconds, apply seconds) of the last sync in the controller's log.
fn sync_phases(log: &Path) -> (f64, f64) {
    let text = std::fs::read_to_string(log).unwrap_or_default();
    let ms = |marker: &str| {
        text.lines()
            .rfind(|l| l.contains(marker))
            .and_then(|l| l.split("ms=").nth(1))
            .and_then(|v| v.split_whitespace().next())
            .and_then(|v| v.parse::<f64>().ok())
            .map(|v| v / 1000.0)
            .unwrap_or(0.0)
    };
    // `applied` counts from the start of the sync: render, dry-run, then the applies. The
    // set is validated in two steps (what can be validated before stage 0, then what could
    // not); the first holds every object here.
    let validate = text
        .lines()
        .filter(|l| l.contains("validated (server-side dry-run)"))
        .filter_map(|l| {
            l.split("ms=")
                .nth(1)?
                .split_whitespace()
                .next()?
                .parse::<f64>()
                .ok()
        })
        .fold(0.0, f64::max)
        / 1000.0;
    let since_start = ms("sync: applied applied=");
    (
        validate,
        since_start - validate - ms("sync: rendered objects"),
    )
}

async fn wait_namespaces_gone(client: &kube::Client, names: &[String]) {
    let api: Api<Namespace> = Api::all(client.clone());
    let start = Instant::now();
    for name in names {
        while api.get_opt(name).await.ok().flatten().is_some() {
            if start.elapsed() > Duration::from_secs(300) {
                eprintln!("namespace {name} still terminating after 300 s; going on");
                return;
            }
            tokio::time::sleep(Duration::from_millis(500)).await;
        }
    }
}

#[tokio::main]
async fn main() {
    let client = client().await;
    install_crds(&client).await;
    let work = tempfile::tempdir().unwrap();
    let objects = work.path().join("objects");
    write_objects(&objects);
    let server = GitServer::start();
    server.create_repo_from_dir("bench", work.path());

    let mut kubectl_times = vec![];
    let mut gantry_times = vec![];
    let mut service_times = vec![];
    let mut floor_times = vec![];
    let mut validate_times = vec![];
    let mut write_times = vec![];
    let mut noop = (0, 0, 0);
    let mut drift_ms = vec![];
    let mut rss = 0f64;
    for run in 0..runs() {
        // kubectl apply --server-side of the same directory, from scratch.
        let kns = TestNamespace::new(&client, "bench-kubectl").await;
        let t = kubectl_apply(&objects, &kns.name);
        eprintln!("run {run}: kubectl apply --server-side: {t:.2}s");
        kubectl_times.push(t);

        // The API server's floor: the same 500 Services created by a plain client (8 in
        // flight, no validation, nothing else). Cluster IPs are allocated one at a time
        // (kube-apiserver holds its allocator lock across each IPAddress create), so no
        // client can create them faster; this bounds any speedup over kubectl.
        let fns = TestNamespace::new(&client, "bench-services").await;
        let t = create_services(&client, &fns.name).await;
        eprintln!("run {run}: 500 Services alone: {t:.2}s");
        service_times.push(t);
        let name = fns.name.clone();
        drop(fns);
        wait_namespaces_gone(&client, &[name]).await;

        // The floor of the whole set: a plain client creating the same objects.
        let flns = TestNamespace::new(&client, "bench-floor").await;
        let t = create_floor(&client, &objects, &flns.name).await;
        eprintln!("run {run}: 2,000 objects created by a plain client: {t:.2}s");
        floor_times.push(t);
        let name = flns.name.clone();
        drop(flns);
        wait_namespaces_gone(&client, &[name]).await;

        // Gantry: from Application creation to Ready at the revision.
        let gns = TestNamespace::new(&client, "bench-gantry").await;
        let data = tempfile::tempdir().unwrap();
        let log = work.path().join(format!("controller-{run}.log"));
        let controller = start_controller(
            &gns.name,
            data.path(),
            &log,
            "off",
            "info,kube_client::client::builder=debug,gantry::controller::application::pipeline=debug,gantry::apply::set=debug,gantry::controller::application::reconcile=debug",
        );
        let start = Instant::now();
        let start_wall = chrono::Utc::now();
        create_source_and_app(
            &client,
            &gns.name,
            "bench",
            &server.file_url("bench"),
            json!({"path": "objects", "drift": {"mode": "audit"}, "interval": "10m"}),
        )
        .await;
        let apps: Api<Application> = Api::namespaced(client.clone(), &gns.name);
        // The source fetch is part of Gantry's work here (kubectl had the files locally).
        // Watched, not polled: see wait_for_app.
        let ready = wait_for_app(&apps, "bench", Duration::from_secs(600), |app| {
            condition(app, "Ready").is_some_and(|c| c.status == "True")
        })
        .await;
        assert!(ready, "gantry did not sync");
        let t = start.elapsed().as_secs_f64();
        eprintln!("run {run}: gantry sync of {} objects: {t:.2}s", GROUPS * 4);
        // Where the time went, from the controller's log (offsets from the Application's
        // creation).
        for line in std::fs::read_to_string(&log).unwrap_or_default().lines() {
            let marker = [
                "stored new artifact",
                "reconcile",
                "rendered",
                "validated",
                " applied",
                "status written",
                "applied rank",
            ]
            .iter()
            .any(|m| line.contains(m));
            let Some(at) = line
                .split_whitespace()
                .next()
                .and_then(|t| chrono::DateTime::parse_from_rfc3339(t).ok())
            else {
                continue;
            };
            if marker {
                let ms = (at.with_timezone(&chrono::Utc) - start_wall).num_milliseconds();
                let text = line.split("gantry::controller::").last().unwrap_or(line);
                eprintln!("  +{ms:>5} ms {}", text.trim());
            }
        }
        gantry_times.push(t);
        let (validate, write) = sync_phases(&log);
        validate_times.push(validate);
        write_times.push(write);

        // Let health and the first drift check settle, then measure a no-op reconcile.
        let settle = Instant::now();
        loop {
            if let Ok(app) = apps.get("bench").await
                && condition(&app, "Healthy").is_some_and(|c| c.status == "True")
            {
                break;
            }
            assert!(settle.elapsed() < Duration::from_secs(300), "never healthy");
            tokio::time::sleep(Duration::from_millis(200)).await;
        }
        tokio::time::sleep(Duration::from_secs(3)).await;
        let from = log_lines(&log);
        apps.patch(
            "bench",
            &PatchParams::default(),
            &Patch::Merge(json!({"metadata": {"annotations": {"bench/poke": format!("{run}")}}})),
        )
        .await
        .unwrap();
        tokio::time::sleep(Duration::from_secs(3)).await;
        noop = requests_since(&log, from);
        eprintln!(
            "run {run}: no-op reconcile: {} requests, {} writes, {} dry-runs",
            noop.0, noop.1, noop.2
        );

        // Drift: a kubectl-style edit of one ConfigMap to Drifted=True (10-minute interval).
        let cms: Api<ConfigMap> = Api::namespaced(client.clone(), &gns.name);
        let edit = Instant::now();
        cms.patch(
            "svc-250",
            &PatchParams {
                field_manager: Some("kubectl-edit".into()),
                ..Default::default()
            },
            &Patch::Merge(json!({"data": {"setting": "edited"}})),
        )
        .await
        .unwrap();
        loop {
            if let Ok(app) = apps.get("bench").await
                && condition(&app, "Drifted").is_some_and(|c| c.status == "True")
            {
                break;
            }
            assert!(
                edit.elapsed() < Duration::from_secs(60),
                "drift not detected"
            );
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
        let ms = edit.elapsed().as_secs_f64() * 1000.0;
        eprintln!("run {run}: drift detected in {ms:.0} ms");
        drift_ms.push(ms);
        rss = rss.max(peak_rss_mib(controller.child.id()));
        drop(controller);
        // Start the next run on a quiet cluster: without the controller nobody removes the
        // Application's finalizer, and the namespace controller deleting 4,000 objects
        // would run during the next measurement.
        let no_finalizers = Patch::Merge(json!({"metadata": {"finalizers": null}}));
        let _ = apps
            .patch("bench", &PatchParams::default(), &no_finalizers)
            .await;
        let sources: Api<GitRepository> = Api::namespaced(client.clone(), &gns.name);
        let _ = sources
            .patch("bench", &PatchParams::default(), &no_finalizers)
            .await;
        let names = [kns.name.clone(), gns.name.clone()];
        drop((gns, kns));
        wait_namespaces_gone(&client, &names).await;
    }
    let (k, g) = (median(kubectl_times), median(gantry_times));
    println!("RESULT apply_2000_kubectl_s={k:.2}");
    println!("RESULT apply_2000_gantry_s={g:.2}");
    println!("RESULT apply_speedup_vs_kubectl={:.2}", k / g);
    println!(
        "RESULT apply_2000_gantry_validate_s={:.2}",
        median(validate_times)
    );
    println!(
        "RESULT apply_2000_gantry_write_s={:.2}",
        median(write_times.clone())
    );
    let set_floor = median(floor_times.clone());
    println!("RESULT apply_2000_floor_s={set_floor:.2}");
    println!("RESULT apply_2000_vs_floor={:.2}", g / set_floor);
    println!(
        "RESULT apply_2000_write_vs_floor={:.2}",
        median(write_times.clone()) / set_floor
    );
    eprintln!("per run: floor {floor_times:.2?}");
    let floor = median(service_times);
    println!("RESULT services_500_create_floor_s={floor:.2}");
    println!("RESULT apply_speedup_bound_by_services={:.2}", k / floor);
    println!("RESULT noop_reconcile_requests={}", noop.0);
    println!("RESULT noop_reconcile_writes={}", noop.1);
    println!("RESULT noop_reconcile_dry_runs={}", noop.2);
    println!("RESULT drift_detect_ms={:.0}", median(drift_ms));
    println!("RESULT controller_rss_mib={rss:.1}");
}
