//! The whitelist and blacklist of one address family as the engine's LPM
//! trie holds them: one trie per family, shared by both lists.
//!
//! A BPF LPM trie answers with the longest matching prefix only, while the
//! verdict asks whether *any* in-force entry of a list contains the source.
//! Every entry containing a source is a prefix of it, so they are nested,
//! and all are enclosing-or-equal to the longest one. So each trie node
//! stores, per list, the latest expiry among the entries of that list at
//! its prefix or at any prefix enclosing it: the longest match then tells,
//! for both lists at once, whether an in-force entry contains the source
//! (one lookup per packet for both lists).
//!
//! [`FamilyLists`] keeps the entries and the node values in userspace and
//! turns each change into the few trie writes it needs: a new entry touches
//! its own node and the nodes inside its prefix, never the rest.

use std::collections::BTreeMap;

use pakkt_core::id::IpEntryId;
use pakkt_core::ip_list::ListType;

use crate::abi::{EXPIRY_NEVER, EXPIRY_NOT_LISTED, ListValue};

/// A prefix: its network bits left-aligned in a `u128` (IPv4 in the top 32
/// bits) and its length.
pub type Prefix = (u128, u8);

/// One write to the trie.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Change {
    /// Insert or replace the node of a prefix.
    Put(Prefix, ListValue),
    /// Remove the node of a prefix.
    Delete(Prefix),
}

/// The entries of one list at one prefix, by ID, with their engine
/// expiries.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
struct AtPrefix {
    blacklist: BTreeMap<IpEntryId, u64>,
    whitelist: BTreeMap<IpEntryId, u64>,
}

impl AtPrefix {
    fn list_mut(&mut self, list: ListType) -> &mut BTreeMap<IpEntryId, u64> {
        match list {
            ListType::Blacklist => &mut self.blacklist,
            ListType::Whitelist => &mut self.whitelist,
        }
    }

    fn is_empty(&self) -> bool {
        self.blacklist.is_empty() && self.whitelist.is_empty()
    }
}

/// The node value of an expiry as the engine encodes it: `None` never
/// expires; a time is kept below [`EXPIRY_NEVER`].
pub fn encode_expiry(expiry_ns: Option<u64>) -> u64 {
    expiry_ns.map_or(EXPIRY_NEVER, |ns| ns.min(EXPIRY_NEVER - 1))
}

/// Both lists of one family, and the trie nodes they make.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct FamilyLists {
    prefixes: BTreeMap<Prefix, AtPrefix>,
    lengths: BTreeMap<u8, usize>,
    nodes: BTreeMap<Prefix, ListValue>,
    blacklist: usize,
    whitelist: usize,
}

fn mask(len: u8) -> u128 {
    if len == 0 { 0 } else { u128::MAX << (128 - u32::from(len.min(128))) }
}

impl FamilyLists {
    /// Entries in the blacklist.
    pub fn blacklist_len(&self) -> usize {
        self.blacklist
    }

    /// Entries in the whitelist.
    pub fn whitelist_len(&self) -> usize {
        self.whitelist
    }

    /// Every node the trie must hold.
    pub fn nodes(&self) -> &BTreeMap<Prefix, ListValue> {
        &self.nodes
    }

    /// Adds entry `id` (its engine expiry already encoded) and returns the
    /// trie writes. Adding an ID twice replaces its expiry.
    pub fn insert(&mut self, id: IpEntryId, list: ListType, prefix: Prefix, expiry: u64) -> Vec<Change> {
        let prefix = (prefix.0 & mask(prefix.1), prefix.1);
        let at = self.prefixes.entry(prefix).or_default();
        if at.list_mut(list).insert(id, expiry).is_none() {
            *self.lengths.entry(prefix.1).or_default() += 1;
            match list {
                ListType::Blacklist => self.blacklist += 1,
                ListType::Whitelist => self.whitelist += 1,
            }
        }
        self.refresh_within(prefix)
    }

    /// Removes entry `id` and returns the trie writes (none if it was not
    /// there).
    pub fn remove(&mut self, id: IpEntryId, list: ListType, prefix: Prefix) -> Vec<Change> {
        let prefix = (prefix.0 & mask(prefix.1), prefix.1);
        let Some(at) = self.prefixes.get_mut(&prefix) else { return Vec::new() };
        if at.list_mut(list).remove(&id).is_none() {
            return Vec::new();
        }
        if at.is_empty() {
            self.prefixes.remove(&prefix);
        }
        if let Some(count) = self.lengths.get_mut(&prefix.1) {
            *count -= 1;
            if *count == 0 {
                self.lengths.remove(&prefix.1);
            }
        }
        match list {
            ListType::Blacklist => self.blacklist -= 1,
            ListType::Whitelist => self.whitelist -= 1,
        }
        self.refresh_within(prefix)
    }

    /// Recomputes the nodes at and inside `outer`; returns what changed.
    fn refresh_within(&mut self, outer: Prefix) -> Vec<Change> {
        let low = outer.0;
        let high = outer.0 | !mask(outer.1);
        let inside: Vec<Prefix> =
            self.prefixes.range((low, 0)..=(high, u8::MAX)).map(|(p, _)| *p).filter(|p| p.1 >= outer.1).collect();
        let mut changes = Vec::new();
        if !self.prefixes.contains_key(&outer) && self.nodes.remove(&outer).is_some() {
            changes.push(Change::Delete(outer));
        }
        for prefix in inside {
            let value = self.value_of(prefix);
            if self.nodes.insert(prefix, value) != Some(value) {
                changes.push(Change::Put(prefix, value));
            }
        }
        changes
    }

    /// The node value of `prefix`: per list, the latest expiry at it or at
    /// any enclosing prefix.
    fn value_of(&self, prefix: Prefix) -> ListValue {
        let mut value = ListValue { blacklist_expiry: EXPIRY_NOT_LISTED, whitelist_expiry: EXPIRY_NOT_LISTED };
        for len in self.lengths.range(..=prefix.1).map(|(len, _)| *len) {
            if let Some(at) = self.prefixes.get(&(prefix.0 & mask(len), len)) {
                let latest = |list: &BTreeMap<IpEntryId, u64>| list.values().copied().max();
                if let Some(x) = latest(&at.blacklist) {
                    value.blacklist_expiry = value.blacklist_expiry.max(x);
                }
                if let Some(x) = latest(&at.whitelist) {
                    value.whitelist_expiry = value.whitelist_expiry.max(x);
                }
            }
        }
        value
    }

    /// The node the trie would answer for an address (left-aligned bits of
    /// a full-length prefix), for tests.
    pub fn longest_match(&self, bits: u128) -> Option<ListValue> {
        self.lengths.keys().rev().find_map(|len| self.nodes.get(&(bits & mask(*len), *len))).copied()
    }
}

#[cfg(test)]
mod tests {
    use std::net::IpAddr;

    use pakkt_core::cidr::Cidr;
    use pakkt_core::verdict::{EngineTables, ListEntry};
    use proptest::prelude::*;

    use super::*;

    fn bits(ip: IpAddr) -> u128 {
        match ip {
            IpAddr::V4(v4) => u128::from(u32::from(v4)) << 96,
            IpAddr::V6(v6) => u128::from(v6),
        }
    }

    fn in_force(expiry: u64, now: u64) -> bool {
        expiry == EXPIRY_NEVER || (expiry != EXPIRY_NOT_LISTED && now < expiry)
    }

    fn entry() -> impl Strategy<Value = (u8, u8, Option<u64>, bool)> {
        (
            0u8..8,
            prop::sample::select(vec![0u8, 1, 2, 3, 8]),
            prop_oneof![Just(None), (1u64..10).prop_map(Some)],
            any::<bool>(),
        )
    }

    proptest! {
        /// The longest match answers "any in-force entry contains it" for
        /// both lists, after any sequence of additions and removals.
        #[test]
        fn longest_match_answers_any_entry(ops in proptest::collection::vec((entry(), any::<bool>()), 0..40)) {
            let mut lists = FamilyLists::default();
            let mut model: BTreeMap<u8, (ListType, Cidr, Option<u64>)> = BTreeMap::new();
            for ((net, len, expiry, black), remove) in ops {
                let id = IpEntryId::from_u128(u128::from(net) + 1);
                let list = if black { ListType::Blacklist } else { ListType::Whitelist };
                let host_mask = if len == 0 { 0 } else { u32::MAX << (32 - u32::from(len)) };
                let addr = IpAddr::from(std::net::Ipv4Addr::from(u32::from_be_bytes([10, net << 5, 0, 0]) & host_mask));
                let cidr = Cidr::new(addr, len).expect("masked");
                if remove {
                    if let Some((l, c, _)) = model.remove(&net) {
                        lists.remove(id, l, (bits(c.addr()), c.prefix_len()));
                    }
                } else {
                    if let Some((l, c, _)) = model.remove(&net) {
                        lists.remove(id, l, (bits(c.addr()), c.prefix_len()));
                    }
                    lists.insert(id, list, (bits(cidr.addr()), cidr.prefix_len()), encode_expiry(expiry));
                    model.insert(net, (list, cidr, expiry));
                }
            }
            let tables = EngineTables {
                whitelist: model.values().filter(|e| e.0 == ListType::Whitelist).map(|e| ListEntry { cidr: e.1, expires_at_ns: e.2 }).collect(),
                blacklist: model.values().filter(|e| e.0 == ListType::Blacklist).map(|e| ListEntry { cidr: e.1, expires_at_ns: e.2 }).collect(),
                ..EngineTables::default()
            };
            prop_assert_eq!(lists.blacklist_len(), tables.blacklist.len());
            prop_assert_eq!(lists.whitelist_len(), tables.whitelist.len());
            for a in [0u8, 1, 31, 32, 64, 100, 224, 255] {
                for b in [0u8, 9] {
                    let ip = IpAddr::from([10, a, b, 1]);
                    let found = lists.longest_match(bits(ip));
                    for now in 0..12 {
                        let black = found.is_some_and(|v| in_force(v.blacklist_expiry, now));
                        let white = found.is_some_and(|v| in_force(v.whitelist_expiry, now));
                        prop_assert_eq!(black, tables.is_blacklisted(ip, now), "{} at {}", ip, now);
                        prop_assert_eq!(white, tables.is_whitelisted(ip, now), "{} at {}", ip, now);
                    }
                }
            }
        }
    }
}
