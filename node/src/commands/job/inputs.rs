//! Which files are a job's task inputs: `--input FILE` is one task,
//! `--inputs DIR` one task per regular file directly in DIR.
//!
//! Only the file system is read here; `submit` checks the sizes and uploads
//! the files, and each task is named after its file, which is also what
//! `result` names the task's output after.

use std::path::{Path, PathBuf};

use anyhow::{Context, bail};

/// One task input file.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct InputFile {
    /// The task's name: the file name.
    pub name: String,
    /// Where it is.
    pub path: PathBuf,
}

/// The task inputs of `--inputs DIR`: regular files (or links to them)
/// directly in `dir`, not hidden, in file-name order.
pub fn inputs_in_dir(dir: &Path) -> anyhow::Result<Vec<InputFile>> {
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
        // Follows symbolic links: a link to a file is an input.
        let meta = std::fs::metadata(&path).with_context(|| format!("cannot read {}", path.display()))?;
        if meta.is_file() {
            files.push(InputFile { name, path });
        }
    }
    if files.is_empty() {
        bail!("no input files in {} (one task per regular file)", dir.display());
    }
    files.sort_by(|a, b| a.name.cmp(&b.name));
    Ok(files)
}

/// The single input of `--input FILE`.
pub fn single_input(path: &Path) -> anyhow::Result<InputFile> {
    let meta =
        std::fs::metadata(path).with_context(|| format!("cannot read the input {}", path.display()))?;
    if !meta.is_file() {
        bail!(
            "the input {} is not a file (use --inputs DIR for a directory of inputs)",
            path.display()
        );
    }
    let name = path
        .file_name()
        .and_then(|n| n.to_str())
        .with_context(|| format!("input file name {} is not valid UTF-8; rename it", path.display()))?;
    Ok(InputFile {
        name: name.to_owned(),
        path: path.to_owned(),
    })
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
        let names: Vec<String> = inputs_in_dir(dir.path())
            .unwrap()
            .into_iter()
            .map(|f| f.name)
            .collect();
        assert_eq!(names, ["b", "tile-02.json", "tile-10.json"]);
    }

    #[test]
    fn an_empty_inputs_dir_is_an_error() {
        let dir = tempfile::tempdir().unwrap();
        std::fs::create_dir(dir.path().join("sub")).unwrap();
        let e = inputs_in_dir(dir.path()).unwrap_err().to_string();
        assert!(e.contains("no input files"), "{e}");
    }

    #[test]
    fn a_single_input_must_be_a_file() {
        let dir = tempfile::tempdir().unwrap();
        assert!(single_input(dir.path()).is_err());
        let f = dir.path().join("in.bin");
        std::fs::write(&f, "x").unwrap();
        assert_eq!(single_input(&f).unwrap().name, "in.bin");
    }
}
