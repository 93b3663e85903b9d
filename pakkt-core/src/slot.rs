//! Engine slots: each interface's engine has 256 rule slots, numbered 0..=255.
//!
//! A rule holds its slot from creation until the agent confirms its unload
//! (see [`crate::rule::EngineRuleStatus::holds_slot`]), so the engine never
//! sees two rules in one slot. New rules take the lowest free slot, which
//! keeps the engine's tables dense and slot numbers predictable.

use std::fmt;

use serde::{Deserialize, Serialize};

/// How many rule slots one engine has.
pub const SLOT_COUNT: usize = 256;

/// A slot number, 0..=255 by construction.
#[derive(Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
#[serde(transparent)]
pub struct Slot(u8);

impl Slot {
    /// The slot numbered `n`. Every `u8` is a slot because there are 256.
    pub const fn new(n: u8) -> Self {
        Self(n)
    }

    /// The slot's number.
    pub const fn get(self) -> u8 {
        self.0
    }

    /// The slot's index into 256-entry tables.
    pub const fn index(self) -> usize {
        self.0 as usize
    }
}

impl fmt::Debug for Slot {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "Slot({})", self.0)
    }
}

impl fmt::Display for Slot {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        fmt::Display::fmt(&self.0, f)
    }
}

/// The lowest slot not in `held`, or `None` when all 256 are held.
pub fn lowest_free(held: impl IntoIterator<Item = Slot>) -> Option<Slot> {
    let mut taken = [false; SLOT_COUNT];
    for slot in held {
        taken[slot.index()] = true;
    }
    taken.iter().position(|t| !t).and_then(|i| u8::try_from(i).ok()).map(Slot)
}

#[cfg(test)]
mod tests {
    use std::collections::BTreeSet;

    use proptest::prelude::*;

    use super::*;

    #[test]
    fn first_slot_is_zero_and_gaps_fill_first() {
        assert_eq!(lowest_free([]), Some(Slot(0)));
        assert_eq!(lowest_free([Slot(0), Slot(1), Slot(3)]), Some(Slot(2)));
        assert_eq!(lowest_free((0..=254).map(Slot)), Some(Slot(255)));
        assert_eq!(lowest_free((0..=255).map(Slot)), None);
    }

    #[derive(Debug, Clone)]
    enum Step {
        Allocate,
        Free(usize),
    }

    fn step() -> impl Strategy<Value = Step> {
        prop_oneof![3 => Just(Step::Allocate), 1 => any::<usize>().prop_map(Step::Free)]
    }

    proptest! {
        /// Under any sequence of allocations and frees, no slot is handed out
        /// twice, at most 256 are held, a create fails only when all 256 are
        /// held, and a freed slot is the next one reused when it is lowest.
        #[test]
        fn allocator_never_shares_or_overflows(steps in proptest::collection::vec(step(), 0..700)) {
            let mut held: BTreeSet<Slot> = BTreeSet::new();
            for step in steps {
                match step {
                    Step::Allocate => {
                        if let Some(slot) = lowest_free(held.iter().copied()) {
                            prop_assert!(!held.contains(&slot));
                            prop_assert_eq!(held.range(..slot).count(), slot.index(), "lowest free first");
                            held.insert(slot);
                        } else {
                            prop_assert_eq!(held.len(), SLOT_COUNT);
                        }
                    }
                    Step::Free(i) => {
                        if !held.is_empty() {
                            let victim = *held.iter().nth(i % held.len()).expect("in range");
                            held.remove(&victim);
                            let next = lowest_free(held.iter().copied());
                            prop_assert!(next.is_some_and(|s| s <= victim), "a freed slot is reused before higher ones");
                        }
                    }
                }
                prop_assert!(held.len() <= SLOT_COUNT);
            }
        }
    }
}
