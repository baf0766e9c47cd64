//! The noop job: reads its whole input and writes nothing, or, with the
//! argument `--echo`, writes the input back unchanged. Exits 0.
//!
//! The per-task overhead benchmark runs it: whatever time a task takes beyond
//! this is the node's.

fn main() -> Result<(), agora_sdk::Error> {
    let input = agora_sdk::input()?;
    if agora_sdk::args().iter().any(|a| a == "--echo") {
        agora_sdk::output(&input)?;
    }
    Ok(())
}
