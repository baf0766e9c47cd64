//! Which files are a job's task inputs: `--input FILE` is one task,
//! `--inputs DIR` one task per regular file directly in DIR.
//!
//! Only the file system is read here; `submit` checks the sizes and uploads
//! the files, and each task is named after its file, which is also what
//! `result` names the task's output after.
//!
//! Inputs leave this machine, so nothing is read that the user did not
//! name: a symbolic link (to a key file, to `/proc/self/environ`) is refused
//! unless `--follow-symlinks` asks for links to be read, special files
//! (fifos, devices, sockets) always are, and a file is read only up to the
//! largest upload and must hold as many bytes as its size says (files in
//! `/proc` report 0).

use std::io::Read;
use std::path::{Path, PathBuf};

use anyhow::{Context, bail};

/// One task input file.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct InputFile {
    /// The task's name: the file name.
    pub name: String,
    /// Where it is.
    pub path: PathBuf,
    /// Its size when it was listed.
    pub size: u64,
}

/// Whether inputs may be read through symbolic links.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Symlinks {
    /// A link is an error (the default).
    Refuse,
    /// A link to a regular file is read (`--follow-symlinks`).
    Follow,
}

/// The task inputs of `--inputs DIR`: regular files directly in `dir`, not
/// hidden, in file-name order. Subdirectories are left out; symbolic links
/// (unless `links` follows them) and special files are errors.
pub fn inputs_in_dir(dir: &Path, links: Symlinks) -> anyhow::Result<Vec<InputFile>> {
    let entries = std::fs::read_dir(dir)
        .with_context(|| format!("cannot read the inputs directory {}", dir.display()))?;
    let mut files = Vec::new();
    for entry in entries {
        let entry = entry.with_context(|| format!("cannot read the inputs directory {}", dir.display()))?;
        let path = entry.path();
        let Ok(name) = entry.file_name().into_string() else {
            bail!("input file name {} is not valid UTF-8; rename it", path.display());
        };
        if name.starts_with('.') {
            continue;
        }
        if let Some(size) = regular_file(&path, links)? {
            files.push(InputFile { name, path, size });
        }
    }
    if files.is_empty() {
        bail!("no input files in {} (one task per regular file)", dir.display());
    }
    files.sort_by(|a, b| a.name.cmp(&b.name));
    Ok(files)
}

/// The single input of `--input FILE`.
pub fn single_input(path: &Path, links: Symlinks) -> anyhow::Result<InputFile> {
    let Some(size) = regular_file(path, links)? else {
        bail!(
            "the input {} is a directory (use --inputs DIR for a directory of inputs)",
            path.display()
        );
    };
    let name = path
        .file_name()
        .and_then(|n| n.to_str())
        .with_context(|| format!("input file name {} is not valid UTF-8; rename it", path.display()))?;
    Ok(InputFile {
        name: name.to_owned(),
        path: path.to_owned(),
        size,
    })
}

/// The size of `path` if it is a regular file (through a link only if
/// `links` follows them), `None` for a directory; an error for a link
/// that may not be followed and for anything else.
fn regular_file(path: &Path, links: Symlinks) -> anyhow::Result<Option<u64>> {
    let mut meta =
        std::fs::symlink_metadata(path).with_context(|| format!("cannot read {}", path.display()))?;
    if meta.file_type().is_symlink() {
        if links == Symlinks::Refuse {
            let target = std::fs::read_link(path)
                .map(|t| t.display().to_string())
                .unwrap_or_default();
            bail!(
                "the input {} is a symbolic link (to {target}); inputs are uploaded to other machines, so links are not followed: copy the file in, or pass --follow-symlinks",
                path.display()
            );
        }
        meta = std::fs::metadata(path).with_context(|| format!("cannot read {}", path.display()))?;
    }
    if meta.is_dir() {
        return Ok(None);
    }
    if !meta.is_file() {
        bail!(
            "the input {} is {}, not a regular file; copy what it holds into a file and use that",
            path.display(),
            special_kind(&meta.file_type())
        );
    }
    if meta.len() == 0 && !read_bounded(path, links, 1)?.is_empty() {
        bail!(
            "the input {} reports a size of 0 but has content (a file like those in /proc); copy it into a regular file and use that",
            path.display()
        );
    }
    Ok(Some(meta.len()))
}

/// What kind of special file this is, for messages.
fn special_kind(t: &std::fs::FileType) -> &'static str {
    #[cfg(unix)]
    {
        use std::os::unix::fs::FileTypeExt;
        if t.is_fifo() {
            return "a fifo";
        }
        if t.is_socket() {
            return "a socket";
        }
        if t.is_block_device() || t.is_char_device() {
            return "a device";
        }
    }
    let _ = t;
    "a special file"
}

/// Reads an input for upload: at most `max` bytes, and exactly the size
/// it had when it was listed.
pub fn read_input(f: &InputFile, links: Symlinks, max: u64) -> anyhow::Result<Vec<u8>> {
    let bytes = read_bounded(&f.path, links, max.saturating_add(1))?;
    let read = bytes.len() as u64;
    if read > max {
        bail!(
            "the input {} is more than the {} a task input may be",
            f.path.display(),
            agora_protocol::units::Bytes(max)
        );
    }
    if read != f.size {
        bail!(
            "the input {} was {} bytes when listed but {read} bytes were read: it changed, or it is not an ordinary file; copy it into a regular file and submit again",
            f.path.display(),
            f.size
        );
    }
    Ok(bytes)
}

/// Up to `limit` bytes of `path`, opened without following a final link
/// unless `links` allows it (so that a file replaced by a link after it was
/// listed is not read through), and only if what is open is a regular file.
fn read_bounded(path: &Path, links: Symlinks, limit: u64) -> anyhow::Result<Vec<u8>> {
    let mut opts = std::fs::OpenOptions::new();
    opts.read(true);
    #[cfg(unix)]
    {
        use std::os::unix::fs::OpenOptionsExt;
        let mut flags = rustix::fs::OFlags::NONBLOCK;
        if links == Symlinks::Refuse {
            flags |= rustix::fs::OFlags::NOFOLLOW;
        }
        opts.custom_flags(flags.bits() as i32);
    }
    let file = opts.open(path).with_context(|| {
        format!(
            "cannot read the input {} (a symbolic link needs --follow-symlinks)",
            path.display()
        )
    })?;
    let meta = file
        .metadata()
        .with_context(|| format!("cannot read the input {}", path.display()))?;
    if !meta.is_file() {
        bail!(
            "the input {} is not a regular file; copy what it holds into a file and use that",
            path.display()
        );
    }
    let mut bytes = Vec::new();
    file.take(limit)
        .read_to_end(&mut bytes)
        .with_context(|| format!("cannot read the input {}", path.display()))?;
    Ok(bytes)
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;

    #[test]
    fn inputs_are_the_regular_files_in_name_order() {
        let dir = tempfile::tempdir().unwrap();
        for name in ["tile-10.json", "tile-02.json", "b", ".hidden"] {
            std::fs::write(dir.path().join(name), name).unwrap();
        }
        std::fs::create_dir(dir.path().join("sub")).unwrap();
        std::fs::write(dir.path().join("sub/inner"), "x").unwrap();
        let files = inputs_in_dir(dir.path(), Symlinks::Refuse).unwrap();
        let names: Vec<&str> = files.iter().map(|f| f.name.as_str()).collect();
        assert_eq!(names, ["b", "tile-02.json", "tile-10.json"]);
        assert_eq!(files[0].size, 1);
    }

    #[test]
    fn an_empty_inputs_dir_is_an_error() {
        let dir = tempfile::tempdir().unwrap();
        std::fs::create_dir(dir.path().join("sub")).unwrap();
        let e = inputs_in_dir(dir.path(), Symlinks::Refuse)
            .unwrap_err()
            .to_string();
        assert!(e.contains("no input files"), "{e}");
    }

    #[test]
    fn a_single_input_must_be_a_file() {
        let dir = tempfile::tempdir().unwrap();
        assert!(single_input(dir.path(), Symlinks::Refuse).is_err());
        let f = dir.path().join("in.bin");
        std::fs::write(&f, "x").unwrap();
        assert_eq!(single_input(&f, Symlinks::Refuse).unwrap().name, "in.bin");
    }

    #[cfg(unix)]
    #[test]
    fn a_link_to_a_secret_is_refused_unless_links_are_followed() {
        let dir = tempfile::tempdir().unwrap();
        let secret = tempfile::tempdir().unwrap();
        let key = secret.path().join("id_ed25519");
        std::fs::write(&key, "secret key").unwrap();
        std::os::unix::fs::symlink(&key, dir.path().join("a.json")).unwrap();
        std::fs::write(dir.path().join("b.json"), "b").unwrap();

        let e = inputs_in_dir(dir.path(), Symlinks::Refuse)
            .unwrap_err()
            .to_string();
        assert!(e.contains("a.json") && e.contains("symbolic link"), "{e}");
        assert!(e.contains("--follow-symlinks"), "says what to do: {e}");
        let e = single_input(&dir.path().join("a.json"), Symlinks::Refuse)
            .unwrap_err()
            .to_string();
        assert!(e.contains("--follow-symlinks"), "{e}");

        let files = inputs_in_dir(dir.path(), Symlinks::Follow).unwrap();
        assert_eq!(files[0].name, "a.json");
        assert_eq!(
            read_input(&files[0], Symlinks::Follow, 1 << 20).unwrap(),
            b"secret key"
        );
    }

    #[cfg(target_os = "linux")]
    #[test]
    fn proc_files_and_devices_are_never_inputs() {
        let dir = tempfile::tempdir().unwrap();
        std::os::unix::fs::symlink("/proc/self/environ", dir.path().join("env")).unwrap();
        // Followed on request, the link leads to a file that lies about its size.
        let e = inputs_in_dir(dir.path(), Symlinks::Follow)
            .unwrap_err()
            .to_string();
        assert!(e.contains("env") && e.contains("size of 0"), "{e}");
        let e = single_input(Path::new("/proc/self/environ"), Symlinks::Refuse)
            .unwrap_err()
            .to_string();
        assert!(e.contains("/proc"), "{e}");
        let e = single_input(Path::new("/dev/zero"), Symlinks::Follow)
            .unwrap_err()
            .to_string();
        assert!(e.contains("a device"), "{e}");
        let fifo = dir.path().join("fifo");
        assert!(
            std::process::Command::new("mkfifo")
                .arg(&fifo)
                .status()
                .unwrap()
                .success()
        );
        std::fs::remove_file(dir.path().join("env")).unwrap();
        let e = inputs_in_dir(dir.path(), Symlinks::Follow)
            .unwrap_err()
            .to_string();
        assert!(e.contains("a fifo"), "{e}");
    }

    #[cfg(unix)]
    #[test]
    fn a_file_swapped_for_a_link_after_listing_is_not_read() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("a");
        std::fs::write(&path, "12345").unwrap();
        let f = single_input(&path, Symlinks::Refuse).unwrap();
        std::fs::remove_file(&path).unwrap();
        let secret = dir.path().join(".secret");
        std::fs::write(&secret, "54321").unwrap();
        std::os::unix::fs::symlink(&secret, &path).unwrap();
        assert!(read_input(&f, Symlinks::Refuse, 1 << 20).is_err());
        // A file that grew is refused too, and so is one over the limit.
        std::fs::remove_file(&path).unwrap();
        std::fs::write(&path, "123456").unwrap();
        let e = read_input(&f, Symlinks::Refuse, 1 << 20).unwrap_err().to_string();
        assert!(e.contains("5 bytes when listed but 6"), "{e}");
        let e = read_input(&f, Symlinks::Refuse, 3).unwrap_err().to_string();
        assert!(e.contains("more than"), "{e}");
    }
}
