//! Tag selection, pure: semver ranges, alphabetical and numerical order, regex filters with
//! a named group to order on. No I/O; the registry scan hands the tags in.

use std::cmp::Ordering;

use regex::Regex;

use crate::api::image_policy::{FilterTags, SortOrder, TagPolicy};

#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum PolicyError {
    #[error("invalid semver range {range:?}: {message}")]
    Range { range: String, message: String },
    #[error("invalid filterTags.pattern {pattern:?}: {message}")]
    Pattern { pattern: String, message: String },
    #[error("filterTags.extract names group {group:?}, which pattern {pattern:?} does not define")]
    NoSuchGroup { group: String, pattern: String },
    #[error("set exactly one of semver, alphabetical and numerical")]
    NoOrdering,
}

/// A semver range: alternatives (`||`) of comparator sets. Accepts the npm-style forms users
/// write (`>=1.0.0 <2.0.0`, `>= 1.2`, `1.2.0 - 1.4.0`, `^1.4 || ^2`) as well as the semver
/// crate's comma form.
#[derive(Debug, Clone)]
pub struct Range {
    alternatives: Vec<semver::VersionReq>,
}

impl Range {
    pub fn parse(range: &str) -> Result<Self, PolicyError> {
        let err = |message: String| PolicyError::Range {
            range: range.to_string(),
            message,
        };
        let mut alternatives = Vec::new();
        for alt in range.split("||") {
            let normalized = normalize_comparators(alt.trim());
            if normalized.is_empty() {
                return Err(err("empty range".into()));
            }
            let req = semver::VersionReq::parse(&normalized).map_err(|e| err(e.to_string()))?;
            alternatives.push(req);
        }
        Ok(Range { alternatives })
    }

    /// Pre-releases match only when a comparator names a pre-release of the same
    /// major.minor.patch (the npm rule, as the semver crate implements it).
    pub fn matches(&self, v: &semver::Version) -> bool {
        self.alternatives.iter().any(|r| r.matches(v))
    }
}

/// `>=1.0.0 <2.0.0` → `>=1.0.0, <2.0.0`; `>= 1.2` → `>=1.2`; `1.0 - 2.0` → `>=1.0, <=2.0`.
fn normalize_comparators(alt: &str) -> String {
    let tokens: Vec<&str> = alt
        .split(|c: char| c.is_whitespace() || c == ',')
        .filter(|t| !t.is_empty())
        .collect();
    if tokens.len() == 3 && tokens[1] == "-" {
        return format!(">={}, <={}", tokens[0], tokens[2]);
    }
    let mut out: Vec<String> = Vec::new();
    let mut pending_op: Option<&str> = None;
    for t in tokens {
        if t.chars().all(|c| "<>=~^".contains(c)) {
            pending_op = Some(t);
            continue;
        }
        match pending_op.take() {
            Some(op) => out.push(format!("{op}{t}")),
            None => out.push(t.to_string()),
        }
    }
    if let Some(op) = pending_op {
        out.push(op.to_string());
    }
    out.join(", ")
}

/// A tag's version: a leading `v` is ignored.
pub fn parse_version(tag: &str) -> Option<semver::Version> {
    semver::Version::parse(tag.strip_prefix('v').unwrap_or(tag)).ok()
}

#[derive(Debug, Clone)]
enum Ordering_ {
    Semver(Range),
    Alphabetical(SortOrder),
    Numerical(SortOrder),
}

/// A compiled ImagePolicy ordering plus filter.
#[derive(Debug, Clone)]
pub struct Policy {
    ordering: Ordering_,
    pattern: Option<Regex>,
    extract: Option<String>,
}

impl Policy {
    pub fn compile(policy: &TagPolicy, filter: Option<&FilterTags>) -> Result<Self, PolicyError> {
        let ordering = match (&policy.semver, &policy.alphabetical, &policy.numerical) {
            (Some(s), None, None) => Ordering_::Semver(Range::parse(&s.range)?),
            (None, Some(a), None) => Ordering_::Alphabetical(a.order),
            (None, None, Some(n)) => Ordering_::Numerical(n.order),
            _ => return Err(PolicyError::NoOrdering),
        };
        let (pattern, extract) = match filter {
            None => (None, None),
            Some(f) => {
                let re = Regex::new(&f.pattern).map_err(|e| PolicyError::Pattern {
                    pattern: f.pattern.clone(),
                    message: e.to_string(),
                })?;
                if let Some(group) = &f.extract
                    && !re.capture_names().flatten().any(|n| n == group)
                {
                    return Err(PolicyError::NoSuchGroup {
                        group: group.clone(),
                        pattern: f.pattern.clone(),
                    });
                }
                (Some(re), f.extract.clone())
            }
        };
        Ok(Policy {
            ordering,
            pattern,
            extract,
        })
    }

    /// The part of `tag` that is ordered, or `None` when the tag does not take part.
    fn key<'a>(&self, tag: &'a str) -> Option<&'a str> {
        match &self.pattern {
            None => Some(tag),
            Some(re) => {
                let caps = re.captures(tag)?;
                match &self.extract {
                    None => Some(tag),
                    Some(group) => caps.name(group).map(|m| m.as_str()),
                }
            }
        }
    }

    /// Orders two tags that both take part: `Greater` means `a` is newer. Ties (equal
    /// versions such as `1.0.0` and `v1.0.0`) fall back to the tag text so the choice is
    /// stable whatever order the registry lists tags in.
    fn compare(&self, a: (&str, &Sortable), b: (&str, &Sortable)) -> Ordering {
        let primary = match (a.1, b.1) {
            (Sortable::Version(x), Sortable::Version(y)) => x.cmp(y),
            (Sortable::Number(x), Sortable::Number(y)) => x.total_cmp(y),
            (Sortable::Text(x), Sortable::Text(y)) => x.cmp(y),
            _ => Ordering::Equal,
        };
        let primary = match self.ordering {
            Ordering_::Alphabetical(SortOrder::Desc) | Ordering_::Numerical(SortOrder::Desc) => {
                primary.reverse()
            }
            _ => primary,
        };
        primary.then_with(|| a.0.cmp(b.0))
    }

    fn sortable(&self, tag: &str) -> Option<Sortable> {
        let key = self.key(tag)?;
        match &self.ordering {
            Ordering_::Semver(range) => {
                let v = parse_version(key)?;
                range.matches(&v).then_some(Sortable::Version(v))
            }
            Ordering_::Numerical(_) => key
                .parse::<f64>()
                .ok()
                .filter(|n| n.is_finite())
                .map(Sortable::Number),
            Ordering_::Alphabetical(_) => Some(Sortable::Text(key.to_string())),
        }
    }

    /// The newest tag that takes part, if any.
    pub fn select<'a, I>(&self, tags: I) -> Option<&'a str>
    where
        I: IntoIterator<Item = &'a str>,
    {
        let mut best: Option<(&str, Sortable)> = None;
        for tag in tags {
            let Some(s) = self.sortable(tag) else {
                continue;
            };
            let newer = match &best {
                None => true,
                Some((bt, bs)) => self.compare((tag, &s), (bt, bs)) == Ordering::Greater,
            };
            if newer {
                best = Some((tag, s));
            }
        }
        best.map(|(t, _)| t)
    }

    /// The tags that take part, newest first.
    pub fn newest_first<'a, I>(&self, tags: I) -> Vec<&'a str>
    where
        I: IntoIterator<Item = &'a str>,
    {
        let mut taking_part: Vec<(&str, Sortable)> = tags
            .into_iter()
            .filter_map(|t| self.sortable(t).map(|s| (t, s)))
            .collect();
        taking_part.sort_by(|a, b| self.compare((b.0, &b.1), (a.0, &a.1)));
        taking_part.dedup_by(|a, b| a.0 == b.0);
        taking_part.into_iter().map(|(t, _)| t).collect()
    }

    /// Whether `candidate` is strictly newer than `than` under this policy (both must take
    /// part; a tag that does not take part is never newer).
    pub fn is_newer(&self, candidate: &str, than: &str) -> bool {
        match (self.sortable(candidate), self.sortable(than)) {
            (Some(c), Some(t)) => self.compare((candidate, &c), (than, &t)) == Ordering::Greater,
            (Some(_), None) => true,
            _ => false,
        }
    }
}

#[derive(Debug, Clone)]
enum Sortable {
    Version(semver::Version),
    Number(f64),
    Text(String),
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::api::image_policy::{OrderPolicy, SemverPolicy};

    fn semver(range: &str) -> Policy {
        Policy::compile(
            &TagPolicy {
                semver: Some(SemverPolicy {
                    range: range.into(),
                }),
                alphabetical: None,
                numerical: None,
            },
            None,
        )
        .unwrap()
    }

    fn ordered(numerical: bool, order: SortOrder, filter: Option<(&str, Option<&str>)>) -> Policy {
        let o = Some(OrderPolicy { order });
        let policy = TagPolicy {
            semver: None,
            alphabetical: if numerical { None } else { o.clone() },
            numerical: if numerical { o } else { None },
        };
        let filter = filter.map(|(p, e)| FilterTags {
            pattern: p.into(),
            extract: e.map(str::to_string),
        });
        Policy::compile(&policy, filter.as_ref()).unwrap()
    }

    const TAGS: &[&str] = &[
        "1.3.0",
        "1.4.0",
        "2.0.0",
        "1.10.0-rc.1",
        "v1.9.0",
        "latest",
        "main-abc123",
        "1.2",
    ];

    #[test]
    fn semver_range_with_spaces_picks_newest_in_range() {
        let p = semver(">=1.0.0 <2.0.0");
        assert_eq!(p.select(TAGS.iter().copied()), Some("v1.9.0"));
        assert_eq!(semver("^2").select(TAGS.iter().copied()), Some("2.0.0"));
        assert_eq!(
            semver(">= 1.3.0, < 1.5").select(TAGS.iter().copied()),
            Some("1.4.0")
        );
        assert_eq!(
            semver("1.3.0 - 1.4.0").select(TAGS.iter().copied()),
            Some("1.4.0")
        );
        assert_eq!(
            semver("^1.4 || ^3").select(TAGS.iter().copied()),
            Some("v1.9.0")
        );
        assert_eq!(semver(">=3").select(TAGS.iter().copied()), None);
    }

    #[test]
    fn newest_first_orders_what_takes_part_and_agrees_with_select() {
        let p = semver(">=1.0.0 <2.0.0");
        let ordered = p.newest_first(TAGS.iter().copied());
        assert_eq!(ordered.first().copied(), p.select(TAGS.iter().copied()));
        assert!(!ordered.contains(&"latest") && !ordered.contains(&"2.0.0"));
        for pair in ordered.windows(2) {
            assert!(p.is_newer(pair[0], pair[1]), "{pair:?}");
        }
        assert_eq!(semver(">=3").newest_first(TAGS.iter().copied()).len(), 0);
    }

    #[test]
    fn prereleases_only_when_the_range_asks() {
        assert_eq!(
            semver(">=1.9.0").select(["1.9.0", "1.10.0-rc.1"]),
            Some("1.9.0")
        );
        assert_eq!(
            semver(">=1.10.0-rc.0").select(["1.9.0", "1.10.0-rc.1"]),
            Some("1.10.0-rc.1")
        );
    }

    #[test]
    fn v_prefix_and_plain_tags_compare_as_versions() {
        assert_eq!(semver("*").select(["v1.10.0", "1.9.0"]), Some("v1.10.0"));
        // Equal versions: the choice does not depend on listing order.
        assert_eq!(semver("*").select(["v1.0.0", "1.0.0"]), Some("v1.0.0"));
        assert_eq!(semver("*").select(["1.0.0", "v1.0.0"]), Some("v1.0.0"));
    }

    #[test]
    fn bad_ranges_and_patterns_are_errors() {
        let bad = TagPolicy {
            semver: Some(SemverPolicy {
                range: "not a range".into(),
            }),
            alphabetical: None,
            numerical: None,
        };
        assert!(matches!(
            Policy::compile(&bad, None),
            Err(PolicyError::Range { .. })
        ));
        let alpha = TagPolicy {
            semver: None,
            alphabetical: Some(OrderPolicy {
                order: SortOrder::Asc,
            }),
            numerical: None,
        };
        let f = FilterTags {
            pattern: "([".into(),
            extract: None,
        };
        assert!(matches!(
            Policy::compile(&alpha, Some(&f)),
            Err(PolicyError::Pattern { .. })
        ));
        let f = FilterTags {
            pattern: "^main-(?P<ts>[0-9]+)$".into(),
            extract: Some("sha".into()),
        };
        assert!(matches!(
            Policy::compile(&alpha, Some(&f)),
            Err(PolicyError::NoSuchGroup { .. })
        ));
        let none = TagPolicy {
            semver: None,
            alphabetical: None,
            numerical: None,
        };
        assert_eq!(
            Policy::compile(&none, None).unwrap_err(),
            PolicyError::NoOrdering
        );
    }

    #[test]
    fn numerical_order_is_not_lexical() {
        let tags = ["9", "10", "100", "abc"];
        assert_eq!(
            ordered(true, SortOrder::Asc, None).select(tags),
            Some("100")
        );
        assert_eq!(ordered(true, SortOrder::Desc, None).select(tags), Some("9"));
        // Lexically "9" is the largest.
        assert_eq!(
            ordered(false, SortOrder::Asc, Some(("^[0-9]+$", None))).select(tags),
            Some("9")
        );
        assert_eq!(
            ordered(false, SortOrder::Desc, Some(("^[0-9]+$", None))).select(tags),
            Some("10")
        );
    }

    #[test]
    fn regex_extraction_orders_on_the_named_group() {
        let tags = [
            "main-a1b2c3-1700000100",
            "main-ffffff-1700000050",
            "dev-000000-1800000000",
            "main-zzz",
        ];
        let p = ordered(
            true,
            SortOrder::Asc,
            Some((r"^main-[a-f0-9]+-(?P<ts>[0-9]+)$", Some("ts"))),
        );
        assert_eq!(p.select(tags), Some("main-a1b2c3-1700000100"));
        // Lexical on the extracted part, too.
        let p = ordered(
            false,
            SortOrder::Asc,
            Some((r"^main-(?P<sha>[a-f0-9]+)-", Some("sha"))),
        );
        assert_eq!(p.select(tags), Some("main-ffffff-1700000050"));
    }

    #[test]
    fn semver_on_an_extracted_group() {
        let f = FilterTags {
            pattern: r"^web-(?P<v>.+)$".into(),
            extract: Some("v".into()),
        };
        let p = Policy::compile(
            &TagPolicy {
                semver: Some(SemverPolicy { range: "<2".into() }),
                alphabetical: None,
                numerical: None,
            },
            Some(&f),
        )
        .unwrap();
        assert_eq!(
            p.select(["web-1.2.0", "web-1.10.0", "web-2.0.0", "1.11.0"]),
            Some("web-1.10.0")
        );
    }

    #[test]
    fn newer_than_follows_the_policy() {
        let p = semver(">=1.0.0 <2.0.0");
        assert!(p.is_newer("1.4.1", "1.4.0"));
        assert!(!p.is_newer("1.4.0", "1.4.0"));
        assert!(!p.is_newer("1.3.0", "1.4.0"));
        assert!(!p.is_newer("2.0.0", "1.4.0"), "out of range is never newer");
        let desc = ordered(true, SortOrder::Desc, None);
        assert!(desc.is_newer("1", "2"));
    }

    #[test]
    fn empty_and_unmatched_lists_select_nothing() {
        assert_eq!(semver("*").select([]), None);
        assert_eq!(semver("*").select(["latest", "main"]), None);
    }
}
