//! `pakkt-core`'s Store conformance suite on both backends.

mod common;

use common::{TempDir, postgres, postgres_url, sqlite};

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sqlite_conforms() {
    let dir = TempDir::new();
    pakkt_core::testing::store_conformance(|| sqlite(&dir)).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn postgres_conforms() {
    let Some(base) = postgres_url() else { return };
    pakkt_core::testing::store_conformance(|| postgres(&base)).await;
}
