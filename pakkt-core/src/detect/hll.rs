//! A HyperLogLog sketch of distinct sources: 2¹⁰ one-byte registers
//! (1 KiB), a standard error of 1.04 / √1024 ≈ 3.3 %.
//!
//! A spoofed flood has about as many sources as packets; a flood from real
//! hosts has few. The sketch counts sources in [`SourceKey`] units (an IPv4
//! address or an IPv6 /64), hashed as the engine's tables hash them:
//! `h = mix64(mix64(bits ^ seed) ^ (family << 8) ^ `[`SALT_HLL`]`)`. The
//! top 10 bits of `h` pick the register; the register keeps the largest
//! rank seen, the rank being one more than the number of leading zeros of
//! the other 54 bits (at most 55). Sketches of the same seed merge by
//! taking each register's maximum: the sketch of the union.

use crate::verdict::bucket::{SourceKey, mix64};

/// Registers: 2^[`PRECISION`].
pub const REGISTERS: usize = 1 << PRECISION;
/// Bits of the hash that pick the register.
pub const PRECISION: u32 = 10;
/// The salt of the sketch's hash (ASCII "hyperlog").
pub const SALT_HLL: u64 = 0x6879_7065_726c_6f67;

/// A sketch of distinct sources.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Sketch {
    seed: u64,
    registers: Box<[u8; REGISTERS]>,
}

impl Sketch {
    /// An empty sketch keyed by `seed`.
    pub fn new(seed: u64) -> Self {
        Self { seed, registers: Box::new([0; REGISTERS]) }
    }

    /// Counts `key`.
    pub fn insert(&mut self, key: SourceKey) {
        let (bits, family) = key.bits();
        let h = mix64(mix64(bits ^ self.seed) ^ (family << 8) ^ SALT_HLL);
        // Truncation is the point: the top bits pick the register.
        #[allow(clippy::cast_possible_truncation)]
        let index = (h >> (64 - PRECISION)) as usize;
        let rest = h << PRECISION;
        #[allow(clippy::cast_possible_truncation)]
        let rank = (rest.leading_zeros().min(64 - PRECISION) + 1) as u8;
        if let Some(register) = self.registers.get_mut(index) {
            *register = (*register).max(rank);
        }
    }

    /// Adds everything `other` counted (the sketch of the union). Sketches
    /// of another seed are not comparable: `false`, and nothing changes.
    pub fn merge(&mut self, other: &Self) -> bool {
        if other.seed != self.seed {
            return false;
        }
        for (mine, theirs) in self.registers.iter_mut().zip(other.registers.iter()) {
            *mine = (*mine).max(*theirs);
        }
        true
    }

    /// The estimated number of distinct sources counted: the standard
    /// estimator, with linear counting while it is below 2.5 × the
    /// registers (the 64-bit hash needs no large-range correction).
    pub fn estimate(&self) -> f64 {
        let m = f64::from(u32::try_from(REGISTERS).unwrap_or(u32::MAX));
        let alpha = 0.7213 / (1.0 + 1.079 / m);
        let sum: f64 = self.registers.iter().map(|r| (-f64::from(*r)).exp2()).sum();
        let raw = alpha * m * m / sum;
        // 1,024 registers once a second: no need for a bytecount crate.
        #[allow(clippy::naive_bytecount)]
        let zeros = self.registers.iter().filter(|r| **r == 0).count();
        if raw <= 2.5 * m && zeros > 0 {
            let zeros = f64::from(u32::try_from(zeros).unwrap_or(u32::MAX));
            m * (m / zeros).ln()
        } else {
            raw
        }
    }

    /// The registers (for the engine's twin and for tests).
    pub fn registers(&self) -> &[u8; REGISTERS] {
        &self.registers
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn sketch_of(keys: impl Iterator<Item = u32>) -> Sketch {
        let mut sketch = Sketch::new(0x5eed);
        for key in keys {
            sketch.insert(SourceKey::V4(key));
        }
        sketch
    }

    #[test]
    fn estimates_are_within_four_standard_errors() {
        for n in [10u32, 100, 1_000, 10_000, 100_000, 1_000_000] {
            let estimate = sketch_of(0..n).estimate();
            let error = (estimate - f64::from(n)).abs() / f64::from(n);
            assert!(error < 0.13, "{n} sources estimated as {estimate:.0}");
        }
    }

    #[test]
    fn repeats_count_once_and_merging_is_the_union() {
        let once = sketch_of(0..5_000);
        let twice = sketch_of((0..5_000).chain(0..5_000));
        assert_eq!(once, twice, "a source seen again changes nothing");
        let mut union = sketch_of(0..3_000);
        assert!(union.merge(&sketch_of(2_000..5_000)));
        assert_eq!(union, once);
        assert!(!union.merge(&Sketch::new(1)), "another seed does not merge");
    }

    #[test]
    fn ipv6_sources_count_by_their_64() {
        let mut sketch = Sketch::new(7);
        for host in 0..1_000u128 {
            sketch.insert(SourceKey::of(std::net::IpAddr::V6((0x2001_0db8_u128 << 96 | host).into())));
        }
        assert!(sketch.estimate() < 1.5, "one /64: {}", sketch.estimate());
    }
}
