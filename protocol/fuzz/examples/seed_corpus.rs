//! Writes seed inputs for every fuzz target into `corpus/<target>/`
//! (gitignored). Run from `protocol/fuzz`: `cargo run --example seed_corpus`.

use std::path::Path;

fn main() -> std::io::Result<()> {
    let root = Path::new(env!("CARGO_MANIFEST_DIR")).join("corpus");
    let seeds = agora_protocol_fuzz::seeds();
    for (i, (target, input)) in seeds.iter().enumerate() {
        let dir = root.join(target);
        std::fs::create_dir_all(&dir)?;
        std::fs::write(dir.join(format!("seed-{i:03}")), input)?;
    }
    println!("wrote {} seeds under {}", seeds.len(), root.display());
    Ok(())
}
