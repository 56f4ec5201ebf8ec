//! Bit-exact reproductions of PyTorch's CPU random permutation.
//!
//! PEFT never saves WaveFT/FourierFT locations; it regenerates them with
//! `torch.randperm(out*in, generator=torch.Generator().manual_seed(seed))[:n]`.
//! Loading a PEFT file therefore needs torch's generator (MT19937) and both
//! branches of its CPU `randperm`, reproduced here from their definitions.

use std::collections::HashMap;
use std::sync::Mutex;

/// The Mersenne Twister MT19937 (Matsumoto & Nishimura 1998), seeded the way
/// `torch.Generator().manual_seed(seed)`, `std::mt19937(seed)` and
/// `numpy.random.RandomState(seed)` seed it (`init_genrand` with the low
/// 32 bits of the seed).
#[derive(Clone)]
pub struct Mt19937 {
    state: Box<[u32; 624]>,
    index: usize,
}

impl std::fmt::Debug for Mt19937 {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Mt19937")
            .field("index", &self.index)
            .finish_non_exhaustive()
    }
}

impl Mt19937 {
    /// A generator seeded with `seed` (only its low 32 bits matter, as in torch).
    pub fn new(seed: u64) -> Self {
        let mut state = Box::new([0u32; 624]);
        state[0] = seed as u32;
        for i in 1..624 {
            let prev = state[i - 1];
            state[i] = 1_812_433_253u32
                .wrapping_mul(prev ^ (prev >> 30))
                .wrapping_add(i as u32);
        }
        Mt19937 { state, index: 624 }
    }

    fn twist(&mut self) {
        const UPPER: u32 = 0x8000_0000;
        const LOWER: u32 = 0x7fff_ffff;
        let s = &mut self.state;
        for i in 0..624 {
            let y = (s[i] & UPPER) | (s[(i + 1) % 624] & LOWER);
            let mag = if y & 1 == 1 { 0x9908_b0df } else { 0 };
            s[i] = s[(i + 397) % 624] ^ (y >> 1) ^ mag;
        }
        self.index = 0;
    }

    /// The next 32-bit output (torch's `random()`).
    pub fn next_u32(&mut self) -> u32 {
        if self.index >= 624 {
            self.twist();
        }
        let mut y = self.state[self.index];
        self.index += 1;
        y ^= y >> 11;
        y ^= (y << 7) & 0x9d2c_5680;
        y ^= (y << 15) & 0xefc6_0000;
        y ^ (y >> 18)
    }

    /// Two outputs as `(first << 32) | second` (torch's `random64()`).
    pub fn next_u64(&mut self) -> u64 {
        let hi = u64::from(self.next_u32());
        (hi << 32) | u64::from(self.next_u32())
    }

    /// A uniform draw in `[0, 1)` with 53 bits of precision.
    pub fn next_f64(&mut self) -> f64 {
        (self.next_u64() >> 11) as f64 * (1.0 / (1u64 << 53) as f64)
    }

    /// A standard normal draw (Box–Muller). Not torch's `randn` stream: use
    /// it for initialisation, not to reproduce torch.
    pub fn next_normal(&mut self) -> f64 {
        let u1 = 1.0 - self.next_f64(); // (0, 1]
        let u2 = self.next_f64();
        (-2.0 * u1.ln()).sqrt() * (2.0 * std::f64::consts::PI * u2).cos()
    }
}

/// Below this many elements torch uses the swap (Fisher–Yates) branch with
/// 32-bit draws; from it on, the inside-out branch with 64-bit draws.
pub const RANDPERM_SMALL_LIMIT: u64 = 4_294_967_295 / 20;

/// The first `n` entries of `torch.randperm(total, generator=manual_seed(seed))`
/// on the CPU, bit for bit.
///
/// * `total < 214_748_364` (torch's small branch): `O(n)` time and memory,
///   whatever `total` is.
/// * Otherwise (the inside-out branch): `O(total)` time, as the whole stream
///   must be drawn, but only `O(n)` memory.
///
/// `n` larger than `total` is clamped to `total`. Large-branch results are
/// remembered per `(total, seed)` for the life of the process (every layer
/// of a shape shares its locations, and a 70B model has hundreds of layers
/// of three shapes), so each shape's stream is drawn once.
///
/// ```
/// // PEFT's locations for a 768×768 layer with the default seed.
/// let idx = wft_adapter::randperm_prefix(768 * 768, 8, 777);
/// assert_eq!(idx, [391271, 183699, 413551, 384200, 435559, 59955, 374469, 198662]);
/// ```
pub fn randperm_prefix(total: u64, n: usize, seed: u64) -> Vec<u64> {
    let n = (n as u64).min(total) as usize;
    let mut rng = Mt19937::new(seed);
    if total < RANDPERM_SMALL_LIMIT {
        return small_branch(&mut rng, total, n);
    }
    // The longest prefix drawn so far for (total, seed); a prefix of it is
    // the answer for any shorter n.
    type Cache = Vec<((u64, u64), Vec<u64>)>;
    static LARGE: Mutex<Cache> = Mutex::new(Vec::new());
    let key = (total, seed);
    let cached = |cache: &Cache| {
        cache
            .iter()
            .find(|(k, v)| *k == key && v.len() >= n)
            .map(|(_, v)| v[..n].to_vec())
    };
    if let Some(v) = LARGE.lock().ok().and_then(|c| cached(&c)) {
        return v;
    }
    let v = inside_out_branch(&mut rng, total, n);
    if let Ok(mut cache) = LARGE.lock() {
        cache.retain(|(k, _)| *k != key);
        if cache.len() >= 16 {
            cache.remove(0);
        }
        cache.push((key, v.clone()));
    }
    v
}

/// `r = 0..N; for i in 0..N-1 { z = random() % (N-i); swap(r[i], r[i+z]) }`,
/// tracking only the positions that were touched.
fn small_branch(rng: &mut Mt19937, total: u64, n: usize) -> Vec<u64> {
    let mut moved: HashMap<u64, u64> = HashMap::with_capacity(2 * n);
    let mut out = Vec::with_capacity(n);
    for i in 0..n as u64 {
        if i + 1 == total {
            // The loop stops before the last element; it stays in place.
            out.push(*moved.get(&i).unwrap_or(&i));
            break;
        }
        let z = u64::from(rng.next_u32()) % (total - i);
        let j = i + z;
        let vi = *moved.get(&i).unwrap_or(&i);
        let vj = *moved.get(&j).unwrap_or(&j);
        moved.insert(j, vi);
        out.push(vj);
    }
    out
}

/// `for i in 0..N { z = random64() % (i+1); r[i] = r[z]; r[z] = i }`, keeping
/// only the first `n` positions: every later position `i ≥ n` only matters
/// through the write `r[z] = i`.
fn inside_out_branch(rng: &mut Mt19937, total: u64, n: usize) -> Vec<u64> {
    let mut r = vec![0u64; n];
    for i in 0..total {
        let z = rng.next_u64() % (i + 1);
        if i < n as u64 {
            r[i as usize] = r[z as usize];
        }
        if z < n as u64 {
            r[z as usize] = i;
        }
    }
    r
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The reference MT19937 output: 10000th draw of `std::mt19937` with
    /// its default seed 5489 is 4123659995 (C++11 [rand.predef]).
    #[test]
    fn mt19937_matches_the_cpp_standard() {
        let mut g = Mt19937::new(5489);
        let mut last = 0;
        for _ in 0..10_000 {
            last = g.next_u32();
        }
        assert_eq!(last, 4_123_659_995);
    }

    /// The hash-map prefix equals the plain full shuffle.
    #[test]
    fn small_branch_prefix_equals_full_shuffle() {
        for total in [1u64, 2, 3, 10, 97, 1000] {
            let mut g = Mt19937::new(42);
            let mut r: Vec<u64> = (0..total).collect();
            for i in 0..total.saturating_sub(1) {
                let z = u64::from(g.next_u32()) % (total - i);
                r.swap(i as usize, (i + z) as usize);
            }
            for n in [0, 1, total as usize / 2, total as usize, total as usize + 3] {
                let got = randperm_prefix(total, n, 42);
                assert_eq!(got[..], r[..n.min(total as usize)], "total {total} n {n}");
            }
        }
    }

    /// The O(n)-memory inside-out prefix equals the full algorithm.
    #[test]
    fn inside_out_prefix_equals_full_algorithm() {
        for total in [1u64, 5, 64, 1000] {
            let mut g = Mt19937::new(7);
            let mut r = vec![0u64; total as usize];
            for i in 0..total {
                let z = (g.next_u64() % (i + 1)) as usize;
                r[i as usize] = r[z];
                r[z] = i;
            }
            for n in [1, total as usize / 3, total as usize] {
                let got = inside_out_branch(&mut Mt19937::new(7), total, n);
                assert_eq!(got[..], r[..n]);
            }
        }
    }
}
