//! `agora build`: builds a Rust job crate, or a workspace of them, for
//! `wasm32-wasip1` with cargo and prints the paths of the modules it made.
//!
//! It checks first that the toolchain has the `wasm32-wasip1` standard
//! library (the one thing a fresh Rust install lacks), so that a newcomer
//! gets the command to fix it instead of a page of `can't find crate for
//! std`. Cargo's own progress and errors go to stderr as usual; the modules
//! are read from cargo's JSON messages, not guessed from the target dir.

use std::collections::BTreeSet;
use std::ffi::OsString;
use std::io::{BufRead, BufReader, IsTerminal, Write};
use std::path::{Path, PathBuf};
use std::process::{Command, ExitCode, Stdio};

use anyhow::{Context, bail};

/// The target jobs are built for.
pub const TARGET: &str = "wasm32-wasip1";

/// What to say when the target is missing, with the command that fixes it.
pub const MISSING_TARGET: &str =
    "the wasm32-wasip1 target is not installed; install it with: rustup target add wasm32-wasip1";

/// Build a Rust job (or a workspace of jobs) for wasm32-wasip1.
#[derive(Debug, clap::Args)]
pub struct BuildCommand {
    /// The job crate or workspace: a directory holding Cargo.toml, or the
    /// Cargo.toml itself.
    #[arg(default_value = ".")]
    pub path: PathBuf,
    /// Build optimised modules (the default).
    #[arg(long, conflicts_with = "debug")]
    pub release: bool,
    /// Build unoptimised modules: quicker to build, many times slower to run.
    #[arg(long)]
    pub debug: bool,
    /// Build only this package of a workspace.
    #[arg(short, long, value_name = "NAME")]
    pub package: Option<String>,
    /// Print one JSON object: `{"profile", "modules": [{"name", "path", "bytes"}]}`.
    #[arg(long)]
    pub json: bool,
}

impl BuildCommand {
    /// Runs the command.
    pub fn execute(self) -> anyhow::Result<ExitCode> {
        let manifest = manifest_path(&self.path)?;
        let dir = manifest.parent().unwrap_or(Path::new(".")).to_path_buf();

        let sysroot = sysroot(&dir)?;
        if !target_installed(&sysroot) {
            bail!(MISSING_TARGET);
        }

        let profile = if self.debug { "debug" } else { "release" };
        let mut cargo = Command::new(std::env::var_os("CARGO").unwrap_or_else(|| OsString::from("cargo")));
        cargo
            .current_dir(&dir)
            .args(["build", "--target", TARGET, "--message-format", "json"])
            .arg("--manifest-path")
            .arg(&manifest);
        if !self.debug {
            cargo.arg("--release");
        }
        if let Some(p) = &self.package {
            cargo.args(["--package", p]);
        }
        if std::io::stderr().is_terminal() {
            cargo.args(["--color", "always"]);
        }
        cargo.stdout(Stdio::piped()).stderr(Stdio::inherit());

        let mut child = cargo.spawn().map_err(|e| match e.kind() {
            std::io::ErrorKind::NotFound => {
                anyhow::anyhow!("cargo not found; install the Rust toolchain from https://rustup.rs")
            }
            _ => anyhow::Error::new(e).context("could not run cargo"),
        })?;
        let stdout = child.stdout.take().context("cargo's stdout")?;

        let mut modules = BTreeSet::new();
        let mut target_missing = false;
        let mut stderr = std::io::stderr();
        for line in BufReader::new(stdout).lines() {
            let line = line.context("reading cargo's output")?;
            match parse_message(&line) {
                Message::Module(path) => {
                    modules.insert(path);
                }
                Message::Diagnostic(rendered) => {
                    target_missing |= says_target_missing(&rendered);
                    let _ = stderr.write_all(rendered.as_bytes());
                }
                Message::Other => {}
            }
        }
        let status = child.wait().context("waiting for cargo")?;

        if target_missing {
            bail!(MISSING_TARGET);
        }
        if !status.success() {
            bail!("cargo build failed (see its errors above)");
        }
        if modules.is_empty() {
            bail!(
                "cargo built no .wasm module from {}: a job is a binary crate (with a src/main.rs)",
                manifest.display()
            );
        }

        let mut out = std::io::stdout().lock();
        if self.json {
            let modules: Vec<_> = modules
                .iter()
                .map(|path| {
                    serde_json::json!({
                        "name": path.file_stem().map(|s| s.to_string_lossy()),
                        "path": path,
                        "bytes": std::fs::metadata(path).map(|m| m.len()).ok(),
                    })
                })
                .collect();
            let report = serde_json::json!({ "profile": profile, "modules": modules });
            writeln!(out, "{report}")?;
        } else {
            for path in &modules {
                writeln!(out, "{}", path.display())?;
            }
        }
        Ok(ExitCode::SUCCESS)
    }
}

/// The manifest at `path`: the file itself, or the Cargo.toml in a directory.
fn manifest_path(path: &Path) -> anyhow::Result<PathBuf> {
    let manifest = if path.is_dir() {
        path.join("Cargo.toml")
    } else {
        path.to_path_buf()
    };
    if !manifest.is_file() {
        bail!(
            "no Cargo.toml at {}; give the directory of a Rust job crate (see examples/README.md)",
            path.display()
        );
    }
    manifest
        .canonicalize()
        .with_context(|| format!("resolving {}", manifest.display()))
}

/// The sysroot of the toolchain that would build in `dir` (rustup picks the
/// toolchain per directory, so ask there).
fn sysroot(dir: &Path) -> anyhow::Result<PathBuf> {
    let rustc = std::env::var_os("RUSTC").unwrap_or_else(|| OsString::from("rustc"));
    let out = Command::new(&rustc)
        .current_dir(dir)
        .args(["--print", "sysroot"])
        .stderr(Stdio::inherit())
        .output()
        .map_err(|e| match e.kind() {
            std::io::ErrorKind::NotFound => {
                anyhow::anyhow!("rustc not found; install the Rust toolchain from https://rustup.rs")
            }
            _ => anyhow::Error::new(e).context("could not run rustc"),
        })?;
    if !out.status.success() {
        bail!("`rustc --print sysroot` failed; check your Rust toolchain (rustup show)");
    }
    Ok(PathBuf::from(String::from_utf8_lossy(&out.stdout).trim()))
}

/// Whether the toolchain at `sysroot` has the standard library for [`TARGET`]
/// (what `rustup target add` installs, and where any other install puts it).
fn target_installed(sysroot: &Path) -> bool {
    sysroot.join("lib/rustlib").join(TARGET).join("lib").is_dir()
}

/// What one line of cargo's `--message-format json` output means to us.
#[derive(Debug, PartialEq, Eq)]
enum Message {
    /// A built `.wasm` executable.
    Module(PathBuf),
    /// A compiler diagnostic, rendered for a human.
    Diagnostic(String),
    /// Anything else (other artifacts, build-script output, the final line).
    Other,
}

fn parse_message(line: &str) -> Message {
    let Ok(v) = serde_json::from_str::<serde_json::Value>(line) else {
        return Message::Other;
    };
    match v["reason"].as_str() {
        Some("compiler-artifact") => match v["executable"].as_str() {
            Some(exe) if exe.ends_with(".wasm") => Message::Module(PathBuf::from(exe)),
            _ => Message::Other,
        },
        Some("compiler-message") => match v["message"]["rendered"].as_str() {
            Some(r) => Message::Diagnostic(r.to_owned()),
            None => Message::Other,
        },
        _ => Message::Other,
    }
}

/// Whether a compiler diagnostic is the one a missing target's std gives.
fn says_target_missing(rendered: &str) -> bool {
    rendered.contains("target may not be installed")
        || (rendered.contains("can't find crate for `std`") && rendered.contains(TARGET))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_wasm_artifacts_and_ignores_others() {
        let wasm = r#"{"reason":"compiler-artifact","package_id":"path+file:///x#noop@0.1.0","target":{"kind":["bin"],"name":"noop"},"filenames":["/x/target/wasm32-wasip1/release/noop.wasm"],"executable":"/x/target/wasm32-wasip1/release/noop.wasm","fresh":true}"#;
        assert_eq!(
            parse_message(wasm),
            Message::Module(PathBuf::from("/x/target/wasm32-wasip1/release/noop.wasm"))
        );
        let lib = r#"{"reason":"compiler-artifact","filenames":["/x/libserde.rlib"],"executable":null}"#;
        assert_eq!(parse_message(lib), Message::Other);
        assert_eq!(
            parse_message(r#"{"reason":"build-finished","success":true}"#),
            Message::Other
        );
        assert_eq!(parse_message("not json"), Message::Other);
    }

    #[test]
    fn recognises_the_missing_target_diagnostic() {
        let line = r#"{"reason":"compiler-message","message":{"rendered":"error[E0463]: can't find crate for `std`\n  |\n  = note: the `wasm32-wasip1` target may not be installed\n"}}"#;
        let Message::Diagnostic(rendered) = parse_message(line) else {
            panic!("not a diagnostic");
        };
        assert!(says_target_missing(&rendered));
        assert!(!says_target_missing(
            "error[E0425]: cannot find value `x` in this scope"
        ));
    }

    #[test]
    fn target_is_installed_when_its_std_is_in_the_sysroot() {
        let root = std::env::temp_dir().join(format!("agora-build-test-{}", std::process::id()));
        assert!(!target_installed(&root));
        let lib = root.join("lib/rustlib/wasm32-wasip1/lib");
        std::fs::create_dir_all(&lib).expect("create fake sysroot");
        assert!(target_installed(&root));
        std::fs::remove_dir_all(&root).expect("remove fake sysroot");
    }

    #[test]
    fn a_path_without_a_manifest_is_refused_with_advice() {
        let err = manifest_path(Path::new("/nonexistent/job"))
            .expect_err("no manifest")
            .to_string();
        assert!(err.starts_with("no Cargo.toml at /nonexistent/job"), "{err}");
    }

    #[test]
    fn the_missing_target_message_says_how_to_install_it() {
        assert_eq!(
            format!("error: {MISSING_TARGET}"),
            "error: the wasm32-wasip1 target is not installed; install it with: rustup target add wasm32-wasip1"
        );
    }
}
