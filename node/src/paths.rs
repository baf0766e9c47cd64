//! Where a node keeps its data: `--data-dir`, then `AGORA_DATA_DIR`, then the
//! platform default (`$XDG_DATA_HOME/agora`, or `~/.local/share/agora`).

use std::path::PathBuf;

/// The environment variable naming the data dir.
pub const DATA_DIR_ENV: &str = "AGORA_DATA_DIR";

/// Resolves the data dir from a flag value, the environment and the platform.
pub fn data_dir(flag: Option<PathBuf>) -> PathBuf {
    if let Some(d) = flag {
        return d;
    }
    if let Some(d) = std::env::var_os(DATA_DIR_ENV).filter(|v| !v.is_empty()) {
        return PathBuf::from(d);
    }
    if let Some(d) = std::env::var_os("XDG_DATA_HOME").filter(|v| !v.is_empty()) {
        return PathBuf::from(d).join("agora");
    }
    match std::env::var_os("HOME").filter(|v| !v.is_empty()) {
        Some(h) => PathBuf::from(h).join(".local/share/agora"),
        None => PathBuf::from(".agora"),
    }
}
