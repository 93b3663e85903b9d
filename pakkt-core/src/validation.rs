//! The one shape every domain-rule violation takes: which field, and why.

use std::fmt;

/// A value that fits the API's schema but breaks a domain rule (the API
/// answers 422 with this message).
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub struct Invalid {
    /// The request field at fault, as the API spells it (`port_range_end`).
    pub field: &'static str,
    /// A sentence a user can act on.
    pub message: String,
}

impl Invalid {
    /// A violation of `field`.
    pub fn new(field: &'static str, message: impl Into<String>) -> Self {
        Self { field, message: message.into() }
    }
}

impl fmt::Display for Invalid {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}: {}", self.field, self.message)
    }
}

/// Longest display name accepted for agents, rules and templates.
pub const MAX_NAME_CHARS: usize = 100;

/// Longest free-text reason on an IP list entry.
pub const MAX_REASON_CHARS: usize = 500;

/// Whether a timestamp is one the API accepts: years 0001 to 9999, the
/// range RFC 3339 can write (a later one would be echoed back as
/// `+10000-…`, which is not RFC 3339).
pub fn rfc3339_year(at: chrono::DateTime<chrono::Utc>) -> bool {
    use chrono::Datelike;
    (1..=9999).contains(&at.year())
}

/// Serde for optional timestamps that refuses years outside 0001–9999, so
/// that a body carrying one is a 400 like any other malformed value.
pub mod rfc3339_opt {
    use chrono::{DateTime, Utc};
    use serde::{Deserialize, Deserializer};

    /// Reads an optional RFC 3339 timestamp within years 0001–9999.
    pub fn deserialize<'de, D: Deserializer<'de>>(deserializer: D) -> Result<Option<DateTime<Utc>>, D::Error> {
        let at = Option::<DateTime<Utc>>::deserialize(deserializer)?;
        match at {
            Some(at) if !super::rfc3339_year(at) => {
                Err(serde::de::Error::custom(format!("{at} is outside the years 0001 to 9999")))
            }
            other => Ok(other),
        }
    }
}

/// A human-given name: trimmed, 1..=100 characters, no control characters.
pub fn name(field: &'static str, raw: &str) -> Result<String, Invalid> {
    let trimmed = raw.trim();
    if trimmed.is_empty() {
        return Err(Invalid::new(field, "must not be empty"));
    }
    if trimmed.chars().count() > MAX_NAME_CHARS {
        return Err(Invalid::new(field, format!("must be at most {MAX_NAME_CHARS} characters")));
    }
    if trimmed.chars().any(char::is_control) {
        return Err(Invalid::new(field, "must not contain control characters"));
    }
    Ok(trimmed.to_owned())
}

/// Optional free text: trimmed, empty becomes `None`, at most `max` characters.
pub fn free_text(field: &'static str, raw: Option<&str>, max: usize) -> Result<Option<String>, Invalid> {
    let Some(trimmed) = raw.map(str::trim).filter(|t| !t.is_empty()) else {
        return Ok(None);
    };
    if trimmed.chars().count() > max {
        return Err(Invalid::new(field, format!("must be at most {max} characters")));
    }
    if trimmed.chars().any(|c| c.is_control() && c != '\n' && c != '\t') {
        return Err(Invalid::new(field, "must not contain control characters"));
    }
    Ok(Some(trimmed.to_owned()))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn timestamps_outside_rfc_3339_years_are_refused_when_read() {
        use crate::wire::CreateIpEntryRequest;
        let body = |at: &str| format!(r#"{{"list_type":"blacklist","ip_address":"198.51.100.1","expires_at":"{at}"}}"#);
        assert!(serde_json::from_str::<CreateIpEntryRequest>(&body("9999-12-31T23:59:59Z")).is_ok());
        let err =
            serde_json::from_str::<CreateIpEntryRequest>(&body("+10000-01-01T00:00:00Z")).expect_err("year 10000");
        assert!(err.to_string().contains("0001 to 9999"), "{err}");
        assert!(!rfc3339_year(chrono::DateTime::<chrono::Utc>::MIN_UTC));
    }

    #[test]
    fn names_are_trimmed_and_bounded() {
        assert_eq!(name("name", "  VPS Paris ").expect("ok"), "VPS Paris");
        assert_eq!(name("name", "   ").expect_err("blank").field, "name");
        assert!(name("name", &"x".repeat(101)).is_err());
        assert!(name("name", &"é".repeat(100)).is_ok());
        assert!(name("name", "a\u{0}b").is_err());
    }

    #[test]
    fn free_text_is_optional_and_bounded() {
        assert_eq!(free_text("reason", None, 10).expect("none"), None);
        assert_eq!(free_text("reason", Some("  "), 10).expect("blank"), None);
        assert_eq!(free_text("reason", Some(" flood "), 10).expect("ok").as_deref(), Some("flood"));
        assert!(free_text("reason", Some("12345678901"), 10).is_err());
        assert!(free_text("reason", Some("bell\u{7}"), 10).is_err());
    }
}
