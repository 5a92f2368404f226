//! Which chart version a `version:` asks for: an exact one (`1.4.2`) or a semver range
//! (`~1.4`, `>=1.4 <2`, `1.4.x`, `^1 || ^2`, a bare `1.4` meaning any 1.4.x as in Helm),
//! and the highest published version that satisfies it. Pure.

use super::tag_policy::{Range, parse_version};

/// What `version:` asks for.
#[derive(Debug, Clone)]
pub enum Wanted {
    Exact(String),
    Range(Range),
}

impl Wanted {
    pub fn parse(version: &str) -> Result<Self, String> {
        let v = version.trim();
        if v.is_empty() || v.len() > 128 {
            return Err("a version or range of 1 to 128 characters is needed".into());
        }
        if semver::Version::parse(v.strip_prefix('v').unwrap_or(v)).is_ok() {
            return Ok(Wanted::Exact(v.to_string()));
        }
        // A partial version (`1`, `1.4`) is every version under it, as in Helm.
        let partial = v
            .strip_prefix('v')
            .unwrap_or(v)
            .split('.')
            .all(|p| !p.is_empty() && p.bytes().all(|b| b.is_ascii_digit()));
        let range = if partial {
            format!("={}", v.strip_prefix('v').unwrap_or(v))
        } else {
            v.to_string()
        };
        Range::parse(&range)
            .map(Wanted::Range)
            .map_err(|e| format!("neither a version nor a semver range: {e}"))
    }

    /// The highest of `versions` this asks for (versions that are not semver are only
    /// taken by an exact match).
    pub fn select<'a>(&self, versions: impl IntoIterator<Item = &'a str>) -> Option<&'a str> {
        match self {
            Wanted::Exact(want) => {
                let want_v = parse_version(want);
                versions
                    .into_iter()
                    .find(|v| *v == want || (want_v.is_some() && parse_version(v) == want_v))
            }
            Wanted::Range(range) => versions
                .into_iter()
                .filter_map(|v| parse_version(v).map(|p| (p, v)))
                .filter(|(p, _)| range.matches(p))
                .max_by(|a, b| a.0.cmp(&b.0))
                .map(|(_, v)| v),
        }
    }

    pub fn is_range(&self) -> bool {
        matches!(self, Wanted::Range(_))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const PUBLISHED: [&str; 7] = [
        "1.3.0",
        "1.4.0",
        "1.4.2",
        "1.5.0-rc.1",
        "1.10.1",
        "2.0.0",
        "latest",
    ];

    fn pick(version: &str) -> Option<&'static str> {
        Wanted::parse(version).unwrap().select(PUBLISHED)
    }

    #[test]
    fn exact_versions_and_ranges_pick_the_highest_match() {
        assert_eq!(pick("1.4.0"), Some("1.4.0"));
        assert_eq!(pick("v1.4.0"), Some("1.4.0"));
        assert_eq!(pick("1.4.9"), None);
        assert_eq!(pick("~1.4"), Some("1.4.2"));
        assert_eq!(pick("1.4"), Some("1.4.2"), "a partial version is any 1.4.x");
        assert_eq!(pick("1"), Some("1.10.1"));
        assert_eq!(
            pick(">=1.4 <2"),
            Some("1.10.1"),
            "numeric, not lexical, order"
        );
        assert_eq!(pick("^1 || ^2"), Some("2.0.0"));
        assert_eq!(pick("1.4.x"), Some("1.4.2"));
        assert_eq!(pick(">=1.5.0-rc.0 <1.6"), Some("1.5.0-rc.1"));
        assert_eq!(
            pick("^1.4"),
            Some("1.10.1"),
            "pre-releases only when asked for"
        );
        assert!(Wanted::parse("~1.4").unwrap().is_range());
        assert!(!Wanted::parse("1.4.2").unwrap().is_range());
        assert!(Wanted::parse(">>1").is_err());
        assert!(Wanted::parse("").is_err());
    }
}
