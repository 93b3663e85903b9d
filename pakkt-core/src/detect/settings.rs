//! An agent's detection settings (DESIGN §4): what the API's
//! `GET|PUT /api/v1/agents/{id}/detection` carries.

use serde::{Deserialize, Serialize};

use crate::validation::Invalid;

/// The lowest `min_pps`.
pub const MIN_PPS_FLOOR: u32 = 100;
/// The highest `min_pps`.
pub const MIN_PPS_CEILING: u32 = 100_000_000;
/// The shortest `quiet_seconds`.
pub const QUIET_SECONDS_MIN: u32 = 5;
/// The longest `quiet_seconds` (an hour).
pub const QUIET_SECONDS_MAX: u32 = 3_600;
/// The lowest `blacklist_source_pps`.
pub const BLACKLIST_SOURCE_PPS_MIN: u32 = 10;
/// The shortest `blacklist_minutes`.
pub const BLACKLIST_MINUTES_MIN: u32 = 1;
/// The longest `blacklist_minutes` (a week).
pub const BLACKLIST_MINUTES_MAX: u32 = 10_080;

/// How an agent detects attacks and acts on them.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub struct DetectionSettings {
    /// Whether the agent detects at all.
    pub enabled: bool,
    /// The lowest rate, in packets a second, that can open an attack.
    pub min_pps: u32,
    /// How long a key must stay below its threshold for its attack to end.
    pub quiet_seconds: u32,
    /// Whether heavy, non-spoofed sources of an attack are blacklisted.
    pub auto_blacklist: bool,
    /// The rate above which a source of an attack is blacklisted.
    pub blacklist_source_pps: u32,
    /// How long such an entry lasts.
    pub blacklist_minutes: u32,
}

impl Default for DetectionSettings {
    /// DESIGN §4's defaults: on, 20,000 pps, 30 s of quiet, blacklisting
    /// sources above 5,000 pps for an hour.
    fn default() -> Self {
        Self {
            enabled: true,
            min_pps: 20_000,
            quiet_seconds: 30,
            auto_blacklist: true,
            blacklist_source_pps: 5_000,
            blacklist_minutes: 60,
        }
    }
}

/// A request's fields: missing ones take the defaults (a PUT replaces the
/// whole object).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct DetectionFields {
    /// `enabled`.
    pub enabled: Option<bool>,
    /// `min_pps`.
    pub min_pps: Option<u32>,
    /// `quiet_seconds`.
    pub quiet_seconds: Option<u32>,
    /// `auto_blacklist`.
    pub auto_blacklist: Option<bool>,
    /// `blacklist_source_pps`.
    pub blacklist_source_pps: Option<u32>,
    /// `blacklist_minutes`.
    pub blacklist_minutes: Option<u32>,
}

impl DetectionSettings {
    /// Settings from a request's fields, missing ones at their defaults;
    /// the first field outside its range is refused, naming it.
    pub fn new(fields: DetectionFields) -> Result<Self, Invalid> {
        let defaults = Self::default();
        let settings = Self {
            enabled: fields.enabled.unwrap_or(defaults.enabled),
            min_pps: fields.min_pps.unwrap_or(defaults.min_pps),
            quiet_seconds: fields.quiet_seconds.unwrap_or(defaults.quiet_seconds),
            auto_blacklist: fields.auto_blacklist.unwrap_or(defaults.auto_blacklist),
            blacklist_source_pps: fields.blacklist_source_pps.unwrap_or(defaults.blacklist_source_pps),
            blacklist_minutes: fields.blacklist_minutes.unwrap_or(defaults.blacklist_minutes),
        };
        settings.check()?;
        Ok(settings)
    }

    /// Whether every field is within its range.
    pub fn check(&self) -> Result<(), Invalid> {
        let within = |field: &'static str, value: u32, low: u32, high: u32| {
            if (low..=high).contains(&value) {
                Ok(())
            } else if high == u32::MAX {
                Err(Invalid::new(field, format!("must be at least {low}, got {value}")))
            } else {
                Err(Invalid::new(field, format!("must be between {low} and {high}, got {value}")))
            }
        };
        within("min_pps", self.min_pps, MIN_PPS_FLOOR, MIN_PPS_CEILING)?;
        within("quiet_seconds", self.quiet_seconds, QUIET_SECONDS_MIN, QUIET_SECONDS_MAX)?;
        within("blacklist_source_pps", self.blacklist_source_pps, BLACKLIST_SOURCE_PPS_MIN, u32::MAX)?;
        within("blacklist_minutes", self.blacklist_minutes, BLACKLIST_MINUTES_MIN, BLACKLIST_MINUTES_MAX)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn missing_fields_take_the_defaults() {
        assert_eq!(DetectionSettings::new(DetectionFields::default()), Ok(DetectionSettings::default()));
        let set = DetectionSettings::new(DetectionFields { min_pps: Some(500), ..DetectionFields::default() });
        assert_eq!(set, Ok(DetectionSettings { min_pps: 500, ..DetectionSettings::default() }));
    }

    #[test]
    fn each_range_is_enforced_at_both_ends() {
        let with = |f: DetectionFields| DetectionSettings::new(f).map_err(|e| e.field);
        let none = DetectionFields::default();
        assert_eq!(with(DetectionFields { min_pps: Some(99), ..none }), Err("min_pps"));
        assert!(with(DetectionFields { min_pps: Some(100), ..none }).is_ok());
        assert!(with(DetectionFields { min_pps: Some(100_000_000), ..none }).is_ok());
        assert_eq!(with(DetectionFields { min_pps: Some(100_000_001), ..none }), Err("min_pps"));
        assert_eq!(with(DetectionFields { quiet_seconds: Some(4), ..none }), Err("quiet_seconds"));
        assert_eq!(with(DetectionFields { quiet_seconds: Some(3_601), ..none }), Err("quiet_seconds"));
        assert_eq!(with(DetectionFields { blacklist_source_pps: Some(9), ..none }), Err("blacklist_source_pps"));
        assert!(with(DetectionFields { blacklist_source_pps: Some(u32::MAX), ..none }).is_ok());
        assert_eq!(with(DetectionFields { blacklist_minutes: Some(0), ..none }), Err("blacklist_minutes"));
        assert_eq!(with(DetectionFields { blacklist_minutes: Some(10_081), ..none }), Err("blacklist_minutes"));
    }

    #[test]
    fn the_message_names_the_range() {
        let err = DetectionSettings::new(DetectionFields { quiet_seconds: Some(1), ..DetectionFields::default() })
            .expect_err("out of range");
        assert_eq!(err.message, "must be between 5 and 3600, got 1");
    }
}
