//! The loader: loads the program, adopts or creates its pinned maps,
//! attaches it, and turns rules, list entries and trusted addresses into
//! map writes.

use std::collections::BTreeMap;
use std::fs;
use std::io;
use std::mem::offset_of;
use std::net::{IpAddr, Ipv4Addr, Ipv6Addr};
use std::path::{Path, PathBuf};
use std::time::Duration;

use aya::maps::lpm_trie::{Key, LpmTrie};
use aya::maps::{Array, HashMap as BpfHashMap, MapData, PerCpuArray};
use aya::programs::links::{FdLink, PinnedLink};
use aya::programs::{TestRun, TestRunOptions, Xdp, XdpMode};
use aya::{Ebpf, EbpfLoader};
use chrono::{DateTime, Utc};
use pakkt_core::agent::DataplaneMode;
use pakkt_core::cidr::Cidr;
use pakkt_core::id::{EngineRuleId, IpEntryId};
use pakkt_core::ip_list::ListType;
use pakkt_core::metrics;
use pakkt_core::rule::{Protocol, RateLimits, RuleSpec, RuleType};
use pakkt_core::slot::Slot;
use pakkt_core::sync::{AppliedState, DesiredEntry, DesiredRule};

use crate::abi::{
    self, ABI_VERSION, Bucket, CHUNKS_PER_CLASS, CLASSES, Config, Counters, Entry, EntryKey, ListValue, MAGIC,
    MAX_LIST_ENTRIES, MAX_TRUSTED, Mmap, PORT_CELLS, PORT_TABLE_ENTRIES, PORTS, PORTS_PER_CHUNK, PortCell, PortChunk,
    RULE_ENTRIES, Rule, SLOTS,
};
use crate::error::{DetachError, ListError, MapAccessError, OpenError, RuleError, RunError, TrustedError};
use crate::lists::{Change, FamilyLists, Prefix, encode_expiry};
use crate::ports::PortTables;

/// The engine object, compiled by `build.rs`.
static OBJECT: &[u8] = aya::include_bytes_aligned!(concat!(env!("OUT_DIR"), "/pakkt_engine.bpf.o"));

/// The XDP program's name in the object.
const PROGRAM: &str = "pakkt_engine";
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
/// Every map, pinned under these names.
const MAPS: [&str; 11] = [
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
];
/// The pinned XDP link (keeps the program attached without a process).
const PIN_LINK: &str = "link";
/// The pinned program (for inspection and `BPF_PROG_TEST_RUN`).
const PIN_PROGRAM: &str = "prog";

/// Where the engine of `iface` is pinned unless told otherwise (DESIGN §3).
pub const DEFAULT_BPFFS_ROOT: &str = "/sys/fs/bpf";

/// The default pin directory of `iface`: `/sys/fs/bpf/pakkt/<iface>`.
pub fn default_pin_dir(iface: &str) -> PathBuf {
    Path::new(DEFAULT_BPFFS_ROOT).join("pakkt").join(iface)
}

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
    /// The pin directory; `None` for [`default_pin_dir`].
    pub bpffs_dir: Option<PathBuf>,
    /// Cells per row of the per-source sketch when the maps are created (a
    /// power of two; adopted maps keep theirs).
    pub sketch_width: u32,
    /// Pinned maps of another ABI version.
    pub on_abi_mismatch: OnAbiMismatch,
}

impl Default for AttachOptions {
    fn default() -> Self {
        Self {
            mode: AttachMode::Auto,
            bpffs_dir: None,
            sketch_width: pakkt_core::verdict::bucket::DEFAULT_SKETCH_WIDTH,
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
    /// The sketch's seed; `None` for a random one.
    pub sketch_seed: Option<u64>,
}

impl Default for LoadOptions {
    fn default() -> Self {
        Self { sketch_width: pakkt_core::verdict::bucket::DEFAULT_SKETCH_WIDTH, sketch_seed: None }
    }
}

/// One per-port cell as the program left it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct PortBucket {
    /// The way ([`pakkt_core::verdict::bucket::port_way`] of the rule's
    /// protocol).
    pub way: usize,
    /// The owning rule's slot.
    pub slot: Slot,
    /// The owning rule's generation.
    pub generation: u32,
    /// The destination port.
    pub port: u16,
    /// Units held.
    pub tokens: u64,
    /// Last refill, engine clock.
    pub last_ns: u64,
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
    sketch_width: u32,
    attachment: Option<Attachment>,
    slots: Vec<Option<SlotState>>,
    entries: BTreeMap<IpEntryId, EntryState>,
    v4: FamilyLists,
    v6: FamilyLists,
}

impl Engine {
    /// Loads the program and fresh, unpinned maps without attaching them:
    /// frames reach it only through [`Engine::run`].
    pub fn load(options: &LoadOptions) -> Result<Self, OpenError> {
        let width = sketch_width(options.sketch_width);
        let mut loader = EbpfLoader::new();
        loader.map_max_entries(MAP_SKETCH, width * 2);
        let mut bpf = loader.load(OBJECT).map_err(|e| OpenError::Load(Box::new(e)))?;
        program_mut(&mut bpf)?.load().map_err(|e| OpenError::Program(Box::new(e)))?;
        let seed = options.sketch_seed.unwrap_or_else(rand::random);
        Self::take_over(bpf, Some((width, seed)), None)
    }

    /// Loads the engine onto `iface`: adopts the maps pinned in the pin
    /// directory when they are of this ABI version (so rules, lists and
    /// counters survive a restart), else creates and pins fresh ones;
    /// replaces the program of a pinned link in one step (so protection never
    /// lapses), else attaches and pins a new link. Mounts bpffs at
    /// `/sys/fs/bpf` when the pin directory is under it and none is mounted.
    pub fn attach(iface: &str, options: &AttachOptions) -> Result<Self, OpenError> {
        if !valid_iface(iface) {
            return Err(OpenError::InterfaceName(iface.to_owned()));
        }
        let dir = options.bpffs_dir.clone().unwrap_or_else(|| default_pin_dir(iface));
        prepare_pin_dir(&dir)?;
        let config_pin = dir.join(MAP_CONFIG);
        let mut adopted = config_pin.exists();
        if adopted && let Some(found) = pinned_abi_mismatch(&config_pin)? {
            if options.on_abi_mismatch == OnAbiMismatch::Refuse {
                return Err(OpenError::AbiMismatch { path: dir, found, expected: ABI_VERSION });
            }
            remove_pins(&dir).map_err(|e| OpenError::Bpffs { path: dir.clone(), source: e.into_io() })?;
            adopted = false;
        }
        if !adopted {
            // Stray map pins without a config are not ours to trust.
            for name in MAPS {
                remove_if_present(&dir.join(name)).map_err(|source| OpenError::Bpffs { path: dir.clone(), source })?;
            }
        }

        let width = sketch_width(options.sketch_width);
        let mut loader = EbpfLoader::new();
        loader.map_max_entries(MAP_SKETCH, width * 2);
        let pins: Vec<(&str, PathBuf)> = MAPS.iter().map(|name| (*name, dir.join(name))).collect();
        for (name, path) in &pins {
            loader.map_pin_path(name, path.as_path());
        }
        let mut bpf = loader.load(OBJECT).map_err(|e| OpenError::Load(Box::new(e)))?;
        program_mut(&mut bpf)?.load().map_err(|e| OpenError::Program(Box::new(e)))?;
        let fresh = (!adopted).then(|| (width, rand::random()));
        let mut engine = Self::take_over(bpf, fresh, None)?;

        let mode = engine.attach_program(iface, &dir, options.mode)?;
        engine.config.store_u32(0, offset_of!(Config, attach_mode), mode_code(mode));
        let program_pin = dir.join(PIN_PROGRAM);
        remove_if_present(&program_pin).map_err(|source| OpenError::Bpffs { path: dir.clone(), source })?;
        program_mut(&mut engine.bpf)?
            .pin(&program_pin)
            .map_err(|e| OpenError::Pin { path: program_pin.clone(), source: Box::new(e) })?;
        engine.attachment = Some(Attachment { iface: iface.to_owned(), dir, mode });
        Ok(engine)
    }

    /// Replaces the program of the pinned link, or attaches a new link and
    /// pins it. Returns the mode in force.
    fn attach_program(&mut self, iface: &str, dir: &Path, mode: AttachMode) -> Result<DataplaneMode, OpenError> {
        let link_pin = dir.join(PIN_LINK);
        let previous = self.config.load_u32(0, offset_of!(Config, attach_mode)).unwrap_or_default();
        let program = program_mut(&mut self.bpf)?;
        if link_pin.exists() {
            let link_error =
                |e: Box<dyn std::error::Error + Send + Sync>| OpenError::Link { path: link_pin.clone(), source: e };
            let pinned = PinnedLink::from_pin(&link_pin).map_err(|e| link_error(Box::new(e)))?;
            let link =
                aya::programs::xdp::XdpLink::try_from(FdLink::from(pinned)).map_err(|e| link_error(Box::new(e)))?;
            let id = program.attach_to_link(link).map_err(|e| link_error(Box::new(e)))?;
            // The link stays pinned; this process's handle can go.
            drop(program.take_link(id).map_err(|e| link_error(Box::new(e)))?);
            return Ok(if previous == abi::MODE_NATIVE { DataplaneMode::Native } else { DataplaneMode::Generic });
        }
        let tries: &[(XdpMode, DataplaneMode)] = match mode {
            AttachMode::Auto => &[(XdpMode::Driver, DataplaneMode::Native), (XdpMode::Skb, DataplaneMode::Generic)],
            AttachMode::Native => &[(XdpMode::Driver, DataplaneMode::Native)],
            AttachMode::Generic => &[(XdpMode::Skb, DataplaneMode::Generic)],
        };
        let mut last = None;
        for (xdp_mode, mode) in tries {
            match program.attach(iface, *xdp_mode) {
                Ok(id) => {
                    let link = program
                        .take_link(id)
                        .map_err(|e| OpenError::Link { path: link_pin.clone(), source: Box::new(e) })?;
                    let fd_link = FdLink::try_from(link)
                        .map_err(|e| OpenError::Link { path: link_pin.clone(), source: Box::new(e) })?;
                    fd_link
                        .pin(&link_pin)
                        .map_err(|e| OpenError::Pin { path: link_pin.clone(), source: Box::new(e) })?;
                    return Ok(*mode);
                }
                Err(e) => last = Some((*mode, e)),
            }
        }
        let (mode, source) = last.ok_or(OpenError::Missing("attach mode"))?;
        Err(OpenError::Attach { iface: iface.to_owned(), mode: mode_name(mode), source: Box::new(source) })
    }

    /// Builds the engine around loaded maps: initialises a fresh config
    /// (`fresh` = sketch width and seed) or checks an adopted one, then
    /// reads the rules and entries back into the mirrors.
    fn take_over(bpf: Ebpf, fresh: Option<(u32, u64)>, attachment: Option<Attachment>) -> Result<Self, OpenError> {
        let config = mmap::<Config>(&bpf, MAP_CONFIG, 1)?;
        let ports = mmap::<PortChunk>(&bpf, MAP_PORTS, PORT_TABLE_ENTRIES)?;
        let rules = mmap::<Rule>(&bpf, MAP_RULES, RULE_ENTRIES)?;
        let sketch_entries = array_data(&bpf, MAP_SKETCH)?
            .info()
            .map(|info| info.max_entries() as usize)
            .map_err(|e| MapAccessError::new(MAP_SKETCH, e))?;
        let sketch = mmap::<Bucket>(&bpf, MAP_SKETCH, sketch_entries)?;
        let port_cells = mmap::<PortCell>(&bpf, MAP_PORT_CELLS, PORT_CELLS)?;
        let width = if let Some((width, seed)) = fresh {
            let initial = Config {
                magic: MAGIC,
                abi_version: ABI_VERSION,
                active: 0,
                attach_mode: 0,
                time_override_ns: 0,
                sketch_seed: seed,
                sketch_mask: width - 1,
                v4_blacklist: 0,
                v4_whitelist: 0,
                v6_blacklist: 0,
                v6_whitelist: 0,
                trusted_v4_count: 0,
                trusted_v6_count: 0,
                next_generation: 1,
                list_epoch: 1,
                reserved: 0,
                trusted_v4: [0; MAX_TRUSTED],
                trusted_v6: [[0; 16]; MAX_TRUSTED],
            };
            config.set(0, &initial);
            width
        } else {
            let current = config.get(0).ok_or(OpenError::Missing(MAP_CONFIG))?;
            let width = current.sketch_mask.wrapping_add(1);
            if !width.is_power_of_two() || (width as usize) * 2 > sketch.len() {
                return Err(OpenError::Corrupt(format!("sketch mask {:#x}", current.sketch_mask)));
            }
            width
        };
        let mut engine = Self {
            bpf,
            config,
            ports,
            rules,
            sketch,
            port_cells,
            sketch_width: width,
            attachment,
            slots: vec![None; SLOTS],
            entries: BTreeMap::new(),
            v4: FamilyLists::default(),
            v6: FamilyLists::default(),
        };
        if fresh.is_none() {
            engine.read_back()?;
        }
        Ok(engine)
    }

    /// Reads rules and entries from adopted maps, rewrites the tries from
    /// the entries (healing an update cut short) and the entry counts.
    fn read_back(&mut self) -> Result<(), OpenError> {
        let active = self.active_buffer();
        for slot in 0..SLOTS {
            let Some(rule) = self.rules.get(active * SLOTS + slot) else { continue };
            if rule.kind == abi::RULE_NONE {
                continue;
            }
            let slot = Slot::new(u8::try_from(slot).unwrap_or(u8::MAX));
            let spec = decode_rule(&rule).ok_or_else(|| OpenError::Corrupt(format!("rule in slot {slot}")))?;
            let id = EngineRuleId::from_u128(u128::from_be_bytes(rule.id));
            if let Some(state) = self.slots.get_mut(slot.index()) {
                *state = Some(SlotState { rule: DesiredRule { id, slot, spec }, generation: rule.generation });
            }
        }
        let stored: Vec<(EntryKey, Entry)> = {
            let map: BpfHashMap<&MapData, EntryKey, Entry> = BpfHashMap::try_from(map_data(&self.bpf, MAP_ENTRIES)?)
                .map_err(|e| MapAccessError::new(MAP_ENTRIES, e))?;
            map.iter().collect::<Result<_, _>>().map_err(|e| MapAccessError::new(MAP_ENTRIES, e))?
        };
        for (key, stored) in stored {
            let id = IpEntryId::from_u128(u128::from_be_bytes(key.id));
            let state = decode_entry(id, &stored).ok_or_else(|| OpenError::Corrupt(format!("list entry {id}")))?;
            let (lists, prefix) = self.family_of(state.entry.cidr);
            lists.insert(id, state.entry.list_type, prefix, encode_expiry(state.expiry_ns));
            self.entries.insert(id, state);
        }
        self.rewrite_tries().map_err(OpenError::Map)?;
        self.store_counts();
        Ok(())
    }

    /// Makes both tries hold exactly the mirrors' nodes.
    fn rewrite_tries(&mut self) -> Result<(), MapAccessError> {
        let mut v4: LpmTrie<&mut MapData, [u8; 4], ListValue> =
            LpmTrie::try_from(map_data_mut(&mut self.bpf, MAP_LISTS_V4)?)
                .map_err(|e| MapAccessError::new(MAP_LISTS_V4, e))?;
        let keys: Vec<Key<[u8; 4]>> =
            v4.keys().collect::<Result<_, _>>().map_err(|e| MapAccessError::new(MAP_LISTS_V4, e))?;
        for key in keys {
            let prefix = (u128::from(u32::from_be_bytes(key.data())) << 96, key.prefix_len() as u8);
            if !self.v4.nodes().contains_key(&prefix) {
                v4.remove(&key).map_err(|e| MapAccessError::new(MAP_LISTS_V4, e))?;
            }
        }
        for (prefix, value) in self.v4.nodes() {
            v4.insert(&v4_key(*prefix), value, 0).map_err(|e| MapAccessError::new(MAP_LISTS_V4, e))?;
        }
        let mut v6: LpmTrie<&mut MapData, [u8; 16], ListValue> =
            LpmTrie::try_from(map_data_mut(&mut self.bpf, MAP_LISTS_V6)?)
                .map_err(|e| MapAccessError::new(MAP_LISTS_V6, e))?;
        let keys: Vec<Key<[u8; 16]>> =
            v6.keys().collect::<Result<_, _>>().map_err(|e| MapAccessError::new(MAP_LISTS_V6, e))?;
        for key in keys {
            let prefix = (u128::from_be_bytes(key.data()), key.prefix_len() as u8);
            if !self.v6.nodes().contains_key(&prefix) {
                v6.remove(&key).map_err(|e| MapAccessError::new(MAP_LISTS_V6, e))?;
            }
        }
        for (prefix, value) in self.v6.nodes() {
            v6.insert(&v6_key(*prefix), value, 0).map_err(|e| MapAccessError::new(MAP_LISTS_V6, e))?;
        }
        Ok(())
    }

    /// The interface the engine is attached to, if any.
    pub fn iface(&self) -> Option<&str> {
        self.attachment.as_ref().map(|a| a.iface.as_str())
    }

    /// How the program is attached (`None` when only loaded).
    pub fn mode(&self) -> Option<DataplaneMode> {
        self.attachment.as_ref().map(|a| a.mode)
    }

    /// The pin directory, when attached.
    pub fn pin_dir(&self) -> Option<&Path> {
        self.attachment.as_ref().map(|a| a.dir.as_path())
    }

    // ------------------------------------------------------------ rules

    /// Loads `rule` into its slot and switches the program to the new
    /// tables. Loading a rule that is in force changes nothing; a slot held
    /// by another rule is refused and the holder stays.
    pub fn load_rule(&mut self, rule: &DesiredRule) -> Result<(), RuleError> {
        self.stage_load(rule)?;
        self.commit_rules();
        Ok(())
    }

    /// Takes `rule` out of its slot, if it is there.
    pub fn unload_rule(&mut self, rule: &DesiredRule) {
        self.stage_unload(rule);
        self.commit_rules();
    }

    /// Records a load in the mirror; [`Self::commit_rules`] makes it real.
    pub(crate) fn stage_load(&mut self, rule: &DesiredRule) -> Result<(), RuleError> {
        let current = self.slots.get(rule.slot.index()).copied().flatten();
        if let Some(holder) = current
            && holder.rule.id != rule.id
        {
            return Err(RuleError::SlotHeld { slot: rule.slot, holder: holder.rule.id });
        }
        // The same rule elsewhere leaves its old slot (IDs are unique).
        for other in &mut self.slots {
            if other.is_some_and(|s| s.rule.id == rule.id && s.rule.slot != rule.slot) {
                *other = None;
            }
        }
        let generation = match current {
            Some(state) if state.rule.spec == rule.spec => state.generation,
            _ => self.next_generation(),
        };
        if let Some(state) = self.slots.get_mut(rule.slot.index()) {
            *state = Some(SlotState { rule: *rule, generation });
        }
        Ok(())
    }

    /// Records an unload in the mirror.
    pub(crate) fn stage_unload(&mut self, rule: &DesiredRule) {
        if let Some(state) = self.slots.get_mut(rule.slot.index())
            && state.is_some_and(|s| s.rule.id == rule.id)
        {
            *state = None;
        }
    }

    fn next_generation(&mut self) -> u32 {
        let offset = offset_of!(Config, next_generation);
        let generation = self.config.load_u32(0, offset).unwrap_or(1).max(1);
        self.config.store_u32(0, offset, generation.wrapping_add(1).max(1));
        generation
    }

    /// Writes the mirror's rules and their port tables into the buffer not
    /// in force, then switches the program to it with one store.
    pub(crate) fn commit_rules(&mut self) {
        let next = 1 - self.active_buffer();
        let loaded: Vec<(Slot, &RuleSpec)> = self.slots.iter().flatten().map(|s| (s.rule.slot, &s.rule.spec)).collect();
        let tables = PortTables::build(loaded);
        for class in 0..CLASSES {
            let table = tables.class(class);
            for chunk in 0..CHUNKS_PER_CLASS {
                let mut value = PortChunk { slot_plus_one: [0; PORTS_PER_CHUNK] };
                if let Some(ports) = table.get(chunk * PORTS_PER_CHUNK..(chunk + 1) * PORTS_PER_CHUNK) {
                    value.slot_plus_one.copy_from_slice(ports);
                }
                self.ports.set((next * CLASSES + class) * CHUNKS_PER_CLASS + chunk, &value);
            }
        }
        for (slot, state) in self.slots.iter().enumerate() {
            let rule = state.map(|s| encode_rule(&s.rule, s.generation)).unwrap_or_default();
            self.rules.set(next * SLOTS + slot, &rule);
        }
        self.config.store_u32(0, offset_of!(Config, active), u32::try_from(next).unwrap_or(0));
    }

    fn active_buffer(&self) -> usize {
        self.config.load_u32(0, offset_of!(Config, active)).map_or(0, |a| (a & 1) as usize)
    }

    /// The generation keying the buckets of the rule in `slot`, if loaded.
    pub fn slot_generation(&self, slot: Slot) -> Option<u32> {
        self.slots.get(slot.index()).copied().flatten().map(|s| s.generation)
    }

    // ------------------------------------------------------------ lists

    /// Puts `entry` in force, converting its wall-clock expiry to the
    /// engine clock now. Re-adding an entry in force changes nothing.
    pub fn add_entry(&mut self, entry: &DesiredEntry) -> Result<(), ListError> {
        let expiry_ns = match entry.expires_at {
            Some(at) => Some(to_engine_clock(at, Utc::now(), abi::monotonic_ns().map_err(ListError::Clock)?)),
            None => None,
        };
        if self.entries.get(&entry.id).is_some_and(|e| e.entry == *entry) {
            return Ok(());
        }
        self.add_entry_at(entry, expiry_ns)
    }

    /// Puts `entry` in force with an expiry given on the engine clock
    /// (`entry.expires_at` is only recorded, for [`Engine::applied`]).
    pub fn add_entry_at(&mut self, entry: &DesiredEntry, expiry_ns: Option<u64>) -> Result<(), ListError> {
        let state = EntryState { entry: *entry, expiry_ns };
        match self.entries.get(&entry.id) {
            Some(existing) if *existing == state => return Ok(()),
            Some(existing) => {
                let existing = existing.entry;
                self.remove_entry(&existing)?;
            }
            None => {}
        }
        if self.entries.len() >= MAX_LIST_ENTRIES as usize {
            return Err(ListError::Full { max: MAX_LIST_ENTRIES });
        }
        let mut stored: BpfHashMap<&mut MapData, EntryKey, Entry> =
            BpfHashMap::try_from(map_data_mut(&mut self.bpf, MAP_ENTRIES)?)
                .map_err(|e| MapAccessError::new(MAP_ENTRIES, e))?;
        stored.insert(entry_key(entry.id), encode_entry(&state), 0).map_err(|e| MapAccessError::new(MAP_ENTRIES, e))?;
        let (lists, prefix) = self.family_of(entry.cidr);
        let changes = lists.insert(entry.id, entry.list_type, prefix, encode_expiry(expiry_ns));
        self.entries.insert(entry.id, state);
        if let Err(e) = self.write_changes(entry.cidr.is_ipv4(), &changes) {
            // Undo in the mirror and as far as the maps allow.
            let _ = self.remove_entry(entry);
            return Err(e.into());
        }
        self.store_counts();
        Ok(())
    }

    /// Takes the entry with `entry.id` out of force, if it is there.
    pub fn remove_entry(&mut self, entry: &DesiredEntry) -> Result<(), ListError> {
        let Some(state) = self.entries.get(&entry.id).copied() else { return Ok(()) };
        let (lists, prefix) = self.family_of(state.entry.cidr);
        let changes = lists.remove(entry.id, state.entry.list_type, prefix);
        self.entries.remove(&entry.id);
        let written = self.write_changes(state.entry.cidr.is_ipv4(), &changes);
        // After the trie writes: a cache filled before them is invalidated.
        self.store_counts();
        written?;
        let mut stored: BpfHashMap<&mut MapData, EntryKey, Entry> =
            BpfHashMap::try_from(map_data_mut(&mut self.bpf, MAP_ENTRIES)?)
                .map_err(|e| MapAccessError::new(MAP_ENTRIES, e))?;
        match stored.remove(&entry_key(entry.id)) {
            Ok(()) | Err(aya::maps::MapError::KeyNotFound) => Ok(()),
            Err(e) => Err(MapAccessError::new(MAP_ENTRIES, e).into()),
        }
    }

    fn family_of(&mut self, cidr: Cidr) -> (&mut FamilyLists, Prefix) {
        match cidr.addr() {
            IpAddr::V4(v4) => (&mut self.v4, (u128::from(u32::from(v4)) << 96, cidr.prefix_len())),
            IpAddr::V6(v6) => (&mut self.v6, (u128::from(v6), cidr.prefix_len())),
        }
    }

    fn write_changes(&mut self, v4: bool, changes: &[Change]) -> Result<(), MapAccessError> {
        if v4 {
            let mut trie: LpmTrie<&mut MapData, [u8; 4], ListValue> =
                LpmTrie::try_from(map_data_mut(&mut self.bpf, MAP_LISTS_V4)?)
                    .map_err(|e| MapAccessError::new(MAP_LISTS_V4, e))?;
            for change in changes {
                match change {
                    Change::Put(prefix, value) => trie.insert(&v4_key(*prefix), value, 0),
                    Change::Delete(prefix) => ignore_missing(trie.remove(&v4_key(*prefix))),
                }
                .map_err(|e| MapAccessError::new(MAP_LISTS_V4, e))?;
            }
        } else {
            let mut trie: LpmTrie<&mut MapData, [u8; 16], ListValue> =
                LpmTrie::try_from(map_data_mut(&mut self.bpf, MAP_LISTS_V6)?)
                    .map_err(|e| MapAccessError::new(MAP_LISTS_V6, e))?;
            for change in changes {
                match change {
                    Change::Put(prefix, value) => trie.insert(&v6_key(*prefix), value, 0),
                    Change::Delete(prefix) => ignore_missing(trie.remove(&v6_key(*prefix))),
                }
                .map_err(|e| MapAccessError::new(MAP_LISTS_V6, e))?;
            }
        }
        Ok(())
    }

    /// Stores the entry counts and moves the list epoch on, which
    /// invalidates every CPU's cache of trie answers.
    fn store_counts(&self) {
        let epoch = offset_of!(Config, list_epoch);
        let next = self.config.load_u32(0, epoch).unwrap_or_default().wrapping_add(1);
        self.config.store_u32(0, epoch, next);
        let count = |n: usize| u32::try_from(n).unwrap_or(u32::MAX);
        self.config.store_u32(0, offset_of!(Config, v4_blacklist), count(self.v4.blacklist_len()));
        self.config.store_u32(0, offset_of!(Config, v4_whitelist), count(self.v4.whitelist_len()));
        self.config.store_u32(0, offset_of!(Config, v6_blacklist), count(self.v6.blacklist_len()));
        self.config.store_u32(0, offset_of!(Config, v6_whitelist), count(self.v6.whitelist_len()));
    }

    // ----------------------------------------------------- trusted, time

    /// Sets the addresses that always pass (at most [`MAX_TRUSTED`] per
    /// family), replacing the previous set.
    pub fn set_trusted(&mut self, addrs: &[IpAddr]) -> Result<(), TrustedError> {
        let mut v4: Vec<Ipv4Addr> =
            addrs.iter().filter_map(|a| if let IpAddr::V4(v) = a { Some(*v) } else { None }).collect();
        let mut v6: Vec<Ipv6Addr> =
            addrs.iter().filter_map(|a| if let IpAddr::V6(v) = a { Some(*v) } else { None }).collect();
        v4.sort_unstable();
        v4.dedup();
        v6.sort_unstable();
        v6.dedup();
        if v4.len() > MAX_TRUSTED {
            return Err(TrustedError::TooMany { family: "IPv4", got: v4.len(), max: MAX_TRUSTED });
        }
        if v6.len() > MAX_TRUSTED {
            return Err(TrustedError::TooMany { family: "IPv6", got: v6.len(), max: MAX_TRUSTED });
        }
        // Addresses first, then the counts: the program never compares with
        // a slot that is being written beyond the count in force.
        let base4 = offset_of!(Config, trusted_v4);
        let base6 = offset_of!(Config, trusted_v6);
        let c4 = offset_of!(Config, trusted_v4_count);
        let c6 = offset_of!(Config, trusted_v6_count);
        self.config.store_u32(0, c4, 0);
        self.config.store_u32(0, c6, 0);
        for (i, addr) in v4.iter().enumerate() {
            self.config.store_u32(0, base4 + 4 * i, u32::from_ne_bytes(addr.octets()));
        }
        for (i, addr) in v6.iter().enumerate() {
            let octets = addr.octets();
            let (high, low) = octets.split_at(8);
            self.config.store_u64(0, base6 + 16 * i, u64::from_ne_bytes(high.try_into().unwrap_or_default()));
            self.config.store_u64(0, base6 + 16 * i + 8, u64::from_ne_bytes(low.try_into().unwrap_or_default()));
        }
        self.config.store_u32(0, c4, v4.len() as u32);
        self.config.store_u32(0, c6, v6.len() as u32);
        Ok(())
    }

    /// Fixes the engine clock at `now_ns` (tests), or gives it back to the
    /// real clock, `CLOCK_MONOTONIC` (`None`). 0 is not a valid fixed time.
    pub fn set_time_override(&self, now_ns: Option<u64>) {
        self.config.store_u64(0, offset_of!(Config, time_override_ns), now_ns.unwrap_or(0));
    }

    // ------------------------------------------------------------- state

    /// What is in force: rules by slot and list entries (firewall rules are
    /// not the engine's).
    pub fn applied(&self) -> AppliedState {
        AppliedState {
            engine_rules: self.slots.iter().flatten().map(|s| (s.rule.id, s.rule)).collect(),
            ip_entries: self.entries.iter().map(|(id, s)| (*id, s.entry)).collect(),
            firewall_rules: Vec::new(),
        }
    }

    /// The per-source sketch: cells per row, and its seed.
    pub fn sketch(&self) -> (u32, u64) {
        let seed = self.config.get(0).map(|c| c.sketch_seed).unwrap_or_default();
        (self.sketch_width, seed)
    }

    /// Empties every token bucket (tests start each case from fresh rate
    /// state).
    pub fn reset_rate_state(&mut self) {
        for i in 0..self.sketch.len() {
            self.sketch.set(i, &Bucket::default());
        }
        for i in 0..self.port_cells.len() {
            self.port_cells.set(i, &PortCell::default());
        }
    }

    /// Sketch cell `index` as `(tokens, last_ns)` (tests compare it with the
    /// model's).
    pub fn sketch_cell(&self, index: u32) -> Option<(u64, u64)> {
        self.sketch.get(index as usize).map(|b| (b.tokens, b.last_ns))
    }

    /// Every per-port cell in use.
    pub fn port_buckets(&self) -> Vec<PortBucket> {
        (0..self.port_cells.len())
            .filter_map(|i| {
                let cell = self.port_cells.get(i).filter(|c| c.owned != 0)?;
                Some(PortBucket {
                    way: i / PORTS,
                    port: u16::try_from(i % PORTS).ok()?,
                    slot: Slot::new(cell.slot),
                    generation: cell.generation,
                    tokens: cell.bucket.tokens,
                    last_ns: cell.bucket.last_ns,
                })
            })
            .collect()
    }

    /// The counters of one destination port, summed over CPUs.
    pub fn port_counters(&self, port: u16) -> Result<metrics::Counters, MapAccessError> {
        self.read_counters(MAP_PORT_COUNTERS, u32::from(port))
    }

    /// The counters of one slot, summed over CPUs.
    pub fn slot_counters(&self, slot: Slot) -> Result<metrics::Counters, MapAccessError> {
        self.read_counters(MAP_SLOT_COUNTERS, u32::from(slot.get()))
    }

    /// Every port with a non-zero counter, summed over CPUs.
    pub fn all_port_counters(&self) -> Result<BTreeMap<u16, metrics::Counters>, MapAccessError> {
        let map: PerCpuArray<&MapData, Counters> = PerCpuArray::try_from(map_data(&self.bpf, MAP_PORT_COUNTERS)?)
            .map_err(|e| MapAccessError::new(MAP_PORT_COUNTERS, e))?;
        let mut out = BTreeMap::new();
        for (port, values) in map.iter().enumerate() {
            let values = values.map_err(|e| MapAccessError::new(MAP_PORT_COUNTERS, e))?;
            let sum = sum_counters(values.iter());
            if !sum.is_zero()
                && let Ok(port) = u16::try_from(port)
            {
                out.insert(port, sum);
            }
        }
        Ok(out)
    }

    fn read_counters(&self, name: &'static str, index: u32) -> Result<metrics::Counters, MapAccessError> {
        let map: PerCpuArray<&MapData, Counters> =
            PerCpuArray::try_from(map_data(&self.bpf, name)?).map_err(|e| MapAccessError::new(name, e))?;
        let values = map.get(&index, 0).map_err(|e| MapAccessError::new(name, e))?;
        Ok(sum_counters(values.iter()))
    }

    // --------------------------------------------------------------- run

    /// The loaded XDP program, for tools that drive it directly (the
    /// benchmark tail-calls it).
    pub fn program(&self) -> Option<&Xdp> {
        self.bpf.program(PROGRAM).and_then(|p| p.try_into().ok())
    }

    /// Runs one frame through the program with `BPF_PROG_TEST_RUN` (the
    /// frame must hold at least an Ethernet header). Returns the XDP action
    /// (1 drop, 2 pass). Counters and buckets change as for a real packet.
    pub fn run(&self, frame: &[u8]) -> Result<u32, RunError> {
        self.run_repeat(frame, 1).map(|(action, _)| action)
    }

    /// Runs one frame `repeat` times; returns the action and the kernel's
    /// mean time per run.
    pub fn run_repeat(&self, frame: &[u8], repeat: u32) -> Result<(u32, Duration), RunError> {
        let program: &Xdp = self.bpf.program(PROGRAM).and_then(|p| p.try_into().ok()).ok_or(RunError::Missing)?;
        let result = program
            .test_run(TestRunOptions { data_in: Some(frame), repeat: repeat.max(1), ..TestRunOptions::default() })
            .map_err(|e| RunError::Run(Box::new(e)))?;
        Ok((result.return_value, result.duration))
    }

    // ------------------------------------------------------------ detach

    /// Detaches the program and removes every pin (the maps go with the
    /// last reference).
    pub fn detach(self) -> Result<(), DetachError> {
        let dir = self.attachment.as_ref().map(|a| a.dir.clone());
        drop(self);
        match dir {
            Some(dir) => detach_dir(&dir).map(|_| ()),
            None => Ok(()),
        }
    }
}

/// Detaches the engine pinned for `iface` (in `bpffs_dir`, or the default
/// directory) and removes its pins: what `pakkt-agent detach` does. Returns
/// whether anything was there.
pub fn detach(iface: &str, bpffs_dir: Option<&Path>) -> Result<bool, DetachError> {
    if !valid_iface(iface) {
        return Err(DetachError::InterfaceName(iface.to_owned()));
    }
    let dir = bpffs_dir.map_or_else(|| default_pin_dir(iface), Path::to_path_buf);
    detach_dir(&dir)
}

fn detach_dir(dir: &Path) -> Result<bool, DetachError> {
    if !dir.exists() {
        return Ok(false);
    }
    let link_pin = dir.join(PIN_LINK);
    if link_pin.exists() {
        let pinned = PinnedLink::from_pin(&link_pin)
            .map_err(|e| DetachError::Link { path: link_pin.clone(), source: Box::new(e) })?;
        // Unpinned and closed, the link is released and the program detached.
        drop(pinned.unpin().map_err(|e| DetachError::Link { path: link_pin.clone(), source: Box::new(e) })?);
    }
    remove_pins(dir)?;
    fs::remove_dir(dir).map_err(|source| DetachError::Unpin { path: dir.to_path_buf(), source })?;
    if let Some(parent) = dir.parent()
        && parent.file_name().is_some_and(|n| n == "pakkt")
    {
        // Only when empty: other interfaces may still be protected.
        let _ = fs::remove_dir(parent);
    }
    Ok(true)
}

/// Removes the map and program pins in `dir` (not the link).
fn remove_pins(dir: &Path) -> Result<(), DetachError> {
    for name in MAPS.iter().chain([&PIN_PROGRAM]) {
        let path = dir.join(name);
        remove_if_present(&path).map_err(|source| DetachError::Unpin { path, source })?;
    }
    Ok(())
}

impl DetachError {
    fn into_io(self) -> io::Error {
        match self {
            Self::Unpin { source, .. } => source,
            other => io::Error::other(other.to_string()),
        }
    }
}

fn remove_if_present(path: &Path) -> io::Result<()> {
    match fs::remove_file(path) {
        Err(e) if e.kind() != io::ErrorKind::NotFound => Err(e),
        _ => Ok(()),
    }
}

/// Interface names as the kernel accepts them (and safe in a path).
fn valid_iface(iface: &str) -> bool {
    !iface.is_empty()
        && iface.len() < 16
        && iface != "."
        && iface != ".."
        && iface.bytes().all(|b| b.is_ascii_alphanumeric() || b"-_.@".contains(&b))
}

/// Creates the pin directory, mounting bpffs at `/sys/fs/bpf` first when
/// the directory is under it and no bpffs is there.
fn prepare_pin_dir(dir: &Path) -> Result<(), OpenError> {
    let bpffs_error = |source| OpenError::Bpffs { path: dir.to_path_buf(), source };
    let root = Path::new(DEFAULT_BPFFS_ROOT);
    if dir.starts_with(root) && root.exists() {
        // One check-and-mount at a time in this process: two mounts stacked
        // on each other would hide the pins made under the first.
        static MOUNTING: std::sync::Mutex<()> = std::sync::Mutex::new(());
        let _guard = MOUNTING.lock().unwrap_or_else(std::sync::PoisonError::into_inner);
        if !abi::is_bpffs(root).map_err(bpffs_error)? {
            abi::mount_bpffs(root).map_err(bpffs_error)?;
        }
    }
    fs::create_dir_all(dir).map_err(bpffs_error)?;
    if !abi::is_bpffs(dir).map_err(bpffs_error)? {
        return Err(OpenError::NotBpffs(dir.to_path_buf()));
    }
    Ok(())
}

/// `Some(version)` when the pinned config is not this ABI's (0: not
/// PAKKT's or not readable as such).
fn pinned_abi_mismatch(path: &Path) -> Result<Option<u32>, OpenError> {
    let map = MapData::from_pin(path).map_err(|e| MapAccessError::new(MAP_CONFIG, e))?;
    let info = map.info().map_err(|e| MapAccessError::new(MAP_CONFIG, e))?;
    if info.value_size() as usize != size_of::<Config>() {
        return Ok(Some(0));
    }
    let array: Array<MapData, Config> =
        Array::try_from(aya::maps::Map::Array(map)).map_err(|e| MapAccessError::new(MAP_CONFIG, e))?;
    let config = array.get(&0, 0).map_err(|e| MapAccessError::new(MAP_CONFIG, e))?;
    if config.magic != MAGIC {
        return Ok(Some(0));
    }
    Ok((config.abi_version != ABI_VERSION).then_some(config.abi_version))
}

fn sketch_width(requested: u32) -> u32 {
    requested.clamp(1, pakkt_core::verdict::bucket::MAX_SKETCH_WIDTH).next_power_of_two()
}

fn mode_code(mode: DataplaneMode) -> u32 {
    match mode {
        DataplaneMode::Native => abi::MODE_NATIVE,
        DataplaneMode::Generic | DataplaneMode::Memory => abi::MODE_GENERIC,
    }
}

fn mode_name(mode: DataplaneMode) -> &'static str {
    match mode {
        DataplaneMode::Native => "native",
        DataplaneMode::Generic => "generic",
        DataplaneMode::Memory => "memory",
    }
}

fn program_mut(bpf: &mut Ebpf) -> Result<&mut Xdp, OpenError> {
    bpf.program_mut(PROGRAM).and_then(|p| p.try_into().ok()).ok_or(OpenError::Missing("XDP program"))
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

fn mmap<T: abi::Mappable>(bpf: &Ebpf, name: &'static str, entries: usize) -> Result<Mmap<T>, OpenError> {
    Mmap::new(array_data(bpf, name)?, entries).map_err(|source| OpenError::Mmap { map: name, source })
}

fn ignore_missing(result: Result<(), aya::maps::MapError>) -> Result<(), aya::maps::MapError> {
    match result {
        Err(aya::maps::MapError::KeyNotFound) => Ok(()),
        Err(aya::maps::MapError::SyscallError(e)) if e.io_error.kind() == io::ErrorKind::NotFound => Ok(()),
        other => other,
    }
}

fn sum_counters<'a>(values: impl Iterator<Item = &'a Counters>) -> metrics::Counters {
    let mut sum = metrics::Counters::default();
    for c in values {
        sum.add(metrics::Counters {
            packets_passed: c.packets_passed,
            packets_dropped: c.packets_dropped,
            bytes_passed: c.bytes_passed,
            bytes_dropped: c.bytes_dropped,
        });
    }
    sum
}

fn v4_key((bits, len): Prefix) -> Key<[u8; 4]> {
    Key::new(u32::from(len), ((bits >> 96) as u32).to_be_bytes())
}

fn v6_key((bits, len): Prefix) -> Key<[u8; 16]> {
    Key::new(u32::from(len), bits.to_be_bytes())
}

fn entry_key(id: IpEntryId) -> EntryKey {
    EntryKey { id: id.to_u128().to_be_bytes() }
}

/// A wall-clock expiry on the engine clock: `boot_now + (at - wall_now)`,
/// clamped to the clock's range (a past expiry lands in the past).
/// `boot_now` is the engine clock's reading now: `CLOCK_MONOTONIC`, despite
/// the name.
pub fn to_engine_clock(at: DateTime<Utc>, wall_now: DateTime<Utc>, boot_now: u64) -> u64 {
    let gap = at - wall_now;
    let delta = i128::from(gap.num_seconds()) * 1_000_000_000 + i128::from(gap.subsec_nanos());
    let ns = i128::from(boot_now) + delta;
    u64::try_from(ns.clamp(0, i128::from(u64::MAX - 1))).unwrap_or(0)
}

fn encode_rule(rule: &DesiredRule, generation: u32) -> Rule {
    let spec = rule.spec;
    Rule {
        kind: match spec.rule_type {
            RuleType::Block => abi::RULE_BLOCK,
            RuleType::RateLimit => abi::RULE_RATE_LIMIT,
            RuleType::AllowOnly => abi::RULE_ALLOW_ONLY,
        },
        protocol: spec.protocol.number(),
        port_start: spec.ports.start(),
        port_end: spec.ports.end(),
        min_pkt_size: spec.limits.min_pkt_size,
        max_pkt_size: spec.limits.max_pkt_size,
        reserved: 0,
        max_pps: spec.limits.max_pps,
        max_port_pps: spec.limits.max_port_pps,
        generation,
        id: rule.id.to_u128().to_be_bytes(),
    }
}

fn decode_rule(rule: &Rule) -> Option<RuleSpec> {
    let rule_type = match rule.kind {
        abi::RULE_BLOCK => RuleType::Block,
        abi::RULE_RATE_LIMIT => RuleType::RateLimit,
        abi::RULE_ALLOW_ONLY => RuleType::AllowOnly,
        _ => return None,
    };
    let limits = RateLimits {
        max_pps: rule.max_pps,
        max_port_pps: rule.max_port_pps,
        min_pkt_size: rule.min_pkt_size,
        max_pkt_size: rule.max_pkt_size,
    };
    RuleSpec::new(Protocol::try_from(rule.protocol).ok()?, rule.port_start, rule.port_end, rule_type, limits).ok()
}

fn encode_entry(state: &EntryState) -> Entry {
    let entry = &state.entry;
    let (family, addr) = match entry.cidr.addr() {
        IpAddr::V4(v4) => {
            let mut addr = [0; 16];
            addr[..4].copy_from_slice(&v4.octets());
            (4, addr)
        }
        IpAddr::V6(v6) => (6, v6.octets()),
    };
    Entry {
        list: match entry.list_type {
            ListType::Whitelist => abi::LIST_WHITELIST,
            ListType::Blacklist => abi::LIST_BLACKLIST,
        },
        family,
        prefix_len: entry.cidr.prefix_len(),
        has_expiry: u8::from(entry.expires_at.is_some()),
        expires_nanos: entry.expires_at.map(|t| t.timestamp_subsec_nanos()).unwrap_or_default(),
        expires_secs: entry.expires_at.map(|t| t.timestamp()).unwrap_or_default(),
        expiry_ns: state.expiry_ns.unwrap_or(abi::EXPIRY_NEVER),
        addr,
    }
}

fn decode_entry(id: IpEntryId, stored: &Entry) -> Option<EntryState> {
    let list_type = match stored.list {
        abi::LIST_WHITELIST => ListType::Whitelist,
        abi::LIST_BLACKLIST => ListType::Blacklist,
        _ => return None,
    };
    let addr = match stored.family {
        4 => IpAddr::V4(Ipv4Addr::new(stored.addr[0], stored.addr[1], stored.addr[2], stored.addr[3])),
        6 => IpAddr::V6(Ipv6Addr::from(stored.addr)),
        _ => return None,
    };
    let cidr = Cidr::new(addr, stored.prefix_len).ok()?;
    let expires_at = match stored.has_expiry {
        0 => None,
        _ => Some(DateTime::from_timestamp(stored.expires_secs, stored.expires_nanos)?),
    };
    let expiry_ns = (stored.expiry_ns != abi::EXPIRY_NEVER).then_some(stored.expiry_ns);
    Some(EntryState { entry: DesiredEntry { id, list_type, cidr, expires_at }, expiry_ns })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn interface_names() {
        assert!(valid_iface("eth0") && valid_iface("veth-pk.1@x"));
        assert!(!valid_iface("") && !valid_iface("..") && !valid_iface("a/b") && !valid_iface("sixteen-chars-xx"));
    }

    #[test]
    fn wall_expiries_land_on_the_engine_clock() {
        let now: DateTime<Utc> = "2026-03-16T12:00:00Z".parse().expect("time");
        let boot = 5_000_000_000;
        assert_eq!(to_engine_clock(now + chrono::Duration::seconds(3), now, boot), 8_000_000_000);
        assert_eq!(to_engine_clock(now - chrono::Duration::seconds(3), now, boot), 2_000_000_000);
        assert_eq!(to_engine_clock(now - chrono::Duration::days(365), now, boot), 0);
        assert_eq!(to_engine_clock(now + chrono::Duration::days(365 * 1000), now, boot), u64::MAX - 1);
    }

    #[test]
    fn rules_and_entries_round_trip_through_their_map_values() {
        let rule = DesiredRule {
            id: EngineRuleId::generate(),
            slot: Slot::new(7),
            spec: RuleSpec::new(
                Protocol::Udp,
                27015,
                27020,
                RuleType::RateLimit,
                RateLimits { max_pps: 5, max_port_pps: 100, min_pkt_size: 28, max_pkt_size: 1200 },
            )
            .expect("spec"),
        };
        let stored = encode_rule(&rule, 9);
        assert_eq!(decode_rule(&stored), Some(rule.spec));
        assert_eq!(stored.generation, 9);
        assert_eq!(u128::from_be_bytes(stored.id), rule.id.to_u128());
        for (cidr, expires_at) in
            [("203.0.113.0/24", Some("2030-01-02T03:04:05.123456789Z".parse().expect("time"))), ("2001:db8::/32", None)]
        {
            let state = EntryState {
                entry: DesiredEntry {
                    id: IpEntryId::generate(),
                    list_type: ListType::Blacklist,
                    cidr: cidr.parse().expect("cidr"),
                    expires_at,
                },
                expiry_ns: expires_at.map(|_| 42),
            };
            assert_eq!(decode_entry(state.entry.id, &encode_entry(&state)), Some(state));
        }
    }
}
