//! In-memory implementations of the ports: the reference behaviour of each
//! contract, for tests, demos and panels that keep their own persistence.
//!
//! - [`MemoryStore`]: one lock guards everything, which makes every method
//!   trivially atomic.
//! - [`MemoryDataplane`]: enforces on the verdict model instead of the
//!   kernel; packets are fed to it by [`MemoryDataplane::inject`].

mod dataplane;
mod store;

pub use dataplane::MemoryDataplane;
pub use store::MemoryStore;
