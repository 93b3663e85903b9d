//! The web panel: PAKKT in a browser, served by the server at `/`.
//!
//! Sign in with an API key; then see the agents and their live status, add
//! and delete engine rules, IP list entries and firewall rules (or apply a
//! marketplace template), watch traffic charts, and create or revoke keys.
//! `docs/panel.md` explains the choices; in short:
//!
//! - **Same use cases.** Every action calls the very
//!   [`Pakkt`] method the JSON API calls, with the API's request types, so
//!   the rules and their messages exist once. A refusal is shown next to the
//!   field it names ([`form::FormState::refuse`]) and changes nothing.
//! - **Beside the API, not behind its gate.** [`mount`] puts the panel in
//!   front of the API's gated routes: the paths it owns ([`owns`]) are the
//!   panel's; everything else (the API, its spec, `/docs`) goes to the API
//!   untouched, so its behaviour and spec do not change.
//! - **Sessions** ([`session`]): a random token in an HTTP-only,
//!   `SameSite=Strict` cookie (`Secure` over TLS); the database keeps the
//!   session under the token's digest, with the key's digest (never the
//!   key or the token), so every server process serves every session.
//! - **CSRF**: every form carries the session's token, checked on every
//!   POST, and a POST whose `Origin` names another host is refused.
//! - **Rate limit**: signing in counts as one API request of the key;
//!   pages and actions after that do not (see `docs/panel.md`).
//! - **HTML from maud** ([`view`]), charts drawn here as SVG ([`chart`]),
//!   one small hand-written script ([`assets`]) that refreshes the live
//!   parts of a page every few seconds. No build step.

mod actions;
pub mod assets;
pub mod chart;
pub mod form;
pub mod session;
pub mod view;

use std::sync::Arc;
use std::time::Instant;

use maud::Markup;
use pakkt_core::id::{AgentId, EngineRuleId, FirewallRuleId, IpEntryId};
use pakkt_core::metrics::Window;
use pakkt_core::panel::{PanelSession, SessionToken};
use pakkt_core::service::{HistoryQuery, Pakkt, Session, SignedIn};
use pakkt_core::store::Store;
use pakkt_core::{Error, ErrorKind};
use poem::http::header::{self, HeaderValue};
use poem::http::uri::Scheme;
use poem::http::{Method, StatusCode};
use poem::{Endpoint, IntoResponse, Request, Response};

use self::form::{FORM_LIMIT, FormState};
use self::session::{COOKIE, Notice};
use self::view::{Chrome, Pager};
use crate::api::page::slice;

/// How many ports get a chart of their own on the traffic page.
const CHARTED_PORTS: usize = 6;

/// The window of the agent page's drops by reason.
const AGENT_PAGE_WINDOW: Window = Window::Hour;

/// Items per page of the panel's lists (agents, engine rules, IP list
/// entries, firewall rules): a page and its live refresh render this many
/// at most, however long the list.
pub const PAGE_ITEMS: usize = 100;

/// Where each list of an agent's page starts: the `after` cursors of its
/// query (`rules_after`, `ip_after`, `fw_after`), each the last item of
/// the previous page, as the API's `after`.
#[derive(Debug, Clone, Copy, Default)]
struct Cursors {
    rules: Option<EngineRuleId>,
    ip: Option<IpEntryId>,
    fw: Option<FirewallRuleId>,
}

impl Cursors {
    /// The cursors of a request's query; a malformed one is left out (that
    /// list starts at its first page).
    fn of(req: &Request) -> Self {
        Self { rules: cursor(req, "rules_after"), ip: cursor(req, "ip_after"), fw: cursor(req, "fw_after") }
    }

    /// The agent page's URL with these cursors.
    fn url(&self, agent: AgentId) -> String {
        let pairs: Vec<String> = [
            ("rules_after", self.rules.map(|c| c.to_string())),
            ("ip_after", self.ip.map(|c| c.to_string())),
            ("fw_after", self.fw.map(|c| c.to_string())),
        ]
        .into_iter()
        .filter_map(|(name, value)| value.map(|v| format!("{name}={v}")))
        .collect();
        if pairs.is_empty() { format!("/agents/{agent}") } else { format!("/agents/{agent}?{}", pairs.join("&")) }
    }

    /// The links of one list: to its first page (unless `on_first`) and
    /// its next page, the other lists staying where they are.
    fn pager<K>(
        &self,
        agent: AgentId,
        on_first: bool,
        next: Option<K>,
        with: impl Fn(Self, Option<K>) -> Self,
    ) -> Pager {
        Pager {
            first: (!on_first).then(|| with(*self, None).url(agent)),
            next: next.map(|n| with(*self, Some(n)).url(agent)),
        }
    }
}

/// Whether the panel serves `path` (the rest is the API's).
pub fn owns(path: &str) -> bool {
    let first = path.trim_start_matches('/').split('/').next().unwrap_or("");
    path == "/" || matches!(first, "signin" | "signout" | "agents" | "keys" | "assets")
}

/// The panel in front of `api`: it answers the paths it [`owns`] and hands
/// every other request to `api` unchanged.
pub fn mount<S: Store, A: Endpoint>(core: Arc<Pakkt<S>>, api: A) -> Panel<S, A> {
    Panel { core, api }
}

/// The panel endpoint (see [`mount`]).
#[derive(Debug)]
pub struct Panel<S, A> {
    core: Arc<Pakkt<S>>,
    api: A,
}

impl<S: Store, A: Endpoint> Endpoint for Panel<S, A> {
    type Output = Response;

    async fn call(&self, req: Request) -> poem::Result<Response> {
        if !owns(req.uri().path()) {
            return self.api.call(req).await.map(IntoResponse::into_response);
        }
        let started = Instant::now();
        let method = req.method().clone();
        let path = req.uri().path().to_owned();
        let tls = *req.scheme() == Scheme::HTTPS;
        let mut resp = self.serve(req).await;
        secure_headers(&mut resp);
        if tls {
            mark_cookie_secure(&mut resp);
        }
        tracing::info!(
            method = %method,
            path = %path,
            status = resp.status().as_u16(),
            micros = u64::try_from(started.elapsed().as_micros()).unwrap_or(u64::MAX),
            "panel"
        );
        Ok(resp)
    }
}

/// What a page handler answers.
type Answer = Result<Response, Response>;

fn html(status: StatusCode, markup: &Markup) -> Response {
    Response::builder().status(status).content_type("text/html; charset=utf-8").body(markup.clone().into_string())
}

fn see_other(to: &str) -> Response {
    Response::builder().status(StatusCode::SEE_OTHER).header(header::LOCATION, to).finish()
}

fn error_page(status: StatusCode, title: &str, message: &str) -> Response {
    html(status, &view::error(status.as_u16(), title, message))
}

fn not_found() -> Response {
    error_page(StatusCode::NOT_FOUND, "Not found", "There is no such page, or it belongs to another account.")
}

fn secure_headers(resp: &mut Response) {
    let h = resp.headers_mut();
    h.insert(
        header::CONTENT_SECURITY_POLICY,
        HeaderValue::from_static(
            "default-src 'self'; script-src 'self'; style-src 'self'; img-src 'self' data:; \
             form-action 'self'; frame-ancestors 'none'; base-uri 'none'",
        ),
    );
    h.insert(header::X_CONTENT_TYPE_OPTIONS, HeaderValue::from_static("nosniff"));
    h.insert(header::REFERRER_POLICY, HeaderValue::from_static("same-origin"));
    h.insert(header::X_FRAME_OPTIONS, HeaderValue::from_static("DENY"));
    if !h.contains_key(header::CACHE_CONTROL) {
        h.insert(header::CACHE_CONTROL, HeaderValue::from_static("no-store"));
    }
}

fn session_cookie(id: &str) -> String {
    format!("{COOKIE}={id}; Path=/; HttpOnly; SameSite=Strict; Max-Age={}", session::IDLE_TIMEOUT.as_secs())
}

fn cleared_cookie() -> String {
    format!("{COOKIE}=; Path=/; HttpOnly; SameSite=Strict; Max-Age=0")
}

fn mark_cookie_secure(resp: &mut Response) {
    let cookies: Vec<HeaderValue> = resp.headers().get_all(header::SET_COOKIE).iter().cloned().collect();
    if cookies.is_empty() {
        return;
    }
    resp.headers_mut().remove(header::SET_COOKIE);
    for cookie in cookies {
        let text = cookie.to_str().map(|c| format!("{c}; Secure")).unwrap_or_default();
        if let Ok(value) = HeaderValue::from_str(&text) {
            resp.headers_mut().append(header::SET_COOKIE, value);
        }
    }
}

/// The session cookie's value.
fn cookie_of(req: &Request) -> Option<String> {
    req.headers().get_all(header::COOKIE).iter().filter_map(|v| v.to_str().ok()).find_map(|line| {
        line.split(';').find_map(|pair| {
            let (name, value) = pair.trim().split_once('=')?;
            (name == COOKIE && !value.is_empty()).then(|| value.to_owned())
        })
    })
}

/// To the sign-in page, clearing the request's cookie if it has one (the
/// session it named is gone).
fn signed_out(req: &Request) -> Response {
    let mut resp = see_other("/signin");
    if cookie_of(req).is_some()
        && let Ok(cookie) = HeaderValue::from_str(&cleared_cookie())
    {
        resp.headers_mut().insert(header::SET_COOKIE, cookie);
    }
    resp
}

/// A POST from another site is refused, whatever it carries: its `Origin`
/// (when the browser sends one) must name this host.
fn same_origin(req: &Request) -> bool {
    let Some(origin) = req.header("origin") else { return true };
    // HTTP/2 (which browsers speak over TLS) carries the host in the
    // request's authority, not in a Host header.
    let Some(host) = req.header("host").or_else(|| req.uri().authority().map(poem::http::uri::Authority::as_str))
    else {
        return false;
    };
    let origin_host = origin.split_once("://").map_or(origin, |(_, rest)| rest);
    origin_host.eq_ignore_ascii_case(host)
}

async fn read_form(req: &mut Request, name: &'static str) -> Result<FormState, Response> {
    let bytes = req.take_body().into_bytes_limit(FORM_LIMIT).await.map_err(|_| {
        error_page(
            StatusCode::PAYLOAD_TOO_LARGE,
            "Form too large",
            "The form was too large to read; nothing was changed.",
        )
    })?;
    let pairs = form::pairs(&bytes).map_err(|e| error_page(StatusCode::BAD_REQUEST, "Bad form", &e))?;
    Ok(FormState::from_pairs(name, pairs))
}

/// What a request's session check found.
enum Check {
    /// A live session.
    SignedIn(Box<Signed>),
    /// No session, or one that no longer signs in (revoked key, suspended
    /// account): it is ended.
    SignedOut,
    /// The store could not answer: the session is kept.
    Unavailable,
}

/// A signed-in request.
struct Signed {
    /// The cookie's token (it seals the session's notices).
    token: SessionToken,
    /// The session as stored.
    panel: PanelSession,
    /// The key's check.
    session: Session,
    /// The one-time notice this page shows.
    notice: Option<Notice>,
}

impl Signed {
    fn chrome(&self) -> Chrome<'_> {
        Chrome { csrf: &self.panel.csrf, account: self.session.account.name.as_str(), notice: self.notice.clone() }
    }
}

/// An ID from the path; a malformed one is a page not found.
fn parse_id<T: std::str::FromStr>(raw: &str) -> Option<T> {
    raw.parse().ok()
}

/// A list's `after` cursor from the query; a malformed one is none (the
/// list shows its first page).
fn cursor<T: std::str::FromStr>(req: &Request, name: &str) -> Option<T> {
    query_value(req, name).and_then(|v| parse_id(&v))
}

impl<S: Store, A> Panel<S, A> {
    async fn serve(&self, mut req: Request) -> Response {
        let path = req.uri().path().to_owned();
        let segs: Vec<&str> = path.split('/').filter(|s| !s.is_empty()).collect();
        let post = req.method() == Method::POST;
        if !post && req.method() != Method::GET && req.method() != Method::HEAD {
            return error_page(StatusCode::METHOD_NOT_ALLOWED, "Method not allowed", "The panel answers GET and POST.");
        }
        if post && !same_origin(&req) {
            return error_page(StatusCode::FORBIDDEN, "Refused", "A form from another site was refused.");
        }
        match (post, segs.as_slice()) {
            (false, ["assets", name]) => return assets::serve(name).unwrap_or_else(not_found),
            (false, ["signin"]) => {
                return if matches!(self.signed_in(&req).await, Check::SignedIn(_)) {
                    see_other("/")
                } else {
                    html(StatusCode::OK, &view::sign_in(&FormState::empty("signin")))
                };
            }
            (true, ["signin"]) => return self.sign_in(&mut req).await,
            _ => {}
        }
        let mut signed = match self.signed_in(&req).await {
            Check::SignedIn(signed) => signed,
            Check::Unavailable => {
                return error_page(
                    StatusCode::SERVICE_UNAVAILABLE,
                    "Try again",
                    "The server could not check your session just now; nothing was changed. Try again in a moment.",
                );
            }
            Check::SignedOut => return signed_out(&req),
        };
        let answer = if post {
            let Some(action) = actions::Action::route(&segs) else { return not_found() };
            let form = match read_form(&mut req, action.form_name()).await {
                Ok(form) => form,
                Err(resp) => return resp,
            };
            if !session::same_secret(form.value("csrf"), &signed.panel.csrf) {
                return error_page(
                    StatusCode::FORBIDDEN,
                    "Form expired",
                    "The form's security token did not match this session (it may be from an older page): reload the page and try again. Nothing was changed.",
                );
            }
            // Forms count against the key's limit, as its API calls do.
            if let Err(e) = self.core.count_request(&signed.session).await {
                return failure(&e);
            }
            self.act(&signed, action, form).await
        } else {
            // The script's refreshes and HEAD requests (which show no
            // page) leave a one-time notice for the page that shows it.
            if req.header("x-pakkt-refresh").is_none() && req.method() != Method::HEAD {
                signed.notice = self.take_notice(&signed).await;
            }
            self.page(&signed, &segs, &req).await
        };
        let mut resp = answer.unwrap_or_else(|resp| resp);
        // A page shown renews the cookie, so that it lasts as long as the
        // session does: the server ends a session only after it has gone
        // unused for IDLE_TIMEOUT.
        if !post
            && resp.status() == StatusCode::OK
            && !resp.headers().contains_key(header::SET_COOKIE)
            && let Ok(cookie) = HeaderValue::from_str(&session_cookie(signed.token.expose()))
        {
            resp.headers_mut().insert(header::SET_COOKIE, cookie);
        }
        resp
    }

    /// The live session of this request, its key re-checked (a session
    /// that no longer signs in is ended by the check).
    async fn signed_in(&self, req: &Request) -> Check {
        let Some(cookie) = cookie_of(req) else { return Check::SignedOut };
        match self.core.panel_session(&cookie).await {
            Ok(Some(SignedIn { panel, session })) => match SessionToken::parse(&cookie) {
                Some(token) => Check::SignedIn(Box::new(Signed { token, panel, session, notice: None })),
                None => Check::SignedOut,
            },
            Ok(None) => Check::SignedOut,
            Err(e) => {
                tracing::error!(error = %pakkt_core::Report(&e), "panel session check failed");
                Check::Unavailable
            }
        }
    }

    /// Takes the session's one-time notice, if it has one. A notice that
    /// cannot be read is dropped (and logged): the page shows without it.
    async fn take_notice(&self, s: &Signed) -> Option<Notice> {
        match self.core.take_panel_notice(&s.panel).await {
            Ok(sealed) => {
                let notice = session::open(&s.token, &sealed?);
                if notice.is_none() {
                    tracing::warn!("a panel notice could not be opened; dropped");
                }
                notice
            }
            Err(e) => {
                tracing::error!(error = %pakkt_core::Report(&e), "panel notice could not be read");
                None
            }
        }
    }

    /// Leaves a one-time notice for the session's next page (sealed with
    /// the session's token: see [`session`]).
    async fn leave_notice(&self, s: &Signed, notice: &Notice) -> Result<(), Response> {
        let Some(sealed) = session::seal(&s.token, notice) else {
            tracing::error!("a panel notice could not be sealed");
            return Err(error_page(
                StatusCode::INTERNAL_SERVER_ERROR,
                "Internal error",
                "The change was made, but its confirmation could not be kept for the next page.",
            ));
        };
        self.core.set_panel_notice(&s.panel, &sealed).await.map_err(|e| failure(&e))
    }

    async fn sign_in(&self, req: &mut Request) -> Response {
        let mut form = match read_form(req, "signin").await {
            Ok(form) => form,
            Err(resp) => return resp,
        };
        let key = form.value("api_key").to_owned();
        match self.core.sign_in(&key).await {
            Ok((token, _)) => {
                let mut resp = see_other("/");
                if let Ok(cookie) = HeaderValue::from_str(&session_cookie(token.expose())) {
                    resp.headers_mut().insert(header::SET_COOKIE, cookie);
                }
                resp
            }
            Err(e) => {
                form.values.remove("api_key"); // never echoed back
                let status = match e.kind() {
                    ErrorKind::AccountSuspended => StatusCode::PAYMENT_REQUIRED,
                    ErrorKind::RateLimited => StatusCode::TOO_MANY_REQUESTS,
                    ErrorKind::Internal => StatusCode::INTERNAL_SERVER_ERROR,
                    _ => StatusCode::UNAUTHORIZED,
                };
                if e.kind() == ErrorKind::Unauthorized {
                    form.errors.insert(
                        "api_key".into(),
                        "Missing or invalid credentials: paste a whole key (pakkt_pub_…) that has not been revoked."
                            .into(),
                    );
                } else {
                    form.refuse(&e, &[]);
                }
                html(status, &view::sign_in(&form))
            }
        }
    }

    /// A GET page.
    async fn page(&self, s: &Signed, segs: &[&str], req: &Request) -> Answer {
        match segs {
            [] => self.agents_page(s, cursor(req, "after"), &FormState::empty("agent"), StatusCode::OK).await,
            ["agents"] => Ok(see_other("/")),
            ["agents", id] => self.agent_page(s, parse_id(id).ok_or_else(not_found)?, Cursors::of(req), None).await,
            ["agents", id, "traffic"] => {
                let window = query_value(req, "window").and_then(|w| w.parse().ok()).unwrap_or(Window::TenMinutes);
                self.traffic_page(s, parse_id(id).ok_or_else(not_found)?, window).await
            }
            ["keys"] => self.keys_page(s, &FormState::empty("key"), StatusCode::OK).await,
            _ => Err(not_found()),
        }
    }

    /// The agents page: one page of the agents, after `after`.
    async fn agents_page(&self, s: &Signed, after: Option<AgentId>, form: &FormState, status: StatusCode) -> Answer {
        let agents = self.core.list_agents(&s.session).await.map_err(|e| failure(&e))?;
        let (agents, next) = slice(agents, |a| a.id, PAGE_ITEMS, after);
        let pager = Pager { first: after.map(|_| "/".to_owned()), next: next.map(|n| format!("/?after={n}")) };
        Ok(html(status, &view::agents(&s.chrome(), &agents, &pager, form)))
    }

    /// An agent's page: one page of each of its lists, where `at` says.
    async fn agent_page(&self, s: &Signed, id: AgentId, at: Cursors, failed: Option<&FormState>) -> Answer {
        let core = &self.core;
        let session = &s.session;
        let fail = |e: Error| failure(&e);
        let agent = core.get_agent(session, id).await.map_err(fail)?;
        let rules = core.list_engine_rules(session, id).await.map_err(fail)?;
        let (rules, rules_next) = slice(rules, |r| r.id, PAGE_ITEMS, at.rules);
        let entries = core.list_ip_entries(session, id, None).await.map_err(fail)?;
        let (entries, ip_next) = slice(entries, |e| e.id, PAGE_ITEMS, at.ip);
        let firewall = core.list_firewall_rules(session, id).await.map_err(fail)?;
        let (firewall, fw_next) = slice(firewall, |f| f.id, PAGE_ITEMS, at.fw);
        let templates = core.list_templates(session, None);
        let window = AGENT_PAGE_WINDOW;
        let summary = core.metrics_summary(session, id, window).await.map_err(fail)?;
        let page = view::AgentPage {
            agent: &agent,
            rules: &rules,
            rules_pages: at.pager(id, at.rules.is_none(), rules_next, |c, rules| Cursors { rules, ..c }),
            entries: &entries,
            entries_pages: at.pager(id, at.ip.is_none(), ip_next, |c, ip| Cursors { ip, ..c }),
            firewall: &firewall,
            firewall_pages: at.pager(id, at.fw.is_none(), fw_next, |c, fw| Cursors { fw, ..c }),
            templates: &templates,
            summary: &summary,
            window,
            failed,
        };
        let status =
            if failed.is_some_and(FormState::has_errors) { StatusCode::UNPROCESSABLE_ENTITY } else { StatusCode::OK };
        Ok(html(status, &view::agent(&s.chrome(), &page)))
    }

    async fn traffic_page(&self, s: &Signed, id: AgentId, window: Window) -> Answer {
        let core = &self.core;
        let session = &s.session;
        let fail = |e: Error| failure(&e);
        let agent = core.get_agent(session, id).await.map_err(fail)?;
        let summary = core.metrics_summary(session, id, window).await.map_err(fail)?;
        let now = core.now();
        let interval = chart::interval_for(window);
        let query = HistoryQuery { from: Some(now - window.duration()), to: Some(now), interval, port: None };
        let rows = core.metrics_history(session, id, query).await.map_err(fail)?;
        let steps = chart::steps(&rows, interval, now, agent.created_at);
        let empty = Vec::new();
        let total = steps.get(&None).unwrap_or(&empty);
        let ports = summary
            .top_ports
            .iter()
            .take(CHARTED_PORTS)
            .map(|p| (p.port, steps.get(&Some(p.port)).map_or(&empty[..], Vec::as_slice)))
            .collect();
        let page = view::TrafficPage { agent: &agent, window, summary: &summary, total, ports, now };
        Ok(html(StatusCode::OK, &view::traffic(&s.chrome(), &page)))
    }

    async fn keys_page(&self, s: &Signed, form: &FormState, status: StatusCode) -> Answer {
        let keys = self.core.list_account_keys(&s.session).await.map_err(|e| failure(&e))?;
        Ok(html(status, &view::keys(&s.chrome(), &keys, s.session.key_id, form)))
    }
}

/// The page for an error that is not about a form field.
fn failure(e: &Error) -> Response {
    match e.kind() {
        ErrorKind::NotFound => not_found(),
        ErrorKind::AccountSuspended => error_page(StatusCode::PAYMENT_REQUIRED, "Account suspended", &e.to_string()),
        ErrorKind::Internal => {
            tracing::error!(error = %pakkt_core::Report(e), "internal error in the panel");
            error_page(
                StatusCode::INTERNAL_SERVER_ERROR,
                "Internal error",
                "Something failed on the server; the cause is in its log.",
            )
        }
        ErrorKind::RateLimited => {
            let mut page = error_page(StatusCode::TOO_MANY_REQUESTS, "Too many changes", &e.to_string());
            if let Error::RateLimited { retry_after, .. } = e
                && let Ok(value) = HeaderValue::from_str(&retry_after.as_secs().max(1).to_string())
            {
                page.headers_mut().insert(header::RETRY_AFTER, value);
            }
            page
        }
        _ => error_page(crate::error::status_of(e.kind()), "Refused", &e.to_string()),
    }
}

/// The status a refused form answers: the API's for the same error.
fn status_of(e: &Error) -> StatusCode {
    crate::error::status_of(e.kind())
}

/// A value of the request's query.
fn query_value(req: &Request, name: &str) -> Option<String> {
    let query = req.uri().query()?;
    let pairs: Vec<(String, String)> = serde_urlencoded::from_str(query).ok()?;
    pairs.into_iter().find(|(k, _)| k == name).map(|(_, v)| v)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_panel_owns_its_paths_and_leaves_the_api_alone() {
        for path in ["/", "/signin", "/signout", "/agents", "/agents/01J5/traffic", "/keys", "/assets/panel.css"] {
            assert!(owns(path), "{path}");
        }
        for path in
            ["/api/v1/agents", "/api/v1/openapi.json", "/docs", "/docs/", "/metrics", "/agentsx", "/favicon.ico"]
        {
            assert!(!owns(path), "{path}");
        }
    }

    #[test]
    fn cookies_are_found_among_others() {
        let req = Request::builder().header("cookie", "a=1; pakkt_session=abc; b=2").finish();
        assert_eq!(cookie_of(&req).as_deref(), Some("abc"));
        let req = Request::builder().header("cookie", "pakkt_session=").finish();
        assert_eq!(cookie_of(&req), None);
    }

    #[test]
    fn each_list_of_an_agent_page_pages_on_its_own() {
        let agent = AgentId::generate();
        let (rule, entry, next) = (EngineRuleId::generate(), IpEntryId::generate(), IpEntryId::generate());
        let at = Cursors { rules: Some(rule), ip: Some(entry), fw: None };
        assert_eq!(at.url(agent), format!("/agents/{agent}?rules_after={rule}&ip_after={entry}"));
        assert_eq!(Cursors::default().url(agent), format!("/agents/{agent}"));
        let ip = at.pager(agent, false, Some(next), |c, ip| Cursors { ip, ..c });
        assert_eq!(ip.next, Some(format!("/agents/{agent}?rules_after={rule}&ip_after={next}")), "rules stay put");
        assert_eq!(ip.first, Some(format!("/agents/{agent}?rules_after={rule}")));
        let fw = at.pager::<FirewallRuleId>(agent, true, None, |c, fw| Cursors { fw, ..c });
        assert_eq!(fw, Pager::default(), "one page: no links");
        let req = Request::builder().uri_str(format!("/agents/{agent}?ip_after={entry}&fw_after=nonsense")).finish();
        let read = Cursors::of(&req);
        assert_eq!((read.rules, read.ip, read.fw), (None, Some(entry), None), "a malformed cursor is none");
    }

    #[test]
    fn posts_from_another_origin_are_refused() {
        let ok = Request::builder().header("host", "127.0.0.1:8080").header("origin", "http://127.0.0.1:8080").finish();
        assert!(same_origin(&ok));
        let bad = Request::builder().header("host", "127.0.0.1:8080").header("origin", "https://evil.example").finish();
        assert!(!same_origin(&bad));
        let none = Request::builder().header("host", "127.0.0.1:8080").finish();
        assert!(same_origin(&none), "no Origin: the CSRF token decides");
    }
}
