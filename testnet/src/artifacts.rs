//! What the testnet runs, found or built: the `agora` binary and the example
//! job modules.
//!
//! * The `agora` binary is looked for next to this program's own executable
//!   (the same cargo target dir and profile; `target/debug/deps/..` for test
//!   binaries). When it is missing, or older than the node's sources, it is
//!   built with `cargo build [--release] -p agora-node --bin agora` from the
//!   workspace root, in the profile this program was built in. `AGORA_BIN`
//!   names another binary and skips all of this.
//! * The example modules live in `examples/target/wasm32-wasip1/release/`.
//!   When one is missing or older than the examples' (or the SDK's) sources,
//!   `cargo build --release --target wasm32-wasip1` runs in `examples/`,
//!   after `rustup target add wasm32-wasip1` if that target is not installed.
//!
//! So a machine with only the Rust toolchain runs the testnet with one
//! `cargo run`. Build progress goes to stderr.

use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::SystemTime;

use anyhow::{Context, bail};

/// The wasm target the examples are built for.
pub const WASM_TARGET: &str = "wasm32-wasip1";

/// The workspace root this crate was built from.
pub fn workspace_root() -> PathBuf {
    let manifest = Path::new(env!("CARGO_MANIFEST_DIR"));
    manifest.parent().unwrap_or(manifest).to_path_buf()
}

/// Whether this program is an optimised build (and so wants a release
/// `agora`).
pub fn is_release() -> bool {
    !cfg!(debug_assertions)
}

fn cargo() -> Command {
    // `cargo run` and `cargo test` say which cargo they are.
    let cargo = std::env::var_os("CARGO").unwrap_or_else(|| "cargo".into());
    Command::new(cargo)
}

fn mtime(path: &Path) -> Option<SystemTime> {
    std::fs::metadata(path).and_then(|m| m.modified()).ok()
}

/// The newest modification time of the files under `paths` (recursively),
/// skipping `target` directories.
fn newest(paths: &[PathBuf]) -> Option<SystemTime> {
    let mut best: Option<SystemTime> = None;
    let mut stack: Vec<PathBuf> = paths.to_vec();
    while let Some(p) = stack.pop() {
        let Ok(meta) = std::fs::metadata(&p) else { continue };
        if meta.is_dir() {
            if p.file_name().is_some_and(|n| n == "target") {
                continue;
            }
            if let Ok(rd) = std::fs::read_dir(&p) {
                stack.extend(rd.filter_map(|e| e.ok()).map(|e| e.path()));
            }
        } else if let Ok(t) = meta.modified() {
            best = Some(best.map_or(t, |b| b.max(t)));
        }
    }
    best
}

/// The node's features the testnet needs: its chaos scenarios make
/// providers cheat or run slow (`--cheat-rate`, `--slowdown`).
pub const FEATURES: &str = "fault-injection";

/// Whether `bin` was built with [`FEATURES`] (a plain release build is not).
fn has_fault_injection(bin: &Path) -> bool {
    Command::new(bin)
        .args(["node", "--help"])
        .output()
        .is_ok_and(|o| String::from_utf8_lossy(&o.stdout).contains("--cheat-rate"))
}

/// The `agora` binary, built (with [`FEATURES`]) if missing, stale or
/// built without them.
pub fn agora_binary() -> anyhow::Result<PathBuf> {
    if let Some(p) = std::env::var_os("AGORA_BIN") {
        let p = PathBuf::from(p);
        if !p.is_file() {
            bail!("AGORA_BIN names {}, which is not a file", p.display());
        }
        return Ok(p);
    }
    let exe = std::env::current_exe().context("cannot find this program's own path")?;
    let mut dir = exe.parent().map(Path::to_path_buf).unwrap_or_default();
    if dir.file_name().is_some_and(|n| n == "deps" || n == "examples") {
        dir.pop();
    }
    let bin = dir.join(format!("agora{}", std::env::consts::EXE_SUFFIX));
    let root = workspace_root();
    let have_sources = root.join("node").join("Cargo.toml").is_file();
    let stale = match mtime(&bin) {
        None => true,
        Some(built) if have_sources => {
            newest(&[
                root.join("node/src"),
                root.join("node/Cargo.toml"),
                root.join("protocol/src"),
                root.join("protocol/Cargo.toml"),
                root.join("market/src"),
                root.join("market/Cargo.toml"),
                root.join("Cargo.lock"),
            ])
            .is_some_and(|src| src > built)
                || !has_fault_injection(&bin)
        }
        Some(_) => false,
    };
    if stale && have_sources {
        let profile = if is_release() { "release" } else { "dev" };
        let mut cmd = cargo();
        cmd.current_dir(&root).args([
            "build",
            "-p",
            "agora-node",
            "--bin",
            "agora",
            "--features",
            FEATURES,
        ]);
        if is_release() {
            cmd.arg("--release");
        }
        eprintln!(
            "building the agora binary ({profile} profile): cargo build{} -p agora-node --bin agora --features {FEATURES}",
            if is_release() { " --release" } else { "" }
        );
        let ok = cmd.status().map(|s| s.success()).unwrap_or(false);
        if !ok {
            if bin.is_file() {
                eprintln!(
                    "warning: building agora failed; using the existing, older binary {}",
                    bin.display()
                );
            } else {
                bail!(
                    "could not build the agora binary; run `cargo build{} -p agora-node --bin agora --features {FEATURES}` in {} and look at its errors",
                    if is_release() { " --release" } else { "" },
                    root.display()
                );
            }
        }
    }
    if !bin.is_file() {
        bail!(
            "no agora binary at {} (and no workspace at {} to build it from); build it with `cargo build -p agora-node --bin agora --features {FEATURES}` or set AGORA_BIN",
            bin.display(),
            root.display()
        );
    }
    Ok(bin)
}

/// The example modules the testnet uses, by file stem.
#[derive(Debug, Clone)]
pub struct Modules {
    dir: PathBuf,
}

impl Modules {
    /// The directory holding the `.wasm` files.
    pub fn dir(&self) -> &Path {
        &self.dir
    }

    /// The path of module `name` (without `.wasm`).
    pub fn path(&self, name: &str) -> PathBuf {
        self.dir.join(format!("{name}.wasm"))
    }

    /// The bytes of module `name`.
    pub fn read(&self, name: &str) -> anyhow::Result<Vec<u8>> {
        let p = self.path(name);
        std::fs::read(&p).with_context(|| format!("cannot read module {}", p.display()))
    }
}

/// Modules every testnet command may use.
pub const NEEDED_MODULES: &[&str] = &[
    "mandelbrot",
    "mandelbrot-reduce",
    "primes",
    "noop",
    "checkpointed-pi",
    "wordcount",
    "wordcount-top",
];

/// The example modules, built if missing or stale.
pub fn example_modules() -> anyhow::Result<Modules> {
    let root = workspace_root();
    let examples = root.join("examples");
    let dir = examples.join("target").join(WASM_TARGET).join("release");
    let modules = Modules { dir: dir.clone() };
    if !examples.join("Cargo.toml").is_file() {
        // An installed testnet without sources: use what is there.
        for m in NEEDED_MODULES {
            if !modules.path(m).is_file() {
                bail!(
                    "module {} is missing and there are no example sources at {} to build it from",
                    modules.path(m).display(),
                    examples.display()
                );
            }
        }
        return Ok(modules);
    }
    let oldest = NEEDED_MODULES
        .iter()
        .map(|m| mtime(&modules.path(m)))
        .try_fold(None::<SystemTime>, |acc, t| {
            t.map(|t| Some(acc.map_or(t, |a| a.min(t))))
        })
        .flatten();
    let sources = newest(&[
        examples.clone(),
        root.join("wasm-sdk/src"),
        root.join("wasm-sdk/Cargo.toml"),
    ]);
    let stale = match (oldest, sources) {
        (None, _) => true,
        (Some(built), Some(src)) => src > built,
        (Some(_), None) => false,
    };
    if !stale {
        return Ok(modules);
    }
    ensure_wasm_target()?;
    eprintln!(
        "building the example modules: cargo build --release --target {WASM_TARGET} (in {})",
        examples.display()
    );
    let ok = cargo()
        .current_dir(&examples)
        .args(["build", "--release", "--target", WASM_TARGET, "--target-dir"])
        .arg(examples.join("target"))
        .status()
        .map(|s| s.success())
        .unwrap_or(false);
    let missing: Vec<&str> = NEEDED_MODULES
        .iter()
        .copied()
        .filter(|m| !modules.path(m).is_file())
        .collect();
    if !ok {
        if missing.is_empty() {
            eprintln!(
                "warning: rebuilding the examples failed; using the existing modules in {}",
                dir.display()
            );
        } else {
            bail!(
                "could not build the example modules; run `cargo build --release --target {WASM_TARGET}` in {} and look at its errors",
                examples.display()
            );
        }
    } else if !missing.is_empty() {
        bail!(
            "the examples built, but {} is missing from {}",
            missing.join(", "),
            dir.display()
        );
    }
    Ok(modules)
}

/// Makes sure the `wasm32-wasip1` target is installed, installing it with
/// rustup if needed.
fn ensure_wasm_target() -> anyhow::Result<()> {
    let listed = Command::new("rustup")
        .args(["target", "list", "--installed"])
        .output();
    let Ok(out) = listed else {
        // No rustup: the toolchain may still have the target; cargo will say.
        return Ok(());
    };
    if String::from_utf8_lossy(&out.stdout)
        .lines()
        .any(|l| l.trim() == WASM_TARGET)
    {
        return Ok(());
    }
    eprintln!("installing the {WASM_TARGET} target: rustup target add {WASM_TARGET}");
    let ok = Command::new("rustup")
        .args(["target", "add", WASM_TARGET])
        .status()
        .map(|s| s.success())
        .unwrap_or(false);
    if !ok {
        bail!(
            "the {WASM_TARGET} target is not installed and `rustup target add {WASM_TARGET}` failed; run it yourself (it needs network access), then run this command again"
        );
    }
    Ok(())
}
