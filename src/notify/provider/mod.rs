//! The requests each provider expects, pure: where they go, their headers and their body,
//! following the providers' public API documentation (cited per file): commit statuses and
//! deployments on forges (`forge`), chat messages (`chat`), Gantry's signed webhook and
//! CloudEvents (`hook`).

pub mod chat;
pub mod forge;
pub mod hook;
pub mod pull_request;

use sha2::{Digest, Sha256};

use super::report::{Report, State};

pub use forge::{api_base, forge_of};

/// An HTTP method a provider is called with.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Method {
    Get,
    Post,
    Patch,
    Put,
}

/// One request to send.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Request {
    pub method: Method,
    pub url: String,
    /// Header names and values; values of `Authorization`/`PRIVATE-TOKEN` are secrets.
    pub headers: Vec<(&'static str, String)>,
    pub body: Vec<u8>,
}

impl Request {
    /// A JSON `POST`.
    pub fn post_json(url: String, body: &serde_json::Value) -> Self {
        Request {
            method: Method::Post,
            url,
            headers: vec![("Content-Type", "application/json".into())],
            body: body.to_string().into_bytes(),
        }
    }

    pub fn header(mut self, name: &'static str, value: impl Into<String>) -> Self {
        self.headers.push((name, value.into()));
        self
    }
}

/// Which Application a report is about.
#[derive(Debug, Clone, Copy)]
pub struct Subject<'a> {
    pub namespace: &'a str,
    pub name: &'a str,
    /// The API server the Application deploys to (`status.cluster`), or `local`.
    pub cluster: &'a str,
}

/// `{cluster}`, `{namespace}` and `{name}` replaced in a template (a status context, a
/// deployment environment).
pub fn expand(template: &str, subject: Subject<'_>) -> String {
    template
        .replace("{cluster}", subject.cluster)
        .replace("{namespace}", subject.namespace)
        .replace("{name}", subject.name)
}

/// The idempotency key of a report: the same for the same (Application, revision, event,
/// state).
pub fn delivery_id(subject: Subject<'_>, report: &Report) -> String {
    let mut h = Sha256::new();
    for part in [
        subject.namespace,
        subject.name,
        &report.revision,
        report.state.as_str(),
    ] {
        h.update(part.as_bytes());
        h.update([0]);
    }
    hex::encode(&h.finalize()[..16])
}

/// The first 12 characters of the commit, or the revision when it names none.
pub(crate) fn short_commit(report: &Report) -> &str {
    report
        .commit
        .as_deref()
        .map(|c| &c[..12.min(c.len())])
        .unwrap_or(&report.revision)
}

/// One line for people: `team-a/web abc123def456 on prod: failure — why`.
pub(crate) fn headline(subject: Subject<'_>, report: &Report) -> String {
    format!(
        "{}/{} {} on {}: {} — {}",
        subject.namespace,
        subject.name,
        short_commit(report),
        subject.cluster,
        report.state.as_str(),
        report.description
    )
}

/// A colour per state for chat cards (green, amber, red).
pub(crate) fn colour(state: State) -> u32 {
    match state {
        State::Pending => 0xDBAB09,
        State::Success => 0x2EA44F,
        State::Failure => 0xCB2431,
    }
}

#[cfg(test)]
pub(crate) mod fixtures {
    use super::*;

    pub const SUBJECT: Subject<'static> = Subject {
        namespace: "team-a",
        name: "web",
        cluster: "prod",
    };

    pub fn report(state: State) -> Report {
        Report {
            revision: "main@sha1:abcdef0123456789".into(),
            commit: Some("abcdef0123456789".into()),
            state,
            event: "deployed",
            description: "deployed and healthy".into(),
            at: None,
        }
    }
}
