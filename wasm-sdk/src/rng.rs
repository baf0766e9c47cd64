//! The task's seed and a small deterministic random number generator.
//!
//! The node seeds WASI `random_get` from the task's seed, so everything a
//! guest draws from it is the same on every honest provider. [`seed`] turns
//! that into one `u64`; [`Rng`] (xoshiro256\*\*) stretches a `u64` into as
//! many random numbers as a task needs, fast and identically on every
//! platform.

use std::sync::OnceLock;

/// The task's seed, as a `u64`: the first 8 bytes the task draws from WASI
/// `random_get`, little-endian, cached so every call returns the same value.
///
/// It is a deterministic function of the seed the node assigned the task
/// (not that number itself): the same module run on the same input with the
/// same seed sees the same value, on any provider. [`crate::map`] and
/// [`crate::reduce`] draw it before anything else runs; a program that draws
/// from `random_get` some other way first (std's `HashMap` takes 16 bytes for
/// its hash keys the first time one is made) still gets a deterministic value,
/// just a different one.
///
/// Off WASI (host builds, tests), it is the value of the `AGORA_SEED`
/// environment variable, or 0.
pub fn seed() -> u64 {
    static SEED: OnceLock<u64> = OnceLock::new();
    *SEED.get_or_init(draw_seed)
}

#[cfg(all(target_os = "wasi", target_env = "p1"))]
fn draw_seed() -> u64 {
    let mut buf = [0u8; 8];
    match wasi::random_get(&mut buf) {
        0 => u64::from_le_bytes(buf),
        errno => {
            // The node always grants random_get; a host that does not still
            // gets a working, if seedless, job rather than a crash.
            crate::log!("agora-sdk: random_get failed with errno {errno}; using seed 0");
            0
        }
    }
}

#[cfg(not(all(target_os = "wasi", target_env = "p1")))]
fn draw_seed() -> u64 {
    std::env::var("AGORA_SEED")
        .ok()
        .and_then(|s| s.trim().parse().ok())
        .unwrap_or(0)
}

/// The one raw WASI import of the SDK, declared by hand to stay free of
/// dependencies.
#[cfg(all(target_os = "wasi", target_env = "p1"))]
#[allow(unsafe_code)]
mod wasi {
    #[link(wasm_import_module = "wasi_snapshot_preview1")]
    unsafe extern "C" {
        /// `random_get(buf: *mut u8, buf_len: size) -> errno`, as in the
        /// preview-1 witx (every argument and the result are `i32` in WASM).
        #[link_name = "random_get"]
        fn wasi_random_get(buf: *mut u8, buf_len: usize) -> i32;
    }

    /// Fills `buf` from the host's RNG; returns the WASI errno (0 = success).
    pub(super) fn random_get(buf: &mut [u8]) -> i32 {
        // SAFETY: `buf` is a live, exclusively borrowed buffer of exactly
        // `buf.len()` bytes in this module's linear memory, which is all
        // `random_get` writes to; it keeps no reference after returning.
        unsafe { wasi_random_get(buf.as_mut_ptr(), buf.len()) }
    }
}

/// A small, fast, deterministic random number generator (xoshiro256\*\*,
/// seeded through SplitMix64).
///
/// Not cryptographic. The same seed gives the same sequence on every
/// platform, in WASM and natively, which is what verification needs.
///
/// ```
/// use agora_sdk::Rng;
///
/// let mut a = Rng::new(42);
/// let mut b = Rng::new(42);
/// assert_eq!(a.next_u64(), b.next_u64());
///
/// let x = a.next_f64();
/// assert!((0.0..1.0).contains(&x));
/// assert!(a.below(6) < 6);
///
/// // In a task: seeded from the task's seed.
/// let mut rng = Rng::from_task_seed();
/// # let _ = rng.next_u32();
/// ```
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Rng {
    s: [u64; 4],
}

impl Rng {
    /// A generator whose state is expanded from `seed` with SplitMix64.
    pub fn new(seed: u64) -> Rng {
        let mut sm = seed;
        let mut s = [0u64; 4];
        for word in &mut s {
            *word = splitmix64(&mut sm);
        }
        // SplitMix64 never yields four zero words in a row, the one state
        // xoshiro cannot leave, so no fix-up is needed.
        Rng { s }
    }

    /// A generator seeded from the task's [`seed`].
    pub fn from_task_seed() -> Rng {
        Rng::new(seed())
    }

    /// One of many independent generators from the same seed, told apart by
    /// `stream` (e.g. a sampler number carried in the task input).
    pub fn with_stream(seed: u64, stream: u64) -> Rng {
        let mut sm = stream ^ 0x6a09_e667_f3bc_c908;
        Rng::new(seed ^ splitmix64(&mut sm))
    }

    /// The next 64 random bits.
    pub fn next_u64(&mut self) -> u64 {
        let s = &mut self.s;
        let result = s[1].wrapping_mul(5).rotate_left(7).wrapping_mul(9);
        let t = s[1] << 17;
        s[2] ^= s[0];
        s[3] ^= s[1];
        s[1] ^= s[2];
        s[0] ^= s[3];
        s[2] ^= t;
        s[3] = s[3].rotate_left(45);
        result
    }

    /// The next 32 random bits (the high half of [`Rng::next_u64`]).
    pub fn next_u32(&mut self) -> u32 {
        (self.next_u64() >> 32) as u32
    }

    /// A uniform float in `[0, 1)` with 53 random bits.
    pub fn next_f64(&mut self) -> f64 {
        (self.next_u64() >> 11) as f64 * (1.0 / (1u64 << 53) as f64)
    }

    /// A uniform integer in `[0, n)`, without modulo bias; 0 when `n` is 0.
    pub fn below(&mut self, n: u64) -> u64 {
        if n == 0 {
            return 0;
        }
        // Lemire's multiply-and-reject.
        let threshold = n.wrapping_neg() % n;
        loop {
            let m = u128::from(self.next_u64()) * u128::from(n);
            if (m as u64) >= threshold {
                return (m >> 64) as u64;
            }
        }
    }

    /// Fills `buf` with random bytes.
    pub fn fill_bytes(&mut self, buf: &mut [u8]) {
        let mut chunks = buf.chunks_exact_mut(8);
        for chunk in &mut chunks {
            chunk.copy_from_slice(&self.next_u64().to_le_bytes());
        }
        let rest = chunks.into_remainder();
        if !rest.is_empty() {
            let bytes = self.next_u64().to_le_bytes();
            rest.copy_from_slice(&bytes[..rest.len()]);
        }
    }
}

fn splitmix64(state: &mut u64) -> u64 {
    *state = state.wrapping_add(0x9e37_79b9_7f4a_7c15);
    let mut z = *state;
    z = (z ^ (z >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
    z = (z ^ (z >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
    z ^ (z >> 31)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn splitmix64_matches_reference() {
        // Reference outputs of SplitMix64 seeded with 0 (Vigna's splitmix64.c).
        let mut s = 0;
        assert_eq!(splitmix64(&mut s), 0xe220_a839_7b1d_cdaf);
        assert_eq!(splitmix64(&mut s), 0x6e78_9e6a_a1b9_65f4);
    }

    #[test]
    fn xoshiro256starstar_matches_reference() {
        // State 1, 2, 3, 4: the first outputs of Vigna's xoshiro256starstar.c.
        let mut rng = Rng { s: [1, 2, 3, 4] };
        let got: Vec<u64> = (0..4).map(|_| rng.next_u64()).collect();
        assert_eq!(got, [11520, 0, 1509978240, 1215971899390074240]);
    }

    #[test]
    fn same_seed_same_sequence_different_seed_different_sequence() {
        let a: Vec<u64> = (0..8).scan(Rng::new(7), |r, _| Some(r.next_u64())).collect();
        let b: Vec<u64> = (0..8).scan(Rng::new(7), |r, _| Some(r.next_u64())).collect();
        let c: Vec<u64> = (0..8).scan(Rng::new(8), |r, _| Some(r.next_u64())).collect();
        assert_eq!(a, b);
        assert_ne!(a, c);
    }

    #[test]
    fn streams_differ() {
        assert_ne!(Rng::with_stream(1, 0), Rng::with_stream(1, 1));
        assert_ne!(Rng::with_stream(1, 0), Rng::new(1));
    }

    #[test]
    fn below_stays_in_range_and_covers_it() {
        let mut rng = Rng::new(3);
        let mut seen = [0u32; 6];
        for _ in 0..6000 {
            seen[rng.below(6) as usize] += 1;
        }
        assert!(seen.iter().all(|&n| (800..1200).contains(&n)), "{seen:?}");
        assert_eq!(rng.below(0), 0);
        assert_eq!(rng.below(1), 0);
    }

    #[test]
    fn floats_are_in_unit_interval_with_mean_near_half() {
        let mut rng = Rng::new(11);
        let xs: Vec<f64> = (0..10_000).map(|_| rng.next_f64()).collect();
        assert!(xs.iter().all(|x| (0.0..1.0).contains(x)));
        let mean = xs.iter().sum::<f64>() / xs.len() as f64;
        assert!((mean - 0.5).abs() < 0.02, "{mean}");
    }

    #[test]
    fn fill_bytes_handles_a_partial_word() {
        let mut a = Rng::new(5);
        let mut buf = [0u8; 11];
        a.fill_bytes(&mut buf);
        let mut b = Rng::new(5);
        let first = b.next_u64().to_le_bytes();
        let second = b.next_u64().to_le_bytes();
        assert_eq!(&buf[..8], &first);
        assert_eq!(&buf[8..], &second[..3]);
    }
}
