//! Traffic figures: per-port counters, time buckets, summaries and history.
//!
//! Agents read monotonically growing counters from their dataplane and
//! report the *difference* since their last report ([`CounterDelta`]), each
//! report carrying an ID so that a retried report is stored once. A counter
//! that went down (the program or the agent restarted) counts from zero:
//! figures never go negative and never count twice.

use std::collections::BTreeMap;
use std::fmt;
use std::str::FromStr;

use chrono::{DateTime, Duration, DurationRound, Utc};
use serde::{Deserialize, Serialize};

use crate::sync::FirewallCounter;
use crate::verdict::{DropCounts, DropReason};

/// Passed and dropped packets and bytes, and the drops by reason.
///
/// `dropped_by_reason` splits `packets_dropped`: for figures a dataplane
/// counted, its reasons add up to `packets_dropped`. It is optional on the
/// wire (missing reads as zero), so reports from agents that count no
/// reasons still parse; their drops then have no reason.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Hash, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(poem_openapi::Object))]
pub struct Counters {
    /// Packets let through.
    pub packets_passed: u64,
    /// Packets dropped.
    pub packets_dropped: u64,
    /// Bytes (whole frames) let through.
    pub bytes_passed: u64,
    /// Bytes (whole frames) dropped.
    pub bytes_dropped: u64,
    /// Packets dropped, by why (DESIGN §4); every reason 0 when missing,
    /// and left out when all are.
    #[serde(default, skip_serializing_if = "DropCounts::is_zero")]
    #[cfg_attr(feature = "openapi", oai(default))]
    pub dropped_by_reason: DropCounts,
}

impl Counters {
    /// Adds `other`, saturating rather than wrapping, reasons included.
    pub fn add(&mut self, other: Self) {
        self.packets_passed = self.packets_passed.saturating_add(other.packets_passed);
        self.packets_dropped = self.packets_dropped.saturating_add(other.packets_dropped);
        self.bytes_passed = self.bytes_passed.saturating_add(other.bytes_passed);
        self.bytes_dropped = self.bytes_dropped.saturating_add(other.bytes_dropped);
        self.dropped_by_reason.merge(other.dropped_by_reason);
    }

    /// Counts one packet of `bytes` bytes that passed.
    pub fn count_pass(&mut self, bytes: u64) {
        self.packets_passed = self.packets_passed.saturating_add(1);
        self.bytes_passed = self.bytes_passed.saturating_add(bytes);
    }

    /// Counts one packet of `bytes` bytes dropped for `reason`: every drop
    /// a dataplane counts has a reason, so the reasons add up to
    /// `packets_dropped`.
    pub fn count_drop(&mut self, reason: DropReason, bytes: u64) {
        self.packets_dropped = self.packets_dropped.saturating_add(1);
        self.bytes_dropped = self.bytes_dropped.saturating_add(bytes);
        self.dropped_by_reason.add(reason);
    }

    /// All packets, passed or dropped.
    pub fn packets(self) -> u64 {
        self.packets_passed.saturating_add(self.packets_dropped)
    }

    /// Whether nothing was counted.
    pub fn is_zero(self) -> bool {
        self == Self::default()
    }
}

/// Turns successive readings of cumulative counters into increments.
///
/// When any field of a reading (drop reasons included) is below the
/// previous one, the counters were reset (the program or the agent
/// restarted), and the whole new reading is the increment: its reasons
/// still add up to its drops.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct CounterDelta;

impl CounterDelta {
    /// The increment from `previous` to `current`.
    pub fn between(previous: Counters, current: Counters) -> Counters {
        let (reasons_before, reasons_now) =
            (previous.dropped_by_reason.to_array(), current.dropped_by_reason.to_array());
        let fields = [
            (previous.packets_passed, current.packets_passed),
            (previous.packets_dropped, current.packets_dropped),
            (previous.bytes_passed, current.bytes_passed),
            (previous.bytes_dropped, current.bytes_dropped),
        ];
        let reset = fields.iter().any(|(before, now)| now < before)
            || reasons_before.iter().zip(&reasons_now).any(|(before, now)| now < before);
        if reset {
            return current;
        }
        Counters {
            packets_passed: current.packets_passed - previous.packets_passed,
            packets_dropped: current.packets_dropped - previous.packets_dropped,
            bytes_passed: current.bytes_passed - previous.bytes_passed,
            bytes_dropped: current.bytes_dropped - previous.bytes_dropped,
            dropped_by_reason: DropCounts::from_array(std::array::from_fn(|i| reasons_now[i] - reasons_before[i])),
        }
    }

    /// Increments per port between two readings; ports absent before count
    /// from zero, ports with nothing new are left out.
    pub fn per_port(previous: &BTreeMap<u16, Counters>, current: &BTreeMap<u16, Counters>) -> BTreeMap<u16, Counters> {
        current
            .iter()
            .map(|(port, cur)| (*port, Self::between(previous.get(port).copied().unwrap_or_default(), *cur)))
            .filter(|(_, delta)| !delta.is_zero())
            .collect()
    }
}

/// A query value that is not one the API accepts (answered with 400).
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{field} must be one of {expected}, got {got:?}")]
pub struct BadQueryValue {
    /// The query parameter.
    pub field: &'static str,
    /// The accepted values.
    pub expected: &'static str,
    /// What was sent (shortened).
    pub got: String,
}

/// The summary window: `10m`, `1h` or `24h`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Default, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(poem_openapi::Enum))]
pub enum Window {
    /// The last ten minutes.
    #[serde(rename = "10m")]
    #[cfg_attr(feature = "openapi", oai(rename = "10m"))]
    TenMinutes,
    /// The last hour (the default).
    #[default]
    #[serde(rename = "1h")]
    #[cfg_attr(feature = "openapi", oai(rename = "1h"))]
    Hour,
    /// The last day.
    #[serde(rename = "24h")]
    #[cfg_attr(feature = "openapi", oai(rename = "24h"))]
    Day,
}

impl Window {
    /// The window's length.
    pub fn duration(self) -> Duration {
        match self {
            Self::TenMinutes => Duration::minutes(10),
            Self::Hour => Duration::hours(1),
            Self::Day => Duration::hours(24),
        }
    }
}

impl FromStr for Window {
    type Err = BadQueryValue;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        match s {
            "10m" => Ok(Self::TenMinutes),
            "1h" => Ok(Self::Hour),
            "24h" => Ok(Self::Day),
            other => {
                Err(BadQueryValue { field: "window", expected: "10m, 1h, 24h", got: other.chars().take(32).collect() })
            }
        }
    }
}

/// The history bucket size: `1m`, `5m` or `1h`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, Default, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(poem_openapi::Enum))]
pub enum Interval {
    /// One minute (the default, and the resolution agents report at).
    #[default]
    #[serde(rename = "1m")]
    #[cfg_attr(feature = "openapi", oai(rename = "1m"))]
    Minute,
    /// Five minutes.
    #[serde(rename = "5m")]
    #[cfg_attr(feature = "openapi", oai(rename = "5m"))]
    FiveMinutes,
    /// One hour.
    #[serde(rename = "1h")]
    #[cfg_attr(feature = "openapi", oai(rename = "1h"))]
    Hour,
}

impl Interval {
    /// The bucket length.
    pub fn duration(self) -> Duration {
        match self {
            Self::Minute => Duration::minutes(1),
            Self::FiveMinutes => Duration::minutes(5),
            Self::Hour => Duration::hours(1),
        }
    }

    /// The start of the bucket that holds `at`.
    pub fn bucket_of(self, at: DateTime<Utc>) -> DateTime<Utc> {
        at.duration_trunc(self.duration()).unwrap_or(at)
    }

    /// The API's spelling.
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Minute => "1m",
            Self::FiveMinutes => "5m",
            Self::Hour => "1h",
        }
    }
}

impl fmt::Display for Interval {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

impl FromStr for Interval {
    type Err = BadQueryValue;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        match s {
            "1m" => Ok(Self::Minute),
            "5m" => Ok(Self::FiveMinutes),
            "1h" => Ok(Self::Hour),
            other => {
                Err(BadQueryValue { field: "interval", expected: "1m, 5m, 1h", got: other.chars().take(32).collect() })
            }
        }
    }
}

/// One port's figures in one time bucket.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct MetricBucket {
    /// Start of the bucket.
    pub bucket: DateTime<Utc>,
    /// Destination port (0 for traffic without ports).
    pub port: u16,
    /// What was counted.
    pub counters: Counters,
}

/// Totals over a window and the busiest ports.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct MetricsSummary {
    /// All ports together.
    pub totals: Counters,
    /// At most [`TOP_PORTS`] ports, most packets first, ties by port number.
    pub top_ports: Vec<(u16, Counters)>,
}

/// How many ports a summary lists.
pub const TOP_PORTS: usize = 10;

impl MetricsSummary {
    /// Sums per-port figures into totals and the top ports.
    pub fn from_ports(per_port: &BTreeMap<u16, Counters>) -> Self {
        let mut totals = Counters::default();
        for counters in per_port.values() {
            totals.add(*counters);
        }
        let mut ranked: Vec<(u16, Counters)> = per_port.iter().map(|(p, c)| (*p, *c)).collect();
        ranked.sort_by(|a, b| b.1.packets().cmp(&a.1.packets()).then(a.0.cmp(&b.0)));
        ranked.truncate(TOP_PORTS);
        Self { totals, top_ports: ranked }
    }
}

/// Most buckets one history query may return per port; beyond it the
/// caller must choose a larger interval.
pub const MAX_HISTORY_BUCKETS: i64 = 1500;

#[cfg(test)]
mod tests {
    use super::*;

    fn c(pp: u64, pd: u64, bp: u64, bd: u64) -> Counters {
        Counters { packets_passed: pp, packets_dropped: pd, bytes_passed: bp, bytes_dropped: bd, ..Counters::default() }
    }

    /// `pd` drops, counted as `rate` and `blacklist` drops by reason.
    fn r(pd: u64, rate: u64, blacklist: u64) -> Counters {
        Counters {
            packets_dropped: pd,
            dropped_by_reason: DropCounts { blacklist, rate, ..DropCounts::default() },
            ..Counters::default()
        }
    }

    #[test]
    fn each_reason_is_its_own_counter_in_deltas_and_sums() {
        // The rate counter went down (7 < 9): the counters were reset, and
        // the whole reading counts, so its reasons still add up.
        assert_eq!(CounterDelta::between(r(10, 9, 1), r(10, 7, 3)), r(10, 7, 3));
        assert_eq!(CounterDelta::between(r(10, 9, 1), r(12, 10, 2)), r(2, 1, 1));
        assert_eq!(CounterDelta::between(r(10, 9, 1), r(10, 9, 1)), Counters::default());
        assert!(CounterDelta::between(r(10, 9, 1), r(10, 9, 1)).is_zero());
        assert!(!r(0, 0, 1).is_zero(), "a reason alone is something counted");
        let mut sum = r(1, 1, 0);
        sum.add(r(2, u64::MAX, 2));
        assert_eq!(sum, r(3, u64::MAX, 2), "reasons add, saturating");
        let mut counted = Counters::default();
        counted.count_drop(DropReason::Fragment, 60);
        counted.count_drop(DropReason::Fragment, 60);
        counted.count_pass(100);
        assert_eq!((counted.packets_dropped, counted.bytes_dropped, counted.packets_passed), (2, 120, 1));
        assert_eq!(counted.dropped_by_reason, DropCounts { fragment: 2, ..DropCounts::default() });
        let summary = MetricsSummary::from_ports(&BTreeMap::from([(53, r(1, 1, 0)), (80, r(2, 0, 2))]));
        assert_eq!(summary.totals, r(3, 1, 2), "totals add reasons over ports");
        assert_eq!(summary.top_ports[0], (80, r(2, 0, 2)), "each port keeps its own");
    }

    #[test]
    fn a_sample_without_reasons_still_parses() {
        let old = r#"{"port": 80, "packets_passed": 1, "packets_dropped": 2, "bytes_passed": 3, "bytes_dropped": 4}"#;
        let sample: PortSample = serde_json::from_str(old).expect("an older agent's sample");
        assert_eq!(sample.counters, c(1, 2, 3, 4));
        let new = r#"{"port": 80, "packets_passed": 1, "packets_dropped": 2, "bytes_passed": 3, "bytes_dropped": 4,
                      "dropped_by_reason": {"rate": 1, "out_of_state": 1}}"#;
        let sample: PortSample = serde_json::from_str(new).expect("a sample with reasons");
        let reasons = sample.counters.dropped_by_reason;
        assert_eq!((reasons.rate, reasons.out_of_state, reasons.total()), (1, 1, 2));
        let written = serde_json::to_value(sample).expect("json");
        assert_eq!(written["dropped_by_reason"]["out_of_state"], 1);
        let quiet = serde_json::to_value(PortSample { port: 80, counters: c(1, 0, 64, 0) }).expect("json");
        assert!(quiet.get("dropped_by_reason").is_none(), "no reasons, no field: {quiet}");
    }

    #[test]
    fn delta_never_goes_negative_after_a_reset() {
        assert_eq!(CounterDelta::between(c(10, 5, 100, 50), c(15, 5, 160, 50)), c(5, 0, 60, 0));
        assert_eq!(CounterDelta::between(c(10, 5, 100, 50), c(3, 1, 30, 10)), c(3, 1, 30, 10));
        let before = BTreeMap::from([(80, c(10, 0, 10, 0)), (22, c(1, 1, 1, 1))]);
        let after = BTreeMap::from([(80, c(12, 0, 12, 0)), (22, c(1, 1, 1, 1)), (53, c(4, 0, 4, 0))]);
        let delta = CounterDelta::per_port(&before, &after);
        assert_eq!(delta, BTreeMap::from([(53, c(4, 0, 4, 0)), (80, c(2, 0, 2, 0))]));
    }

    #[test]
    fn windows_and_intervals_parse_only_their_values() {
        assert_eq!("24h".parse::<Window>(), Ok(Window::Day));
        assert_eq!("10m".parse::<Window>(), Ok(Window::TenMinutes));
        assert_eq!("2h".parse::<Window>().expect_err("2h").field, "window");
        assert_eq!("5m".parse::<Interval>(), Ok(Interval::FiveMinutes));
        assert!("1d".parse::<Interval>().is_err());
        assert_eq!(serde_json::to_string(&Interval::Hour).expect("json"), "\"1h\"");
    }

    #[test]
    fn buckets_truncate_to_their_interval() {
        let at: DateTime<Utc> = "2026-03-16T12:07:31.5Z".parse().expect("time");
        assert_eq!(Interval::Minute.bucket_of(at).to_rfc3339(), "2026-03-16T12:07:00+00:00");
        assert_eq!(Interval::FiveMinutes.bucket_of(at).to_rfc3339(), "2026-03-16T12:05:00+00:00");
        assert_eq!(Interval::Hour.bucket_of(at).to_rfc3339(), "2026-03-16T12:00:00+00:00");
    }

    #[test]
    fn a_report_over_the_port_limit_folds_the_quietest_ports_into_port_0() {
        let few: BTreeMap<u16, Counters> = (1..=3u16).map(|p| (p, c(u64::from(p), 0, 0, 0))).collect();
        assert_eq!(fold_ports(few.clone()).len(), 3, "a report within the limit is as it is");
        // A flood on every port, port 0 included; port p saw p packets.
        let rated = |p: u16| Counters { dropped_by_reason: r(1, 1, 0).dropped_by_reason, ..c(u64::from(p), 1, 10, 0) };
        let all: BTreeMap<u16, Counters> = (0..=u16::MAX).map(|p| (p, rated(p))).collect();
        let folded = fold_ports(all.clone());
        assert_eq!(folded.len(), MAX_REPORT_PORTS);
        assert_eq!(folded[0].port, 0, "the fold is port 0");
        let kept: Vec<u16> = folded[1..].iter().map(|s| s.port).collect();
        let busiest: Vec<u16> = (u16::MAX - 1022..=u16::MAX).collect();
        assert_eq!(kept, busiest, "the 1,023 busiest keep their own samples, in port order");
        let total = |samples: &[PortSample]| {
            samples.iter().fold(Counters::default(), |mut sum, s| {
                sum.add(s.counters);
                sum
            })
        };
        let whole: Vec<PortSample> = all.into_iter().map(|(port, counters)| PortSample { port, counters }).collect();
        assert_eq!(total(&folded), total(&whole), "nothing is lost");
        assert_eq!(total(&folded).dropped_by_reason.rate, 65_536, "drop reasons included");
        assert!(MetricsReport::new("r", folded).validate().is_ok(), "the folded report is accepted");
        assert!(MetricsReport::new("r", whole).validate().is_err(), "the whole one is not");
    }

    #[test]
    fn summary_ranks_ten_busiest_ports() {
        let per_port: BTreeMap<u16, Counters> = (1..=15u16).map(|p| (p, c(u64::from(p), 1, 0, 0))).collect();
        let summary = MetricsSummary::from_ports(&per_port);
        assert_eq!(summary.top_ports.len(), TOP_PORTS);
        assert_eq!(summary.top_ports[0].0, 15);
        assert_eq!(summary.top_ports[9].0, 6);
        assert_eq!(summary.totals.packets_passed, (1..=15).sum::<u64>());
        assert_eq!(summary.totals.packets_dropped, 15);
    }
}

/// One port's increments in an agent's metrics report.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(poem_openapi::Object))]
pub struct PortSample {
    /// Destination port (0 for traffic without ports).
    pub port: u16,
    /// Increments since the agent's previous report.
    #[serde(flatten)]
    #[cfg_attr(feature = "openapi", oai(flatten))]
    pub counters: Counters,
}

/// What an agent sends every reporting interval: per-port increments,
/// under an ID that makes a retried report count once, and the current
/// counters of its firewall rules (so that `packets_total` is as fresh as
/// the traffic figures, not only updated at each sync).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(poem_openapi::Object))]
pub struct MetricsReport {
    /// Unique per report of one agent (a ULID is a good choice), 1..=64
    /// characters of letters, digits, `-` and `_`.
    pub report_id: String,
    /// Per-port increments; at most one sample per port.
    pub ports: Vec<PortSample>,
    /// Firewall rules' counters as nftables holds them: totals, not
    /// increments, so a retried report changes nothing. Optional.
    #[serde(default)]
    #[cfg_attr(feature = "openapi", oai(default))]
    pub firewall_counters: Vec<FirewallCounter>,
}

/// Most ports one report may carry. An agent with more ports to report
/// folds the rest into port 0 ([`fold_ports`]), so that a flood spread
/// over every port costs the server one bounded report, not 65,536 rows.
pub const MAX_REPORT_PORTS: usize = 1024;

/// Bounds a report's ports to [`MAX_REPORT_PORTS`]: when there are more,
/// the busiest ports (by packets, passed and dropped) keep their own
/// samples and every other port's counters are added to port 0's, which
/// then reads "no port of its own in this report". Totals are unchanged.
pub fn fold_ports(per_port: BTreeMap<u16, Counters>) -> Vec<PortSample> {
    let sample = |(port, counters): (u16, Counters)| PortSample { port, counters };
    if per_port.len() <= MAX_REPORT_PORTS {
        return per_port.into_iter().map(sample).collect();
    }
    let mut other = per_port.get(&0).copied().unwrap_or_default();
    let mut ports: Vec<(u16, Counters)> = per_port.into_iter().filter(|&(port, _)| port != 0).collect();
    // Busiest first; the port breaks ties, so that the fold is stable.
    ports.sort_by_key(|&(port, counters)| (std::cmp::Reverse(counters.packets()), port));
    for (_, counters) in ports.drain(MAX_REPORT_PORTS - 1..) {
        other.add(counters);
    }
    ports.sort_by_key(|&(port, _)| port);
    std::iter::once((0, other)).chain(ports).map(sample).collect()
}

/// Most firewall counters one report may carry.
pub const MAX_REPORT_FIREWALL_COUNTERS: usize = 10_000;

impl MetricsReport {
    /// A report of per-port increments only.
    pub fn new(report_id: impl Into<String>, ports: Vec<PortSample>) -> Self {
        Self { report_id: report_id.into(), ports, firewall_counters: Vec::new() }
    }

    /// Checks the report's shape: a well-formed ID, no port and no firewall
    /// rule twice, bounded sizes.
    pub fn validate(&self) -> Result<(), crate::validation::Invalid> {
        use crate::validation::Invalid;
        let id_ok = !self.report_id.is_empty()
            && self.report_id.len() <= 64
            && self.report_id.chars().all(|c| c.is_ascii_alphanumeric() || c == '-' || c == '_');
        if !id_ok {
            return Err(Invalid::new("report_id", "must be 1 to 64 letters, digits, '-' or '_'"));
        }
        if self.ports.len() > MAX_REPORT_PORTS {
            return Err(Invalid::new("ports", "too many samples"));
        }
        let mut seen = std::collections::BTreeSet::new();
        if let Some(dup) = self.ports.iter().find(|s| !seen.insert(s.port)) {
            return Err(Invalid::new("ports", format!("port {} appears twice", dup.port)));
        }
        if self.firewall_counters.len() > MAX_REPORT_FIREWALL_COUNTERS {
            return Err(Invalid::new("firewall_counters", "too many counters"));
        }
        let mut seen = std::collections::BTreeSet::new();
        if let Some(dup) = self.firewall_counters.iter().find(|c| !seen.insert(c.id)) {
            return Err(Invalid::new("firewall_counters", format!("rule {} appears twice", dup.id)));
        }
        Ok(())
    }
}
