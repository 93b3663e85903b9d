//! The engine's errors, one enum per area.

use std::io;
use std::path::PathBuf;

use pakkt_core::id::EngineRuleId;
use pakkt_core::slot::Slot;

/// Why the engine could not be loaded, adopted or attached.
#[derive(Debug, thiserror::Error)]
pub enum OpenError {
    /// The interface name cannot name an interface (or a pin directory).
    #[error("{0:?} is not a valid interface name")]
    InterfaceName(String),
    /// The bpffs directory could not be prepared.
    #[error("preparing the bpffs directory {path}")]
    Bpffs {
        /// The directory.
        path: PathBuf,
        /// What failed.
        #[source]
        source: io::Error,
    },
    /// The pin directory is not on a bpffs and cannot be made one.
    #[error("{0} is not on a bpffs (mount one, or choose a directory under /sys/fs/bpf)")]
    NotBpffs(PathBuf),
    /// The pinned maps belong to another ABI version and replacing them was
    /// refused.
    #[error("the maps pinned in {path} have ABI version {found}; this engine speaks version {expected}")]
    AbiMismatch {
        /// The pin directory.
        path: PathBuf,
        /// Their version (0 when they are not PAKKT's at all).
        found: u32,
        /// Ours.
        expected: u32,
    },
    /// aya could not load the object or create its maps.
    #[error("loading the PAKKT Engine")]
    Load(#[source] Box<aya::EbpfError>),
    /// The object lacks a program or map the loader needs.
    #[error("the PAKKT Engine object has no {0}")]
    Missing(&'static str),
    /// The kernel refused the program.
    #[error("loading the XDP program")]
    Program(#[source] Box<aya::programs::ProgramError>),
    /// Attaching to the interface failed.
    #[error("attaching to {iface} ({mode})")]
    Attach {
        /// The interface.
        iface: String,
        /// The mode tried.
        mode: &'static str,
        /// What failed.
        #[source]
        source: Box<aya::programs::ProgramError>,
    },
    /// The pinned link could not be opened or replaced.
    #[error("the XDP link pinned at {path}")]
    Link {
        /// Its pin.
        path: PathBuf,
        /// What failed.
        #[source]
        source: Box<dyn std::error::Error + Send + Sync>,
    },
    /// Pinning the program or the link failed.
    #[error("pinning {path}")]
    Pin {
        /// The pin path.
        path: PathBuf,
        /// What failed.
        #[source]
        source: Box<dyn std::error::Error + Send + Sync>,
    },
    /// A map could not be read or written while taking it over.
    #[error(transparent)]
    Map(#[from] MapAccessError),
    /// A map could not be memory-mapped.
    #[error("memory-mapping {map}")]
    Mmap {
        /// The map.
        map: &'static str,
        /// What failed.
        #[source]
        source: io::Error,
    },
    /// The pinned maps hold something no PAKKT engine writes.
    #[error("the pinned engine state is inconsistent: {0}")]
    Corrupt(String),
}

/// A map operation failed.
#[derive(Debug, thiserror::Error)]
#[error("map {map}: {source}")]
pub struct MapAccessError {
    /// The map.
    pub map: &'static str,
    /// What failed.
    #[source]
    pub source: Box<aya::maps::MapError>,
}

impl MapAccessError {
    pub(crate) fn new(map: &'static str, source: aya::maps::MapError) -> Self {
        Self { map, source: Box::new(source) }
    }
}

/// Why a rule could not be loaded.
#[derive(Debug, thiserror::Error)]
pub enum RuleError {
    /// Another rule holds the slot.
    #[error("slot {slot} is held by rule {holder}")]
    SlotHeld {
        /// The slot.
        slot: Slot,
        /// The rule in it.
        holder: EngineRuleId,
    },
}

/// Why an IP list entry could not be added or removed.
#[derive(Debug, thiserror::Error)]
pub enum ListError {
    /// The lists hold as many entries as the maps take.
    #[error("the IP lists are full ({max} entries)")]
    Full {
        /// The capacity.
        max: u32,
    },
    /// A map write failed.
    #[error(transparent)]
    Map(#[from] MapAccessError),
    /// The engine clock (`CLOCK_MONOTONIC`) could not be read to convert the
    /// expiry.
    #[error("reading the engine clock")]
    Clock(#[source] io::Error),
}

/// Why the trusted addresses could not be set.
#[derive(Debug, thiserror::Error)]
pub enum TrustedError {
    /// More addresses of one family than the engine compares.
    #[error("at most {max} trusted {family} addresses, got {got}")]
    TooMany {
        /// `IPv4` or `IPv6`.
        family: &'static str,
        /// How many were given.
        got: usize,
        /// The limit.
        max: usize,
    },
}

/// Why a frame could not be run through the program (`BPF_PROG_TEST_RUN`).
#[derive(Debug, thiserror::Error)]
pub enum RunError {
    /// The object has no program (cannot happen once loaded).
    #[error("the PAKKT Engine object has no program")]
    Missing,
    /// The kernel refused the run (frames shorter than an Ethernet header
    /// are refused).
    #[error("BPF_PROG_TEST_RUN failed")]
    Run(#[source] Box<aya::programs::ProgramError>),
}

/// Why the engine could not be detached.
#[derive(Debug, thiserror::Error)]
pub enum DetachError {
    /// The interface name cannot name an interface.
    #[error("{0:?} is not a valid interface name")]
    InterfaceName(String),
    /// The pinned link could not be opened or removed.
    #[error("the XDP link pinned at {path}")]
    Link {
        /// Its pin.
        path: PathBuf,
        /// What failed.
        #[source]
        source: Box<dyn std::error::Error + Send + Sync>,
    },
    /// A pin could not be removed.
    #[error("removing {path}")]
    Unpin {
        /// The pin.
        path: PathBuf,
        /// What failed.
        #[source]
        source: io::Error,
    },
}
