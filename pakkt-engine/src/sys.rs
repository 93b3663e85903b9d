//! The few syscalls aya does not make for us: memory-mapping array maps,
//! the engine clock (`clock_gettime`), and bpffs detection and mounting
//! (`statfs`, `mount`), each behind a safe wrapper.
//!
//! With the `Pod` and [`Mappable`] impls in [`crate::abi`], this is the only
//! place in the crate with `unsafe`, each block with the reason it is sound.
#![allow(unsafe_code)] // The FFI edge: mmap, sysconf, clock_gettime, statfs, mount.

mod bpffs;
mod clock;
mod mmap;

pub use bpffs::{is_bpffs, mount_bpffs};
pub use clock::monotonic_ns;
pub use mmap::{Mappable, Mmap};
