//! The panel's pages, as maud templates.
//!
//! Every page is plain HTML that works without script: forms post and the
//! server answers a page. Elements marked `data-live` are the ones the
//! panel's script swaps for fresh copies every few seconds (statuses,
//! tables, charts); forms never are, so typing is never interrupted.

use chrono::{DateTime, Utc};
use maud::{DOCTYPE, Markup, html};
use pakkt_core::account::ApiKeyRecord;
use pakkt_core::agent::{DataplaneMode, EgressMode};
use pakkt_core::id::ApiKeyId;
use pakkt_core::metrics::Window;
use pakkt_core::rule::{Protocol, RuleType};
use pakkt_core::verdict::{DropCounts, DropReason};
use pakkt_core::wire::{AgentView, EngineRuleView, FirewallRuleView, IpEntryView, MetricsSummaryView, TemplateView};

use super::chart::{self, Step};
use super::form::FormState;
use super::session::Notice;

/// What every signed-in page needs.
#[derive(Debug)]
pub struct Chrome<'a> {
    /// The session's CSRF token, for every form.
    pub csrf: &'a str,
    /// The account's name.
    pub account: &'a str,
    /// A one-time notice.
    pub notice: Option<Notice>,
}

/// Links between the pages of a long list (each page shows at most
/// [`super::PAGE_ITEMS`]).
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Pager {
    /// The first page's URL, when the list is not on it.
    pub first: Option<String>,
    /// The next page's URL, when more items follow.
    pub next: Option<String>,
}

/// The links of a [`Pager`] (nothing for a list that fits one page), with
/// IDs made of `id` (`agents-pages` …).
fn pager(p: &Pager, id: &str, what: &str) -> Markup {
    html! {
        @if p.first.is_some() || p.next.is_some() {
            nav.pager id=(id) aria-label=(format!("Pages of {what}")) {
                @if let Some(first) = &p.first { a href=(first) id=(format!("{id}-first")) { "« First page" } }
                @if let Some(next) = &p.next { a href=(next) rel="next" id=(format!("{id}-next")) { "Next page »" } }
            }
        }
    }
}

const ASSET_VERSION: &str = env!("CARGO_PKG_VERSION");

fn head(title: &str) -> Markup {
    html! {
        head {
            meta charset="utf-8";
            meta name="viewport" content="width=device-width, initial-scale=1";
            title { (title) " · PAKKT" }
            link rel="stylesheet" href=(format!("/assets/panel.css?v={ASSET_VERSION}"));
            script src=(format!("/assets/panel.js?v={ASSET_VERSION}")) defer {}
        }
    }
}

/// A page for someone signed in.
pub fn page(chrome: &Chrome<'_>, title: &str, current: &str, body: &Markup) -> Markup {
    html! {
        (DOCTYPE)
        html lang="en" {
            (head(title))
            body {
                a.skip href="#main" { "Skip to content" }
                header.top {
                    a.brand href="/" { "PAKKT" }
                    nav aria-label="Main" {
                        a href="/" aria-current=[(current == "agents").then_some("page")] { "Agents" }
                        a href="/keys" aria-current=[(current == "keys").then_some("page")] { "API keys" }
                    }
                    form.signout method="post" action="/signout" {
                        (csrf(chrome.csrf))
                        span.account { (chrome.account) }
                        button type="submit" id="signout" { "Sign out" }
                    }
                }
                main id="main" {
                    (notice(chrome.notice.as_ref()))
                    (body)
                }
            }
        }
    }
}

fn notice(notice: Option<&Notice>) -> Markup {
    html! {
        @match notice {
            Some(Notice::Done(text)) => p.notice role="status" { (text) },
            Some(Notice::Secret { title, secret, hint }) => section.secret role="status" aria-labelledby="secret-title" {
                h2 id="secret-title" { (title) }
                p { "Shown once: copy it now." }
                code id="secret" { (secret) }
                p { (hint) }
            },
            None => {},
        }
    }
}

fn csrf(token: &str) -> Markup {
    html! { input type="hidden" name="csrf" value=(token); }
}

/// The sign-in page.
pub fn sign_in(form: &FormState) -> Markup {
    html! {
        (DOCTYPE)
        html lang="en" {
            (head("Sign in"))
            body.signin {
                main id="main" {
                    h1 { "PAKKT" }
                    p { "Sign in with an API key of your account (" code { "pakkt-server keys create --account NAME" } " makes one)." }
                    form method="post" action="/signin" id="signin-form" {
                        (general(form))
                        (input(form, "signin", "api_key", "API key", "password", &[("autocomplete", "off"), ("required", "")]))
                        button type="submit" { "Sign in" }
                    }
                }
            }
        }
    }
}

fn general(form: &FormState) -> Markup {
    html! {
        @if let Some(message) = &form.general {
            p.error.general role="alert" { (message) }
        }
    }
}

/// A labelled input with its message under it.
fn input(form: &FormState, prefix: &str, name: &str, label: &str, kind: &str, attrs: &[(&str, &str)]) -> Markup {
    let id = format!("{prefix}-{name}");
    let error = form.errors.get(name);
    let error_id = format!("{id}-error");
    let attr = |key: &str| attrs.iter().find(|(k, _)| *k == key).map(|(_, v)| *v);
    html! {
        div.field {
            label for=(id) { (label) }
            input id=(id) name=(name) type=(kind) value=(form.values.get(name).map_or("", String::as_str))
                inputmode=[attr("inputmode")] min=[attr("min")] max=[attr("max")] placeholder=[attr("placeholder")]
                autocomplete=[attr("autocomplete")] required[attr("required").is_some()]
                aria-invalid=[error.map(|_| "true")] aria-describedby=[error.map(|_| error_id.as_str())];
            @if let Some(message) = error {
                p.error id=(error_id) { (message) }
            }
        }
    }
}

/// A labelled select with its message under it.
fn select(form: &FormState, prefix: &str, name: &str, label: &str, options: &[(&str, &str)], default: &str) -> Markup {
    let id = format!("{prefix}-{name}");
    let error = form.errors.get(name);
    let error_id = format!("{id}-error");
    let chosen = form.values.get(name).map_or(default, String::as_str);
    html! {
        div.field {
            label for=(id) { (label) }
            select id=(id) name=(name) aria-invalid=[error.map(|_| "true")] aria-describedby=[error.map(|_| error_id.as_str())] {
                @for (value, text) in options {
                    option value=(value) selected[*value == chosen] { (text) }
                }
            }
            @if let Some(message) = error {
                p.error id=(error_id) { (message) }
            }
        }
    }
}

fn time(t: Option<DateTime<Utc>>) -> Markup {
    html! {
        @match t {
            Some(t) => time datetime=(t.to_rfc3339()) { (t.format("%Y-%m-%d %H:%M:%S UTC")) },
            None => "—",
        }
    }
}

fn badge(status: &str) -> Markup {
    html! { span class=(format!("badge status-{status}")) { (status) } }
}

fn delete_button(csrf_token: &str, action: &str, label: &str) -> Markup {
    html! {
        form.inline method="post" action=(action) {
            (csrf(csrf_token))
            button.danger type="submit" aria-label=(label) { "Delete" }
        }
    }
}

/// The agents page (the home page): one page of the agents.
pub fn agents(chrome: &Chrome<'_>, agents: &[AgentView], pages: &Pager, form: &FormState) -> Markup {
    let body = html! {
        h1 { "Agents" }
        section aria-labelledby="agents-title" {
            h2 id="agents-title" class="visually-hidden" { "Your agents" }
            div.table-wrap data-live id="agents-live" {
                @if agents.is_empty() && pages.first.is_none() {
                    p { "No agent yet: add one below, then run " code { "pakkt-agent" } " on the host with its token." }
                } @else {
                    table id="agents" {
                        thead { tr { th scope="col" { "Name" } th scope="col" { "Status" } th scope="col" { "Host" } th scope="col" { "Interface" } th scope="col" { "Version" } th scope="col" { "Last seen" } th scope="col" { "Traffic" } } }
                        tbody {
                            @for a in agents {
                                tr data-agent=(a.id) {
                                    td { a href=(format!("/agents/{}", a.id)) { (a.name) } }
                                    td.status { (badge(a.status.as_str())) }
                                    td { (a.hostname.as_deref().unwrap_or("—")) }
                                    td { (a.iface.as_deref().unwrap_or("—")) }
                                    td { (a.version.as_deref().unwrap_or("—")) }
                                    td { (time(a.last_seen_at)) }
                                    td { a href=(format!("/agents/{}/traffic", a.id)) aria-label=(format!("Traffic of {}", a.name)) { "Traffic" } }
                                }
                            }
                        }
                    }
                }
                (pager(pages, "agents-pages", "agents"))
            }
        }
        section.card aria-labelledby="add-agent" {
            h2 id="add-agent" { "Add an agent" }
            form method="post" action="/agents" id="agent-form" {
                (csrf(chrome.csrf))
                (general(form))
                (input(form, "agent", "name", "Name", "text", &[("placeholder", "VPS Paris"), ("required", "")]))
                button type="submit" { "Add agent" }
            }
        }
    };
    page(chrome, "Agents", "agents", &body)
}

/// Everything the agent page shows.
#[derive(Debug)]
pub struct AgentPage<'a> {
    /// The agent.
    pub agent: &'a AgentView,
    /// One page of its engine rules.
    pub rules: &'a [EngineRuleView],
    /// The engine rules' other pages.
    pub rules_pages: Pager,
    /// One page of its IP list entries.
    pub entries: &'a [IpEntryView],
    /// The entries' other pages.
    pub entries_pages: Pager,
    /// One page of its firewall rules.
    pub firewall: &'a [FirewallRuleView],
    /// The firewall rules' other pages.
    pub firewall_pages: Pager,
    /// The marketplace.
    pub templates: &'a [TemplateView],
    /// Its traffic over `window` (for the drops by reason).
    pub summary: &'a MetricsSummaryView,
    /// The window `summary` covers.
    pub window: Window,
    /// The form that was posted, if one failed.
    pub failed: Option<&'a FormState>,
}

const PROTOCOLS: &[(&str, &str)] = &[("17", "UDP (17)"), ("6", "TCP (6)"), ("0", "TCP or UDP (0)"), ("1", "ICMP (1)")];
const RULE_TYPES: &[(&str, &str)] =
    &[("1", "rate_limit (1)"), ("0", "block (0)"), ("2", "allow_only (2)"), ("3", "protect (3)")];

fn protocol_name(p: Protocol) -> &'static str {
    match p {
        Protocol::Any => "tcp/udp",
        Protocol::Icmp => "icmp",
        Protocol::Tcp => "tcp",
        Protocol::Udp => "udp",
    }
}

fn rule_type_name(t: RuleType) -> &'static str {
    match t {
        RuleType::Block => "block",
        RuleType::RateLimit => "rate_limit",
        RuleType::AllowOnly => "allow_only",
        RuleType::Protect => "protect",
    }
}

/// A drop reason in words.
fn drop_reason_name(reason: DropReason) -> &'static str {
    match reason {
        DropReason::Blacklist => "Blacklist",
        DropReason::Rule => "Rule",
        DropReason::Rate => "Rate limit",
        DropReason::Size => "Packet size",
        DropReason::Unverified => "Unverified source",
        DropReason::Reflection => "Reflection port",
        DropReason::OutOfState => "Out-of-state TCP",
        DropReason::Fragment => "Fragment",
        DropReason::Malformed => "Malformed",
    }
}

/// The packets dropped over `window`, by reason: the reasons with drops,
/// in the API's order, and the drops reported without a reason (by agents
/// that count none), if any.
fn drops_by_reason(summary: &MetricsSummaryView, window: Window) -> Markup {
    let counts = DropCounts::from(summary.dropped_by_reason);
    let rows: Vec<(DropReason, u64)> =
        DropReason::ALL.into_iter().map(|reason| (reason, counts.get(reason))).filter(|(_, n)| *n > 0).collect();
    let unexplained = summary.total_dropped.get().saturating_sub(counts.total());
    html! {
        @if rows.is_empty() && unexplained == 0 {
            p { "No packet dropped over the last " (chart::window_label(window)) "." }
        } @else {
            table id="drops-by-reason" {
                caption.visually-hidden { "Packets dropped over the last " (chart::window_label(window)) ", by reason" }
                thead { tr { th scope="col" { "Reason" } th scope="col" { "Packets" } } }
                tbody {
                    @for (reason, n) in &rows {
                        tr data-reason=(reason.as_str()) { td { (drop_reason_name(*reason)) } td { (n) } }
                    }
                    @if unexplained > 0 {
                        tr data-reason="none" { td { "No reason reported" } td { (unexplained) } }
                    }
                }
            }
        }
    }
}

/// How an agent's engine is attached, in words: `XDP native · egress tcx`;
/// `—` before the agent's first sync.
fn dataplane_label(mode: Option<DataplaneMode>, egress: Option<EgressMode>) -> String {
    let mode = match mode {
        None => return "—".to_owned(),
        Some(DataplaneMode::Native) => "XDP native",
        Some(DataplaneMode::Generic) => "XDP generic",
        Some(DataplaneMode::Memory) => "in-memory model",
    };
    match egress {
        None => mode.to_owned(),
        Some(EgressMode::Tcx) => format!("{mode} · egress tcx"),
        Some(EgressMode::Clsact) => format!("{mode} · egress clsact"),
    }
}

fn ports(start: Option<u16>, end: Option<u16>) -> String {
    match (start, end) {
        (Some(s), Some(e)) if s == e => s.to_string(),
        (Some(s), Some(e)) => format!("{s}–{e}"),
        (Some(s), None) => s.to_string(),
        _ => "all".into(),
    }
}

/// The agent page: its rules, lists and firewall, with their forms.
#[allow(clippy::too_many_lines)] // one page, read top to bottom
pub fn agent(chrome: &Chrome<'_>, p: &AgentPage<'_>) -> Markup {
    let a = p.agent;
    let empty = |name: &'static str| FormState::empty(name);
    let form_of = |name: &'static str| p.failed.filter(|f| f.name == name).cloned().unwrap_or_else(|| empty(name));
    let (engine_form, ip_form, fw_form, tpl_form) =
        (form_of("engine"), form_of("ip"), form_of("firewall"), form_of("template"));
    let base = format!("/agents/{}", a.id);
    let body = html! {
        p.crumbs { a href="/" { "Agents" } " › " (a.name) }
        h1 { (a.name) }
        @if let Some(f) = p.failed.filter(|f| !matches!(f.name, "engine" | "ip" | "firewall" | "template")) {
            (general(f))
        }
        div.summary data-live id="agent-live" {
            dl {
                div { dt { "Status" } dd id="agent-status" { (badge(a.status.as_str())) } }
                div { dt { "Host" } dd { (a.hostname.as_deref().unwrap_or("—")) } }
                div { dt { "Interface" } dd { (a.iface.as_deref().unwrap_or("—")) } }
                div { dt { "Dataplane" } dd id="agent-dataplane" { (dataplane_label(a.mode, a.egress_mode)) } }
                div { dt { "Version" } dd { (a.version.as_deref().unwrap_or("—")) } }
                div { dt { "Last seen" } dd { (time(a.last_seen_at)) } }
            }
        }
        p { a.button href=(format!("{base}/traffic")) { "Traffic charts" } }

        section aria-labelledby="drops-title" {
            h2 id="drops-title" { "Dropped by reason, last " (chart::window_label(p.window)) }
            div.table-wrap data-live id="drops-live" {
                (drops_by_reason(p.summary, p.window))
            }
        }

        section aria-labelledby="engine-title" {
            h2 id="engine-title" { "PAKKT Engine rules" }
            div.table-wrap data-live id="engine-live" {
                @if p.rules.is_empty() && p.rules_pages.first.is_none() { p { "No engine rule." } } @else {
                    table id="engine-rules" {
                        thead { tr { th scope="col" { "Name" } th scope="col" { "Protocol" } th scope="col" { "Ports" } th scope="col" { "Type" } th scope="col" { "Limits" } th scope="col" { "Slot" } th scope="col" { "Status" } th scope="col" { span.visually-hidden { "Actions" } } } }
                        tbody {
                            @for r in p.rules {
                                tr data-rule=(r.id) {
                                    td { (r.name) }
                                    td { (protocol_name(r.protocol)) }
                                    td { (ports(Some(r.port_range_start), Some(r.port_range_end))) }
                                    td { (rule_type_name(r.rule_type)) }
                                    td { "pps " (r.max_pps) " · port pps " (r.max_port_pps) @if r.min_pkt_size > 0 || r.max_pkt_size > 0 { " · size " (r.min_pkt_size) "–" (r.max_pkt_size) } }
                                    td { (r.slot.map_or_else(|| "—".to_owned(), |s| s.to_string())) }
                                    td.status { (badge(r.status.as_str())) @if let Some(m) = &r.status_message { br; small { (m) } } }
                                    td { (delete_button(chrome.csrf, &format!("{base}/engine-rules/{}/delete", r.id), &format!("Delete engine rule {}", r.name))) }
                                }
                            }
                        }
                    }
                }
                (pager(&p.rules_pages, "engine-pages", "engine rules"))
            }
            details.card open[engine_form.has_errors()] {
                summary { "Add an engine rule" }
                form method="post" action=(format!("{base}/engine-rules")) id="engine-form" {
                    (csrf(chrome.csrf))
                    (general(&engine_form))
                    div.grid {
                        (input(&engine_form, "engine", "name", "Name", "text", &[("required", "")]))
                        (select(&engine_form, "engine", "protocol", "Protocol", PROTOCOLS, "17"))
                        (input(&engine_form, "engine", "port_range_start", "First port", "text", &[("inputmode", "numeric"), ("required", "")]))
                        (input(&engine_form, "engine", "port_range_end", "Last port", "text", &[("inputmode", "numeric"), ("required", "")]))
                        (select(&engine_form, "engine", "rule_type", "Rule type", RULE_TYPES, "1"))
                        (input(&engine_form, "engine", "max_pps", "Max packets/s per source (0 = off)", "text", &[("inputmode", "numeric"), ("placeholder", "0")]))
                        (input(&engine_form, "engine", "max_port_pps", "Max packets/s on the port (0 = off)", "text", &[("inputmode", "numeric"), ("placeholder", "0")]))
                        (input(&engine_form, "engine", "min_pkt_size", "Min packet size (0 = off)", "text", &[("inputmode", "numeric"), ("placeholder", "0")]))
                        (input(&engine_form, "engine", "max_pkt_size", "Max packet size (0 = off)", "text", &[("inputmode", "numeric"), ("placeholder", "0")]))
                    }
                    button type="submit" { "Add rule" }
                }
            }
            details.card open[tpl_form.has_errors()] {
                summary { "Apply a marketplace template" }
                form method="post" action=(format!("{base}/templates")) id="template-form" {
                    (csrf(chrome.csrf))
                    (general(&tpl_form))
                    div.field {
                        label for="template-template_id" { "Template" }
                        select id="template-template_id" name="template_id" {
                            @for t in p.templates {
                                option value=(t.id) { (t.title) " — " (t.category.as_str()) ", " (t.kind) ": " (t.description) }
                            }
                        }
                    }
                    button type="submit" { "Apply template" }
                }
            }
        }

        section aria-labelledby="ip-title" {
            h2 id="ip-title" { "IP whitelist and blacklist" }
            div.table-wrap data-live id="ip-live" {
                @if p.entries.is_empty() && p.entries_pages.first.is_none() { p { "No entry." } } @else {
                    table id="ip-entries" {
                        thead { tr { th scope="col" { "List" } th scope="col" { "Address" } th scope="col" { "Reason" } th scope="col" { "Expires" } th scope="col" { "Status" } th scope="col" { span.visually-hidden { "Actions" } } } }
                        tbody {
                            @for e in p.entries {
                                tr data-entry=(e.id) {
                                    td { (e.list_type.as_str()) }
                                    td { code { (e.ip_address) } }
                                    td { (e.reason.as_deref().unwrap_or("")) }
                                    td { (time(e.expires_at)) }
                                    td.status { (badge(e.status.as_str())) @if let Some(m) = &e.status_message { br; small { (m) } } }
                                    td { (delete_button(chrome.csrf, &format!("{base}/ip-list/{}/delete", e.id), &format!("Delete entry {}", e.ip_address))) }
                                }
                            }
                        }
                    }
                }
                (pager(&p.entries_pages, "ip-pages", "IP list entries"))
            }
            details.card open[ip_form.has_errors()] {
                summary { "Add an address" }
                form method="post" action=(format!("{base}/ip-list")) id="ip-form" {
                    (csrf(chrome.csrf))
                    (general(&ip_form))
                    div.grid {
                        (select(&ip_form, "ip", "list_type", "List", &[("blacklist", "blacklist"), ("whitelist", "whitelist")], "blacklist"))
                        (input(&ip_form, "ip", "ip_address", "Address or CIDR prefix", "text", &[("placeholder", "203.0.113.42"), ("required", "")]))
                        (input(&ip_form, "ip", "reason", "Reason (optional)", "text", &[]))
                        (input(&ip_form, "ip", "expires_at", "Expires at, UTC (blacklist only, optional)", "datetime-local", &[]))
                    }
                    button type="submit" { "Add address" }
                }
            }
        }

        section aria-labelledby="fw-title" {
            h2 id="fw-title" { "nftables firewall" }
            div.table-wrap data-live id="fw-live" {
                table id="firewall-rules" {
                    thead { tr { th scope="col" { "Name" } th scope="col" { "Chain" } th scope="col" { "Protocol" } th scope="col" { "Ports" } th scope="col" { "Action" } th scope="col" { "Packets" } th scope="col" { "Status" } th scope="col" { span.visually-hidden { "Actions" } } } }
                    tbody {
                        @for f in p.firewall {
                            tr data-firewall=(f.id) {
                                td { (f.name) @if f.is_system { " " span.tag { "system" } } }
                                td { (f.chain.as_str()) }
                                td { (f.protocol.as_str()) }
                                td { (ports(f.port_start, f.port_end)) }
                                td { (f.action.as_str()) @if let (Some(r), Some(u)) = (f.limit_rate, f.limit_unit) { " " (r) "/" (u.as_str()) } }
                                td { (f.packets_total) }
                                td.status { (badge(f.status.as_str())) @if let Some(m) = &f.status_message { br; small { (m) } } }
                                td { @if !f.is_system { (delete_button(chrome.csrf, &format!("{base}/firewall/{}/delete", f.id), &format!("Delete firewall rule {}", f.name))) } }
                            }
                        }
                    }
                }
                (pager(&p.firewall_pages, "fw-pages", "firewall rules"))
            }
            details.card open[fw_form.has_errors()] {
                summary { "Add a firewall rule" }
                form method="post" action=(format!("{base}/firewall")) id="firewall-form" {
                    (csrf(chrome.csrf))
                    (general(&fw_form))
                    div.grid {
                        (input(&fw_form, "fw", "name", "Name", "text", &[("required", "")]))
                        (select(&fw_form, "fw", "chain", "Chain", &[("input", "input"), ("forward", "forward"), ("output", "output")], "input"))
                        (select(&fw_form, "fw", "protocol", "Protocol", &[("tcp", "tcp"), ("udp", "udp"), ("icmp", "icmp"), ("any", "any")], "tcp"))
                        (input(&fw_form, "fw", "port_start", "First port (tcp/udp)", "text", &[("inputmode", "numeric")]))
                        (input(&fw_form, "fw", "port_end", "Last port (optional)", "text", &[("inputmode", "numeric")]))
                        (select(&fw_form, "fw", "action", "Action", &[("drop", "drop"), ("accept", "accept"), ("reject", "reject"), ("limit", "limit")], "drop"))
                        (input(&fw_form, "fw", "limit_rate", "Limit rate (limit only)", "text", &[("inputmode", "numeric")]))
                        (select(&fw_form, "fw", "limit_unit", "Limit unit (limit only)", &[("", "—"), ("second", "second"), ("minute", "minute")], ""))
                        (input(&fw_form, "fw", "conntrack", "Conntrack states (optional, e.g. new)", "text", &[]))
                    }
                    button type="submit" { "Add firewall rule" }
                }
            }
        }

        section.card.danger-zone aria-labelledby="delete-title" {
            h2 id="delete-title" { "Delete this agent" }
            p { "Removes the agent, its token and everything on it from the server." }
            form method="post" action=(format!("{base}/delete")) {
                (csrf(chrome.csrf))
                button.danger type="submit" { "Delete agent " (a.name) }
            }
        }
    };
    page(chrome, &a.name, "agents", &body)
}

/// The traffic page's data.
#[derive(Debug)]
pub struct TrafficPage<'a> {
    /// The agent.
    pub agent: &'a AgentView,
    /// The window shown.
    pub window: Window,
    /// Totals over the window.
    pub summary: &'a MetricsSummaryView,
    /// All ports added up.
    pub total: &'a [Step],
    /// The busiest ports, each with its steps.
    pub ports: Vec<(u16, &'a [Step])>,
    /// Now.
    pub now: DateTime<Utc>,
}

/// The traffic page.
pub fn traffic(chrome: &Chrome<'_>, t: &TrafficPage<'_>) -> Markup {
    let a = t.agent;
    let base = format!("/agents/{}/traffic", a.id);
    let body = html! {
        p.crumbs { a href="/" { "Agents" } " › " a href=(format!("/agents/{}", a.id)) { (a.name) } " › Traffic" }
        h1 { "Traffic of " (a.name) }
        nav.windows aria-label="Time window" {
            @for (w, q) in [(Window::TenMinutes, "10m"), (Window::Hour, "1h"), (Window::Day, "24h")] {
                a href=(format!("{base}?window={q}")) aria-current=[(w == t.window).then_some("page")] { (chart::window_label(w)) }
            }
        }
        div data-live id="traffic-live" {
            p.totals id="totals" {
                "Over the last " (chart::window_label(t.window)) ": "
                strong { (t.summary.total_passed) } " packets passed, "
                strong { (t.summary.total_dropped) } " dropped · agent "
                (badge(a.status.as_str()))
            }
            (chart::chart("All ports", "chart-all", t.total, t.window, t.now))
            div.charts {
                @for (port, steps) in &t.ports {
                    (chart::chart(&format!("Port {port}"), &format!("chart-port-{port}"), steps, t.window, t.now))
                }
            }
            h2 { "Dropped by reason" }
            div.table-wrap { (drops_by_reason(t.summary, t.window)) }
        }
    };
    page(chrome, &format!("Traffic of {}", a.name), "agents", &body)
}

/// The API keys page.
pub fn keys(chrome: &Chrome<'_>, keys: &[ApiKeyRecord], current: ApiKeyId, form: &FormState) -> Markup {
    let body = html! {
        h1 { "API keys" }
        p { "Keys of account " strong { (chrome.account) } ". A key is shown once, when it is created; the server keeps only its SHA-256." }
        div.table-wrap data-live id="keys-live" {
            table id="keys" {
                thead { tr { th scope="col" { "Key ID" } th scope="col" { "Created" } th scope="col" { span.visually-hidden { "Actions" } } } }
                tbody {
                    @for k in keys {
                        tr data-key=(k.id) {
                            td { code { (k.id) } @if k.id == current { " " span.tag { "this session" } } }
                            td { (time(Some(k.created_at))) }
                            td {
                                form.inline method="post" action=(format!("/keys/{}/revoke", k.id)) {
                                    (csrf(chrome.csrf))
                                    button.danger type="submit" aria-label=(format!("Revoke key {}", k.id)) { "Revoke" }
                                }
                            }
                        }
                    }
                }
            }
        }
        section.card aria-labelledby="new-key" {
            h2 id="new-key" { "Create a key" }
            form method="post" action="/keys" id="key-form" {
                (csrf(chrome.csrf))
                (general(form))
                button type="submit" { "Create key" }
            }
        }
    };
    page(chrome, "API keys", "keys", &body)
}

/// A page for an error (not found, suspended, internal).
pub fn error(status: u16, title: &str, message: &str) -> Markup {
    html! {
        (DOCTYPE)
        html lang="en" {
            (head(title))
            body {
                main id="main" {
                    h1 { (title) }
                    p { (message) }
                    p { a href="/" { "Back to the agents" } " · " code { (status) } }
                }
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_dataplane_label_names_the_xdp_mode_and_the_egress_attachment() {
        assert_eq!(dataplane_label(None, None), "—");
        assert_eq!(dataplane_label(Some(DataplaneMode::Native), Some(EgressMode::Tcx)), "XDP native · egress tcx");
        let generic = dataplane_label(Some(DataplaneMode::Generic), Some(EgressMode::Clsact));
        assert_eq!(generic, "XDP generic · egress clsact");
        assert_eq!(dataplane_label(Some(DataplaneMode::Native), None), "XDP native", "an agent older than egress");
        assert_eq!(dataplane_label(Some(DataplaneMode::Memory), None), "in-memory model");
    }
}
