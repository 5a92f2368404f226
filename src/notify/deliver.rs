//! Delivering one report to one Notifier's target: which requests its type takes (one, or
//! for a GitHub deployment: find or create the deployment, then its status), sent in order
//! within the bounds of `send`. The credentials come from the Notifier's Secret.

use std::collections::BTreeMap;

use k8s_openapi::ByteString;

use super::provider::{self, Subject, chat, forge, hook};
use super::report::Report;
use super::send::{self, Pace, SendError, Targets};
use crate::api::notifier::NotifierType;

/// What a Notifier takes from its Secret.
pub struct Credentials {
    pub token: Option<String>,
    pub address: Option<String>,
    pub ca_pem: Option<Vec<u8>>,
}

impl Credentials {
    /// The keys `kind` needs from the Secret `name`'s data, or which one is missing.
    pub fn from_secret(
        kind: NotifierType,
        name: &str,
        data: &BTreeMap<String, ByteString>,
    ) -> Result<Self, String> {
        let text = |key: &str| {
            data.get(key)
                .and_then(|v| String::from_utf8(v.0.clone()).ok())
                .map(|s| s.trim().to_string())
                .filter(|s| !s.is_empty())
        };
        let creds = Credentials {
            token: text("token"),
            address: text("address"),
            ca_pem: data.get("ca.crt").map(|v| v.0.clone()),
        };
        if kind.is_forge() && creds.token.is_none() {
            return Err(format!(
                "Secret {name} has no key token (the forge's API token)"
            ));
        }
        if !kind.is_forge() && creds.address.is_none() {
            return Err(format!(
                "Secret {name} has no key address (the URL to post to)"
            ));
        }
        Ok(creds)
    }
}

/// Where and how one Notifier delivers.
pub struct Target<'a> {
    pub kind: NotifierType,
    pub creds: &'a Credentials,
    /// A forge's API base and repository (forge types only).
    pub forge: Option<&'a (String, String)>,
    /// The commit status's context template.
    pub context: &'a str,
    /// The GitHub deployment's environment template.
    pub environment: &'a str,
    pub insecure: bool,
    pub targets: &'a Targets,
    pub pace: &'a Pace,
}

/// What became of a report.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Outcome {
    /// The provider accepted it.
    Sent,
    /// Nothing to say on this target (a forge and a report that names no commit).
    NothingToSay,
}

/// Delivers `report` about `subject`; `at` is the time written into bodies.
pub async fn deliver(
    target: &Target<'_>,
    subject: Subject<'_>,
    report: &Report,
    at: &str,
) -> Result<Outcome, SendError> {
    let opts = send::Options {
        ca_pem: target.creds.ca_pem.as_deref(),
        insecure: target.insecure,
        targets: target.targets,
        pace: target.pace,
    };
    let token = target.creds.token.as_deref().unwrap_or_default();
    if target.kind.is_forge() {
        let (Some((api, repository)), Some(commit)) = (target.forge, report.commit.as_deref())
        else {
            return Ok(Outcome::NothingToSay);
        };
        if target.kind == NotifierType::GithubDeployment {
            let env = provider::expand(target.environment, subject);
            let find = forge::find_deployment(api, repository, commit, &env, token);
            let id = match forge::deployment_id(&send::send(&find, opts).await?) {
                Some(id) => id,
                None => {
                    let create =
                        forge::create_deployment(api, repository, commit, &env, report, token);
                    let answer = send::send(&create, opts).await?;
                    forge::deployment_id(&answer).ok_or_else(|| SendError::Transport {
                        host: host_of(api),
                        why: "the deployment was not created (no id in the answer)".into(),
                    })?
                }
            };
            let status = forge::deployment_status(api, repository, id, &env, report, token);
            send::send(&status, opts).await?;
            return Ok(Outcome::Sent);
        }
        let context = provider::expand(target.context, subject);
        let req = forge::commit_status(
            target.kind,
            api,
            repository,
            commit,
            report,
            &context,
            token,
        );
        send::send(&req, opts).await?;
        return Ok(Outcome::Sent);
    }
    let Some(address) = target.creds.address.as_deref() else {
        return Ok(Outcome::NothingToSay);
    };
    let req = match target.kind {
        NotifierType::Webhook => hook::webhook(address, subject, report, token, at),
        NotifierType::Cloudevents => {
            hook::cloudevent(address, subject, report, target.creds.token.as_deref(), at)
        }
        NotifierType::Msteams => chat::msteams(address, subject, report),
        NotifierType::Discord => chat::discord(address, subject, report),
        NotifierType::Googlechat => chat::googlechat(address, subject, report),
        _ => chat::slack(address, subject, report),
    };
    send::send(&req, opts).await?;
    Ok(Outcome::Sent)
}

fn host_of(url: &str) -> String {
    http_client::Url::parse(url)
        .ok()
        .and_then(|u| u.host_str().map(str::to_string))
        .unwrap_or_default()
}
