//! The mandelbrot job's map step: renders the tile its input names.
//!
//! - stdin: one [`mandelbrot::Tile`] as JSON.
//! - stdout: the tile output, [`mandelbrot::encode_tile`] (a 28-byte header,
//!   then one palette index per pixel).
//!
//! With `--split WIDTHxHEIGHT [TILES] [--max-iter N] [--region RE_MIN,RE_MAX,IM_MIN,IM_MAX]`
//! it instead prints the task inputs of a whole image, one JSON line per tile
//! (TILES is a count such as `16`, or a grid such as `8x4`; default 16; the
//! default region is the whole set and `--max-iter` defaults to 500):
//!
//! ```text
//! agora exec mandelbrot.wasm --arg --split --arg 1024x768 --arg 16 | split -l 1 -d -a 3 - inputs/tile-
//! ```

use agora_sdk::Error;
use mandelbrot::{Tile, encode_tile, render, split_args};

fn main() -> Result<(), Error> {
    let args = agora_sdk::args();
    match args.split_first() {
        Some((flag, rest)) if flag == "--split" => print_split(rest),
        Some((arg, _)) => Err(Error::msg(format!(
            "unexpected argument {arg:?}; the map step takes no arguments (or --split WIDTHxHEIGHT [TILES])"
        ))),
        None => {
            let tile: Tile = agora_sdk::input_json()?;
            tile.validate()?;
            agora_sdk::output(&encode_tile(&tile, &render(&tile)))
        }
    }
}

fn print_split(args: &[String]) -> Result<(), Error> {
    let mut lines = String::new();
    for tile in split_args(args)? {
        lines.push_str(&serde_json::to_string(&tile).map_err(Error::Output)?);
        lines.push('\n');
    }
    agora_sdk::output_text(&lines)
}
