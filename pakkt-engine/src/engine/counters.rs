//! The program's per-port and per-slot counters, summed over CPUs.

use std::collections::BTreeMap;

use aya::maps::{MapData, PerCpuArray};
use pakkt_core::metrics;
use pakkt_core::slot::Slot;
use pakkt_core::verdict::DropCounts;

use super::{Engine, MAP_PORT_COUNTERS, MAP_SLOT_COUNTERS, map_data};
use crate::abi::Counters;
use crate::error::MapAccessError;

impl Engine {
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
}

fn sum_counters<'a>(values: impl Iterator<Item = &'a Counters>) -> metrics::Counters {
    let mut sum = metrics::Counters::default();
    for c in values {
        sum.add(metrics::Counters {
            packets_passed: c.packets_passed,
            packets_dropped: c.packets_dropped,
            bytes_passed: c.bytes_passed,
            bytes_dropped: c.bytes_dropped,
            dropped_by_reason: DropCounts::from_array(c.dropped),
        });
    }
    sum
}
