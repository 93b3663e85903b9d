//! Loading, attaching, pinning and adopting the engine, and detaching it.

use std::collections::BTreeMap;
use std::fs;
use std::io;
use std::mem::offset_of;
use std::path::{Path, PathBuf};

use aya::Ebpf;
use aya::EbpfLoader;
use aya::maps::{Array, MapData};
use aya::programs::links::{FdLink, LinkOrder, PinnedLink};
use aya::programs::tc::{self, NlOptions, SchedClassifierLink, TcAttachOptions, TcHandle};
use aya::programs::{TcAttachType, XdpMode};
use pakkt_core::agent::{DataplaneMode, EgressMode};

use super::{
    AttachMode, AttachOptions, Attachment, EGRESS_PROGRAM, EgressAttach, Engine, LoadOptions, MAP_CONFIG,
    MAP_PORT_CELLS, MAP_PORTS, MAP_RULES, MAP_SEEN, MAP_SKETCH, MAP_VERIFIED, MAP_VSUMMARY, MAPS, OBJECT,
    OnAbiMismatch, PIN_LINK, PIN_LINK_EGRESS, PIN_PROGRAM, PIN_PROGRAM_EGRESS, array_data, egress_program_mut, mmap,
    program_mut,
};
use crate::abi::{
    self, ABI_VERSION, Bucket, Config, MAGIC, MAX_TRUSTED, PORT_CELLS, PORT_TABLE_ENTRIES, PortCell, PortChunk,
    RULE_ENTRIES, Rule, SLOTS, SUMMARY_SETS, VerifiedSummary, WaySet,
};
use crate::error::{DetachError, MapAccessError, OpenError};
use crate::lists::FamilyLists;
use crate::sys;

impl Engine {
    /// Loads the program and fresh, unpinned maps without attaching them:
    /// frames reach it only through [`Engine::run`].
    pub fn load(options: &LoadOptions) -> Result<Self, OpenError> {
        let sizes = Sizes::new(options.sketch_width, options.verified_sets, options.seen_sets);
        let mut loader = EbpfLoader::new();
        sizes.apply(&mut loader);
        let mut bpf = loader.load(OBJECT).map_err(|e| OpenError::Load(Box::new(e)))?;
        program_mut(&mut bpf)?.load().map_err(|e| OpenError::Program(Box::new(e)))?;
        egress_program_mut(&mut bpf)?.load().map_err(|e| OpenError::Program(Box::new(e)))?;
        let seed = options.sketch_seed.unwrap_or_else(rand::random);
        Self::take_over(bpf, Some(Fresh { sizes, seed }), None)
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
        let mut carried = None;
        if adopted && let Some(found) = pinned_abi_mismatch(&config_pin)? {
            if options.on_abi_mismatch == OnAbiMismatch::Refuse {
                return Err(OpenError::AbiMismatch { path: dir, found, expected: ABI_VERSION });
            }
            // What an engine of ABI 1 enforced goes into the new maps before
            // the new program takes over its link, so that the host is not
            // left without its rules and lists until the agent's first sync.
            if found == 1 {
                carried = super::legacy::read_abi1(&dir).ok();
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

        let sizes = Sizes::new(options.sketch_width, options.verified_sets, options.seen_sets);
        let mut loader = EbpfLoader::new();
        sizes.apply(&mut loader);
        let pins: Vec<(&str, PathBuf)> = MAPS.iter().map(|name| (*name, dir.join(name))).collect();
        for (name, path) in &pins {
            loader.map_pin_path(name, path.as_path());
        }
        let mut bpf = loader.load(OBJECT).map_err(|e| OpenError::Load(Box::new(e)))?;
        program_mut(&mut bpf)?.load().map_err(|e| OpenError::Program(Box::new(e)))?;
        egress_program_mut(&mut bpf)?.load().map_err(|e| OpenError::Program(Box::new(e)))?;
        let fresh = (!adopted).then(|| Fresh { sizes, seed: rand::random() });
        let mut engine = Self::take_over(bpf, fresh, None)?;
        if let Some(old) = carried {
            engine.carry(&old);
        }

        let mode = engine.attach_program(iface, &dir, options.mode)?;
        engine.config.store_u32(0, offset_of!(Config, attach_mode), mode_code(mode));
        // Without its egress observer the engine still enforces every rule,
        // but protect rules verify nobody new: reported, not fatal.
        let egress = match engine.attach_egress(iface, &dir, options.egress) {
            Ok(egress) => Some(egress),
            Err(e) => {
                engine.egress_error = Some(e.to_string());
                engine.config.store_u32(0, offset_of!(Config, egress_mode), 0);
                None
            }
        };
        let program_pin = dir.join(PIN_PROGRAM);
        remove_if_present(&program_pin).map_err(|source| OpenError::Bpffs { path: dir.clone(), source })?;
        program_mut(&mut engine.bpf)?
            .pin(&program_pin)
            .map_err(|e| OpenError::Pin { path: program_pin.clone(), source: Box::new(e) })?;
        let egress_pin = dir.join(PIN_PROGRAM_EGRESS);
        remove_if_present(&egress_pin).map_err(|source| OpenError::Bpffs { path: dir.clone(), source })?;
        egress_program_mut(&mut engine.bpf)?
            .pin(&egress_pin)
            .map_err(|e| OpenError::Pin { path: egress_pin.clone(), source: Box::new(e) })?;
        engine.attachment = Some(Attachment { iface: iface.to_owned(), dir, mode, egress });
        Ok(engine)
    }

    /// Attaches the egress program: replaces the program of the pinned tcx
    /// link, or of the clsact filter the config names, in one step (so that
    /// nobody goes unverified across a restart); else removes what an
    /// earlier engine left and attaches afresh, with tcx where the kernel
    /// has it (first in the chain, so that no program before it can hide
    /// packets from it), else on the clsact qdisc. Returns the mode in
    /// force and records it in the config.
    fn attach_egress(&mut self, iface: &str, dir: &Path, wanted: EgressAttach) -> Result<EgressMode, OpenError> {
        let link_pin = dir.join(PIN_LINK_EGRESS);
        let config = self.config.get(0).ok_or(OpenError::Missing(MAP_CONFIG))?;
        let link_error =
            |e: Box<dyn std::error::Error + Send + Sync>| OpenError::Link { path: link_pin.clone(), source: e };
        let program = egress_program_mut(&mut self.bpf)?;
        if config.egress_mode == abi::EGRESS_TCX && link_pin.exists() && wanted != EgressAttach::Clsact {
            let replaced = PinnedLink::from_pin(&link_pin)
                .map_err(|e| e.to_string())
                .and_then(|pinned| SchedClassifierLink::try_from(FdLink::from(pinned)).map_err(|e| e.to_string()))
                .and_then(|link| program.attach_to_link(link).map_err(|e| e.to_string()))
                .and_then(|id| program.take_link(id).map_err(|e| e.to_string()));
            // The link stays pinned (this process's handle goes with
            // `replaced`). A defunct link (its interface went away) is
            // replaced below.
            if replaced.is_ok() {
                return Ok(EgressMode::Tcx);
            }
        }
        if config.egress_mode == abi::EGRESS_CLSACT && wanted != EgressAttach::Tcx {
            let priority = u16::try_from(config.egress_prio).unwrap_or_default();
            let link = SchedClassifierLink::attached(
                iface,
                TcAttachType::Egress,
                priority,
                TcHandle::from(config.egress_handle),
                None,
            )
            .map_err(|e| link_error(Box::new(e)))?;
            // A netlink replace; it fails when the filter is gone (someone
            // removed the qdisc), and then the program is attached afresh.
            if let Ok(id) = program.attach_to_link(link) {
                keep_filter(program.take_link(id).map_err(|e| link_error(Box::new(e)))?);
                return Ok(EgressMode::Clsact);
            }
        }

        // Afresh: nothing of an earlier engine's egress stays behind.
        unpin_link(&link_pin).map_err(link_error)?;
        // Best effort: a filter of an earlier engine, if the qdisc is there.
        let _ = tc::qdisc_detach_program(iface, TcAttachType::Egress, EGRESS_PROGRAM);
        let tries: &[EgressMode] = match wanted {
            EgressAttach::Auto => &[EgressMode::Tcx, EgressMode::Clsact],
            EgressAttach::Tcx => &[EgressMode::Tcx],
            EgressAttach::Clsact => &[EgressMode::Clsact],
        };
        let mut last = None;
        for mode in tries {
            let attached = match mode {
                EgressMode::Tcx => program.attach_with_options(
                    iface,
                    TcAttachType::Egress,
                    TcAttachOptions::TcxOrder(LinkOrder::first()),
                ),
                EgressMode::Clsact => {
                    // Already there is fine; a real failure shows in the
                    // attach below.
                    let _ = tc::qdisc_add_clsact(iface);
                    program.attach_with_options(
                        iface,
                        TcAttachType::Egress,
                        TcAttachOptions::Netlink(NlOptions::default()),
                    )
                }
            };
            let id = match attached {
                Ok(id) => id,
                Err(e) => {
                    last = Some((*mode, e));
                    continue;
                }
            };
            let link = program.take_link(id).map_err(|e| link_error(Box::new(e)))?;
            let (code, priority, handle) = match mode {
                EgressMode::Tcx => {
                    let fd_link = FdLink::try_from(link).map_err(|e| link_error(Box::new(e)))?;
                    fd_link
                        .pin(&link_pin)
                        .map_err(|e| OpenError::Pin { path: link_pin.clone(), source: Box::new(e) })?;
                    (abi::EGRESS_TCX, 0, 0)
                }
                EgressMode::Clsact => {
                    let priority = link.priority().map_err(|e| link_error(Box::new(e)))?;
                    let handle = link.handle().map_err(|e| link_error(Box::new(e)))?;
                    keep_filter(link);
                    (abi::EGRESS_CLSACT, u32::from(priority), u32::from(handle))
                }
            };
            self.config.store_u32(0, offset_of!(Config, egress_prio), priority);
            self.config.store_u32(0, offset_of!(Config, egress_handle), handle);
            self.config.store_u32(0, offset_of!(Config, egress_mode), code);
            return Ok(*mode);
        }
        let (mode, source) = last.ok_or(OpenError::Missing("egress attach mode"))?;
        Err(OpenError::Attach { iface: iface.to_owned(), mode: egress_mode_name(mode), source: Box::new(source) })
    }

    /// Replaces the program of the pinned link, or attaches a new link and
    /// pins it. Returns the mode in force.
    fn attach_program(&mut self, iface: &str, dir: &Path, mode: AttachMode) -> Result<DataplaneMode, OpenError> {
        let link_pin = dir.join(PIN_LINK);
        let previous = self.config.load_u32(0, offset_of!(Config, attach_mode)).unwrap_or_default();
        let program = program_mut(&mut self.bpf)?;
        if link_pin.exists() {
            let replaced = PinnedLink::from_pin(&link_pin)
                .map_err(|e| e.to_string())
                .and_then(|pinned| {
                    aya::programs::xdp::XdpLink::try_from(FdLink::from(pinned)).map_err(|e| e.to_string())
                })
                .and_then(|link| program.attach_to_link(link).map_err(|e| e.to_string()))
                .and_then(|id| program.take_link(id).map_err(|e| e.to_string()));
            match replaced {
                Ok(link) => {
                    // The link stays pinned; this process's handle can go.
                    drop(link);
                    return Ok(if previous == abi::MODE_NATIVE {
                        DataplaneMode::Native
                    } else {
                        DataplaneMode::Generic
                    });
                }
                // A link whose interface went away (defunct) cannot take
                // a program: unpin it and attach afresh.
                Err(_) => unpin_link(&link_pin).map_err(|e| OpenError::Link { path: link_pin.clone(), source: e })?,
            }
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
    /// (`fresh`: table sizes and seed) or checks an adopted one, then reads
    /// the rules and entries back into the mirrors.
    fn take_over(bpf: Ebpf, fresh: Option<Fresh>, attachment: Option<Attachment>) -> Result<Self, OpenError> {
        let config = mmap::<Config>(&bpf, MAP_CONFIG, 1)?;
        let ports = mmap::<PortChunk>(&bpf, MAP_PORTS, PORT_TABLE_ENTRIES)?;
        let rules = mmap::<Rule>(&bpf, MAP_RULES, RULE_ENTRIES)?;
        let sketch = mmap::<Bucket>(&bpf, MAP_SKETCH, max_entries(&bpf, MAP_SKETCH)?)?;
        let port_cells = mmap::<PortCell>(&bpf, MAP_PORT_CELLS, PORT_CELLS)?;
        let verified = mmap::<WaySet>(&bpf, MAP_VERIFIED, max_entries(&bpf, MAP_VERIFIED)?)?;
        let summary = mmap::<VerifiedSummary>(&bpf, MAP_VSUMMARY, max_entries(&bpf, MAP_VSUMMARY)?)?;
        let seen = mmap::<WaySet>(&bpf, MAP_SEEN, max_entries(&bpf, MAP_SEEN)?)?;
        let width = if let Some(Fresh { sizes, seed }) = fresh {
            let initial = Config {
                magic: MAGIC,
                abi_version: ABI_VERSION,
                active: 0,
                attach_mode: 0,
                time_override_ns: 0,
                sketch_seed: seed,
                sketch_mask: sizes.width - 1,
                v4_blacklist: 0,
                v4_whitelist: 0,
                v6_blacklist: 0,
                v6_whitelist: 0,
                trusted_v4_count: 0,
                trusted_v6_count: 0,
                next_generation: 1,
                list_epoch: 1,
                protect_classes: 0,
                trusted_v4: [0; MAX_TRUSTED],
                trusted_v6: [[0; 16]; MAX_TRUSTED],
                verified_mask: sizes.verified_sets - 1,
                seen_mask: sizes.seen_sets - 1,
                egress_mode: 0,
                egress_prio: 0,
                egress_handle: 0,
                reserved: 0,
            };
            config.set(0, &initial);
            sizes.width
        } else {
            let current = config.get(0).ok_or(OpenError::Missing(MAP_CONFIG))?;
            let width = current.sketch_mask.wrapping_add(1);
            if !width.is_power_of_two() || (width as usize) * 2 > sketch.len() {
                return Err(OpenError::Corrupt(format!("sketch mask {:#x}", current.sketch_mask)));
            }
            let summarised = summary.len() * SUMMARY_SETS;
            for (name, mask, len) in [
                (MAP_VERIFIED, current.verified_mask, verified.len().min(summarised)),
                (MAP_SEEN, current.seen_mask, seen.len()),
            ] {
                let sets = mask.wrapping_add(1);
                if !sets.is_power_of_two() || sets as usize > len {
                    return Err(OpenError::Corrupt(format!("{name} mask {mask:#x}")));
                }
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
            verified,
            summary,
            seen,
            sketch_width: width,
            attachment,
            egress_error: None,
            slots: vec![None; SLOTS],
            entries: BTreeMap::new(),
            v4: FamilyLists::default(),
            v6: FamilyLists::default(),
        };
        if fresh.is_none() {
            engine.read_back()?;
            // The rules read back decide it, whatever the pinned value.
            engine.store_protect_classes();
        }
        Ok(engine)
    }

    /// Detaches the program and removes every pin (the maps go with the
    /// last reference).
    pub fn detach(self) -> Result<(), DetachError> {
        let dir = self.attachment.as_ref().map(|a| (a.dir.clone(), a.iface.clone()));
        drop(self);
        match dir {
            Some((dir, iface)) => detach_dir(&dir, &iface).map(|_| ()),
            None => Ok(()),
        }
    }
}

/// Where the engine of `iface` is pinned unless told otherwise (DESIGN §3).
pub const DEFAULT_BPFFS_ROOT: &str = "/sys/fs/bpf";

/// The default pin directory of `iface`: `/sys/fs/bpf/pakkt/<iface>`.
pub fn default_pin_dir(iface: &str) -> PathBuf {
    Path::new(DEFAULT_BPFFS_ROOT).join("pakkt").join(iface)
}

/// Detaches the engine pinned for `iface` (in `bpffs_dir`, or the default
/// directory) and removes its pins: what `pakkt-agent detach` does. Returns
/// whether anything was there.
pub fn detach(iface: &str, bpffs_dir: Option<&Path>) -> Result<bool, DetachError> {
    if !valid_iface(iface) {
        return Err(DetachError::InterfaceName(iface.to_owned()));
    }
    let dir = bpffs_dir.map_or_else(|| default_pin_dir(iface), Path::to_path_buf);
    detach_dir(&dir, iface)
}

/// Unpins and releases the link pinned at `path`, if there is one (which
/// detaches its program).
fn unpin_link(path: &Path) -> Result<(), Box<dyn std::error::Error + Send + Sync>> {
    if path.exists() {
        let pinned = PinnedLink::from_pin(path)?;
        drop(pinned.unpin()?);
    }
    Ok(())
}

/// Leaves a clsact filter attached: aya detaches a netlink link when it is
/// dropped, and this one must outlive the process (the pinned maps and the
/// config name it for the next engine).
fn keep_filter(link: SchedClassifierLink) {
    std::mem::forget(link);
}

fn detach_dir(dir: &Path, iface: &str) -> Result<bool, DetachError> {
    if !dir.exists() {
        return Ok(false);
    }
    for link_pin in [dir.join(PIN_LINK), dir.join(PIN_LINK_EGRESS)] {
        if link_pin.exists() {
            let pinned = PinnedLink::from_pin(&link_pin)
                .map_err(|e| DetachError::Link { path: link_pin.clone(), source: Box::new(e) })?;
            // Unpinned and closed, the link is released and the program
            // detached.
            drop(pinned.unpin().map_err(|e| DetachError::Link { path: link_pin.clone(), source: Box::new(e) })?);
        }
    }
    remove_pins(dir)?;
    // A clsact filter has no link to unpin: it goes by name, whatever the
    // pinned config said. An interface that is gone (or not in this
    // namespace), or without the qdisc, has none.
    let _ = tc::qdisc_detach_program(iface, TcAttachType::Egress, EGRESS_PROGRAM);
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
    for name in MAPS.iter().chain([&PIN_PROGRAM, &PIN_PROGRAM_EGRESS]) {
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
        if !sys::is_bpffs(root).map_err(bpffs_error)? {
            sys::mount_bpffs(root).map_err(bpffs_error)?;
        }
    }
    fs::create_dir_all(dir).map_err(bpffs_error)?;
    if !sys::is_bpffs(dir).map_err(bpffs_error)? {
        return Err(OpenError::NotBpffs(dir.to_path_buf()));
    }
    Ok(())
}

/// `Some(version)` when the pinned config is not this ABI's (0: not
/// PAKKT's or not readable as such).
fn pinned_abi_mismatch(path: &Path) -> Result<Option<u32>, OpenError> {
    Ok(match pinned_config(path)? {
        Some(config) if config.magic != MAGIC => Some(0),
        Some(config) => (config.abi_version != ABI_VERSION).then_some(config.abi_version),
        // Every ABI starts its config with the magic and the version.
        None => super::legacy::pinned_abi1_version(path).or(Some(0)),
    })
}

/// The pinned config, if its value has this ABI's size.
fn pinned_config(path: &Path) -> Result<Option<Config>, MapAccessError> {
    let map = MapData::from_pin(path).map_err(|e| MapAccessError::new(MAP_CONFIG, e))?;
    let info = map.info().map_err(|e| MapAccessError::new(MAP_CONFIG, e))?;
    if info.value_size() as usize != size_of::<Config>() {
        return Ok(None);
    }
    let array: Array<MapData, Config> =
        Array::try_from(aya::maps::Map::Array(map)).map_err(|e| MapAccessError::new(MAP_CONFIG, e))?;
    array.get(&0, 0).map(Some).map_err(|e| MapAccessError::new(MAP_CONFIG, e))
}

/// The sizes of the maps the loader chooses: sketch cells per row, sets of
/// the verified set and of the seen table (each a power of two).
#[derive(Debug, Clone, Copy)]
struct Sizes {
    width: u32,
    verified_sets: u32,
    seen_sets: u32,
}

impl Sizes {
    fn new(width: u32, verified_sets: u32, seen_sets: u32) -> Self {
        use pakkt_core::verdict::{admission::MAX_SEEN_SETS, bucket::MAX_SKETCH_WIDTH, verified::MAX_VERIFIED_SETS};
        Self {
            width: width.clamp(1, MAX_SKETCH_WIDTH).next_power_of_two(),
            verified_sets: verified_sets.clamp(1, MAX_VERIFIED_SETS).next_power_of_two(),
            seen_sets: seen_sets.clamp(1, MAX_SEEN_SETS).next_power_of_two(),
        }
    }

    /// Sizes the maps of the object about to be loaded (pinned maps that
    /// are adopted keep their own).
    fn apply(self, loader: &mut EbpfLoader<'_>) {
        loader.map_max_entries(MAP_SKETCH, self.width * 2);
        loader.map_max_entries(MAP_VERIFIED, self.verified_sets);
        loader.map_max_entries(MAP_VSUMMARY, self.verified_sets.div_ceil(SUMMARY_SETS as u32));
        loader.map_max_entries(MAP_SEEN, self.seen_sets);
    }
}

/// A fresh engine's sizes and seed.
#[derive(Debug, Clone, Copy)]
struct Fresh {
    sizes: Sizes,
    seed: u64,
}

fn max_entries(bpf: &Ebpf, name: &'static str) -> Result<usize, OpenError> {
    Ok(array_data(bpf, name)?
        .info()
        .map(|info| info.max_entries() as usize)
        .map_err(|e| MapAccessError::new(name, e))?)
}

fn mode_code(mode: DataplaneMode) -> u32 {
    match mode {
        DataplaneMode::Native => abi::MODE_NATIVE,
        DataplaneMode::Generic | DataplaneMode::Memory => abi::MODE_GENERIC,
    }
}

fn egress_mode_name(mode: EgressMode) -> &'static str {
    match mode {
        EgressMode::Tcx => "tcx",
        EgressMode::Clsact => "clsact",
    }
}

fn mode_name(mode: DataplaneMode) -> &'static str {
    match mode {
        DataplaneMode::Native => "native",
        DataplaneMode::Generic => "generic",
        DataplaneMode::Memory => "memory",
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn interface_names() {
        assert!(valid_iface("eth0") && valid_iface("veth-pk.1@x"));
        assert!(!valid_iface("") && !valid_iface("..") && !valid_iface("a/b") && !valid_iface("sixteen-chars-xx"));
    }
}
