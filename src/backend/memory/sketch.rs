//! A count-min sketch of how often keys were asked for: the "frequency"
//! half of TinyLFU. It remembers keys that are not (or no longer) in the
//! store, in four bytes per counter row slot, so that a key seen often
//! before can win its way back in, and a one-time key cannot push out a
//! popular one.

/// Counters saturate here (four bits' worth, as in TinyLFU).
pub const MAX_COUNT: u8 = 15;
const ROWS: usize = 4;
/// Odd constants that spread one 64-bit hash over the four rows.
const SEEDS: [u64; ROWS] = [
    0x9E37_79B9_7F4A_7C15,
    0xC2B2_AE3D_27D4_EB4F,
    0x1656_67B1_9E37_79F9,
    0x27D4_EB2F_1656_67C5,
];

pub struct Sketch {
    counters: Box<[u8]>,
    mask: usize,
    /// Increments since the last halving, and how many trigger one.
    added: u64,
    period: u64,
}

impl Sketch {
    /// A sketch sized for a store of about `capacity` entries.
    pub fn new(capacity: u64) -> Self {
        // Twice as many counters per row as entries keeps collisions rare.
        let width = (capacity.clamp(32, 1 << 24) * 2).next_power_of_two() as usize;
        Self {
            counters: vec![0; width * ROWS].into_boxed_slice(),
            mask: width - 1,
            added: 0,
            // TinyLFU's sample: ten times the capacity, then everything halves,
            // so that yesterday's favourites fade.
            period: capacity.max(64) * 10,
        }
    }

    /// The counters a store of `capacity` entries would get.
    pub fn width(&self) -> u64 {
        (self.mask + 1) as u64
    }

    #[inline]
    fn slots(&self, hash: u64) -> [usize; ROWS] {
        let width = self.mask + 1;
        std::array::from_fn(|row| {
            let h = hash.wrapping_mul(SEEDS[row]);
            row * width + ((h >> 32) as usize & self.mask)
        })
    }

    /// How often `hash` was counted (an over-estimate, never under).
    pub fn estimate(&self, hash: u64) -> u8 {
        self.slots(hash)
            .iter()
            .map(|&i| self.counters[i])
            .min()
            .unwrap_or(0)
    }

    /// Count `n` more sightings of `hash`. Returns true when the sample
    /// period ended and every counter was halved (the caller ages its own
    /// counters in step).
    pub fn add(&mut self, hash: u64, n: u8) -> bool {
        let slots = self.slots(hash);
        let least = slots.iter().map(|&i| self.counters[i]).min().unwrap_or(0);
        let target = least.saturating_add(n).min(MAX_COUNT);
        // Conservative update: raise only the counters below the new
        // estimate, which keeps collisions from inflating other keys.
        for i in slots {
            if self.counters[i] < target {
                self.counters[i] = target;
            }
        }
        self.added += u64::from(n);
        if self.added >= self.period {
            self.added = 0;
            for c in self.counters.iter_mut() {
                *c >>= 1;
            }
            return true;
        }
        false
    }
}

impl Sketch {
    /// Make `hash`'s estimate at least `count` (an evicted entry's use
    /// count, which the sketch did not see as it was made of hits). Not a
    /// sighting: the sample period does not advance.
    pub fn remember(&mut self, hash: u64, count: u8) {
        let count = count.min(MAX_COUNT);
        for i in self.slots(hash) {
            if self.counters[i] < count {
                self.counters[i] = count;
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn counts_saturate_and_halve() {
        let mut s = Sketch::new(64);
        for _ in 0..20 {
            s.add(42, 1);
        }
        assert_eq!(s.estimate(42), MAX_COUNT);
        assert_eq!(s.estimate(43), 0);
        let mut halved = false;
        for i in 0..s.period {
            halved |= s.add(1000 + i, 1);
        }
        assert!(halved);
        assert!(s.estimate(42) <= MAX_COUNT / 2 + 1);
    }
}
