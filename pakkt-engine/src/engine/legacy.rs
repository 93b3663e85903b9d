//! Carrying what an engine of an earlier ABI enforced into fresh maps, so
//! that replacing it never leaves the host without its rules and lists
//! while the agent has not synced yet.
//!
//! ABI 1 (before `protect` rules) kept rules and list entries in the same
//! layouts as today (`pakkt_rules`: [`Rule`], 40 bytes, double-buffered by
//! the config's `active` at offset 8; `pakkt_entries`: [`EntryKey`] →
//! [`Entry`]); its config was 232 bytes with `attach_mode` at offset 12.

use std::path::Path;

use aya::maps::{Array, HashMap as BpfHashMap, MapData};
use pakkt_core::id::{EngineRuleId, IpEntryId};
use pakkt_core::slot::Slot;
use pakkt_core::sync::{DesiredEntry, DesiredRule};

use super::codec::{decode_entry, decode_rule};
use super::{Engine, MAP_CONFIG, MAP_ENTRIES, MAP_RULES};
use crate::abi::{Entry, EntryKey, RULE_NONE, Rule, SLOTS};
use crate::error::MapAccessError;

/// ABI 1's config size.
const ABI1_CONFIG_SIZE: usize = 232;

/// What an engine of an earlier ABI enforced.
#[derive(Debug, Clone, Default)]
pub(super) struct Carried {
    /// Its `attach_mode` (native or generic), so that the mode in force is
    /// still reported right.
    pub attach_mode: u32,
    /// Its rules in force, in their slots.
    pub rules: Vec<DesiredRule>,
    /// Its list entries and their expiries on the engine clock.
    pub entries: Vec<(DesiredEntry, Option<u64>)>,
}

/// The version in a pinned config of ABI 1's size (its first two words are
/// the magic and the version, as in every ABI), if it is PAKKT's.
pub(super) fn pinned_abi1_version(path: &Path) -> Option<u32> {
    let config = abi1_config(path).ok()?;
    (config.word(0) == crate::abi::MAGIC).then(|| config.word(4))
}

/// An ABI 1 config's bytes.
struct Abi1Config([u8; ABI1_CONFIG_SIZE]);

impl Abi1Config {
    /// The native-order word at byte `at`.
    fn word(&self, at: usize) -> u32 {
        self.0.get(at..at + 4).and_then(|b| b.try_into().ok()).map_or(0, u32::from_ne_bytes)
    }
}

fn abi1_config(path: &Path) -> Result<Abi1Config, MapAccessError> {
    let config = MapData::from_pin(path).map_err(|e| MapAccessError::new(MAP_CONFIG, e))?;
    let config: Array<MapData, [u8; ABI1_CONFIG_SIZE]> =
        Array::try_from(aya::maps::Map::Array(config)).map_err(|e| MapAccessError::new(MAP_CONFIG, e))?;
    config.get(&0, 0).map(Abi1Config).map_err(|e| MapAccessError::new(MAP_CONFIG, e))
}

/// Reads the rules, list entries and attach mode an ABI 1 engine pinned in
/// `dir`.
pub(super) fn read_abi1(dir: &Path) -> Result<Carried, MapAccessError> {
    let config = abi1_config(&dir.join(MAP_CONFIG))?;
    let (active, attach_mode) = ((config.word(8) & 1) as usize, config.word(12));

    let rules = MapData::from_pin(dir.join(MAP_RULES)).map_err(|e| MapAccessError::new(MAP_RULES, e))?;
    let rules: Array<MapData, Rule> =
        Array::try_from(aya::maps::Map::Array(rules)).map_err(|e| MapAccessError::new(MAP_RULES, e))?;
    let mut carried = Carried { attach_mode, ..Carried::default() };
    for slot in 0..SLOTS {
        let index = u32::try_from(active * SLOTS + slot).unwrap_or(u32::MAX);
        let Ok(rule) = rules.get(&index, 0) else { continue };
        if rule.kind == RULE_NONE {
            continue;
        }
        if let Some(spec) = decode_rule(&rule) {
            let slot = Slot::new(u8::try_from(slot).unwrap_or(u8::MAX));
            let id = EngineRuleId::from_u128(u128::from_be_bytes(rule.id));
            carried.rules.push(DesiredRule { id, slot, spec });
        }
    }

    let entries = MapData::from_pin(dir.join(MAP_ENTRIES)).map_err(|e| MapAccessError::new(MAP_ENTRIES, e))?;
    let entries: BpfHashMap<MapData, EntryKey, Entry> =
        BpfHashMap::try_from(aya::maps::Map::HashMap(entries)).map_err(|e| MapAccessError::new(MAP_ENTRIES, e))?;
    for (key, stored) in entries.iter().filter_map(Result::ok) {
        let id = IpEntryId::from_u128(u128::from_be_bytes(key.id));
        if let Some(state) = decode_entry(id, &stored) {
            carried.entries.push((state.entry, state.expiry_ns));
        }
    }
    Ok(carried)
}

impl Engine {
    /// Loads what an earlier engine enforced into this (fresh) one. What
    /// this ABI refuses is left for the agent's next sync to report.
    pub(super) fn carry(&mut self, old: &Carried) {
        self.config.store_u32(0, std::mem::offset_of!(crate::abi::Config, attach_mode), old.attach_mode);
        for rule in &old.rules {
            let _ = self.stage_load(rule);
        }
        self.commit_rules();
        for (entry, expiry_ns) in &old.entries {
            let _ = self.add_entry_at(entry, *expiry_ns);
        }
    }
}
