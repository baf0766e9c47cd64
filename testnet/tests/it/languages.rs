//! Jobs written in other languages than Rust run like any other: the C
//! example (`examples/c/wc.c`, built with clang for `wasm32-wasi`) and the
//! Go example (`examples/go/wordfreq`, built with Go for `wasip1`) on a
//! testnet, each output equal to what this test computes natively.
//!
//! Each skips, saying which Debian packages it needs, where its compiler is
//! absent; `.ci/run` installs them.

use std::collections::HashMap;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::Duration;

use agora_testnet::artifacts;
use agora_testnet::job::{self, Params};
use agora_testnet::process::{NodeSpec, Testnet};
use agora_testnet::workload::TaskInput;

const C_PACKAGES: &str = "clang, lld, wasi-libc and libclang-rt-14-dev-wasm32";
const GO_PACKAGES: &str = "Go 1.21 or later (Debian bookworm: golang-1.22-go from bookworm-backports)";

fn examples() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("../examples")
}

/// Builds the C example, or says why it cannot be built here.
fn build_c(out: &Path) -> Result<Vec<u8>, String> {
    let wasm = out.join("wc.wasm");
    let built = Command::new("clang")
        .args(["--target=wasm32-wasi", "-O2", "-Wall", "-Werror", "-o"])
        .arg(&wasm)
        .arg(examples().join("c/wc.c"))
        .output()
        .map_err(|e| format!("no clang ({e}): needs {C_PACKAGES}"))?;
    if !built.status.success() {
        let err = String::from_utf8_lossy(&built.stderr).into_owned();
        // A missing C library or runtime is this machine's lack; anything
        // else is the example's fault.
        if err.contains("cannot open") || err.contains("cannot find") || err.contains("not found") {
            return Err(format!(
                "clang cannot build for wasm32-wasi here ({}): needs {C_PACKAGES}",
                err.trim()
            ));
        }
        panic!("the C example does not build: {err}");
    }
    Ok(std::fs::read(wasm).expect("the built module"))
}

/// A `go` of version 1.21 or later: on the PATH or where Debian puts its
/// versioned packages.
fn go_tool() -> Option<PathBuf> {
    let mut candidates = vec![PathBuf::from("go")];
    if let Ok(dirs) = std::fs::read_dir("/usr/lib") {
        let mut v: Vec<PathBuf> = dirs
            .flatten()
            .map(|d| d.path())
            .filter(|p| {
                p.file_name()
                    .is_some_and(|n| n.to_string_lossy().starts_with("go-1."))
            })
            .map(|p| p.join("bin/go"))
            .collect();
        v.sort();
        v.reverse();
        candidates.extend(v);
    }
    candidates.into_iter().find(|go| {
        Command::new(go).arg("version").output().is_ok_and(|o| {
            let v = String::from_utf8_lossy(&o.stdout).into_owned();
            // "go version go1.22.2 linux/amd64"
            v.split_whitespace()
                .nth(2)
                .and_then(|s| s.strip_prefix("go1."))
                .and_then(|s| s.split('.').next())
                .and_then(|m| m.parse::<u32>().ok())
                .is_some_and(|minor| minor >= 21)
        })
    })
}

/// Builds the Go example, or says why it cannot be built here.
fn build_go(out: &Path) -> Result<Vec<u8>, String> {
    let go = go_tool().ok_or_else(|| format!("no go of version 1.21 or later: needs {GO_PACKAGES}"))?;
    let wasm = out.join("wordfreq.wasm");
    let built = Command::new(&go)
        .args(["build", "-o"])
        .arg(&wasm)
        .arg(".")
        .current_dir(examples().join("go/wordfreq"))
        .env("GOOS", "wasip1")
        .env("GOARCH", "wasm")
        .env("GOCACHE", out.join("gocache"))
        .env("GOPATH", out.join("gopath"))
        .env("GOTOOLCHAIN", "local")
        .output()
        .map_err(|e| format!("cannot run {}: {e}", go.display()))?;
    assert!(
        built.status.success(),
        "the Go example does not build: {}",
        String::from_utf8_lossy(&built.stderr)
    );
    Ok(std::fs::read(wasm).expect("the built module"))
}

/// Deterministic text: `words` words of a small vocabulary, some
/// capitalised, with punctuation and line breaks.
fn text(seed: u64, words: usize) -> Vec<u8> {
    const VOCAB: [&str; 12] = [
        "agora", "compute", "the", "market", "Task", "node", "of", "wasm", "peer", "credit", "the", "a",
    ];
    let mut x = seed.wrapping_mul(6_364_136_223_846_793_005).wrapping_add(1);
    let mut out = String::new();
    for i in 0..words {
        x = x
            .wrapping_mul(6_364_136_223_846_793_005)
            .wrapping_add(1_442_695_040_888_963_407);
        out.push_str(VOCAB[(x >> 33) as usize % VOCAB.len()]);
        out.push_str(match (x >> 20) % 9 {
            0 => ". ",
            1 => ",\t",
            2 => "\n",
            _ => " ",
        });
        if i % 17 == 16 {
            out.push_str("  \r\n");
        }
    }
    out.into_bytes()
}

fn crc32(data: &[u8]) -> u32 {
    let mut crc = 0xFFFF_FFFFu32;
    for &b in data {
        crc ^= u32::from(b);
        for _ in 0..8 {
            crc = if crc & 1 != 0 {
                0xEDB8_8320 ^ (crc >> 1)
            } else {
                crc >> 1
            };
        }
    }
    crc ^ 0xFFFF_FFFF
}

/// What `wc.c` prints for `data`.
fn wc(data: &[u8]) -> Vec<u8> {
    let lines = data.iter().filter(|&&b| b == b'\n').count();
    let words = data
        .split(|b| b" \t\n\x0b\x0c\r".contains(b))
        .filter(|w| !w.is_empty())
        .count();
    format!("{lines} {words} {} {:08x}\n", data.len(), crc32(data)).into_bytes()
}

/// What `wordfreq` prints for `data` with `top` lines.
fn wordfreq(data: &[u8], top: usize) -> Vec<u8> {
    let mut counts: HashMap<Vec<u8>, usize> = HashMap::new();
    for w in data
        .split(|b| !b.is_ascii_alphanumeric())
        .filter(|w| !w.is_empty())
    {
        *counts.entry(w.to_ascii_lowercase()).or_default() += 1;
    }
    let mut v: Vec<(Vec<u8>, usize)> = counts.into_iter().collect();
    v.sort_by(|a, b| b.1.cmp(&a.1).then(a.0.cmp(&b.0)));
    v.truncate(top);
    let mut out = Vec::new();
    for (w, n) in v {
        out.extend_from_slice(format!("{n} ").as_bytes());
        out.extend_from_slice(&w);
        out.push(b'\n');
    }
    out
}

/// A job to run: what it is, its module, its parameters and the outputs
/// expected.
type LanguageJob = (&'static str, Vec<u8>, Params, Vec<Vec<u8>>);

#[test]
fn the_c_and_go_examples_run_on_a_testnet_and_match_native_runs() {
    let _turn = crate::serial();
    let dir = tempfile::tempdir().unwrap();
    let c = build_c(dir.path());
    let go = build_go(dir.path());
    if let Err(why) = &c {
        eprintln!("skipping the C example: {why}");
    }
    if let Err(why) = &go {
        eprintln!("skipping the Go example: {why}");
    }
    if c.is_err() && go.is_err() {
        return;
    }
    let inputs: Vec<TaskInput> = (0..6)
        .map(|i| TaskInput {
            name: format!("shard-{i}.txt"),
            bytes: text(i, 500 + 300 * i as usize),
            estimate: None,
        })
        .collect();
    let rt = tokio::runtime::Runtime::new().unwrap();
    rt.block_on(async {
        let agora = artifacts::agora_binary().unwrap();
        let net_dir = dir.path().join("net");
        std::fs::create_dir_all(&net_dir).unwrap();
        let mut net = Testnet::new(agora, &net_dir).unwrap();
        let mut specs = vec![NodeSpec::requester("local").with_slots(1)];
        specs.extend((0..2).map(|_| NodeSpec::provider("local").with_slots(1)));
        net.start_all(specs).await.unwrap();
        net.wait_converged(Duration::from_secs(60)).await.unwrap();
        let client = net.node(0).client.clone();
        let jobs: Vec<LanguageJob> = [
            c.ok().map(|m| {
                let expected = inputs.iter().map(|i| wc(&i.bytes)).collect();
                ("C wc", m, Params::default(), expected)
            }),
            go.ok().map(|m| {
                let params = Params {
                    args: vec!["5".into()],
                    ..Params::default()
                };
                let expected = inputs.iter().map(|i| wordfreq(&i.bytes, 5)).collect();
                ("Go wordfreq", m, params, expected)
            }),
        ]
        .into_iter()
        .flatten()
        .collect();
        for (what, module, params, expected) in jobs {
            let (id, status) = job::run(&client, &module, None, &inputs, &params)
                .await
                .unwrap_or_else(|e| panic!("{what}: {e:#}"));
            let got = job::outputs(&client, &id).await.unwrap();
            let bad = job::compare(&got, &expected);
            assert!(bad.is_empty(), "{what}: {bad:?}");
            let providers: std::collections::HashSet<_> =
                status.tasks.iter().flat_map(|t| t.providers.clone()).collect();
            eprintln!(
                "{what}: {} tasks verified on {} providers, module {} KiB",
                status.tasks.len(),
                providers.len(),
                module.len() / 1024
            );
        }
        net.stop();
    });
}
