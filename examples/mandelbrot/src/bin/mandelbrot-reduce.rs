//! The mandelbrot job's reduce step: assembles the tiles into a PNG.
//!
//! - stdin: every task's tile output, framed as in `agora_sdk::frame`.
//! - stdout: an 8-bit palette PNG of the whole image.
//!
//! Tiles may come in any order; they must cover the image exactly once.

fn main() -> Result<(), agora_sdk::Error> {
    let outputs = agora_sdk::task_outputs()?;
    let image = mandelbrot::assemble(&outputs)?;
    agora_sdk::log!(
        "assembled {} tiles into {}x{}",
        outputs.len(),
        image.width,
        image.height
    );
    let png = mandelbrot::png::encode_indexed(image.width, image.height, &mandelbrot::PALETTE, &image.pixels);
    agora_sdk::output(&png)
}
