//! The conformance suites of PAKKT's two ports, written once and run on
//! every implementation: [`store`] for the `Store` role traits (in memory
//! here, SQLite and PostgreSQL in `pakkt-store`, the embedding example's
//! store) and [`dataplane`] for `Dataplane`.
//!
//! Each suite is a set of checks, one `pub async fn` per contract, and a
//! macro that generates one `#[tokio::test]` per check for an
//! implementation, so that a failure names the contract it broke and the
//! other checks still run:
//!
//! ```text
//! mod sqlite {
//!     pakkt_core::store_conformance_tests!(|| async { Some(fresh_store().await) });
//! }
//! ```
//!
//! The factory returns `None` to skip (a PostgreSQL test without a
//! server, say), or a [`StoreFixture`] (a [`DataplaneFixture`]): the
//! implementation itself, or a [`WithGuard`]
//! that keeps what the store needs (a temporary directory) alive for the
//! test.

pub mod dataplane;
pub mod store;

use std::future::Future;
use std::pin::Pin;
use std::task::Poll;

use chrono::{DateTime, Utc};

use crate::rule::{Protocol, RateLimits, RuleSpec, RuleType};

/// What a `Store` conformance test's factory makes: a store, or a
/// [`WithGuard`] around one.
pub trait StoreFixture {
    /// The store under test.
    type Subject: crate::store::Store;
    /// It.
    fn subject(&self) -> &Self::Subject;
}

impl<S: crate::store::Store> StoreFixture for S {
    type Subject = S;
    fn subject(&self) -> &S {
        self
    }
}

impl<S: crate::store::Store, G> StoreFixture for WithGuard<S, G> {
    type Subject = S;
    fn subject(&self) -> &S {
        &self.0
    }
}

/// What a `Dataplane` conformance test's factory makes: a dataplane, or a
/// [`WithGuard`] around one.
pub trait DataplaneFixture {
    /// The dataplane under test.
    type Subject: crate::dataplane::Dataplane;
    /// It.
    fn subject(&self) -> &Self::Subject;
}

impl<D: crate::dataplane::Dataplane> DataplaneFixture for D {
    type Subject = D;
    fn subject(&self) -> &D {
        self
    }
}

impl<D: crate::dataplane::Dataplane, G> DataplaneFixture for WithGuard<D, G> {
    type Subject = D;
    fn subject(&self) -> &D {
        &self.0
    }
}

/// An implementation under test and what must outlive it.
#[derive(Debug)]
pub struct WithGuard<S, G>(pub S, pub G);

/// One `#[tokio::test]` per check of a suite, each on a fresh fixture.
#[doc(hidden)]
#[macro_export]
macro_rules! __conformance_tests {
    ($suite:ident, $fixture:ident, $make:expr; $($check:ident),* $(,)?) => {$(
        #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
        async fn $check() {
            let Some(fixture) = ($make)().await else { return };
            $crate::testing::$suite::$check($crate::testing::$fixture::subject(&fixture)).await;
        }
    )*};
}

/// Generates the `Store` conformance tests, one per check of
/// [`store`], for the stores that `$make` (an async factory returning
/// `Option<impl Fixture>`) makes.
#[macro_export]
macro_rules! store_conformance_tests {
    ($make:expr) => {
        $crate::__conformance_tests!(store, StoreFixture, $make;
            accounts_and_keys, key_listing, agents, engine_rule_admission, engine_rule_slots_exhaust,
            engine_rule_deletion, ip_entries, ip_expiry, firewall_rules, desired_state_and_reports,
            reports_ignore_other_agents, metrics, concurrent_duplicate_rules, concurrent_slots,
            concurrent_duplicate_entries, agent_quota, key_quota, ip_entry_quota, firewall_rule_quota,
            concurrent_account_quotas, concurrent_agent_quotas, panel_sessions, panel_session_cap,
            panel_sessions_end_with_their_key, concurrent_panel_sessions);
    };
}

/// Generates the `Dataplane` conformance tests, one per check of
/// [`dataplane`], for the dataplanes that `$make` makes (as
/// [`store_conformance_tests!`]).
#[macro_export]
macro_rules! dataplane_conformance_tests {
    ($make:expr) => {
        $crate::__conformance_tests!(dataplane, DataplaneFixture, $make;
            dataplane_starts_empty, dataplane_converges, dataplane_ops_are_idempotent,
            dataplane_refuses_a_held_slot);
    };
}

/// A fixed instant the checks count from.
pub fn t0() -> DateTime<Utc> {
    DateTime::parse_from_rfc3339("2026-03-16T12:00:00Z").map(|t| t.with_timezone(&Utc)).unwrap_or_default()
}

/// Polls all futures concurrently and returns their outputs in order.
pub async fn join_all<T>(futures: Vec<Pin<Box<dyn Future<Output = T> + Send + '_>>>) -> Vec<T> {
    let mut futures: Vec<Option<Pin<Box<dyn Future<Output = T> + Send + '_>>>> =
        futures.into_iter().map(Some).collect();
    let mut outputs: Vec<Option<T>> = futures.iter().map(|_| None).collect();
    std::future::poll_fn(|cx| {
        let mut pending = false;
        for (slot, out) in futures.iter_mut().zip(outputs.iter_mut()) {
            if let Some(fut) = slot {
                match fut.as_mut().poll(cx) {
                    Poll::Ready(v) => {
                        *out = Some(v);
                        *slot = None;
                    }
                    Poll::Pending => pending = true,
                }
            }
        }
        if pending { Poll::Pending } else { Poll::Ready(()) }
    })
    .await;
    outputs.into_iter().flatten().collect()
}

fn spec(protocol: Protocol, start: u16, end: u16) -> RuleSpec {
    RuleSpec::new(protocol, start, end, RuleType::RateLimit, RateLimits { max_pps: 100, ..RateLimits::default() })
        .expect("test spec")
}
