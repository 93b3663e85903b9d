//! `pakkt-core`'s Store conformance suite on both backends: one test per
//! check and backend.

mod common;

use common::{TempDir, postgres, postgres_url, sqlite};
use pakkt_core::testing::WithGuard;

mod sqlite {
    use super::{TempDir, WithGuard, sqlite};

    pakkt_core::store_conformance_tests!(|| async {
        let dir = TempDir::new();
        Some(WithGuard(sqlite(&dir).await, dir))
    });
}

mod postgres {
    use super::{postgres, postgres_url};

    pakkt_core::store_conformance_tests!(|| async {
        let base = postgres_url()?;
        Some(postgres(&base).await)
    });
}
