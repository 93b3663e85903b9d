//! The release binaries a bench drives, as child processes.

use std::path::{Path, PathBuf};
use std::process::Child;

/// A child process (a server or an agent), killed and reaped on drop, also
/// when the bench panics.
#[derive(Debug)]
pub struct Kill(pub Child);

impl Drop for Kill {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

/// The path of the workspace binary `name` (`pakkt-server`, `pakkt-agent`)
/// in the profile directory the running bench was built in: a bench runs
/// from `target/release/deps/`, so this is `target/release/NAME`, which
/// `cargo build --release -p NAME` makes.
///
/// # Panics
/// When that binary is missing, saying which command builds it.
pub fn release_binary(name: &str) -> PathBuf {
    let exe = std::env::current_exe().expect("the bench's own path");
    let dir = exe.parent().and_then(Path::parent).expect("the target profile directory");
    let path = dir.join(name);
    assert!(path.exists(), "{} is missing: run `cargo build --release -p {name}` first", path.display());
    path
}
