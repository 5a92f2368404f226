//! Shards: a controller started with `--shard NAME` reconciles only the resources labelled
//! `gantry.dev/shard=NAME`; the default shard (no flag) takes the unlabelled ones and
//! nothing else. Every shard runs its own Deployment and Lease; the label selector on the
//! watches is the only coordination.

use std::collections::BTreeMap;

use kube::runtime::watcher;

/// The label that assigns a Gantry resource to a shard.
pub const SHARD_LABEL: &str = "gantry.dev/shard";

#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Shard(Option<String>);

#[derive(Debug, thiserror::Error, PartialEq, Eq)]
#[error(
    "--shard {0:?}: a shard name is a label value (at most 63 letters, digits, '-', '_' or '.', beginning and ending with a letter or digit)"
)]
pub struct InvalidShard(String);

impl Shard {
    /// The shard named `name`, or the default shard.
    pub fn new(name: Option<String>) -> Result<Self, InvalidShard> {
        match name {
            None => Ok(Shard(None)),
            Some(n) if is_label_value(&n) => Ok(Shard(Some(n))),
            Some(n) => Err(InvalidShard(n)),
        }
    }

    pub fn name(&self) -> Option<&str> {
        self.0.as_deref()
    }

    /// The label selector of the resources this shard reconciles.
    pub fn selector(&self) -> String {
        match &self.0 {
            Some(n) => format!("{SHARD_LABEL}={n}"),
            None => format!("!{SHARD_LABEL}"),
        }
    }

    /// The watch configuration of this shard's resources.
    pub fn watch(&self) -> watcher::Config {
        watcher::Config::default().labels(&self.selector())
    }

    /// Whether a resource with `labels` belongs to this shard.
    pub fn owns(&self, labels: &BTreeMap<String, String>) -> bool {
        labels.get(SHARD_LABEL).map(String::as_str) == self.name()
    }

    /// How a resource with `labels` is assigned, for messages.
    pub fn describe(labels: &BTreeMap<String, String>) -> String {
        Shard(labels.get(SHARD_LABEL).cloned()).to_string()
    }
}

impl std::fmt::Display for Shard {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match &self.0 {
            Some(n) => write!(f, "shard {n:?}"),
            None => f.write_str("the default shard"),
        }
    }
}

fn is_label_value(v: &str) -> bool {
    let alnum = |c: char| c.is_ascii_alphanumeric();
    !v.is_empty()
        && v.len() <= 63
        && v.starts_with(alnum)
        && v.ends_with(alnum)
        && v.chars().all(|c| alnum(c) || matches!(c, '-' | '_' | '.'))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn labels(shard: Option<&str>) -> BTreeMap<String, String> {
        shard
            .map(|s| BTreeMap::from([(SHARD_LABEL.to_string(), s.to_string())]))
            .unwrap_or_default()
    }

    #[test]
    fn the_default_shard_takes_unlabelled_resources_only() {
        let default = Shard::new(None).unwrap();
        assert_eq!(default.selector(), "!gantry.dev/shard");
        assert!(default.owns(&labels(None)));
        assert!(!default.owns(&labels(Some("eu"))));
    }

    #[test]
    fn a_named_shard_takes_its_label_only() {
        let eu = Shard::new(Some("eu".into())).unwrap();
        assert_eq!(eu.selector(), "gantry.dev/shard=eu");
        assert!(eu.owns(&labels(Some("eu"))));
        assert!(!eu.owns(&labels(Some("us"))));
        assert!(!eu.owns(&labels(None)));
        assert_eq!(eu.to_string(), "shard \"eu\"");
    }

    #[test]
    fn shard_names_are_label_values() {
        for bad in ["", "-eu", "eu-", "e u", "eu,us", "a=b", &"x".repeat(64)] {
            assert!(Shard::new(Some(bad.into())).is_err(), "{bad:?}");
        }
        for good in ["eu", "eu-1", "a.b_c", &"x".repeat(63)] {
            assert!(Shard::new(Some(good.into())).is_ok(), "{good:?}");
        }
    }
}
