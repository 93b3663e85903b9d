//! IP list entries: the entries map, the LPM tries built from the
//! mirrors in [`crate::lists`], and the counts and epoch in the config.

use std::io;
use std::mem::offset_of;
use std::net::IpAddr;

use aya::maps::lpm_trie::{Key, LpmTrie};
use aya::maps::{HashMap as BpfHashMap, MapData};
use chrono::Utc;
use pakkt_core::cidr::Cidr;
use pakkt_core::id::{EngineRuleId, IpEntryId};
use pakkt_core::slot::Slot;
use pakkt_core::sync::{DesiredEntry, DesiredRule};

use super::codec::{decode_entry, decode_rule, encode_entry, entry_key, to_engine_clock, v4_key, v6_key};
use super::{Engine, EntryState, MAP_ENTRIES, MAP_LISTS_V4, MAP_LISTS_V6, SlotState, map_data, map_data_mut};
use crate::abi::{self, Config, Entry, EntryKey, ListValue, MAX_LIST_ENTRIES, SLOTS};
use crate::error::{ListError, MapAccessError, OpenError};
use crate::lists::{Change, FamilyLists, Prefix, encode_expiry};
use crate::sys;

impl Engine {
    /// Reads rules and entries from adopted maps, rewrites the tries from
    /// the entries (healing an update cut short) and the entry counts.
    pub(super) fn read_back(&mut self) -> Result<(), OpenError> {
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

    /// Puts `entry` in force, converting its wall-clock expiry to the
    /// engine clock now. Re-adding an entry in force changes nothing.
    pub fn add_entry(&mut self, entry: &DesiredEntry) -> Result<(), ListError> {
        let expiry_ns = match entry.expires_at {
            Some(at) => Some(to_engine_clock(at, Utc::now(), sys::monotonic_ns().map_err(ListError::Clock)?)),
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
}

fn ignore_missing(result: Result<(), aya::maps::MapError>) -> Result<(), aya::maps::MapError> {
    match result {
        Err(aya::maps::MapError::KeyNotFound) => Ok(()),
        Err(aya::maps::MapError::SyscallError(e)) if e.io_error.kind() == io::ErrorKind::NotFound => Ok(()),
        other => other,
    }
}
