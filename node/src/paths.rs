//! Where a node keeps its data: `--data-dir`, then `AGORA_DATA_DIR`, then the
//! platform default (`$XDG_DATA_HOME/agora`, or `~/.local/share/agora`), and
//! how it is kept private: directories 0700, files 0600.

use std::path::{Path, PathBuf};

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

/// Creates `dir` and any missing parents readable by the owner only (0700),
/// and tightens `dir` itself if it already exists with looser permissions:
/// a node's data dir holds its key, its API token and other people's
/// inputs.
pub fn create_private_dir(dir: &Path) -> std::io::Result<()> {
    let mut builder = std::fs::DirBuilder::new();
    builder.recursive(true);
    #[cfg(unix)]
    {
        use std::os::unix::fs::{DirBuilderExt, PermissionsExt};
        builder.mode(0o700);
        builder.create(dir)?;
        let mode = std::fs::metadata(dir)?.permissions().mode();
        if mode & 0o077 != 0 {
            tracing::info!(dir = %dir.display(), "tightening permissions to owner only");
            std::fs::set_permissions(dir, std::fs::Permissions::from_mode(mode & 0o700))?;
        }
        Ok(())
    }
    #[cfg(not(unix))]
    builder.create(dir)
}

/// Opens `path` for writing, created or truncated, readable and writable by
/// the owner only (0600), also if it existed with looser permissions.
pub fn create_private_file(path: &Path) -> std::io::Result<std::fs::File> {
    let mut opts = std::fs::OpenOptions::new();
    opts.write(true).create(true).truncate(true);
    #[cfg(unix)]
    {
        use std::os::unix::fs::{OpenOptionsExt, PermissionsExt};
        opts.mode(0o600);
        let f = opts.open(path)?;
        if f.metadata()?.permissions().mode() & 0o077 != 0 {
            f.set_permissions(std::fs::Permissions::from_mode(0o600))?;
        }
        Ok(f)
    }
    #[cfg(not(unix))]
    opts.open(path)
}

/// Makes every file and directory this process creates from now on
/// private to its owner (umask 077), so that files written by libraries
/// (the database's) are 0600 like the node's own.
pub fn private_umask() {
    #[cfg(unix)]
    rustix::process::umask(rustix::fs::Mode::from_raw_mode(0o077));
}

#[cfg(all(test, unix))]
#[allow(clippy::unwrap_used)]
mod tests {
    use std::os::unix::fs::PermissionsExt;

    use super::*;

    fn mode(p: &Path) -> u32 {
        std::fs::metadata(p).unwrap().permissions().mode() & 0o777
    }

    #[test]
    fn private_dirs_and_files_are_owner_only_even_if_they_existed() {
        let tmp = tempfile::tempdir().unwrap();
        let fresh = tmp.path().join("a/b");
        create_private_dir(&fresh).unwrap();
        assert_eq!(mode(&fresh), 0o700);
        let loose = tmp.path().join("loose");
        std::fs::create_dir(&loose).unwrap();
        std::fs::set_permissions(&loose, std::fs::Permissions::from_mode(0o755)).unwrap();
        create_private_dir(&loose).unwrap();
        assert_eq!(mode(&loose), 0o700);

        let file = loose.join("f");
        std::fs::write(&file, "x").unwrap();
        std::fs::set_permissions(&file, std::fs::Permissions::from_mode(0o644)).unwrap();
        drop(create_private_file(&file).unwrap());
        assert_eq!(mode(&file), 0o600);
        drop(create_private_file(&loose.join("g")).unwrap());
        assert_eq!(mode(&loose.join("g")), 0o600);
    }
}
