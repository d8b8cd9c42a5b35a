//! Timestamps as the API shows them: RFC 3339, UTC, millisecond precision
//! (`2020-01-23T17:57:34.402Z`).

use time::format_description::well_known::Rfc3339;
use time::macros::format_description;
use time::OffsetDateTime;

/// Parses an RFC 3339 timestamp (any offset) into Unix milliseconds.
pub fn parse_ms(s: &str) -> Option<i64> {
    let t = OffsetDateTime::parse(s, &Rfc3339).ok()?;
    i64::try_from(t.unix_timestamp_nanos() / 1_000_000).ok()
}

/// Formats Unix milliseconds as RFC 3339 UTC with milliseconds.
pub fn format_ms(ms: i64) -> String {
    let fmt =
        format_description!("[year]-[month]-[day]T[hour]:[minute]:[second].[subsecond digits:3]Z");
    OffsetDateTime::from_unix_timestamp_nanos(i128::from(ms) * 1_000_000)
        .ok()
        .and_then(|t| t.format(&fmt).ok())
        .unwrap_or_default()
}

/// Normalises a timestamp from ECS to the API form; a value that is not
/// RFC 3339 is kept as ECS sent it rather than lost.
pub fn normalize(s: &str) -> String {
    match parse_ms(s) {
        Some(ms) => format_ms(ms),
        None => s.to_owned(),
    }
}

/// Reads a time given as RFC 3339 text (events, the v1 API) or as epoch
/// seconds (the ECS API's JSON answers) as RFC 3339 text; `null` or absent
/// is `None` (use with `#[serde(default, deserialize_with = ...)]`).
pub fn text_or_seconds<'de, D: serde::Deserializer<'de>>(d: D) -> Result<Option<String>, D::Error> {
    #[derive(serde::Deserialize)]
    #[serde(untagged)]
    enum Time {
        Text(String),
        Seconds(f64),
    }
    Ok(
        match <Option<Time> as serde::Deserialize>::deserialize(d)? {
            None => None,
            Some(Time::Text(s)) => Some(s),
            Some(Time::Seconds(s)) => Some(format_ms((s * 1000.0).round() as i64)),
        },
    )
}

/// The current time in Unix milliseconds.
pub fn now_ms() -> i64 {
    i64::try_from(OffsetDateTime::now_utc().unix_timestamp_nanos() / 1_000_000).unwrap_or(0)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn normalises_to_utc_milliseconds() {
        assert_eq!(
            normalize("2020-01-23T17:57:34.402Z"),
            "2020-01-23T17:57:34.402Z"
        );
        assert_eq!(
            normalize("2020-01-23T17:57:34Z"),
            "2020-01-23T17:57:34.000Z"
        );
        assert_eq!(
            normalize("2020-01-23T18:57:34.4029+01:00"),
            "2020-01-23T17:57:34.402Z"
        );
        assert_eq!(normalize("yesterday"), "yesterday");
        assert_eq!(parse_ms("1970-01-01T00:00:01.5Z"), Some(1500));
        assert_eq!(format_ms(1500), "1970-01-01T00:00:01.500Z");
    }
}
