//! Fixtures for tests that need the kernel (feature `testing`): the
//! namespace fixtures of `pakkt-netns`, re-exported, and an engine
//! attachment that unpins itself. The engine's own tests and the agent's
//! end-to-end tests on real hosts use them.
//!
//! Everything here panics on failure: it is for tests only.
#![allow(clippy::missing_panics_doc)]

use std::path::PathBuf;

pub use pakkt_netns::*;

/// An engine attached to `pair.a_if`, pinned in a directory of its own;
/// detached and unpinned on drop (also when the test panics). Declare it
/// after the pair so that it drops first.
#[derive(Debug)]
pub struct Attached {
    /// The interface the engine is attached to.
    pub iface: String,
    /// The pin directory (under `/sys/fs/bpf`).
    pub dir: PathBuf,
}

impl Attached {
    /// A fresh pin directory for `iface`.
    pub fn new(iface: &str) -> Self {
        Self { iface: iface.to_owned(), dir: PathBuf::from("/sys/fs/bpf").join(unique("pakkt-test-")) }
    }

    /// Attaches (or adopts) inside `ns`.
    pub fn attach(&self, ns: &Netns, mode: crate::AttachMode) -> Result<crate::Engine, crate::OpenError> {
        self.attach_with(ns, &crate::AttachOptions { mode, ..crate::AttachOptions::default() })
    }

    /// Attaches (or adopts) inside `ns` with `options`, in this fixture's
    /// pin directory.
    pub fn attach_with(&self, ns: &Netns, options: &crate::AttachOptions) -> Result<crate::Engine, crate::OpenError> {
        let iface = self.iface.clone();
        let options = crate::AttachOptions { bpffs_dir: Some(self.dir.clone()), ..options.clone() };
        ns.run(move || crate::Engine::attach(&iface, &options))
    }
}

impl Drop for Attached {
    fn drop(&mut self) {
        let _ = crate::detach(&self.iface, Some(&self.dir));
    }
}
