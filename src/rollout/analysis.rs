//! Canary analysis: the checks run every `interval` — canary pods Ready, container restarts
//! within `maxRestarts`, HTTP GET expectations, Prometheus instant queries within bounds.
//! Each result carries its evidence for the status.

use std::time::Duration;

use k8s_openapi::api::core::v1::Pod;
use k8s_openapi::apimachinery::pkg::apis::meta::v1::Time;
use k8s_openapi::jiff::Timestamp;
use kube::api::{Api, ListParams};
use kube::{Client, ResourceExt};

use super::template::{CANARY_OF_LABEL, TRACK_LABEL};
use crate::api::duration::GoDuration;
use crate::api::rollout::{Analysis, CheckResult, HttpCheck, PrometheusCheck};

/// The analysis an Application asks for, or the defaults (pods only, every 30 s, two
/// consecutive failures, no restarts).
pub fn effective(a: Option<&Analysis>) -> Analysis {
    a.cloned().unwrap_or(Analysis {
        interval: GoDuration::new("30s"),
        failure_limit: 2,
        max_restarts: 0,
        http: vec![],
        prometheus: vec![],
    })
}

fn result(name: &str, passed: bool, message: String) -> CheckResult {
    CheckResult {
        name: name.to_string(),
        time: Time(Timestamp::now()),
        passed,
        message: Some(message.chars().take(300).collect()),
        status_code: None,
        value: None,
    }
}

/// Pure: the pods check over the canary pods of one Deployment.
pub fn pods_verdict(
    stable: &str,
    pods: &[Pod],
    max_restarts: u32,
    not_ready_grace: Duration,
    now: Timestamp,
) -> (bool, String) {
    if pods.is_empty() {
        return (false, format!("no canary pods of {stable} yet"));
    }
    let mut problems = vec![];
    for p in pods {
        let status = p.status.clone().unwrap_or_default();
        let restarts: i32 = status
            .container_statuses
            .iter()
            .flatten()
            .map(|c| c.restart_count)
            .sum();
        if restarts as i64 > max_restarts as i64 {
            problems.push(format!(
                "pod {} restarted {restarts} times (maxRestarts {max_restarts})",
                p.name_any()
            ));
            continue;
        }
        let ready = status
            .conditions
            .iter()
            .flatten()
            .any(|c| c.type_ == "Ready" && c.status == "True");
        let age = p
            .metadata
            .creation_timestamp
            .as_ref()
            .map(|t| now.duration_since(t.0).unsigned_abs())
            .unwrap_or_default();
        if !ready && age > not_ready_grace {
            problems.push(format!(
                "pod {} not Ready after {}s",
                p.name_any(),
                age.as_secs()
            ));
        }
    }
    if problems.is_empty() {
        (
            true,
            format!("{} canary pods of {stable} ready", pods.len()),
        )
    } else {
        (false, problems.join("; "))
    }
}

async fn pods_check(
    client: &Client,
    ns: &str,
    stable: &str,
    max_restarts: u32,
    grace: Duration,
) -> CheckResult {
    let api: Api<Pod> = Api::namespaced(client.clone(), ns);
    let selector = format!("{TRACK_LABEL}=canary,{CANARY_OF_LABEL}={stable}");
    match api.list(&ListParams::default().labels(&selector)).await {
        Ok(list) => {
            let live: Vec<Pod> = list
                .items
                .into_iter()
                .filter(|p| p.metadata.deletion_timestamp.is_none())
                .collect();
            let (passed, message) =
                pods_verdict(stable, &live, max_restarts, grace, Timestamp::now());
            result("pods", passed, message)
        }
        Err(e) => result("pods", false, format!("cannot list canary pods: {e}")),
    }
}

/// One client for every check (connection pools are reused across analysis runs).
fn http() -> &'static http_client::Client {
    static CLIENT: std::sync::LazyLock<http_client::Client> = std::sync::LazyLock::new(|| {
        http_client::Client::builder()
            .redirect(http_client::redirect::Policy::limited(3))
            .build()
            .unwrap_or_default()
    });
    &CLIENT
}

/// Bytes of an HTTP check's body kept for `bodyRegex`; the rest is not read.
pub const HTTP_BODY_CAP: usize = 64 * 1024;
/// Largest Prometheus answer read; a bigger one fails the check.
pub const PROMETHEUS_BODY_CAP: usize = 4 * 1024 * 1024;

/// Reads at most `cap` bytes of a body; `true` when the body had more (the rest is never
/// read: the connection is dropped). The request's timeout covers the whole read.
async fn read_capped(
    mut r: http_client::Response,
    cap: usize,
) -> Result<(Vec<u8>, bool), http_client::Error> {
    let mut out = Vec::new();
    while let Some(chunk) = r.chunk().await? {
        let room = cap - out.len();
        if chunk.len() > room {
            out.extend_from_slice(&chunk[..room]);
            return Ok((out, true));
        }
        out.extend_from_slice(&chunk);
    }
    Ok((out, false))
}

/// Pure: whether an HTTP answer meets the check.
pub fn http_verdict(check: &HttpCheck, status: u16, body: &str) -> (bool, String) {
    if status < check.min_status || status > check.max_status {
        return (
            false,
            format!(
                "GET {} answered {status}, expected {}-{}",
                check.url, check.min_status, check.max_status
            ),
        );
    }
    if let Some(pattern) = &check.body_regex {
        match regex::Regex::new(pattern) {
            Ok(re) if !re.is_match(body) => {
                return (
                    false,
                    format!("GET {} body does not match {pattern:?}", check.url),
                );
            }
            Err(e) => return (false, format!("bodyRegex {pattern:?} is invalid: {e}")),
            Ok(_) => {}
        }
    }
    (true, format!("GET {} answered {status}", check.url))
}

async fn http_check(check: &HttpCheck) -> CheckResult {
    let timeout = check.timeout.parse().unwrap_or(Duration::from_secs(5));
    let answer = async {
        let r = http().get(&check.url).timeout(timeout).send().await?;
        let status = r.status().as_u16();
        // Bodies are read up to the cap for the regex; a longer one is judged on its start.
        let (bytes, over) = read_capped(r, HTTP_BODY_CAP).await?;
        let body = String::from_utf8_lossy(&bytes).into_owned();
        Ok::<_, http_client::Error>((status, body, over))
    }
    .await;
    match answer {
        Ok((status, body, over)) => {
            let (passed, mut message) = http_verdict(check, status, &body);
            if over {
                message.push_str(&format!(
                    " (body over {HTTP_BODY_CAP} bytes; only the first {HTTP_BODY_CAP} were read)"
                ));
            }
            let mut r = result(&check.name, passed, message);
            r.status_code = Some(status);
            r
        }
        Err(e) => result(
            &check.name,
            false,
            format!(
                "GET {} failed: {}",
                check.url,
                if e.is_timeout() {
                    "timed out".to_string()
                } else {
                    e.to_string()
                }
            ),
        ),
    }
}

/// Pure: the single value of a Prometheus instant-query answer.
pub fn prometheus_value(answer: &serde_json::Value) -> Result<f64, String> {
    if answer["status"] != "success" {
        return Err(format!(
            "query failed: {}",
            answer["error"].as_str().unwrap_or("unknown error")
        ));
    }
    let data = &answer["data"];
    let sample = match data["resultType"].as_str() {
        Some("vector") => {
            let result = data["result"].as_array().ok_or("no result")?;
            match result.len() {
                0 => return Err("the query returned no series".into()),
                1 => &result[0]["value"],
                n => return Err(format!("the query returned {n} series, expected one")),
            }
        }
        Some("scalar") => &data["result"],
        other => return Err(format!("unsupported result type {other:?}")),
    };
    sample[1]
        .as_str()
        .and_then(|v| v.parse::<f64>().ok())
        .filter(|v| !v.is_nan())
        .ok_or_else(|| format!("the sample {sample} is not a number"))
}

async fn prometheus_check(check: &PrometheusCheck) -> CheckResult {
    let timeout = check.timeout.parse().unwrap_or(Duration::from_secs(5));
    let url = format!("{}/api/v1/query", check.address.trim_end_matches('/'));
    let answer = async {
        let r = http()
            .get(&url)
            .query(&[("query", check.query.as_str())])
            .timeout(timeout)
            .send()
            .await?;
        read_capped(r, PROMETHEUS_BODY_CAP).await
    }
    .await;
    let value = match answer {
        Err(e) => Err(format!("Prometheus at {} unreachable: {e}", check.address)),
        Ok((_, true)) => Err(format!(
            "Prometheus at {} answered a body over {PROMETHEUS_BODY_CAP} bytes",
            check.address
        )),
        Ok((bytes, false)) => serde_json::from_slice::<serde_json::Value>(&bytes)
            .map_err(|e| format!("Prometheus answered something that is not JSON: {e}"))
            .and_then(|v| prometheus_value(&v)),
    };
    match value {
        Err(message) => result(&check.name, false, message),
        Ok(v) => {
            let low = check.min.is_some_and(|m| v < m);
            let high = check.max.is_some_and(|m| v > m);
            let bounds = format!(
                "[{}, {}]",
                check.min.map(|m| m.to_string()).unwrap_or("-inf".into()),
                check.max.map(|m| m.to_string()).unwrap_or("+inf".into())
            );
            let mut r = result(
                &check.name,
                !(low || high),
                format!("{} = {v}, expected within {bounds}", check.query),
            );
            r.value = Some(v);
            r
        }
    }
}

/// Runs every check for the canaries of `stables`; `Err` names the first failing check.
pub async fn run(
    client: &Client,
    ns: &str,
    stables: &[String],
    analysis: &Analysis,
) -> (Result<(), String>, Vec<CheckResult>) {
    let interval = analysis
        .interval
        .parse()
        .unwrap_or(Duration::from_secs(30))
        .max(Duration::from_secs(1));
    let mut results = vec![];
    for stable in stables {
        results.push(pods_check(client, ns, stable, analysis.max_restarts, interval).await);
    }
    for h in &analysis.http {
        results.push(http_check(h).await);
    }
    for p in &analysis.prometheus {
        results.push(prometheus_check(p).await);
    }
    let verdict = match results.iter().find(|r| !r.passed) {
        None => Ok(()),
        Some(r) => Err(format!(
            "check {} failed: {}",
            r.name,
            r.message.clone().unwrap_or_default()
        )),
    };
    (verdict, results)
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn pod(name: &str, age_secs: i64, ready: bool, restarts: i32, now: Timestamp) -> Pod {
        serde_json::from_value(json!({
            "metadata": {"name": name, "creationTimestamp": now.checked_sub(k8s_openapi::jiff::SignedDuration::from_secs(age_secs)).unwrap().to_string()},
            "status": {
                "conditions": [{"type": "Ready", "status": if ready {"True"} else {"False"}}],
                "containerStatuses": [{"name": "c", "image": "i", "imageID": "", "ready": ready, "restartCount": restarts}]
            }
        }))
        .unwrap()
    }

    #[test]
    fn pods_check_evidence() {
        let now = Timestamp::now();
        let g = Duration::from_secs(5);
        assert!(pods_verdict("web", &[pod("a", 60, true, 0, now)], 0, g, now).0);
        let (ok, msg) = pods_verdict("web", &[pod("a", 60, false, 3, now)], 0, g, now);
        assert!(!ok && msg.contains("restarted 3 times"), "{msg}");
        assert!(pods_verdict("web", &[pod("a", 60, true, 1, now)], 1, g, now).0);
        // Just created and not ready yet is not a failure; not ready for long is.
        assert!(pods_verdict("web", &[pod("a", 2, false, 0, now)], 0, g, now).0);
        let (ok, msg) = pods_verdict("web", &[pod("a", 30, false, 0, now)], 0, g, now);
        assert!(!ok && msg.contains("not Ready after 30s"), "{msg}");
        assert!(!pods_verdict("web", &[], 0, g, now).0);
    }

    #[test]
    fn http_expectations() {
        let check = HttpCheck {
            name: "smoke".into(),
            url: "http://127.0.0.1:1/health".into(),
            min_status: 200,
            max_status: 299,
            timeout: GoDuration::new("1s"),
            body_regex: Some("^ok".into()),
        };
        assert!(http_verdict(&check, 200, "ok\n").0);
        let (ok, msg) = http_verdict(&check, 500, "ok");
        assert!(!ok && msg.contains("answered 500"), "{msg}");
        assert!(!http_verdict(&check, 200, "error").0);
    }

    #[test]
    fn prometheus_answers() {
        let vector = json!({"status": "success", "data": {"resultType": "vector", "result": [{"metric": {}, "value": [1.0, "0.25"]}]}});
        assert_eq!(prometheus_value(&vector), Ok(0.25));
        let scalar =
            json!({"status": "success", "data": {"resultType": "scalar", "result": [1.0, "3"]}});
        assert_eq!(prometheus_value(&scalar), Ok(3.0));
        let empty = json!({"status": "success", "data": {"resultType": "vector", "result": []}});
        assert!(prometheus_value(&empty).unwrap_err().contains("no series"));
        let error = json!({"status": "error", "error": "parse error"});
        assert!(
            prometheus_value(&error)
                .unwrap_err()
                .contains("parse error")
        );
        let nan =
            json!({"status": "success", "data": {"resultType": "scalar", "result": [1.0, "NaN"]}});
        assert!(prometheus_value(&nan).is_err());
    }
}
