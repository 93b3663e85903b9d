//! Traffic charts, drawn on the server as SVG.
//!
//! A chart plots passed and dropped packets per second against time for one
//! port (or all ports added up). Each history bucket is a step: its count
//! divided by its length, held from its start to its end (the current
//! bucket ends now, so a half-filled minute is not shown as a dip). No
//! script is needed to see it; the panel's script only swaps in a fresh
//! copy every few seconds.

use std::collections::BTreeMap;
use std::fmt::Write as _;

use chrono::{DateTime, Duration, Utc};
use maud::{Markup, PreEscaped, html};
use pakkt_core::metrics::{Interval, Window};
use pakkt_core::wire::MetricBucketView;

const WIDTH: f64 = 640.0;
const HEIGHT: f64 = 200.0;
const LEFT: f64 = 56.0;
const RIGHT: f64 = 8.0;
const TOP: f64 = 10.0;
const BOTTOM: f64 = 22.0;

/// One series point: a bucket's start, end and rates.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Step {
    /// Start.
    pub from: DateTime<Utc>,
    /// End (now, for the current bucket).
    pub to: DateTime<Utc>,
    /// Packets passed per second.
    pub passed: f64,
    /// Packets dropped per second.
    pub dropped: f64,
}

/// The bucket size the panel asks for a window.
pub fn interval_for(window: Window) -> Interval {
    match window {
        Window::TenMinutes | Window::Hour => Interval::Minute,
        Window::Day => Interval::FiveMinutes,
    }
}

/// Passed and dropped packets by bucket start.
type PassedDropped = BTreeMap<DateTime<Utc>, (u64, u64)>;

/// Per-port steps from history rows (`None` = all ports added up).
/// Nothing was counted before `since` (the agent's creation), so a bucket
/// that began earlier is averaged from `since` on.
#[allow(clippy::cast_precision_loss)] // packet counts far below 2^52
pub fn steps(
    rows: &[MetricBucketView],
    interval: Interval,
    now: DateTime<Utc>,
    since: DateTime<Utc>,
) -> BTreeMap<Option<u16>, Vec<Step>> {
    let mut counts: BTreeMap<Option<u16>, PassedDropped> = BTreeMap::new();
    for row in rows {
        for key in [None, Some(row.port)] {
            let c = counts.entry(key).or_default().entry(row.bucket).or_default();
            c.0 = c.0.saturating_add(row.packets_passed.get());
            c.1 = c.1.saturating_add(row.packets_dropped.get());
        }
    }
    let length = interval.duration();
    counts
        .into_iter()
        .map(|(key, buckets)| {
            let steps = buckets
                .into_iter()
                .map(|(from, (passed, dropped))| {
                    let to = (from + length).min(now).max(from + Duration::seconds(1));
                    let counted_from = from.max(since).min(to - Duration::seconds(1));
                    let seconds = (to - counted_from).num_milliseconds() as f64 / 1000.0;
                    Step { from, to, passed: passed as f64 / seconds, dropped: dropped as f64 / seconds }
                })
                .collect();
            (key, steps)
        })
        .collect()
}

/// A rate for people: `1234` → `1.2k`.
pub fn rate(value: f64) -> String {
    if value >= 1_000_000.0 {
        format!("{:.1}M", value / 1_000_000.0)
    } else if value >= 1_000.0 {
        format!("{:.1}k", value / 1_000.0)
    } else if value >= 10.0 || value == 0.0 {
        format!("{value:.0}")
    } else {
        format!("{value:.1}")
    }
}

/// A "nice" axis top at or above `max`.
fn axis_top(max: f64) -> f64 {
    if max <= 0.0 {
        return 10.0;
    }
    let magnitude = 10f64.powf(max.log10().floor());
    [1.0, 2.0, 5.0, 10.0].iter().map(|m| m * magnitude).find(|top| *top >= max).unwrap_or(10.0 * magnitude)
}

#[allow(clippy::cast_precision_loss)]
fn x_of(t: DateTime<Utc>, from: DateTime<Utc>, span_ms: i64) -> f64 {
    let ms = (t - from).num_milliseconds().clamp(0, span_ms);
    LEFT + (WIDTH - LEFT - RIGHT) * ms as f64 / span_ms as f64
}

fn y_of(value: f64, top: f64) -> f64 {
    let plot = HEIGHT - TOP - BOTTOM;
    TOP + plot - plot * (value / top).clamp(0.0, 1.0)
}

fn path(steps: &[Step], pick: fn(&Step) -> f64, from: DateTime<Utc>, span_ms: i64, top: f64) -> String {
    let mut d = String::new();
    let mut previous_end: Option<DateTime<Utc>> = None;
    for step in steps {
        let (x0, x1, y) = (x_of(step.from, from, span_ms), x_of(step.to, from, span_ms), y_of(pick(step), top));
        let joined = previous_end.is_some_and(|end| end >= step.from);
        let _ = write!(d, "{}{x0:.1},{y:.1} L{x1:.1},{y:.1} ", if joined { "L" } else { "M" });
        previous_end = Some(step.to);
    }
    d
}

/// One chart as an `<figure>` with an SVG and a text summary.
pub fn chart(title: &str, id: &str, steps: &[Step], window: Window, now: DateTime<Utc>) -> Markup {
    let span = window.duration();
    let from = now - span;
    let span_ms = span.num_milliseconds().max(1);
    let visible: Vec<Step> = steps.iter().copied().filter(|s| s.to > from).collect();
    let max = visible.iter().map(|s| s.passed.max(s.dropped)).fold(0.0, f64::max);
    let top = axis_top(max);
    let last = visible.last().copied();
    let (now_passed, now_dropped) = last.map_or((0.0, 0.0), |s| (s.passed, s.dropped));
    let summary = format!(
        "{title}: now {} packets/s passed and {} dropped; peak {} packets/s over the last {}.",
        rate(now_passed),
        rate(now_dropped),
        rate(max),
        window_label(window)
    );
    let ticks = [0.0, 0.5, 1.0];
    let plot_bottom = HEIGHT - BOTTOM;
    html! {
        figure.chart id=(id) data-passed=(format!("{now_passed:.3}")) data-dropped=(format!("{now_dropped:.3}")) data-buckets=(visible.len()) {
            figcaption {
                strong { (title) }
                " "
                span.legend-passed { "passed " (rate(now_passed)) "/s" }
                " · "
                span.legend-dropped { "dropped " (rate(now_dropped)) "/s" }
            }
            svg viewBox=(format!("0 0 {WIDTH} {HEIGHT}")) role="img" aria-label=(summary) {
                @for t in ticks {
                    @let y = y_of(top * t, top);
                    line.grid x1=(LEFT) x2=(WIDTH - RIGHT) y1=(format!("{y:.1}")) y2=(format!("{y:.1}")) {}
                    text.axis x=(LEFT - 4.0) y=(format!("{:.1}", y + 4.0)) text-anchor="end" { (rate(top * t)) }
                }
                text.axis x=(LEFT) y=(HEIGHT - 6.0) { "−" (window_label(window)) }
                text.axis x=(WIDTH - RIGHT) y=(HEIGHT - 6.0) text-anchor="end" { "now" }
                line.grid x1=(LEFT) x2=(LEFT) y1=(TOP) y2=(plot_bottom) {}
                @if visible.is_empty() {
                    text.empty x=(f64::midpoint(LEFT, WIDTH)) y=(HEIGHT / 2.0) text-anchor="middle" { "no traffic reported yet" }
                }
                path.passed d=(PreEscaped(path(&visible, |s| s.passed, from, span_ms, top))) {}
                path.dropped d=(PreEscaped(path(&visible, |s| s.dropped, from, span_ms, top))) {}
            }
        }
    }
}

/// `10 m`, `1 h`, `24 h`.
pub fn window_label(window: Window) -> &'static str {
    match window {
        Window::TenMinutes => "10 min",
        Window::Hour => "1 h",
        Window::Day => "24 h",
    }
}

#[cfg(test)]
#[allow(clippy::float_cmp)] // the figures compared are exact in binary
mod tests {
    use super::*;
    use pakkt_core::wire::{DecimalU64, DroppedByReasonView};

    fn row(at: DateTime<Utc>, port: u16, passed: u64, dropped: u64) -> MetricBucketView {
        MetricBucketView {
            bucket: at,
            port,
            packets_passed: DecimalU64(passed),
            packets_dropped: DecimalU64(dropped),
            bytes_passed: DecimalU64(0),
            bytes_dropped: DecimalU64(0),
            dropped_by_reason: DroppedByReasonView::default(),
        }
    }

    #[test]
    fn buckets_become_per_second_rates_per_port_and_in_total() {
        let t = DateTime::parse_from_rfc3339("2026-03-16T12:00:00Z").expect("time").with_timezone(&Utc);
        let now = t + Duration::seconds(90);
        let rows = [row(t, 22, 600, 60), row(t, 30120, 1200, 0), row(t + Duration::minutes(1), 22, 300, 0)];
        let steps = steps(&rows, Interval::Minute, now, t - Duration::hours(1));
        assert_eq!(steps[&None][0].passed, 30.0);
        assert_eq!(steps[&Some(22)][0].dropped, 1.0);
        // The current minute is 30 s old: 300 packets in 30 s.
        assert_eq!(steps[&Some(22)][1].passed, 10.0);
        assert_eq!(steps.len(), 3);
        // An agent created 30 s into the first minute counted for 30 s.
        let late = super::steps(&rows, Interval::Minute, now, t + Duration::seconds(30));
        assert_eq!(late[&Some(22)][0].passed, 20.0);
    }

    #[test]
    fn charts_render_with_and_without_data() {
        let now = Utc::now();
        let empty = chart("All ports", "c", &[], Window::Hour, now).into_string();
        assert!(empty.contains("no traffic reported yet"));
        let s = Step { from: now - Duration::seconds(30), to: now, passed: 2000.0, dropped: 5.0 };
        let svg = chart("Port <22>", "c", &[s], Window::TenMinutes, now).into_string();
        assert!(svg.contains("passed 2.0k/s") && svg.contains("Port &lt;22&gt;"));
        assert!(svg.contains(r#"data-buckets="1""#));
        assert_eq!(axis_top(0.0), 10.0);
        assert_eq!(axis_top(2000.0), 2000.0);
        assert_eq!(axis_top(2001.0), 5000.0);
    }
}
