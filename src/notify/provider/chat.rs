//! Chat messages, as each service's public documentation specifies its incoming webhooks:
//! - Slack: `POST` a JSON body with `text` (mrkdwn)
//!   (https://api.slack.com/messaging/webhooks);
//! - Microsoft Teams (a Workflows "post to a channel when a webhook request is received"
//!   URL, which replaced Office 365 connectors): a `message` whose one attachment is an
//!   Adaptive Card (`contentType: application/vnd.microsoft.card.adaptive`)
//!   (https://learn.microsoft.com/en-us/microsoftteams/platform/webhooks-and-connectors/how-to/connectors-using#send-adaptive-cards-using-an-incoming-webhook);
//! - Discord: `POST` to the webhook URL with `content` (at most 2,000 characters) and
//!   optional `embeds` (`title`, `description`, `color`)
//!   (https://discord.com/developers/docs/resources/webhook#execute-webhook);
//! - Google Chat: `POST` a JSON body with `text`, `Content-Type: application/json;
//!   charset=UTF-8`, to the space's webhook URL (its `key` and `token` are query parameters)
//!   (https://developers.google.com/workspace/chat/quickstart/webhooks).
//!
//! Every URL here is a secret (anyone who has it can post): it comes from the Notifier's
//! Secret and is never written anywhere.

use serde_json::json;

use super::{Request, Subject, colour, headline, short_commit};
use crate::notify::report::{Report, State};

/// A Slack message.
pub fn slack(address: &str, subject: Subject<'_>, report: &Report) -> Request {
    let icon = match report.state {
        State::Pending => ":hourglass_flowing_sand:",
        State::Success => ":white_check_mark:",
        State::Failure => ":x:",
    };
    let text = format!(
        "{icon} *{}/{}* `{}` on {}: {} — {}",
        subject.namespace,
        subject.name,
        short_commit(report),
        subject.cluster,
        report.state.as_str(),
        report.description
    );
    Request::post_json(address.to_string(), &json!({"text": text}))
}

/// A Teams message: an Adaptive Card with the headline and the facts.
pub fn msteams(address: &str, subject: Subject<'_>, report: &Report) -> Request {
    let title = format!(
        "{}/{}: {}",
        subject.namespace,
        subject.name,
        report.state.as_str()
    );
    let card = json!({
        "$schema": "http://adaptivecards.io/schemas/adaptive-card.json",
        "type": "AdaptiveCard",
        "version": "1.4",
        "body": [
            {"type": "TextBlock", "text": title, "weight": "Bolder", "size": "Medium", "wrap": true},
            {"type": "TextBlock", "text": report.description, "wrap": true},
            {"type": "FactSet", "facts": [
                {"title": "Revision", "value": report.revision},
                {"title": "Cluster", "value": subject.cluster},
                {"title": "Event", "value": report.event},
            ]},
        ],
    });
    Request::post_json(
        address.to_string(),
        &json!({
            "type": "message",
            "attachments": [{
                "contentType": "application/vnd.microsoft.card.adaptive",
                "contentUrl": null,
                "content": card,
            }],
        }),
    )
}

/// A Discord message: one line of content and an embed coloured by state.
pub fn discord(address: &str, subject: Subject<'_>, report: &Report) -> Request {
    let content: String = headline(subject, report).chars().take(2000).collect();
    Request::post_json(
        address.to_string(),
        &json!({
            "username": "Gantry",
            "content": content,
            "embeds": [{
                "title": format!("{}/{}", subject.namespace, subject.name),
                "description": report.description,
                "color": colour(report.state),
                "fields": [
                    {"name": "Revision", "value": report.revision, "inline": true},
                    {"name": "Event", "value": report.event, "inline": true},
                ],
            }],
        }),
    )
}

/// A Google Chat message.
pub fn googlechat(address: &str, subject: Subject<'_>, report: &Report) -> Request {
    let mut req = Request::post_json(
        address.to_string(),
        &json!({"text": headline(subject, report)}),
    );
    req.headers = vec![("Content-Type", "application/json; charset=UTF-8".into())];
    req
}

#[cfg(test)]
mod tests {
    use super::super::fixtures::{SUBJECT, report};
    use super::*;

    fn body(r: &Request) -> serde_json::Value {
        serde_json::from_slice(&r.body).unwrap()
    }

    #[test]
    fn each_chat_gets_its_own_shape() {
        let s = slack(
            "https://hooks.slack.com/x",
            SUBJECT,
            &report(State::Failure),
        );
        assert!(body(&s)["text"].as_str().unwrap().contains("team-a/web"));
        let t = msteams("https://teams.example/x", SUBJECT, &report(State::Success));
        let b = body(&t);
        assert_eq!(b["type"], "message");
        assert_eq!(
            b["attachments"][0]["contentType"],
            "application/vnd.microsoft.card.adaptive"
        );
        assert_eq!(b["attachments"][0]["content"]["type"], "AdaptiveCard");
        let d = discord(
            "https://discord.com/api/webhooks/1/x",
            SUBJECT,
            &report(State::Failure),
        );
        let b = body(&d);
        assert_eq!(b["embeds"][0]["color"], 0xCB2431);
        assert!(b["content"].as_str().unwrap().contains("failure"));
        let g = googlechat(
            "https://chat.googleapis.com/v1/spaces/x/messages?key=k&token=t",
            SUBJECT,
            &report(State::Success),
        );
        assert!(
            body(&g)["text"]
                .as_str()
                .unwrap()
                .starts_with("team-a/web abcdef012345 on prod: success")
        );
        assert_eq!(
            g.headers,
            [(
                "Content-Type",
                "application/json; charset=UTF-8".to_string()
            )]
        );
    }
}
