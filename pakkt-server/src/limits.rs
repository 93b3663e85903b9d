//! What keeps the server serving when clients misbehave: the open-files
//! limit raised at start, and an acceptor that backs off instead of
//! spinning when the process is out of descriptors. Deadlines and the cap
//! on connections are in [`crate::connections`]. `docs/deployment.md`
//! ("Limits") documents each.

use std::io;
use std::time::{Duration, Instant};

use poem::http::uri::Scheme;
use poem::listener::Acceptor;
use poem::web::{LocalAddr, RemoteAddr};

/// Descriptors kept for what is not a client connection: the database's
/// connections, the listeners, log files.
const OTHER_DESCRIPTORS: u64 = 256;

/// Raises the soft limit on open files to the hard one, and logs both: each
/// connection holds a descriptor, and agents hold their syncs open. Warns
/// when the limit cannot hold `max_connections` connections.
pub fn raise_open_files(max_connections: usize) {
    use nix::sys::resource::{Resource, getrlimit, setrlimit};
    let soft = match getrlimit(Resource::RLIMIT_NOFILE) {
        Ok((soft, hard)) if soft < hard => match setrlimit(Resource::RLIMIT_NOFILE, hard, hard) {
            Ok(()) => {
                tracing::info!(soft = hard, hard, was = soft, "open files: soft limit raised to the hard one");
                hard
            }
            Err(e) => {
                tracing::warn!(soft, hard, error = %e, "open files: cannot raise the soft limit");
                soft
            }
        },
        Ok((soft, hard)) => {
            tracing::info!(soft, hard, "open files: the soft limit is the hard one");
            soft
        }
        Err(e) => {
            tracing::warn!(error = %e, "open files: cannot read the limit");
            return;
        }
    };
    let wanted = u64::try_from(max_connections).unwrap_or(u64::MAX).saturating_add(OTHER_DESCRIPTORS);
    if soft < wanted {
        tracing::warn!(
            open_files = soft,
            max_connections,
            "open files: fewer than the connection cap needs; accepts back off when they run out"
        );
    }
}

/// An acceptor that waits instead of failing when the process (or the
/// system) is out of descriptors or memory: poem accepts again at once
/// after an error, which spins a core while the condition lasts. It backs
/// off from 5 ms to 1 s and logs at most once a second; any other error
/// is passed on as it is.
#[derive(Debug)]
pub struct Patient<A> {
    inner: A,
    last_logged: Option<Instant>,
}

impl<A> Patient<A> {
    /// `inner`, patient.
    pub fn new(inner: A) -> Self {
        Self { inner, last_logged: None }
    }
}

/// Whether an accept failed for want of a resource that frees up with
/// time: descriptors (EMFILE, ENFILE), buffers (ENOBUFS) or memory.
fn exhausted(e: &io::Error) -> bool {
    e.raw_os_error().is_some_and(|code| [24, 23, 105, 12].contains(&code))
}

impl<A: Acceptor> Acceptor for Patient<A> {
    type Io = A::Io;

    fn local_addr(&self) -> Vec<LocalAddr> {
        self.inner.local_addr()
    }

    async fn accept(&mut self) -> io::Result<(Self::Io, LocalAddr, RemoteAddr, Scheme)> {
        let mut pause = Duration::from_millis(5);
        loop {
            match self.inner.accept().await {
                Err(e) if exhausted(&e) => {
                    if self.last_logged.is_none_or(|at| at.elapsed() >= Duration::from_secs(1)) {
                        tracing::warn!(error = %e, retry_in = ?pause, "cannot accept connections: out of resources; backing off");
                        self.last_logged = Some(Instant::now());
                    }
                    tokio::time::sleep(pause).await;
                    pause = (pause * 2).min(Duration::from_secs(1));
                }
                other => return other,
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn only_exhaustion_is_waited_out() {
        assert!(exhausted(&io::Error::from_raw_os_error(24)), "EMFILE");
        assert!(exhausted(&io::Error::from_raw_os_error(23)), "ENFILE");
        assert!(!exhausted(&io::Error::from_raw_os_error(104)), "ECONNRESET is the client's");
        assert!(!exhausted(&io::Error::other("tls")));
    }
}
