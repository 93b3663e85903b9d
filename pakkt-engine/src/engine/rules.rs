//! Engine rules: slots, their generations, and the double-buffered rule
//! and port tables the program switches between with one store.

use std::mem::offset_of;

use pakkt_core::rule::{Protocol, RuleSpec, RuleType};
use pakkt_core::slot::Slot;
use pakkt_core::sync::DesiredRule;

use super::codec::encode_rule;
use super::{Engine, SlotState};
use crate::abi::{CHUNKS_PER_CLASS, CLASSES, Config, PORTS_PER_CHUNK, PROTECT_TCP, PROTECT_UDP, PortChunk, SLOTS};
use crate::error::RuleError;
use crate::ports::PortTables;

impl Engine {
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
        self.store_protect_classes();
        self.config.store_u32(0, offset_of!(Config, active), u32::try_from(next).unwrap_or(0));
    }

    /// Records which transports the loaded protect rules guard: their
    /// non-first fragments need a verified source (pakkt_core::verdict,
    /// step 3), and the egress program looks at nothing while there are
    /// none.
    pub(super) fn store_protect_classes(&self) {
        let mut protect = 0;
        for state in self.slots.iter().flatten().filter(|s| s.rule.spec.rule_type == RuleType::Protect) {
            let protocol = state.rule.spec.protocol;
            if protocol.matches(Protocol::Tcp) {
                protect |= PROTECT_TCP;
            }
            if protocol.matches(Protocol::Udp) {
                protect |= PROTECT_UDP;
            }
        }
        self.config.store_u32(0, offset_of!(Config, protect_classes), protect);
    }

    pub(super) fn active_buffer(&self) -> usize {
        self.config.load_u32(0, offset_of!(Config, active)).map_or(0, |a| (a & 1) as usize)
    }

    /// The generation keying the buckets of the rule in `slot`, if loaded.
    pub fn slot_generation(&self, slot: Slot) -> Option<u32> {
        self.slots.get(slot.index()).copied().flatten().map(|s| s.generation)
    }
}
