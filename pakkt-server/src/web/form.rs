//! Reading the panel's forms into the API's request types.
//!
//! A form is read as text pairs (nothing about it can make the server
//! panic), then each field is parsed on its own so that every mistake is
//! named next to its field. What parses becomes the very request type the
//! JSON API takes, handed to the same use case: the domain checks and their
//! messages are the API's.

use std::collections::BTreeMap;

use chrono::{DateTime, NaiveDateTime, Utc};
use pakkt_core::firewall::{Action, Chain, FwProtocol, LimitUnit};
use pakkt_core::ip_list::ListType;
use pakkt_core::rule::{Protocol, RuleType};
use pakkt_core::wire::{CreateEngineRuleRequest, CreateFirewallRuleRequest, CreateIpEntryRequest};
use pakkt_core::{Error, ErrorKind};
use serde::de::DeserializeOwned;

/// Largest form body the panel reads.
pub const FORM_LIMIT: usize = 16 * 1024;

/// A submitted form: its values, and what is wrong with them.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct FormState {
    /// Which form (`engine`, `ip`, `firewall`, `template`, `agent`, `key`).
    pub name: &'static str,
    /// The values as sent, to fill the form again.
    pub values: BTreeMap<String, String>,
    /// Messages by field.
    pub errors: BTreeMap<String, String>,
    /// A message about the form as a whole.
    pub general: Option<String>,
}

impl FormState {
    /// An empty form.
    pub fn empty(name: &'static str) -> Self {
        Self { name, ..Self::default() }
    }

    /// The form as sent.
    pub fn from_pairs(name: &'static str, pairs: Vec<(String, String)>) -> Self {
        let mut values = BTreeMap::new();
        for (k, v) in pairs {
            values.entry(k).or_insert(v);
        }
        Self { name, values, ..Self::default() }
    }

    /// A field's value, trimmed (empty if absent).
    pub fn value(&self, field: &str) -> &str {
        self.values.get(field).map_or("", |v| v.trim())
    }

    /// Whether any message was recorded.
    pub fn has_errors(&self) -> bool {
        !self.errors.is_empty() || self.general.is_some()
    }

    fn fail(&mut self, field: &str, message: impl Into<String>) {
        self.errors.entry(field.to_owned()).or_insert_with(|| message.into());
    }

    /// Records a use case's refusal: next to its field when the form has
    /// that field, else above the form.
    pub fn refuse(&mut self, e: &Error, fields: &[&str]) {
        match e {
            Error::Invalid(invalid) if fields.contains(&invalid.field) => self.fail(invalid.field, &invalid.message),
            other if other.kind() == ErrorKind::Internal => {
                self.general = Some("Internal error: nothing was changed. The cause is in the server's log.".into());
            }
            other => self.general = Some(capitalise(&other.to_string())),
        }
    }

    fn number<T: std::str::FromStr>(&mut self, field: &str, default: Option<T>, range: &str) -> Option<T> {
        let raw = self.value(field).to_owned();
        if raw.is_empty() {
            if default.is_none() {
                self.fail(field, "is required");
            }
            return default;
        }
        let parsed = raw.parse().ok();
        if parsed.is_none() {
            self.fail(field, format!("must be a whole number from {range}"));
        }
        parsed
    }

    /// `None` when refused (the message is recorded), `Some(None)` when
    /// left empty.
    #[allow(clippy::option_option)]
    fn optional_number<T: std::str::FromStr>(&mut self, field: &str, range: &str) -> Option<Option<T>> {
        if self.value(field).is_empty() { Some(None) } else { self.number(field, None, range).map(Some) }
    }

    /// A value spelled as the API spells it (a serde enum of the wire types).
    fn spelled<T: DeserializeOwned>(&mut self, field: &str, expected: &str) -> Option<T> {
        let raw = self.value(field).to_owned();
        let parsed = serde_json::from_value(serde_json::Value::String(raw)).ok();
        if parsed.is_none() {
            self.fail(field, format!("must be one of {expected}"));
        }
        parsed
    }

    /// As [`Self::optional_number`].
    #[allow(clippy::option_option)]
    fn optional_spelled<T: DeserializeOwned>(&mut self, field: &str, expected: &str) -> Option<Option<T>> {
        if self.value(field).is_empty() { Some(None) } else { self.spelled(field, expected).map(Some) }
    }

    fn text(&self, field: &str) -> String {
        self.values.get(field).cloned().unwrap_or_default()
    }

    fn optional_text(&self, field: &str) -> Option<String> {
        let v = self.value(field);
        (!v.is_empty()).then(|| v.to_owned())
    }
}

fn capitalise(s: &str) -> String {
    let mut chars = s.chars();
    chars.next().map_or_else(String::new, |c| c.to_uppercase().chain(chars).collect())
}

/// Reads `application/x-www-form-urlencoded` pairs. Text that is not
/// UTF-8 once decoded is refused, as the API refuses it, instead of being
/// read with replacement characters.
pub fn pairs(body: &[u8]) -> Result<Vec<(String, String)>, String> {
    let refused = || "the form could not be read: it is not UTF-8 text".to_owned();
    let mut pairs = Vec::new();
    for field in body.split(|b| *b == b'&').filter(|f| !f.is_empty()) {
        let (name, value) = match field.iter().position(|b| *b == b'=') {
            Some(at) => (&field[..at], &field[at + 1..]),
            None => (field, &field[field.len()..]),
        };
        let name = String::from_utf8(decoded(name)).map_err(|_| refused())?;
        let value = String::from_utf8(decoded(value)).map_err(|_| refused())?;
        pairs.push((name, value));
    }
    Ok(pairs)
}

/// A form component's bytes: `+` is a space, `%XX` a byte (a `%` not
/// followed by two hex digits stands for itself).
fn decoded(raw: &[u8]) -> Vec<u8> {
    let spaced: Vec<u8> = raw.iter().map(|b| if *b == b'+' { b' ' } else { *b }).collect();
    percent_encoding::percent_decode(&spaced).collect()
}

/// The engine-rule form's fields.
pub const ENGINE_FIELDS: &[&str] = &[
    "name",
    "protocol",
    "port_range_start",
    "port_range_end",
    "rule_type",
    "max_pps",
    "max_port_pps",
    "min_pkt_size",
    "max_pkt_size",
];

/// The IP-list form's fields.
pub const IP_FIELDS: &[&str] = &["list_type", "ip_address", "reason", "expires_at"];

/// The firewall form's fields.
pub const FIREWALL_FIELDS: &[&str] =
    &["name", "chain", "protocol", "port_start", "port_end", "action", "limit_rate", "limit_unit", "conntrack"];

const U16: &str = "0 to 65535";
const U32: &str = "0 to 4294967295";

/// The engine-rule form as the API's request, or the form with messages.
pub fn engine_rule(form: &mut FormState) -> Option<CreateEngineRuleRequest> {
    let protocol = form.number::<u8>("protocol", None, "0, 1, 6 or 17").and_then(|n| match Protocol::try_from(n) {
        Ok(p) => Some(p),
        Err(e) => {
            form.fail("protocol", e.to_string());
            None
        }
    });
    let rule_type = form.number::<u8>("rule_type", None, "0, 1, 2 or 3").and_then(|n| match RuleType::try_from(n) {
        Ok(t) => Some(t),
        Err(e) => {
            form.fail("rule_type", e.to_string());
            None
        }
    });
    let start = form.number::<u16>("port_range_start", None, U16);
    let end = form.number::<u16>("port_range_end", None, U16);
    let max_pps = form.number::<u32>("max_pps", Some(0), U32);
    let max_port_pps = form.number::<u32>("max_port_pps", Some(0), U32);
    let min_pkt_size = form.number::<u16>("min_pkt_size", Some(0), U16);
    let max_pkt_size = form.number::<u16>("max_pkt_size", Some(0), U16);
    Some(CreateEngineRuleRequest {
        name: form.text("name"),
        port_range_start: start?,
        port_range_end: end?,
        protocol: protocol?,
        rule_type: rule_type?,
        max_pps: max_pps?,
        max_port_pps: max_port_pps?,
        min_pkt_size: min_pkt_size?,
        max_pkt_size: max_pkt_size?,
    })
}

/// A time as `2026-03-17T12:00:00Z` or, from a `datetime-local` input,
/// `2026-03-17T12:00` (taken as UTC).
fn parse_time(raw: &str) -> Option<DateTime<Utc>> {
    if let Ok(t) = DateTime::parse_from_rfc3339(raw) {
        return Some(t.with_timezone(&Utc));
    }
    ["%Y-%m-%dT%H:%M", "%Y-%m-%dT%H:%M:%S", "%Y-%m-%d %H:%M", "%Y-%m-%d %H:%M:%S"]
        .iter()
        .find_map(|f| NaiveDateTime::parse_from_str(raw, f).ok())
        .map(|t| t.and_utc())
}

/// The IP-list form as the API's request, or the form with messages.
pub fn ip_entry(form: &mut FormState) -> Option<CreateIpEntryRequest> {
    let list_type = form.value("list_type").parse::<ListType>().map_err(|_| ()).ok();
    if list_type.is_none() {
        form.fail("list_type", "must be blacklist or whitelist");
    }
    let expires_at = match form.optional_text("expires_at") {
        None => Some(None),
        Some(raw) => {
            let parsed = parse_time(&raw);
            if parsed.is_none() {
                form.fail("expires_at", "must be a date and time such as 2026-03-17T12:00 (UTC)");
            }
            parsed.map(Some)
        }
    };
    Some(CreateIpEntryRequest {
        list_type: list_type?,
        ip_address: form.text("ip_address"),
        reason: form.optional_text("reason"),
        expires_at: expires_at?,
    })
}

/// The firewall form as the API's request, or the form with messages.
pub fn firewall_rule(form: &mut FormState) -> Option<CreateFirewallRuleRequest> {
    let chain = form.optional_spelled::<Chain>("chain", "input, forward or output");
    let protocol = form.optional_spelled::<FwProtocol>("protocol", "tcp, udp, icmp or any");
    let port_start = form.optional_number::<u16>("port_start", U16);
    let port_end = form.optional_number::<u16>("port_end", U16);
    let action = form.spelled::<Action>("action", "drop, accept, reject or limit");
    let limit_rate = form.optional_number::<u32>("limit_rate", U32);
    let limit_unit = form.optional_spelled::<LimitUnit>("limit_unit", "second or minute");
    Some(CreateFirewallRuleRequest {
        name: form.text("name"),
        chain: chain?,
        protocol: protocol?,
        port_start: port_start?,
        port_end: port_end?,
        action: action?,
        limit_rate: limit_rate?,
        limit_unit: limit_unit?,
        conntrack: form.optional_text("conntrack"),
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn forms_decode_like_browsers_send_them_and_refuse_what_is_not_utf8() {
        let read = pairs(b"name=VPS+Paris&csrf=a%2Bb%3D&empty=&flag&caf%C3%A9=%E2%82%AC&pct=100%&x=%zz").expect("form");
        let got: Vec<(&str, &str)> = read.iter().map(|(k, v)| (k.as_str(), v.as_str())).collect();
        assert_eq!(
            got,
            [
                ("name", "VPS Paris"),
                ("csrf", "a+b="),
                ("empty", ""),
                ("flag", ""),
                ("café", "€"),
                ("pct", "100%"),
                ("x", "%zz")
            ]
        );
        assert!(pairs(b"name=%FF%FE").is_err(), "invalid UTF-8 is refused, not replaced");
        assert!(pairs(b"na%C3me=x").is_err());
        assert_eq!(pairs(b"").expect("empty"), Vec::<(String, String)>::new());
    }

    fn form(name: &'static str, pairs: &[(&str, &str)]) -> FormState {
        FormState::from_pairs(name, pairs.iter().map(|(k, v)| ((*k).to_owned(), (*v).to_owned())).collect())
    }

    #[test]
    fn an_engine_rule_form_becomes_the_api_request() {
        let mut f = form(
            "engine",
            &[
                ("name", "FiveM"),
                ("protocol", "17"),
                ("port_range_start", "30120"),
                ("port_range_end", "30120"),
                ("rule_type", "1"),
                ("max_pps", "500"),
                ("max_port_pps", ""),
            ],
        );
        let request = engine_rule(&mut f).expect("parses");
        assert!(!f.has_errors());
        assert_eq!(request.protocol, Protocol::Udp);
        assert_eq!((request.port_range_start, request.max_pps, request.max_port_pps), (30120, 500, 0));
    }

    #[test]
    fn each_bad_field_gets_its_own_message() {
        let mut f = form(
            "engine",
            &[("protocol", "99"), ("port_range_start", "70000"), ("port_range_end", "x"), ("rule_type", "1")],
        );
        assert!(engine_rule(&mut f).is_none());
        assert!(f.errors["protocol"].contains("unknown protocol 99"));
        assert!(f.errors["port_range_start"].contains("0 to 65535"));
        assert!(f.errors["port_range_end"].contains("0 to 65535"));
        assert!(!f.errors.contains_key("rule_type"));
    }

    #[test]
    fn ip_and_firewall_forms_parse_optional_fields() {
        let mut f = form(
            "ip",
            &[("list_type", "blacklist"), ("ip_address", "203.0.113.0/24"), ("expires_at", "2030-01-02T03:04")],
        );
        let entry = ip_entry(&mut f).expect("parses");
        assert_eq!(entry.expires_at.map(|t| t.to_rfc3339()), Some("2030-01-02T03:04:00+00:00".into()));
        assert_eq!(entry.reason, None);
        let mut f = form("ip", &[("list_type", "greylist"), ("expires_at", "tomorrow")]);
        assert!(ip_entry(&mut f).is_none());
        assert_eq!(f.errors.len(), 2);

        let mut f = form(
            "firewall",
            &[("name", "Block Redis"), ("protocol", "tcp"), ("port_start", "6379"), ("action", "drop"), ("chain", "")],
        );
        let rule = firewall_rule(&mut f).expect("parses");
        assert_eq!((rule.chain, rule.protocol, rule.port_end), (None, Some(FwProtocol::Tcp), None));
        let mut f = form("firewall", &[("action", "explode"), ("limit_unit", "hour")]);
        assert!(firewall_rule(&mut f).is_none());
        assert!(f.errors["action"].contains("drop, accept"));
        assert!(f.errors["limit_unit"].contains("second or minute"));
    }

    #[test]
    fn refusals_land_next_to_their_field_or_above_the_form() {
        let mut f = FormState::empty("engine");
        f.refuse(
            &Error::Invalid(pakkt_core::validation::Invalid::new("port_range_end", "must be ≥ start")),
            ENGINE_FIELDS,
        );
        assert_eq!(f.errors["port_range_end"], "must be ≥ start");
        f.refuse(&Error::AgentNotConnected, ENGINE_FIELDS);
        assert!(f.general.as_deref().is_some_and(|g| g.starts_with("Agent not yet connected")));
    }

    #[test]
    fn garbage_bodies_are_errors_not_panics() {
        assert!(pairs(b"a=1&b=%ZZ").is_ok() || pairs(b"a=1&b=%ZZ").is_err());
        assert_eq!(pairs(b"a=1&a=2").expect("pairs").len(), 2);
        let f = FormState::from_pairs("x", pairs(b"a=1&a=2").expect("pairs"));
        assert_eq!(f.value("a"), "1", "the first value wins");
    }
}
