//! Durations in Go's notation (`30s`, `1m30s`, `2h`), as Kubernetes users write them.

use std::borrow::Cow;
use std::fmt;
use std::time::Duration;

use schemars::{JsonSchema, Schema, SchemaGenerator, json_schema};
use serde::{Deserialize, Serialize};

/// The pattern the API server enforces on every duration field.
pub const DURATION_PATTERN: &str = r"^([0-9]+(\.[0-9]+)?(ms|s|m|h))+$";

/// A duration as written in a manifest, e.g. `1m30s`. Units: `ms`, `s`, `m`, `h`.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(transparent)]
pub struct GoDuration(pub String);

/// A duration string that does not follow Go's notation.
#[derive(Debug, thiserror::Error, PartialEq, Eq)]
#[error(
    "invalid duration {input:?}: expected a sequence like 30s, 1m30s or 2h (units ms, s, m, h)"
)]
pub struct DurationError {
    input: String,
}

impl GoDuration {
    pub fn new(s: impl Into<String>) -> Self {
        Self(s.into())
    }

    /// Parses the duration. Each component is a decimal number and a unit.
    pub fn parse(&self) -> Result<Duration, DurationError> {
        parse_go_duration(&self.0)
    }
}

impl fmt::Display for GoDuration {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

impl JsonSchema for GoDuration {
    fn schema_name() -> Cow<'static, str> {
        "GoDuration".into()
    }

    fn inline_schema() -> bool {
        true
    }

    fn json_schema(_: &mut SchemaGenerator) -> Schema {
        json_schema!({
            "type": "string",
            "pattern": DURATION_PATTERN,
            "description": "A duration such as 30s, 1m30s or 2h (units ms, s, m, h)."
        })
    }
}

/// Parses `1h2m3.5s`-style strings. Hand-written because humantime's grammar differs from
/// Go's (it reads `m` as minutes only with a space before the next component and rejects
/// fractions), and the API server's pattern above is the contract users see.
pub fn parse_go_duration(input: &str) -> Result<Duration, DurationError> {
    let err = || DurationError {
        input: input.to_string(),
    };
    if input.is_empty() {
        return Err(err());
    }
    let mut total = 0f64;
    let mut rest = input;
    while !rest.is_empty() {
        let num_len = rest
            .find(|c: char| !(c.is_ascii_digit() || c == '.'))
            .ok_or_else(err)?;
        if num_len == 0 {
            return Err(err());
        }
        let value: f64 = rest[..num_len].parse().map_err(|_| err())?;
        rest = &rest[num_len..];
        let (unit_secs, unit_len) = if rest.starts_with("ms") {
            (0.001, 2)
        } else if rest.starts_with('s') {
            (1.0, 1)
        } else if rest.starts_with('m') {
            (60.0, 1)
        } else if rest.starts_with('h') {
            (3600.0, 1)
        } else {
            return Err(err());
        };
        total += value * unit_secs;
        rest = &rest[unit_len..];
    }
    if !total.is_finite() || total > u32::MAX as f64 {
        return Err(err());
    }
    Ok(Duration::from_secs_f64(total))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_go_durations() {
        let cases = [
            ("30s", 30_000),
            ("1m30s", 90_000),
            ("2h", 7_200_000),
            ("1h0m5s", 3_605_000),
            ("250ms", 250),
            ("1.5s", 1_500),
            ("0s", 0),
        ];
        for (input, ms) in cases {
            assert_eq!(
                parse_go_duration(input).unwrap(),
                Duration::from_millis(ms),
                "{input}"
            );
        }
    }

    #[test]
    fn rejects_other_notations() {
        for input in ["", "5", "s", "1d", "1 m", "-1s", "1m30", "1.2.3s", "1us"] {
            assert!(parse_go_duration(input).is_err(), "{input} should fail");
        }
    }

    #[test]
    fn pattern_agrees_with_parser() {
        let re = regex::Regex::new(DURATION_PATTERN).unwrap();
        for input in [
            "30s", "1m30s", "1.5h", "250ms", "", "5", "1d", "1 m", "-1s", "1m30", "1us",
        ] {
            assert_eq!(
                re.is_match(input),
                parse_go_duration(input).is_ok(),
                "pattern and parser disagree on {input:?}"
            );
        }
    }
}
