//! Task inputs, made exactly as `examples/README.md` specifies them, with a
//! fuel estimate per task, and the expected outputs where they can be
//! computed here.

use serde::Serialize;

/// `mib` MiB that neither compress nor repeat (blake3's output stream
/// keyed by `seed`): a stand-in for a large dataset file.
pub fn incompressible(mib: u64, seed: u8) -> Vec<u8> {
    let mut out = vec![0u8; (mib * 1024 * 1024) as usize];
    blake3::Hasher::new_keyed(&[seed; 32])
        .finalize_xof()
        .fill(&mut out);
    out
}

/// One task's input.
#[derive(Debug, Clone, PartialEq)]
pub struct TaskInput {
    /// Its name (as an input file's name would be).
    pub name: String,
    /// The bytes the module reads on stdin.
    pub bytes: Vec<u8>,
    /// Fuel the task is expected to use, for placement.
    pub estimate: Option<u64>,
}

/// A small deterministic generator (splitmix64) for workloads that must
/// be the same in every run.
#[derive(Debug, Clone)]
pub struct SplitMix(pub u64);

impl SplitMix {
    /// The next 64 random bits.
    pub fn next_u64(&mut self) -> u64 {
        self.0 = self.0.wrapping_add(0x9e37_79b9_7f4a_7c15);
        let mut z = self.0;
        z = (z ^ (z >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
        z ^ (z >> 31)
    }

    /// A float in `[0, 1)`.
    pub fn next_f64(&mut self) -> f64 {
        (self.next_u64() >> 11) as f64 / (1u64 << 53) as f64
    }
}

/// The mandelbrot example: tiles of one image.
pub mod mandelbrot {
    use super::{Serialize, TaskInput};

    /// One tile's input (field order as the README shows it).
    #[derive(Debug, Clone, Copy, PartialEq, Serialize)]
    pub struct Tile {
        /// Image width.
        pub width: u32,
        /// Image height.
        pub height: u32,
        /// Tile's left pixel.
        pub x: u32,
        /// Tile's top pixel.
        pub y: u32,
        /// Tile width.
        pub tile_width: u32,
        /// Tile height.
        pub tile_height: u32,
        /// Region, real minimum.
        pub re_min: f64,
        /// Region, real maximum.
        pub re_max: f64,
        /// Region, imaginary minimum.
        pub im_min: f64,
        /// Region, imaginary maximum.
        pub im_max: f64,
        /// Iteration cap.
        pub max_iter: u32,
    }

    /// `COLS × ROWS` for a tile count: as nearly square as it goes with
    /// columns ≥ rows (16 → 4×4, 12 → 4×3, 48 → 8×6).
    pub fn grid(tiles: u32) -> (u32, u32) {
        let tiles = tiles.max(1);
        let mut rows = 1;
        let mut r = 1;
        while r * r <= tiles {
            if tiles.is_multiple_of(r) {
                rows = r;
            }
            r += 1;
        }
        (tiles / rows, rows)
    }

    /// The tiles of a `width × height` image of the default region
    /// (`re ∈ [−2.5, 1]`, `im ∈ [−h, h]`, `h = 1.75·height/width`), row by
    /// row from the top left, as `mandelbrot.wasm --split` makes them.
    pub fn tiles(width: u32, height: u32, count: u32, max_iter: u32) -> Vec<Tile> {
        let (cols, rows) = grid(count);
        let h = 1.75 * f64::from(height) / f64::from(width);
        let span = |i: u32, n: u32, len: u32| {
            let lo = (u64::from(i) * u64::from(len) / u64::from(n)) as u32;
            let hi = (u64::from(i + 1) * u64::from(len) / u64::from(n)) as u32;
            (lo, hi - lo)
        };
        let mut out = Vec::new();
        for row in 0..rows {
            for col in 0..cols {
                let (x, tile_width) = span(col, cols, width);
                let (y, tile_height) = span(row, rows, height);
                out.push(Tile {
                    width,
                    height,
                    x,
                    y,
                    tile_width,
                    tile_height,
                    re_min: -2.5,
                    re_max: 1.0,
                    im_min: -h,
                    im_max: h,
                    max_iter,
                });
            }
        }
        out
    }

    /// Iterations of one point (the module's escape rule, `|z| > 2`).
    fn iterations(cr: f64, ci: f64, max_iter: u32) -> u32 {
        let (mut zr, mut zi) = (0.0f64, 0.0f64);
        for n in 0..max_iter {
            if zr * zr + zi * zi > 4.0 {
                return n;
            }
            let t = zr * zr - zi * zi + cr;
            zi = 2.0 * zr * zi + ci;
            zr = t;
        }
        max_iter
    }

    /// Fuel the module uses per iteration and per pixel, measured with
    /// `agora exec` on 200×200 tiles (about 18 per iteration; about 95 per
    /// pixel of fixed cost).
    const FUEL_PER_ITERATION: f64 = 18.0;
    const FUEL_PER_PIXEL: f64 = 95.0;

    /// A tile's fuel estimate, from iterating a 16×16 sample of its pixels.
    pub fn estimate(t: &Tile) -> u64 {
        const SAMPLES: u32 = 16;
        let mut iters = 0u64;
        for sy in 0..SAMPLES {
            for sx in 0..SAMPLES {
                let px =
                    f64::from(t.x) + (f64::from(sx) + 0.5) * f64::from(t.tile_width) / f64::from(SAMPLES);
                let py =
                    f64::from(t.y) + (f64::from(sy) + 0.5) * f64::from(t.tile_height) / f64::from(SAMPLES);
                let cr = t.re_min + px * (t.re_max - t.re_min) / f64::from(t.width);
                let ci = t.im_max - py * (t.im_max - t.im_min) / f64::from(t.height);
                iters += u64::from(iterations(cr, ci, t.max_iter));
            }
        }
        let pixels = f64::from(t.tile_width) * f64::from(t.tile_height);
        let mean = iters as f64 / f64::from(SAMPLES * SAMPLES);
        (pixels * (mean * FUEL_PER_ITERATION + FUEL_PER_PIXEL)) as u64 + 1_000_000
    }

    /// The tiles as task inputs (`tile-000`, …) with their estimates.
    pub fn inputs(width: u32, height: u32, count: u32, max_iter: u32) -> Vec<TaskInput> {
        tiles(width, height, count, max_iter)
            .iter()
            .enumerate()
            .map(|(i, t)| TaskInput {
                name: format!("tile-{i:03}"),
                bytes: serde_json::to_vec(t).unwrap_or_default(),
                estimate: Some(estimate(t)),
            })
            .collect()
    }

    /// Checks a PNG: its signature and that its header says
    /// `width × height`.
    pub fn check_png(bytes: &[u8], width: u32, height: u32) -> Result<(), String> {
        const SIGNATURE: [u8; 8] = [0x89, b'P', b'N', b'G', 0x0d, 0x0a, 0x1a, 0x0a];
        if bytes.len() < 33 || bytes[..8] != SIGNATURE {
            return Err("not a PNG (bad signature)".into());
        }
        if &bytes[12..16] != b"IHDR" {
            return Err("not a PNG (no IHDR chunk first)".into());
        }
        let w = u32::from_be_bytes([bytes[16], bytes[17], bytes[18], bytes[19]]);
        let h = u32::from_be_bytes([bytes[20], bytes[21], bytes[22], bytes[23]]);
        if (w, h) != (width, height) {
            return Err(format!("the PNG is {w}×{h}, not {width}×{height}"));
        }
        // Stored deflate blocks: about (width + 1) × height bytes of data.
        let raw = u64::from(width + 1) * u64::from(height);
        if (bytes.len() as u64) < raw {
            return Err(format!(
                "the PNG has {} bytes, fewer than its {raw} bytes of pixels",
                bytes.len()
            ));
        }
        Ok(())
    }
}

/// The primes example: counting primes in ranges, with the expected
/// outputs computed natively.
pub mod primes {
    use super::{SplitMix, TaskInput};

    /// Fuel per number sieved near 10¹⁰ (measured with `agora exec`:
    /// 2.67·10⁸ fuel for a range of 10⁷), and the fixed cost per task.
    pub const FUEL_PER_NUMBER: u64 = 27;
    /// Fixed fuel of one task (the base primes up to √hi).
    pub const FUEL_PER_TASK: u64 = 4_000_000;

    /// A task's fuel estimate: proportional to its range's width.
    pub fn estimate(lo: u64, hi: u64) -> u64 {
        (hi - lo) * FUEL_PER_NUMBER + FUEL_PER_TASK
    }

    /// The task input `{"lo":LO,"hi":HI}`.
    pub fn input(lo: u64, hi: u64) -> Vec<u8> {
        format!("{{\"lo\":{lo},\"hi\":{hi}}}").into_bytes()
    }

    /// The exact output of `primes.wasm` for `[lo, hi)`.
    pub fn output(lo: u64, hi: u64) -> Vec<u8> {
        format!("{{\"lo\":{lo},\"hi\":{hi},\"count\":{}}}", count(lo, hi)).into_bytes()
    }

    /// Primes `p` with `lo ≤ p < hi` (segmented sieve).
    pub fn count(lo: u64, hi: u64) -> u64 {
        if hi <= lo.max(2) {
            return 0;
        }
        let lo = lo.max(2);
        let root = (hi as f64).sqrt() as u64 + 2;
        let mut small = vec![true; (root + 1) as usize];
        let mut base = Vec::new();
        for i in 2..=root {
            if small[i as usize] {
                base.push(i);
                let mut j = i * i;
                while j <= root {
                    small[j as usize] = false;
                    j += i;
                }
            }
        }
        const SEGMENT: u64 = 1 << 18;
        let mut total = 0;
        let mut start = lo;
        let mut seg = vec![true; SEGMENT as usize];
        while start < hi {
            let end = (start + SEGMENT).min(hi);
            let len = (end - start) as usize;
            seg[..len].fill(true);
            for &p in &base {
                if p * p >= end {
                    break;
                }
                let mut m = (start.div_ceil(p) * p).max(p * p);
                while m < end {
                    seg[(m - start) as usize] = false;
                    m += p;
                }
            }
            total += seg[..len].iter().filter(|b| **b).count() as u64;
            start = end;
        }
        total
    }

    /// `n` consecutive ranges from `lo` whose widths spread over
    /// `[min_width, max_width]` log-uniformly (a deterministic, uneven job),
    /// as task inputs `range-000`, … with estimates proportional to width.
    pub fn uneven(n: usize, lo: u64, min_width: u64, max_width: u64, seed: u64) -> Vec<(u64, u64)> {
        let mut rng = SplitMix(seed);
        let ratio = max_width as f64 / min_width.max(1) as f64;
        let mut at = lo;
        (0..n)
            .map(|_| {
                let w = (min_width as f64 * ratio.powf(rng.next_f64())) as u64;
                let r = (at, at + w.max(1));
                at += w.max(1);
                r
            })
            .collect()
    }

    /// `n` consecutive ranges of `width` from `lo`.
    pub fn even(n: usize, lo: u64, width: u64) -> Vec<(u64, u64)> {
        (0..n as u64)
            .map(|i| (lo + i * width, lo + (i + 1) * width))
            .collect()
    }

    /// Fuel per number of trial division near 10⁹ (measured with `agora
    /// exec`: 3.1·10⁸ fuel for a range of 2·10⁴).
    pub const TRIAL_FUEL_PER_NUMBER: u64 = 15_500;

    /// Ranges as task inputs for the trial-division method: much work per
    /// number, so that the expected counts are cheap to compute here.
    pub fn trial_inputs(ranges: &[(u64, u64)]) -> Vec<TaskInput> {
        ranges
            .iter()
            .enumerate()
            .map(|(i, &(lo, hi))| TaskInput {
                name: format!("range-{i:03}"),
                bytes: format!("{{\"lo\":{lo},\"hi\":{hi},\"method\":\"trial\"}}").into_bytes(),
                estimate: Some((hi - lo) * TRIAL_FUEL_PER_NUMBER + 1_000_000),
            })
            .collect()
    }

    /// Ranges as task inputs.
    pub fn inputs(ranges: &[(u64, u64)]) -> Vec<TaskInput> {
        ranges
            .iter()
            .enumerate()
            .map(|(i, &(lo, hi))| TaskInput {
                name: format!("range-{i:03}"),
                bytes: input(lo, hi),
                estimate: Some(estimate(lo, hi)),
            })
            .collect()
    }
}

/// The no-op example: tiny tasks that measure per-task overhead.
pub mod noop {
    use super::TaskInput;

    /// Fuel a no-op task uses on a few bytes of input (measured: 2,695).
    pub const FUEL: u64 = 3_000;

    /// `n` distinct tiny inputs.
    pub fn inputs(n: usize) -> Vec<TaskInput> {
        (0..n)
            .map(|i| TaskInput {
                name: format!("noop-{i:05}"),
                bytes: format!("{i}\n").into_bytes(),
                estimate: Some(FUEL),
            })
            .collect()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn tiles_follow_the_readme() {
        assert_eq!(mandelbrot::grid(48), (8, 6));
        assert_eq!(mandelbrot::grid(16), (4, 4));
        assert_eq!(mandelbrot::grid(12), (4, 3));
        assert_eq!(mandelbrot::grid(7), (7, 1));
        let t = mandelbrot::tiles(1600, 1200, 48, 500);
        assert_eq!(t.len(), 48);
        let area: u64 = t
            .iter()
            .map(|t| u64::from(t.tile_width) * u64::from(t.tile_height))
            .sum();
        assert_eq!(area, 1600 * 1200);
        // What `mandelbrot.wasm --arg=--split --arg=1600x1200 --arg=48` prints first.
        assert_eq!(
            String::from_utf8(serde_json::to_vec(&t[1]).expect("serialises")).expect("utf-8"),
            r#"{"width":1600,"height":1200,"x":200,"y":0,"tile_width":200,"tile_height":200,"re_min":-2.5,"re_max":1.0,"im_min":-1.3125,"im_max":1.3125,"max_iter":500}"#
        );
        // The centre tiles are inside the set: far more work than the corner.
        assert!(mandelbrot::estimate(&t[19]) > 20 * mandelbrot::estimate(&t[0]));
    }

    #[test]
    fn prime_counts_are_right() {
        assert_eq!(primes::count(0, 1000), 168);
        assert_eq!(primes::count(0, 1_000_000), 78_498);
        assert_eq!(primes::count(10_000_000_000, 10_001_000_000), 43_427);
        assert_eq!(primes::count(7, 8), 1);
        assert_eq!(primes::count(8, 8), 0);
        assert_eq!(
            primes::output(0, 1000),
            br#"{"lo":0,"hi":1000,"count":168}"#.to_vec()
        );
    }

    #[test]
    fn uneven_ranges_tile_and_spread() {
        let r = primes::uneven(200, 1_000, 10, 1000, 7);
        assert_eq!(r.len(), 200);
        assert!(r.windows(2).all(|w| w[0].1 == w[1].0));
        let widths: Vec<u64> = r.iter().map(|(a, b)| b - a).collect();
        assert!(widths.iter().all(|w| (10..=1000).contains(w)));
        assert!(widths.iter().max().expect("some") / widths.iter().min().expect("some") > 10);
    }

    #[test]
    fn pngs_are_checked() {
        let mut png = vec![0x89, b'P', b'N', b'G', 0x0d, 0x0a, 0x1a, 0x0a, 0, 0, 0, 13];
        png.extend_from_slice(b"IHDR");
        png.extend_from_slice(&4u32.to_be_bytes());
        png.extend_from_slice(&2u32.to_be_bytes());
        png.resize(64, 0);
        assert!(mandelbrot::check_png(&png, 4, 2).is_ok());
        assert!(mandelbrot::check_png(&png, 4, 3).is_err());
        assert!(mandelbrot::check_png(b"GIF89a", 4, 2).is_err());
    }
}
