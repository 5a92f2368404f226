//! Machine-readable reports:
//! - Gantry's webhook: the JSON body of `body()`, `X-Gantry-Signature: sha256=<hex
//!   HMAC-SHA256 of the body with the Secret's token>` (as Gantry's own `generic-hmac`
//!   Receivers verify), `X-Gantry-Event`, and `X-Gantry-Delivery` (the same for a report
//!   delivered twice: an idempotency key);
//! - CloudEvents 1.0 in structured content mode over HTTP: `Content-Type:
//!   application/cloudevents+json; charset=UTF-8`, the event's attributes (`specversion`,
//!   `id` = the delivery key, `source`, `type` = `dev.gantry.application.<event>`,
//!   `subject` = the revision, `time`, `datacontenttype`) and `data` = the webhook body
//!   (https://github.com/cloudevents/spec/blob/v1.0.2/cloudevents/bindings/http-protocol-binding.md#32-structured-content-mode,
//!   https://github.com/cloudevents/spec/blob/v1.0.2/cloudevents/spec.md); signed as the
//!   webhook is when the Secret has a token.

use hmac::{Hmac, Mac};
use serde_json::json;
use sha2::Sha256;

use super::{Request, Subject, delivery_id};
use crate::notify::report::Report;

/// The documented JSON body of a report.
pub fn body(subject: Subject<'_>, report: &Report, at: &str) -> serde_json::Value {
    json!({
        "application": {"namespace": subject.namespace, "name": subject.name},
        "cluster": subject.cluster,
        "revision": report.revision,
        "commit": report.commit,
        "state": report.state.as_str(),
        "event": report.event,
        "description": report.description,
        "timestamp": at,
    })
}

fn signature(key: &str, body: &[u8]) -> String {
    let mut mac = Hmac::<Sha256>::new_from_slice(key.as_bytes()).expect("HMAC takes any key");
    mac.update(body);
    format!("sha256={}", hex::encode(mac.finalize().into_bytes()))
}

/// Gantry's signed webhook.
pub fn webhook(
    address: &str,
    subject: Subject<'_>,
    report: &Report,
    key: &str,
    at: &str,
) -> Request {
    let req = Request::post_json(address.to_string(), &body(subject, report, at));
    let signed = signature(key, &req.body);
    req.header("X-Gantry-Signature", signed)
        .header("X-Gantry-Event", report.event)
        .header("X-Gantry-Delivery", delivery_id(subject, report))
}

/// A CloudEvent in structured mode; signed when `key` is given.
pub fn cloudevent(
    address: &str,
    subject: Subject<'_>,
    report: &Report,
    key: Option<&str>,
    at: &str,
) -> Request {
    let event = json!({
        "specversion": "1.0",
        "id": delivery_id(subject, report),
        "source": format!(
            "/apis/gantry.dev/v1alpha1/namespaces/{}/applications/{}",
            subject.namespace, subject.name
        ),
        "type": format!("dev.gantry.application.{}", report.event),
        "subject": report.revision,
        "time": at,
        "datacontenttype": "application/json",
        "data": body(subject, report, at),
    });
    let mut req = Request::post_json(address.to_string(), &event);
    req.headers = vec![(
        "Content-Type",
        "application/cloudevents+json; charset=UTF-8".into(),
    )];
    match key {
        Some(key) => {
            let signed = signature(key, &req.body);
            req.header("X-Gantry-Signature", signed)
        }
        None => req,
    }
}

#[cfg(test)]
mod tests {
    use super::super::fixtures::{SUBJECT, report};
    use super::*;
    use crate::notify::report::State;

    fn header<'a>(r: &'a Request, name: &str) -> &'a str {
        &r.headers.iter().find(|(k, _)| *k == name).unwrap().1
    }

    #[test]
    fn the_webhook_is_signed_and_carries_an_idempotency_key() {
        let r = webhook(
            "https://hooks.example.com/x",
            SUBJECT,
            &report(State::Success),
            "k3y",
            "2026-12-02T00:00:00Z",
        );
        let mut mac = Hmac::<Sha256>::new_from_slice(b"k3y").unwrap();
        mac.update(&r.body);
        let want = format!("sha256={}", hex::encode(mac.finalize().into_bytes()));
        assert_eq!(header(&r, "X-Gantry-Signature"), want);
        let again = webhook(
            "https://hooks.example.com/x",
            SUBJECT,
            &report(State::Success),
            "k3y",
            "later",
        );
        assert_eq!(
            header(&r, "X-Gantry-Delivery"),
            header(&again, "X-Gantry-Delivery")
        );
        let body: serde_json::Value = serde_json::from_slice(&r.body).unwrap();
        assert_eq!(body["application"]["name"], "web");
        assert_eq!(body["state"], "success");
    }

    #[test]
    fn a_cloudevent_is_structured_and_keyed_by_the_delivery() {
        let r = cloudevent(
            "https://events.example.com/",
            SUBJECT,
            &report(State::Failure),
            None,
            "2026-12-02T00:00:00Z",
        );
        assert_eq!(
            header(&r, "Content-Type"),
            "application/cloudevents+json; charset=UTF-8"
        );
        assert!(r.headers.iter().all(|(k, _)| *k != "X-Gantry-Signature"));
        let e: serde_json::Value = serde_json::from_slice(&r.body).unwrap();
        assert_eq!(e["specversion"], "1.0");
        assert_eq!(e["type"], "dev.gantry.application.deployed");
        assert_eq!(e["id"], delivery_id(SUBJECT, &report(State::Failure)));
        assert_eq!(e["data"]["state"], "failure");
    }
}
