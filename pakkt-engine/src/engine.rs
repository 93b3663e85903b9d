//! The loader: loads the program, adopts or creates its pinned maps,
//! attaches it, and turns rules, list entries and trusted addresses into
//! map writes.
//!
//! [`Engine`] is one type; its methods are spread over files by job:
//! `attach` (load, attach, pin, adopt, detach), `rules` (slots and port
//! tables, double-buffered), `lists` (entries and the LPM tries), `config`
//! (trusted addresses, the time override), `counters` (per-port and
//! per-slot counters), `probe` (what tests and benchmarks look at or run),
//! and `codec` (rules and entries to and from their map values).

mod attach;
mod codec;
mod config;
mod counters;
mod legacy;
mod lists;
mod probe;
mod rules;

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

use aya::Ebpf;
use aya::maps::MapData;
use aya::programs::{SchedClassifier, Xdp};
use pakkt_core::agent::{DataplaneMode, EgressMode};
use pakkt_core::id::IpEntryId;
use pakkt_core::sync::{AppliedState, DesiredEntry, DesiredRule};
use pakkt_core::verdict::admission::DEFAULT_SEEN_SETS;
use pakkt_core::verdict::verified::DEFAULT_VERIFIED_SETS;

use crate::abi::{Bucket, Config, PortCell, PortChunk, Rule, VerifiedSummary, WaySet};
use crate::error::{MapAccessError, OpenError};
use crate::lists::FamilyLists;
use crate::sys::{Mappable, Mmap};

pub use attach::{DEFAULT_BPFFS_ROOT, default_pin_dir, detach};
pub use codec::to_engine_clock;
pub use probe::{EgressCounts, PortBucket};

/// The engine object: compiled by `build.rs`, or the committed
/// `bpf/pakkt_engine.bpf.o` where there is no clang.
static OBJECT: &[u8] = aya::include_bytes_aligned!(concat!(env!("OUT_DIR"), "/pakkt_engine.bpf.o"));

/// The XDP program's name in the object.
const PROGRAM: &str = "pakkt_engine";
/// The TC egress program's name in the object.
const EGRESS_PROGRAM: &str = "pakkt_egress";
const MAP_CONFIG: &str = "pakkt_config";
const MAP_PORTS: &str = "pakkt_ports";
const MAP_RULES: &str = "pakkt_rules";
const MAP_SKETCH: &str = "pakkt_sketch";
const MAP_PORT_CELLS: &str = "pakkt_portbkt";
const MAP_LIST_CACHE: &str = "pakkt_listcache";
const MAP_LISTS_V4: &str = "pakkt_lists_v4";
const MAP_LISTS_V6: &str = "pakkt_lists_v6";
const MAP_ENTRIES: &str = "pakkt_entries";
const MAP_PORT_COUNTERS: &str = "pakkt_port_cnt";
const MAP_SLOT_COUNTERS: &str = "pakkt_slot_cnt";
const MAP_VERIFIED: &str = "pakkt_verified";
const MAP_SEEN: &str = "pakkt_seen";
const MAP_VSUMMARY: &str = "pakkt_vsummary";
const MAP_EGRESS_COUNTERS: &str = "pakkt_egress_cnt";
/// Every map, pinned under these names.
const MAPS: [&str; 15] = [
    MAP_CONFIG,
    MAP_PORTS,
    MAP_RULES,
    MAP_SKETCH,
    MAP_PORT_CELLS,
    MAP_LIST_CACHE,
    MAP_LISTS_V4,
    MAP_LISTS_V6,
    MAP_ENTRIES,
    MAP_PORT_COUNTERS,
    MAP_SLOT_COUNTERS,
    MAP_VERIFIED,
    MAP_VSUMMARY,
    MAP_SEEN,
    MAP_EGRESS_COUNTERS,
];
/// The pinned XDP link (keeps the program attached without a process).
const PIN_LINK: &str = "link";
/// The pinned program (for inspection and `BPF_PROG_TEST_RUN`).
const PIN_PROGRAM: &str = "prog";
/// The pinned tcx link of the egress program.
const PIN_LINK_EGRESS: &str = "link_egress";
/// The pinned egress program.
const PIN_PROGRAM_EGRESS: &str = "prog_egress";

/// How to attach.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum AttachMode {
    /// Native (driver) XDP, falling back to generic when the driver has none.
    #[default]
    Auto,
    /// Native XDP only.
    Native,
    /// Generic (skb) XDP only.
    Generic,
}

/// How to attach the egress program.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum EgressAttach {
    /// tcx where the kernel has it (6.6 and later), else a clsact filter.
    #[default]
    Auto,
    /// A tcx link only.
    Tcx,
    /// A clsact filter only (what kernels before 6.6 have).
    Clsact,
}

/// What to do with pinned maps of another ABI version.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum OnAbiMismatch {
    /// Detach the old program and remove its pins, then start afresh (the
    /// agent re-applies its desired state on its next sync).
    #[default]
    Replace,
    /// Fail with [`OpenError::AbiMismatch`].
    Refuse,
}

/// Options for [`Engine::attach`].
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct AttachOptions {
    /// The attach mode.
    pub mode: AttachMode,
    /// How to attach the egress program.
    pub egress: EgressAttach,
    /// The pin directory; `None` for [`default_pin_dir`].
    pub bpffs_dir: Option<PathBuf>,
    /// Cells per row of the per-source sketch when the maps are created (a
    /// power of two; adopted maps keep theirs).
    pub sketch_width: u32,
    /// Sets of the verified set when the maps are created (adopted maps
    /// keep theirs).
    pub verified_sets: u32,
    /// Sets of the seen table when the maps are created.
    pub seen_sets: u32,
    /// Pinned maps of another ABI version.
    pub on_abi_mismatch: OnAbiMismatch,
}

impl Default for AttachOptions {
    fn default() -> Self {
        Self {
            mode: AttachMode::Auto,
            egress: EgressAttach::Auto,
            bpffs_dir: None,
            sketch_width: pakkt_core::verdict::bucket::DEFAULT_SKETCH_WIDTH,
            verified_sets: DEFAULT_VERIFIED_SETS,
            seen_sets: DEFAULT_SEEN_SETS,
            on_abi_mismatch: OnAbiMismatch::Replace,
        }
    }
}

/// Options for [`Engine::load`] (no interface, no pins: tests and
/// benchmarks).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct LoadOptions {
    /// Cells per row of the per-source sketch (a power of two).
    pub sketch_width: u32,
    /// The seed of the sketch, the verified set and the seen table; `None`
    /// for a random one.
    pub sketch_seed: Option<u64>,
    /// Sets of the verified set (a power of two).
    pub verified_sets: u32,
    /// Sets of the seen table (a power of two).
    pub seen_sets: u32,
}

impl Default for LoadOptions {
    fn default() -> Self {
        Self {
            sketch_width: pakkt_core::verdict::bucket::DEFAULT_SKETCH_WIDTH,
            sketch_seed: None,
            verified_sets: DEFAULT_VERIFIED_SETS,
            seen_sets: DEFAULT_SEEN_SETS,
        }
    }
}

/// A rule in a slot, and the generation that keys its buckets.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
struct SlotState {
    rule: DesiredRule,
    generation: u32,
}

/// An entry in force, and its expiry on the engine clock.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
struct EntryState {
    entry: DesiredEntry,
    expiry_ns: Option<u64>,
}

/// Where and how the program is attached.
#[derive(Debug, Clone, PartialEq, Eq)]
struct Attachment {
    iface: String,
    dir: PathBuf,
    mode: DataplaneMode,
    egress: Option<EgressMode>,
}

/// The PAKKT Engine on one interface (or loaded alone, for tests): the
/// program, its maps, and userspace mirrors of what the maps hold.
///
/// Dropping an attached engine leaves the program attached and its maps
/// pinned; [`Engine::attach`] on the same interface adopts them, and
/// [`Engine::detach`] removes them.
#[derive(Debug)]
pub struct Engine {
    bpf: Ebpf,
    config: Mmap<Config>,
    ports: Mmap<PortChunk>,
    rules: Mmap<Rule>,
    sketch: Mmap<Bucket>,
    port_cells: Mmap<PortCell>,
    verified: Mmap<WaySet>,
    summary: Mmap<VerifiedSummary>,
    seen: Mmap<WaySet>,
    sketch_width: u32,
    attachment: Option<Attachment>,
    /// Why the egress program could not be attached, if it could not.
    egress_error: Option<String>,
    slots: Vec<Option<SlotState>>,
    entries: BTreeMap<IpEntryId, EntryState>,
    v4: FamilyLists,
    v6: FamilyLists,
}

impl Engine {
    /// The interface the engine is attached to, if any.
    pub fn iface(&self) -> Option<&str> {
        self.attachment.as_ref().map(|a| a.iface.as_str())
    }

    /// How the program is attached (`None` when only loaded).
    pub fn mode(&self) -> Option<DataplaneMode> {
        self.attachment.as_ref().map(|a| a.mode)
    }

    /// How the egress program is attached (`None` when only loaded, or
    /// when it could not be attached: see [`Engine::egress_error`]).
    pub fn egress_mode(&self) -> Option<EgressMode> {
        self.attachment.as_ref().and_then(|a| a.egress)
    }

    /// Why the egress program could not be attached: the engine enforces
    /// every rule without it, but `protect` rules verify nobody new.
    pub fn egress_error(&self) -> Option<&str> {
        self.egress_error.as_deref()
    }

    /// The pin directory, when attached.
    pub fn pin_dir(&self) -> Option<&Path> {
        self.attachment.as_ref().map(|a| a.dir.as_path())
    }

    /// What is in force: rules by slot and list entries (firewall rules are
    /// not the engine's).
    pub fn applied(&self) -> AppliedState {
        AppliedState {
            engine_rules: self.slots.iter().flatten().map(|s| (s.rule.id, s.rule)).collect(),
            ip_entries: self.entries.iter().map(|(id, s)| (*id, s.entry)).collect(),
            firewall_rules: Vec::new(),
        }
    }
}

fn program_mut(bpf: &mut Ebpf) -> Result<&mut Xdp, OpenError> {
    bpf.program_mut(PROGRAM).and_then(|p| p.try_into().ok()).ok_or(OpenError::Missing("XDP program"))
}

fn egress_program_mut(bpf: &mut Ebpf) -> Result<&mut SchedClassifier, OpenError> {
    bpf.program_mut(EGRESS_PROGRAM).and_then(|p| p.try_into().ok()).ok_or(OpenError::Missing("egress program"))
}

fn map_data<'a>(bpf: &'a Ebpf, name: &'static str) -> Result<&'a aya::maps::Map, MapAccessError> {
    bpf.map(name).ok_or_else(|| MapAccessError::new(name, aya::maps::MapError::InvalidName { name: name.to_owned() }))
}

fn map_data_mut<'a>(bpf: &'a mut Ebpf, name: &'static str) -> Result<&'a mut aya::maps::Map, MapAccessError> {
    bpf.map_mut(name)
        .ok_or_else(|| MapAccessError::new(name, aya::maps::MapError::InvalidName { name: name.to_owned() }))
}

fn array_data<'a>(bpf: &'a Ebpf, name: &'static str) -> Result<&'a MapData, OpenError> {
    match map_data(bpf, name)? {
        aya::maps::Map::Array(data) => Ok(data),
        _ => Err(OpenError::Missing(name)),
    }
}

fn mmap<T: Mappable>(bpf: &Ebpf, name: &'static str, entries: usize) -> Result<Mmap<T>, OpenError> {
    Mmap::new(array_data(bpf, name)?, entries).map_err(|source| OpenError::Mmap { map: name, source })
}
