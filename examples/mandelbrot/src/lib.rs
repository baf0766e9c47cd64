//! # mandelbrot
//!
//! A large Mandelbrot image rendered as tiles across many providers, then
//! assembled into one PNG. The parts, all plain Rust that also builds
//! natively (the executor's benchmark runs [`render`] both ways):
//!
//! - [`split`] cuts an image into [`Tile`]s: one task input each (JSON).
//! - [`render`] is the map step's kernel: escape-time iteration per pixel,
//!   giving one palette index per pixel; [`encode_tile`] wraps the pixels in a
//!   small header so the output says where it belongs.
//! - [`assemble`] is the reduce step: it places every tile output in the image
//!   (in any order) and checks that they cover it exactly once; [`png`] then
//!   encodes it with [`PALETTE`].
//!
//! The formats are documented in `examples/README.md`.

#![deny(missing_docs)]
#![cfg_attr(test, allow(clippy::unwrap_used))]

pub mod png;

use agora_sdk::Error;
use serde::{Deserialize, Serialize};

/// Largest image side accepted, in pixels.
pub const MAX_SIDE: u32 = 16_384;
/// Most iterations per pixel accepted.
pub const MAX_ITER: u32 = 1_000_000;
/// The first bytes of every tile output (format version 1).
pub const TILE_MAGIC: [u8; 4] = *b"MBT1";
/// Bytes of a tile output's header: the magic and six `u32` LE fields.
pub const TILE_HEADER_LEN: usize = 28;

/// One task input: which pixels of which image to render.
///
/// Pixel `(px, py)` of the whole image (origin top left) samples the complex
/// number at its centre: `re = re_min + (px + 0.5) · (re_max − re_min) / width`,
/// `im = im_max − (py + 0.5) · (im_max − im_min) / height`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Tile {
    /// Width of the whole image in pixels.
    pub width: u32,
    /// Height of the whole image in pixels.
    pub height: u32,
    /// Left column of this tile.
    pub x: u32,
    /// Top row of this tile.
    pub y: u32,
    /// Columns in this tile.
    pub tile_width: u32,
    /// Rows in this tile.
    pub tile_height: u32,
    /// Real part at the image's left edge.
    pub re_min: f64,
    /// Real part at the image's right edge.
    pub re_max: f64,
    /// Imaginary part at the image's bottom edge.
    pub im_min: f64,
    /// Imaginary part at the image's top edge.
    pub im_max: f64,
    /// Iterations after which a point counts as inside the set.
    pub max_iter: u32,
}

impl Tile {
    /// Checks that the tile lies inside a sane image and region.
    pub fn validate(&self) -> Result<(), Error> {
        if self.width == 0 || self.height == 0 || self.width > MAX_SIDE || self.height > MAX_SIDE {
            return Err(Error::msg(format!(
                "image is {}x{}; each side must be 1 to {MAX_SIDE} pixels",
                self.width, self.height
            )));
        }
        if self.tile_width == 0
            || self.tile_height == 0
            || u64::from(self.x) + u64::from(self.tile_width) > u64::from(self.width)
            || u64::from(self.y) + u64::from(self.tile_height) > u64::from(self.height)
        {
            return Err(Error::msg(format!(
                "tile {}x{} at ({}, {}) is empty or outside the {}x{} image",
                self.tile_width, self.tile_height, self.x, self.y, self.width, self.height
            )));
        }
        let finite = [self.re_min, self.re_max, self.im_min, self.im_max]
            .iter()
            .all(|v| v.is_finite());
        if !finite || self.re_min >= self.re_max || self.im_min >= self.im_max {
            return Err(Error::msg(
                "region must be finite with re_min < re_max and im_min < im_max",
            ));
        }
        if self.max_iter == 0 || self.max_iter > MAX_ITER {
            return Err(Error::msg(format!("max_iter must be 1 to {MAX_ITER}")));
        }
        Ok(())
    }
}

/// Iterations of `z ← z² + c` from `z = 0` before `|z| > 2`, at most
/// `max_iter` (which means "inside the set").
#[inline]
pub fn escape_time(c_re: f64, c_im: f64, max_iter: u32) -> u32 {
    let (mut re, mut im) = (0.0f64, 0.0f64);
    let (mut re2, mut im2) = (0.0f64, 0.0f64);
    let mut n = 0;
    while n < max_iter && re2 + im2 <= 4.0 {
        im = 2.0 * re * im + c_im;
        re = re2 - im2 + c_re;
        re2 = re * re;
        im2 = im * im;
        n += 1;
    }
    n
}

/// The palette index of a pixel: 0 (black) inside the set, else cycling
/// through 1..=255 with the escape time, so that deep zooms keep their bands.
#[inline]
pub fn palette_index(n: u32, max_iter: u32) -> u8 {
    if n >= max_iter { 0 } else { 1 + (n % 255) as u8 }
}

/// Renders a tile: one palette index per pixel, rows top to bottom.
///
/// The tile must be [valid](Tile::validate); float arithmetic is plain IEEE
/// `f64` with no fused operations, so WASM and native give the same bytes.
pub fn render(tile: &Tile) -> Vec<u8> {
    let dx = (tile.re_max - tile.re_min) / f64::from(tile.width);
    let dy = (tile.im_max - tile.im_min) / f64::from(tile.height);
    let mut pixels = Vec::with_capacity(tile.tile_width as usize * tile.tile_height as usize);
    for py in tile.y..tile.y + tile.tile_height {
        let c_im = tile.im_max - (f64::from(py) + 0.5) * dy;
        for px in tile.x..tile.x + tile.tile_width {
            let c_re = tile.re_min + (f64::from(px) + 0.5) * dx;
            pixels.push(palette_index(
                escape_time(c_re, c_im, tile.max_iter),
                tile.max_iter,
            ));
        }
    }
    pixels
}

/// A tile output: the header ([`TILE_MAGIC`], then `width`, `height`, `x`,
/// `y`, `tile_width`, `tile_height` as `u32` LE) followed by the pixels.
pub fn encode_tile(tile: &Tile, pixels: &[u8]) -> Vec<u8> {
    let mut out = Vec::with_capacity(TILE_HEADER_LEN + pixels.len());
    out.extend_from_slice(&TILE_MAGIC);
    for v in [
        tile.width,
        tile.height,
        tile.x,
        tile.y,
        tile.tile_width,
        tile.tile_height,
    ] {
        out.extend_from_slice(&v.to_le_bytes());
    }
    out.extend_from_slice(pixels);
    out
}

/// A rendered tile, parsed back from a task output.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct TileOutput<'a> {
    /// Width of the whole image.
    pub width: u32,
    /// Height of the whole image.
    pub height: u32,
    /// Left column.
    pub x: u32,
    /// Top row.
    pub y: u32,
    /// Columns.
    pub tile_width: u32,
    /// Rows.
    pub tile_height: u32,
    /// `tile_width × tile_height` palette indices, row by row.
    pub pixels: &'a [u8],
}

impl<'a> TileOutput<'a> {
    /// Parses and checks one task output.
    pub fn parse(bytes: &'a [u8]) -> Result<TileOutput<'a>, Error> {
        let Some((header, pixels)) = bytes.split_first_chunk::<TILE_HEADER_LEN>() else {
            return Err(Error::msg(format!(
                "tile output of {} bytes is shorter than its {TILE_HEADER_LEN}-byte header",
                bytes.len()
            )));
        };
        if header[..4] != TILE_MAGIC {
            return Err(Error::msg("tile output does not start with MBT1"));
        }
        let field = |i: usize| {
            let at = 4 + 4 * i;
            u32::from_le_bytes([header[at], header[at + 1], header[at + 2], header[at + 3]])
        };
        let t = TileOutput {
            width: field(0),
            height: field(1),
            x: field(2),
            y: field(3),
            tile_width: field(4),
            tile_height: field(5),
            pixels,
        };
        let expected = u64::from(t.tile_width) * u64::from(t.tile_height);
        if pixels.len() as u64 != expected {
            return Err(Error::msg(format!(
                "tile at ({}, {}) should have {expected} pixels but has {}",
                t.x,
                t.y,
                pixels.len()
            )));
        }
        if u64::from(t.x) + u64::from(t.tile_width) > u64::from(t.width)
            || u64::from(t.y) + u64::from(t.tile_height) > u64::from(t.height)
        {
            return Err(Error::msg(format!(
                "tile at ({}, {}) lies outside the {}x{} image",
                t.x, t.y, t.width, t.height
            )));
        }
        Ok(t)
    }
}

/// A whole image of palette indices.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Image {
    /// Width in pixels.
    pub width: u32,
    /// Height in pixels.
    pub height: u32,
    /// One palette index per pixel, row by row.
    pub pixels: Vec<u8>,
}

/// Places every tile output into one image. The tiles may come in any order
/// but must all belong to the same image and cover it exactly once.
pub fn assemble<T: AsRef<[u8]>>(outputs: &[T]) -> Result<Image, Error> {
    let tiles = outputs
        .iter()
        .enumerate()
        .map(|(i, o)| TileOutput::parse(o.as_ref()).map_err(|e| Error::msg(format!("task {i}: {e}"))))
        .collect::<Result<Vec<_>, _>>()?;
    let Some(first) = tiles.first() else {
        return Err(Error::msg("no tiles to assemble: the job had no tasks"));
    };
    let (width, height) = (first.width, first.height);
    if width == 0 || height == 0 || width > MAX_SIDE || height > MAX_SIDE {
        return Err(Error::msg(format!(
            "image of {width}x{height} pixels is not supported"
        )));
    }
    let w = width as usize;
    let mut pixels = vec![0u8; w * height as usize];
    let mut covered = vec![false; pixels.len()];
    for (i, t) in tiles.iter().enumerate() {
        if (t.width, t.height) != (width, height) {
            return Err(Error::msg(format!(
                "task {i} is a tile of a {}x{} image, task 0 of a {width}x{height} one",
                t.width, t.height
            )));
        }
        let tw = t.tile_width as usize;
        for (row, src) in t.pixels.chunks_exact(tw).enumerate() {
            let start = (t.y as usize + row) * w + t.x as usize;
            if covered[start..start + tw].iter().any(|&c| c) {
                return Err(Error::msg(format!("task {i}'s tile overlaps another tile")));
            }
            covered[start..start + tw].fill(true);
            pixels[start..start + tw].copy_from_slice(src);
        }
    }
    if let Some(missing) = covered.iter().position(|&c| !c) {
        return Err(Error::msg(format!(
            "the tiles do not cover the image: pixel ({}, {}) is missing",
            missing % w,
            missing / w
        )));
    }
    Ok(Image {
        width,
        height,
        pixels,
    })
}

/// Cuts a `width × height` image of `region` (`[re_min, re_max, im_min,
/// im_max]`) into `cols × rows` tiles, row by row from the top left. Tile
/// edges fall at `⌊i · width / cols⌋`, so sizes differ by at most one pixel.
pub fn split(
    width: u32,
    height: u32,
    cols: u32,
    rows: u32,
    region: [f64; 4],
    max_iter: u32,
) -> Result<Vec<Tile>, Error> {
    if cols == 0 || rows == 0 || cols > width || rows > height {
        return Err(Error::msg(format!(
            "cannot cut a {width}x{height} image into {cols}x{rows} tiles"
        )));
    }
    let edge = |i: u32, n: u32, len: u32| (u64::from(i) * u64::from(len) / u64::from(n)) as u32;
    let mut tiles = Vec::with_capacity(cols as usize * rows as usize);
    for r in 0..rows {
        let (y0, y1) = (edge(r, rows, height), edge(r + 1, rows, height));
        for c in 0..cols {
            let (x0, x1) = (edge(c, cols, width), edge(c + 1, cols, width));
            let tile = Tile {
                width,
                height,
                x: x0,
                y: y0,
                tile_width: x1 - x0,
                tile_height: y1 - y0,
                re_min: region[0],
                re_max: region[1],
                im_min: region[2],
                im_max: region[3],
                max_iter,
            };
            tile.validate()?;
            tiles.push(tile);
        }
    }
    Ok(tiles)
}

/// The tiles that `--split` describes: `WIDTHxHEIGHT [TILES] [--max-iter N]
/// [--region RE_MIN,RE_MAX,IM_MIN,IM_MAX]`, where `TILES` is a count (laid
/// out by [`grid`]) or `COLSxROWS`, default 16; `--max-iter` defaults to 500
/// and the region to [`default_region`].
pub fn split_args<S: AsRef<str>>(args: &[S]) -> Result<Vec<Tile>, Error> {
    let mut size = None;
    let mut tiles = None;
    let mut max_iter = 500;
    let mut region = None;
    let mut args = args.iter().map(AsRef::as_ref);
    while let Some(arg) = args.next() {
        let mut value = |name: &str| {
            args.next()
                .ok_or_else(|| Error::msg(format!("{name} needs a value")))
        };
        match arg {
            "--max-iter" => {
                let v = value("--max-iter")?;
                max_iter = v
                    .parse()
                    .map_err(|_| Error::msg(format!("bad --max-iter {v:?}")))?;
            }
            "--region" => region = Some(parse_region(value("--region")?)?),
            _ if size.is_none() => size = Some(parse_pair(arg, "WIDTHxHEIGHT")?),
            _ if tiles.is_none() => {
                tiles = Some(match arg.parse::<u32>() {
                    Ok(n) if n > 0 => grid(n),
                    _ => parse_pair(arg, "TILES (a count or COLSxROWS)")?,
                })
            }
            _ => return Err(Error::msg(format!("unexpected argument {arg:?}"))),
        }
    }
    let (width, height) = size.ok_or_else(|| {
        Error::msg(
            "usage: --split WIDTHxHEIGHT [TILES] [--max-iter N] [--region RE_MIN,RE_MAX,IM_MIN,IM_MAX]",
        )
    })?;
    let (cols, rows) = tiles.unwrap_or_else(|| grid(16));
    let region = region.unwrap_or_else(|| default_region(width, height));
    split(width, height, cols, rows, region, max_iter)
}

fn parse_pair(s: &str, what: &str) -> Result<(u32, u32), Error> {
    s.split_once('x')
        .and_then(|(a, b)| Some((a.parse().ok()?, b.parse().ok()?)))
        .ok_or_else(|| Error::msg(format!("expected {what}, got {s:?}")))
}

fn parse_region(s: &str) -> Result<[f64; 4], Error> {
    let parts: Vec<f64> = s.split(',').filter_map(|p| p.trim().parse().ok()).collect();
    <[f64; 4]>::try_from(parts)
        .map_err(|_| Error::msg(format!("expected RE_MIN,RE_MAX,IM_MIN,IM_MAX, got {s:?}")))
}

/// The default region: the whole set, centred on −0.75, 3.5 units wide, as
/// tall as the image's aspect ratio makes it.
pub fn default_region(width: u32, height: u32) -> [f64; 4] {
    let half_w = 1.75;
    let half_h = half_w * f64::from(height) / f64::from(width);
    [-0.75 - half_w, -0.75 + half_w, -half_h, half_h]
}

/// A grid of `cols × rows` for `n` tiles: the most nearly square factoring
/// with at least as many columns as rows.
pub fn grid(n: u32) -> (u32, u32) {
    let mut rows = 1;
    let mut r = 1;
    while r * r <= n {
        if n.is_multiple_of(r) {
            rows = r;
        }
        r += 1;
    }
    (n / rows.max(1), rows)
}

/// The colours of the palette indices: 0 is black (inside the set), 1..=255
/// run through a deep-blue, white, orange, black cycle.
pub const PALETTE: [[u8; 3]; 256] = palette();

const fn palette() -> [[u8; 3]; 256] {
    const STOPS: [[u8; 3]; 5] = [
        [0, 7, 100],
        [32, 107, 203],
        [237, 255, 255],
        [255, 170, 0],
        [0, 2, 0],
    ];
    let mut p = [[0u8; 3]; 256];
    let mut i = 1;
    while i < 256 {
        // 255 entries across 5 segments of 51: stop k to stop k+1 (wrapping).
        let pos = i - 1;
        let seg = pos / 51;
        let t = (pos % 51) as u32;
        let a = STOPS[seg];
        let b = STOPS[(seg + 1) % 5];
        let mut ch = 0;
        while ch < 3 {
            let (a, b) = (a[ch] as u32, b[ch] as u32);
            p[i][ch] = ((a * (51 - t) + b * t) / 51) as u8;
            ch += 1;
        }
        i += 1;
    }
    p
}

#[cfg(test)]
mod tests {
    use super::*;

    fn tile(width: u32, height: u32, max_iter: u32) -> Tile {
        Tile {
            width,
            height,
            x: 0,
            y: 0,
            tile_width: width,
            tile_height: height,
            re_min: -2.5,
            re_max: 1.0,
            im_min: -1.25,
            im_max: 1.25,
            max_iter,
        }
    }

    #[test]
    fn escape_time_knows_points_inside_and_outside() {
        assert_eq!(escape_time(0.0, 0.0, 100), 100);
        assert_eq!(escape_time(-1.0, 0.0, 100), 100);
        assert_eq!(escape_time(2.0, 2.0, 100), 1);
        assert_eq!(escape_time(1.0, 0.0, 100), 3);
    }

    #[test]
    fn palette_index_reserves_zero_for_inside() {
        assert_eq!(palette_index(50, 50), 0);
        assert_eq!(palette_index(0, 50), 1);
        assert_eq!(palette_index(254, 1000), 255);
        assert_eq!(palette_index(255, 1000), 1);
    }

    #[test]
    fn render_is_deterministic_and_has_both_inside_and_outside() {
        let t = tile(64, 48, 200);
        let a = render(&t);
        assert_eq!(a.len(), 64 * 48);
        assert_eq!(a, render(&t));
        assert!(a.contains(&0));
        assert!(a.iter().any(|&p| p != 0));
        // The image is symmetric about the real axis.
        for row in 0..24 {
            assert_eq!(a[row * 64..(row + 1) * 64], a[(47 - row) * 64..(48 - row) * 64]);
        }
    }

    #[test]
    fn tiles_render_the_same_pixels_as_the_whole_image() {
        let whole = render(&tile(50, 30, 100));
        let tiles = split(50, 30, 3, 2, [-2.5, 1.0, -1.25, 1.25], 100).unwrap();
        let outputs: Vec<Vec<u8>> = tiles.iter().rev().map(|t| encode_tile(t, &render(t))).collect();
        let image = assemble(&outputs).unwrap();
        assert_eq!((image.width, image.height), (50, 30));
        assert_eq!(image.pixels, whole);
    }

    #[test]
    fn split_covers_uneven_sizes() {
        let tiles = split(10, 7, 3, 2, default_region(10, 7), 10).unwrap();
        assert_eq!(tiles.len(), 6);
        let widths: Vec<u32> = tiles[..3].iter().map(|t| t.tile_width).collect();
        assert_eq!(widths, [3, 3, 4]);
        assert_eq!(tiles[3].y, 3);
        assert_eq!(tiles[3].tile_height, 4);
        assert!(split(4, 4, 5, 1, default_region(4, 4), 10).is_err());
    }

    #[test]
    fn tile_input_json_is_the_documented_format() {
        let json = r#"{"width":1024,"height":768,"x":256,"y":192,"tile_width":256,"tile_height":192,
            "re_min":-2.5,"re_max":1.0,"im_min":-1.3125,"im_max":1.3125,"max_iter":500}"#;
        let t: Tile = serde_json::from_str(json).unwrap();
        t.validate().unwrap();
        assert_eq!((t.x, t.tile_height, t.max_iter), (256, 192, 500));
        let typo = json.replace("max_iter", "max_iters");
        assert!(serde_json::from_str::<Tile>(&typo).is_err());
    }

    #[test]
    fn validate_rejects_tiles_outside_the_image() {
        let mut t = tile(10, 10, 10);
        t.x = 5;
        assert!(t.validate().is_err());
        let mut t = tile(10, 10, 10);
        t.re_max = f64::NAN;
        assert!(t.validate().is_err());
        assert!(tile(10, 10, 0).validate().is_err());
    }

    #[test]
    fn tile_output_round_trips_and_is_checked() {
        let t = tile(4, 2, 10);
        let out = encode_tile(&t, &render(&t));
        assert_eq!(out.len(), TILE_HEADER_LEN + 8);
        let parsed = TileOutput::parse(&out).unwrap();
        assert_eq!((parsed.width, parsed.tile_height), (4, 2));
        assert!(TileOutput::parse(&out[..out.len() - 1]).is_err());
        assert!(TileOutput::parse(b"PNG!").is_err());
    }

    #[test]
    fn assemble_finds_gaps_overlaps_and_mismatches() {
        let tiles = split(8, 8, 2, 2, default_region(8, 8), 10).unwrap();
        let outs: Vec<Vec<u8>> = tiles.iter().map(|t| encode_tile(t, &render(t))).collect();
        let gap = assemble(&outs[..3]).unwrap_err();
        assert!(gap.to_string().contains("pixel (4, 4) is missing"), "{gap}");
        let mut twice = outs.clone();
        twice.push(outs[0].clone());
        assert!(assemble(&twice).unwrap_err().to_string().contains("overlaps"));
        let other = split(8, 9, 1, 1, default_region(8, 9), 10).unwrap();
        let mut mixed = outs.clone();
        mixed[1] = encode_tile(&other[0], &render(&other[0]));
        assert!(assemble(&mixed).is_err());
        assert!(assemble::<Vec<u8>>(&[]).is_err());
    }

    #[test]
    fn split_args_reads_the_documented_command_line() {
        let tiles = split_args(&["1024x768", "16"]).unwrap();
        assert_eq!(tiles.len(), 16);
        assert_eq!((tiles[5].x, tiles[5].y, tiles[5].tile_width), (256, 192, 256));
        assert_eq!(
            (tiles[0].re_min, tiles[0].im_max, tiles[0].max_iter),
            (-2.5, 1.3125, 500)
        );
        assert_eq!(split_args(&["100x50"]).unwrap().len(), 16);
        let custom = split_args(&["90x60", "3x2", "--max-iter", "64", "--region", "-1,1,-0.5,0.5"]).unwrap();
        assert_eq!(custom.len(), 6);
        assert_eq!(
            (custom[0].re_min, custom[0].im_min, custom[0].max_iter),
            (-1.0, -0.5, 64)
        );
        assert_eq!(custom[0].tile_width, 30);
        for bad in [
            &[][..],
            &["1024"],
            &["10x10", "0"],
            &["10x10", "4", "extra"],
            &["10x10", "--region", "1,2"],
        ] {
            assert!(split_args(bad).is_err(), "{bad:?}");
        }
    }

    #[test]
    fn grid_is_nearly_square() {
        assert_eq!(grid(16), (4, 4));
        assert_eq!(grid(12), (4, 3));
        assert_eq!(grid(10), (5, 2));
        assert_eq!(grid(7), (7, 1));
        assert_eq!(grid(1), (1, 1));
    }

    #[test]
    fn palette_starts_black_and_cycles_smoothly() {
        assert_eq!(PALETTE[0], [0, 0, 0]);
        assert_eq!(PALETTE[1], [0, 7, 100]);
        assert_eq!(PALETTE[52], [32, 107, 203]);
        for w in PALETTE[1..].windows(2) {
            let step = (0..3).map(|c| w[0][c].abs_diff(w[1][c])).max().unwrap();
            assert!(step <= 10, "{w:?}");
        }
    }
}
