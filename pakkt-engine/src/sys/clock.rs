//! The engine clock, read from userspace.

use std::io;

/// The engine clock: `CLOCK_MONOTONIC` in nanoseconds, the clock
/// `bpf_ktime_get_coarse_ns()` reads at tick resolution.
pub fn monotonic_ns() -> io::Result<u64> {
    let mut ts = libc::timespec { tv_sec: 0, tv_nsec: 0 };
    // SAFETY: `ts` is a valid, writable timespec.
    if unsafe { libc::clock_gettime(libc::CLOCK_MONOTONIC, &raw mut ts) } != 0 {
        return Err(io::Error::last_os_error());
    }
    let secs = u64::try_from(ts.tv_sec).map_err(io::Error::other)?;
    let nanos = u64::try_from(ts.tv_nsec).map_err(io::Error::other)?;
    Ok(secs.saturating_mul(1_000_000_000).saturating_add(nanos))
}
