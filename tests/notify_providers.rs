//! Every notification provider's requests, sent for real over loopback to a server that
//! asserts each request's method, path, headers and JSON fields as the provider's public
//! API documentation specifies them (the pages are cited in `src/notify/provider/`):
//! - GitHub commit statuses: https://docs.github.com/en/rest/commits/statuses
//! - GitHub Deployments: https://docs.github.com/en/rest/deployments/deployments and
//!   https://docs.github.com/en/rest/deployments/statuses
//! - GitLab: https://docs.gitlab.com/api/commits/#set-the-pipeline-status-of-a-commit
//! - Bitbucket Server: https://developer.atlassian.com/server/bitbucket/rest/v906/api-group-builds-and-deployments/
//! - Slack: https://api.slack.com/messaging/webhooks
//! - Teams: https://learn.microsoft.com/en-us/microsoftteams/platform/webhooks-and-connectors/how-to/connectors-using
//! - Discord: https://discord.com/developers/docs/resources/webhook#execute-webhook
//! - Google Chat: https://developers.google.com/workspace/chat/quickstart/webhooks
//! - CloudEvents HTTP binding, structured mode: https://github.com/cloudevents/spec/blob/v1.0.2/cloudevents/bindings/http-protocol-binding.md
//!
//! And the bounds every provider shares: errors (401, 404, 500, 429 with Retry-After), a
//! provider that answers too slowly, an answer of 10 MB. (Gitea and Gantry's own webhook
//! are tested end to end, against a real Gitea, in the e2e notification tests.)

#[path = "e2e/support/webhook_sink.rs"]
mod webhook_sink;

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Duration;

use gantry::api::notifier::NotifierType;
use gantry::notify::deliver::{self, Credentials, Outcome, Target};
use gantry::notify::provider::{self, Subject};
use gantry::notify::report::{Report, State};
use gantry::notify::send::{Pace, SendError, Targets};
use serde_json::Value;
use webhook_sink::{Answer, Recorded, WebhookSink};

const SUBJECT: Subject<'static> = Subject {
    namespace: "team-a",
    name: "web",
    cluster: "prod",
};
const COMMIT: &str = "0123456789abcdef0123456789abcdef01234567";

fn report(state: State) -> Report {
    Report {
        revision: format!("main@sha1:{COMMIT}"),
        commit: Some(COMMIT.into()),
        state,
        event: "rollout-aborted",
        description: "rollout aborted: check error-rate failed".into(),
        at: None,
    }
}

fn token() -> Credentials {
    Credentials {
        token: Some("s3cr3t-t0ken".into()),
        address: None,
        ca_pem: None,
    }
}

fn address(url: String) -> Credentials {
    Credentials {
        token: None,
        address: Some(url),
        ca_pem: None,
    }
}

async fn send(
    kind: NotifierType,
    creds: &Credentials,
    forge: Option<(String, String)>,
    report: &Report,
) -> Result<Outcome, SendError> {
    // As the binary does at start.
    let _ = rustls::crypto::ring::default_provider().install_default();
    let targets = Targets::default();
    let pace = Pace::new(None);
    let target = Target {
        kind,
        creds,
        forge: forge.as_ref(),
        context: "gantry/{cluster}/{namespace}/{name}",
        environment: "{namespace}/{name}",
        insecure: false,
        targets: &targets,
        pace: &pace,
    };
    deliver::deliver(&target, SUBJECT, report, "2026-12-02T10:00:00Z").await
}

fn json(r: &Recorded) -> Value {
    serde_json::from_slice(&r.body).unwrap_or_else(|e| panic!("{e}: {:?}", r.body))
}

fn forge(kind: NotifierType, sink: &WebhookSink, repository: &str) -> Option<(String, String)> {
    Some((
        provider::api_base(kind, &sink.url("")),
        repository.to_string(),
    ))
}

#[tokio::test]
async fn github_commit_status() {
    let sink = WebhookSink::start_with(|_| Answer::status(201, "{}"));
    let out = send(
        NotifierType::Github,
        &token(),
        forge(NotifierType::Github, &sink, "org/app"),
        &report(State::Failure),
    )
    .await;
    assert_eq!(out, Ok(Outcome::Sent));
    let [r] = &sink.requests()[..] else {
        panic!("{:?}", sink.requests())
    };
    assert_eq!(r.method, "POST");
    // An Enterprise server's API is under /api/v3.
    assert_eq!(r.path, format!("/api/v3/repos/org/app/statuses/{COMMIT}"));
    assert_eq!(r.headers["authorization"], "Bearer s3cr3t-t0ken");
    assert_eq!(r.headers["accept"], "application/vnd.github+json");
    assert_eq!(r.headers["x-github-api-version"], "2022-11-28");
    let b = json(r);
    assert_eq!(b["state"], "failure");
    assert_eq!(b["context"], "gantry/prod/team-a/web");
    assert_eq!(b["description"], "rollout aborted: check error-rate failed");
}

#[tokio::test]
async fn github_deployment_is_created_once_per_commit_and_environment() {
    let created = Arc::new(AtomicBool::new(false));
    let c = created.clone();
    let sink = WebhookSink::start_with(move |r| match (r.method.as_str(), r.path.as_str()) {
        ("GET", p) if p.starts_with("/api/v3/repos/org/app/deployments?") => {
            if c.load(Ordering::SeqCst) {
                Answer::ok(r#"[{"id": 42, "environment": "team-a/web"}]"#)
            } else {
                Answer::ok("[]")
            }
        }
        ("POST", "/api/v3/repos/org/app/deployments") => {
            c.store(true, Ordering::SeqCst);
            Answer::status(201, r#"{"id": 42}"#)
        }
        ("POST", "/api/v3/repos/org/app/deployments/42/statuses") => Answer::status(201, "{}"),
        _ => Answer::status(404, r#"{"message": "Not Found"}"#),
    });
    let f = forge(NotifierType::GithubDeployment, &sink, "org/app");
    for state in [State::Pending, State::Success] {
        let out = send(
            NotifierType::GithubDeployment,
            &token(),
            f.clone(),
            &report(state),
        )
        .await;
        assert_eq!(out, Ok(Outcome::Sent));
    }
    let rs = sink.requests();
    let calls: Vec<_> = rs
        .iter()
        .map(|r| format!("{} {}", r.method, r.path.split('?').next().unwrap()))
        .collect();
    assert_eq!(
        calls,
        [
            "GET /api/v3/repos/org/app/deployments",
            "POST /api/v3/repos/org/app/deployments",
            "POST /api/v3/repos/org/app/deployments/42/statuses",
            "GET /api/v3/repos/org/app/deployments",
            "POST /api/v3/repos/org/app/deployments/42/statuses",
        ],
        "the second report reuses the deployment"
    );
    assert_eq!(
        rs[0].path,
        format!(
            "/api/v3/repos/org/app/deployments?sha={COMMIT}&environment=team-a%2Fweb&per_page=1"
        )
    );
    let create = json(&rs[1]);
    assert_eq!(create["ref"], COMMIT);
    assert_eq!(create["environment"], "team-a/web");
    assert_eq!(create["auto_merge"], false);
    assert_eq!(create["required_contexts"], serde_json::json!([]));
    let (pending, success) = (json(&rs[2]), json(&rs[4]));
    assert_eq!(pending["state"], "in_progress");
    assert_eq!(success["state"], "success");
    assert_eq!(success["environment"], "team-a/web");
    assert!(
        rs.iter()
            .all(|r| r.headers["authorization"] == "Bearer s3cr3t-t0ken")
    );
}

#[tokio::test]
async fn gitlab_commit_status() {
    let sink = WebhookSink::start_with(|_| Answer::status(201, "{}"));
    let out = send(
        NotifierType::Gitlab,
        &token(),
        forge(NotifierType::Gitlab, &sink, "group/sub/app"),
        &report(State::Pending),
    )
    .await;
    assert_eq!(out, Ok(Outcome::Sent));
    let [r] = &sink.requests()[..] else { panic!() };
    assert_eq!(r.method, "POST");
    assert_eq!(
        r.path,
        format!("/api/v4/projects/group%2Fsub%2Fapp/statuses/{COMMIT}")
    );
    assert_eq!(r.headers["private-token"], "s3cr3t-t0ken");
    assert!(!r.headers.contains_key("authorization"));
    let b = json(r);
    assert_eq!(b["state"], "running");
    assert_eq!(b["name"], "gantry/prod/team-a/web");
}

#[tokio::test]
async fn bitbucket_server_build_status() {
    let sink = WebhookSink::start_with(|_| Answer::status(204, ""));
    let out = send(
        NotifierType::BitbucketServer,
        &token(),
        forge(NotifierType::BitbucketServer, &sink, "PROJ/app"),
        &report(State::Success),
    )
    .await;
    assert_eq!(out, Ok(Outcome::Sent));
    let [r] = &sink.requests()[..] else { panic!() };
    assert_eq!(r.method, "POST");
    assert_eq!(
        r.path,
        format!("/rest/api/latest/projects/PROJ/repos/app/commits/{COMMIT}/builds")
    );
    assert_eq!(r.headers["authorization"], "Bearer s3cr3t-t0ken");
    let b = json(r);
    assert_eq!(b["state"], "SUCCESSFUL");
    assert_eq!(b["key"], "gantry/prod/team-a/web");
    assert!(
        b["url"]
            .as_str()
            .unwrap()
            .ends_with(&format!("/commits/{COMMIT}"))
    );
}

#[tokio::test]
async fn a_forge_says_nothing_of_a_report_without_a_commit() {
    let sink = WebhookSink::start();
    let mut drift = report(State::Failure);
    drift.commit = None;
    drift.revision = format!("main@sha1:{COMMIT}#drift");
    let out = send(
        NotifierType::Github,
        &token(),
        forge(NotifierType::Github, &sink, "org/app"),
        &drift,
    )
    .await;
    assert_eq!(out, Ok(Outcome::NothingToSay));
    assert!(sink.requests().is_empty());
}

#[tokio::test]
async fn chats_get_their_documented_bodies() {
    let sink = WebhookSink::start();
    for (kind, path) in [
        (NotifierType::Slack, "/services/T0/B0/x"),
        (
            NotifierType::Msteams,
            "/workflows/x/triggers/manual/paths/invoke",
        ),
        (NotifierType::Discord, "/api/webhooks/1/x"),
        (
            NotifierType::Googlechat,
            "/v1/spaces/AAA/messages?key=k&token=t",
        ),
    ] {
        let out = send(
            kind,
            &address(sink.url(path)),
            None,
            &report(State::Failure),
        )
        .await;
        assert_eq!(out, Ok(Outcome::Sent), "{kind:?}");
    }
    let rs = sink.requests();
    assert_eq!(rs.len(), 4);
    assert!(rs.iter().all(|r| r.method == "POST"));
    let slack = json(&rs[0]);
    assert!(
        slack["text"].as_str().unwrap().contains("*team-a/web*"),
        "{slack}"
    );
    assert_eq!(rs[0].headers["content-type"], "application/json");

    let teams = json(&rs[1]);
    assert_eq!(teams["type"], "message");
    let attachment = &teams["attachments"][0];
    assert_eq!(
        attachment["contentType"],
        "application/vnd.microsoft.card.adaptive"
    );
    assert_eq!(attachment["content"]["type"], "AdaptiveCard");
    assert_eq!(attachment["content"]["version"], "1.4");
    assert!(attachment["content"]["body"].as_array().unwrap().len() >= 2);

    let discord = json(&rs[2]);
    assert!(discord["content"].as_str().unwrap().chars().count() <= 2000);
    assert_eq!(discord["embeds"][0]["title"], "team-a/web");
    assert!(discord["embeds"][0]["color"].is_u64());

    assert_eq!(rs[3].path, "/v1/spaces/AAA/messages?key=k&token=t");
    assert_eq!(
        rs[3].headers["content-type"],
        "application/json; charset=UTF-8"
    );
    assert!(json(&rs[3])["text"].as_str().unwrap().contains("failure"));
}

#[tokio::test]
async fn a_cloudevent_in_structured_mode_signed_with_the_token() {
    let sink = WebhookSink::start_with(|_| Answer::status(202, ""));
    let creds = Credentials {
        token: Some("hmac-k3y".into()),
        address: Some(sink.url("/events")),
        ca_pem: None,
    };
    let out = send(
        NotifierType::Cloudevents,
        &creds,
        None,
        &report(State::Failure),
    )
    .await;
    assert_eq!(out, Ok(Outcome::Sent));
    let [r] = &sink.requests()[..] else { panic!() };
    assert_eq!(
        r.headers["content-type"],
        "application/cloudevents+json; charset=UTF-8"
    );
    let e = json(r);
    for attribute in ["specversion", "id", "source", "type", "subject", "time"] {
        assert!(e[attribute].is_string(), "{attribute}: {e}");
    }
    assert_eq!(e["specversion"], "1.0");
    assert_eq!(e["type"], "dev.gantry.application.rollout-aborted");
    assert_eq!(
        e["source"],
        "/apis/gantry.dev/v1alpha1/namespaces/team-a/applications/web"
    );
    assert_eq!(e["data"]["commit"], COMMIT);
    // The signature, checked by an independent HMAC implementation.
    let dir = tempfile::tempdir().unwrap();
    std::fs::write(dir.path().join("body"), &r.body).unwrap();
    let out = std::process::Command::new("python3")
        .args(["-c", "import hmac,hashlib,sys; print('sha256='+hmac.new(b'hmac-k3y', open(sys.argv[1],'rb').read(), hashlib.sha256).hexdigest())"])
        .arg(dir.path().join("body"))
        .output()
        .unwrap();
    assert_eq!(
        r.headers["x-gantry-signature"],
        String::from_utf8(out.stdout).unwrap().trim()
    );
}

#[tokio::test]
async fn provider_errors_are_named_without_the_token_or_the_path() {
    for (status, transient) in [(401, false), (404, false), (500, true)] {
        let sink = WebhookSink::start_with(move |_| {
            Answer::status(status, r#"{"message": "no such thing"}"#)
        });
        let err = send(
            NotifierType::Github,
            &token(),
            forge(NotifierType::Github, &sink, "org/app"),
            &report(State::Success),
        )
        .await
        .unwrap_err();
        let text = err.to_string();
        assert!(text.contains(&format!("answered {status}")), "{text}");
        assert!(
            !text.contains("s3cr3t") && !text.contains("/repos/"),
            "{text}"
        );
        assert_eq!(err.is_transient(), transient, "{status}");
    }
    let sink = WebhookSink::start_with(|_| Answer {
        headers: vec![("Retry-After", "30".into())],
        ..Answer::status(429, "slow down")
    });
    let err = send(
        NotifierType::Slack,
        &address(sink.url("/services/secret-path")),
        None,
        &report(State::Success),
    )
    .await
    .unwrap_err();
    assert_eq!(err.retry_after(), Some(Duration::from_secs(30)));
    assert!(!err.to_string().contains("secret-path"), "{err}");
}

#[tokio::test]
async fn a_slow_or_huge_answer_is_cut_off() {
    let slow = WebhookSink::start_with(|_| Answer {
        delay: Duration::from_secs(15),
        ..Answer::ok("late")
    });
    let err = send(
        NotifierType::Slack,
        &address(slow.url("/x")),
        None,
        &report(State::Success),
    )
    .await
    .unwrap_err();
    assert!(matches!(err, SendError::Transport { .. }), "{err}");
    assert!(err.is_transient());

    let huge = "x".repeat(10 << 20);
    let big = WebhookSink::start_with(move |_| Answer::status(500, &huge));
    let err = send(
        NotifierType::Slack,
        &address(big.url("/x")),
        None,
        &report(State::Success),
    )
    .await
    .unwrap_err();
    let text = err.to_string();
    assert!(
        text.contains("answered 500"),
        "{}",
        &text[..text.len().min(300)]
    );
    assert!(
        text.len() < 400,
        "the answer is not quoted whole: {} bytes",
        text.len()
    );
}
