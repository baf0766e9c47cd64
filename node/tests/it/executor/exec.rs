//! `agora exec` and `agora verify` as processes: output, failures and exit
//! codes, and receipts, honest or not.

use std::path::{Path, PathBuf};
use std::process::{Command, Output};

use agora_node::executor::{self, Module};
use agora_protocol::ContentId;
use agora_protocol::market::{Assignment, Limits};
use agora_protocol::units::Fuel;

use super::{ARGS, CAT, CLOCKS_AND_RANDOM, GROW_BOMB, HELLO, SPIN, executor, limits, task, wasm};

struct Cli {
    dir: tempfile::TempDir,
}

impl Cli {
    fn new() -> Cli {
        Cli {
            dir: tempfile::tempdir().unwrap(),
        }
    }

    fn file(&self, name: &str, contents: impl AsRef<[u8]>) -> PathBuf {
        let p = self.dir.path().join(name);
        std::fs::write(&p, contents).unwrap();
        p
    }

    fn agora(&self, args: &[&str]) -> Output {
        Command::new(env!("CARGO_BIN_EXE_agora"))
            .args(args)
            .arg("--data-dir")
            .arg(self.dir.path().join("data"))
            .env_remove("RUST_LOG")
            .output()
            .unwrap()
    }
}

fn path(p: &Path) -> &str {
    p.to_str().unwrap()
}

fn stderr(o: &Output) -> String {
    String::from_utf8_lossy(&o.stderr).into_owned()
}

#[test]
fn exec_copies_stdout_exactly_and_accepts_wat_and_binaries() {
    let cli = Cli::new();
    let wat = cli.file("cat.wat", CAT);
    let bin = cli.file("cat.wasm", wasm(CAT));
    let input: Vec<u8> = (0..=255u8).cycle().take(10_000).collect();
    let input_file = cli.file("input.bin", &input);
    for module in [&wat, &bin] {
        let o = cli.agora(&["exec", path(module), "--input", path(&input_file)]);
        assert!(o.status.success(), "{}", stderr(&o));
        assert_eq!(o.stdout, input);
    }
    let args = cli.file("args.wat", ARGS);
    let o = cli.agora(&["exec", path(&args), "--arg", "-x", "--arg", "two words"]);
    assert_eq!(o.stdout, b"task\0-x\0two words\0");
}

#[test]
fn exec_reports_failures_on_stderr_with_a_nonzero_exit() {
    let cli = Cli::new();
    let spin = cli.file("spin.wat", SPIN);
    let o = cli.agora(&["exec", path(&spin), "--fuel", "100000000"]);
    assert_eq!(o.status.code(), Some(1));
    assert!(
        stderr(&o).contains("error: out of fuel after 100000000 units"),
        "{}",
        stderr(&o)
    );

    let o = cli.agora(&[
        "exec",
        path(&spin),
        "--fuel",
        "18446744073709551615",
        "--timeout",
        "1s",
    ]);
    assert_eq!(o.status.code(), Some(1));
    assert!(
        stderr(&o).contains("error: deadline of 1s exceeded"),
        "{}",
        stderr(&o)
    );

    let bomb = cli.file("bomb.wat", GROW_BOMB);
    let o = cli.agora(&["exec", path(&bomb), "--memory", "64MiB"]);
    assert_eq!(o.status.code(), Some(1));
    assert!(
        stderr(&o).contains("error: memory limit of 64 MiB reached"),
        "{}",
        stderr(&o)
    );

    let rec = cli.file(
        "rec.wat",
        r#"(module (func $f (call $f)) (func (export "_start") (call $f)))"#,
    );
    let o = cli.agora(&["exec", path(&rec)]);
    assert!(stderr(&o).contains("error: stack overflow"), "{}", stderr(&o));

    let exit = cli.file(
        "exit.wat",
        r#"(module (import "wasi_snapshot_preview1" "proc_exit" (func $exit (param i32)))
           (func (export "_start") (call $exit (i32.const 3))))"#,
    );
    let o = cli.agora(&["exec", path(&exit)]);
    assert_eq!(o.status.code(), Some(3));
    assert!(stderr(&o).contains("error: exit code 3"), "{}", stderr(&o));
    // With --json too, the exit status follows the outcome.
    let o = cli.agora(&["exec", path(&exit), "--json"]);
    assert_eq!(o.status.code(), Some(3));
    let v: serde_json::Value = serde_json::from_slice(&o.stdout).unwrap();
    assert_eq!(v["error"], "exit code 3", "{v}");
    let o = cli.agora(&["exec", path(&rec), "--json"]);
    assert_eq!(o.status.code(), Some(1), "a trap is a failure");

    let forbidden = cli.file(
        "forbidden.wat",
        r#"(module (import "env" "f" (func)) (func (export "_start")))"#,
    );
    let o = cli.agora(&["exec", path(&forbidden)]);
    assert_eq!(o.status.code(), Some(1));
    assert!(
        stderr(&o).contains("error: forbidden import `env::f`"),
        "{}",
        stderr(&o)
    );
}

#[test]
fn exec_twice_prints_the_same_bytes_and_json_summarises() {
    let cli = Cli::new();
    let module = cli.file("clocks.wat", CLOCKS_AND_RANDOM);
    let a = cli.agora(&["exec", path(&module), "--seed", "9"]);
    let b = cli.agora(&["exec", path(&module), "--seed", "9"]);
    assert!(a.status.success(), "{}", stderr(&a));
    assert_eq!(a.stdout.len(), 68);
    assert_eq!(a.stdout, b.stdout);

    let o = cli.agora(&["exec", path(&module), "--seed", "9", "--json"]);
    assert!(o.status.success());
    let v: serde_json::Value = serde_json::from_slice(&o.stdout).unwrap();
    assert_eq!(v["status"]["kind"], "success");
    assert_eq!(v["output_size"], 68);
    assert_eq!(v["output_id"], ContentId::of(&a.stdout).to_string());
    assert!(v["fuel_used"].as_u64().unwrap() > 0);
}

#[test]
fn verify_accepts_an_honest_receipt_and_rejects_tampering() {
    let cli = Cli::new();
    let module = cli.file("cat.wat", CAT);
    let input = cli.file("input.txt", b"some input\n");
    let other = cli.file("other.txt", b"other input\n");
    let receipt = cli.dir.path().join("receipt.bin");
    let o = cli.agora(&[
        "exec",
        path(&module),
        "--input",
        path(&input),
        "--arg",
        "x",
        "--receipt",
        path(&receipt),
    ]);
    assert!(o.status.success(), "{}", stderr(&o));
    assert_eq!(o.stdout, b"some input\n");

    let verify = |receipt: &Path, input: &Path, extra: &[&str]| {
        let mut args = vec![
            "verify",
            path(receipt),
            "--module",
            path(&module),
            "--input",
            path(input),
        ];
        args.extend_from_slice(extra);
        cli.agora(&args)
    };
    let o = verify(&receipt, &input, &["--arg", "x"]);
    assert!(
        o.status.success(),
        "{}{}",
        String::from_utf8_lossy(&o.stdout),
        stderr(&o)
    );
    assert!(String::from_utf8_lossy(&o.stdout).starts_with("receipt holds"));

    let o = verify(&receipt, &input, &["--arg", "x", "--json"]);
    let v: serde_json::Value = serde_json::from_slice(&o.stdout).unwrap();
    assert_eq!(v["holds"], true);

    // Other input, other arguments: the files are not what the receipt names.
    let o = verify(&receipt, &other, &["--arg", "x"]);
    assert_eq!(o.status.code(), Some(1));
    assert!(String::from_utf8_lossy(&o.stdout).contains("input:"));
    let o = verify(&receipt, &input, &[]);
    assert_eq!(o.status.code(), Some(1));
    assert!(String::from_utf8_lossy(&o.stdout).contains("args:"));

    // A file that is not a receipt is called that, not a version error.
    let o = verify(&input, &input, &[]);
    assert_eq!(o.status.code(), Some(1));
    assert!(stderr(&o).contains("is not a receipt"), "{}", stderr(&o));

    // A flipped bit anywhere in the signed bytes breaks the signature.
    let mut bytes = std::fs::read(&receipt).unwrap();
    let i = bytes.len() - 80;
    bytes[i] ^= 1;
    let tampered = cli.file("tampered.bin", bytes);
    let o = verify(&tampered, &input, &["--arg", "x"]);
    assert_eq!(o.status.code(), Some(1));
    assert!(
        String::from_utf8_lossy(&o.stdout).contains("signature"),
        "{}",
        String::from_utf8_lossy(&o.stdout)
    );
}

#[test]
fn verify_detects_a_receipt_whose_outcome_was_not_reproduced() {
    // An honest receipt for another run of the same files, signed by a
    // liar: same inputs, claims other fuel. Made with the library API.
    let cli = Cli::new();
    let bytes = wasm(HELLO);
    let module = cli.file("hello.wasm", &bytes);
    let input = cli.file("empty", b"");
    let e = executor();
    let m: std::sync::Arc<Module> = e.load(&bytes).unwrap();
    let limits = Limits {
        fuel: Fuel(10_000_000_000),
        ..limits()
    };
    let mut outcome = e.run(&m, &task(&[], &[], limits));
    outcome.fuel_used = Fuel(outcome.fuel_used.0 + 1);
    let kp = agora_protocol::Keypair::from_secret([5; 32]);
    let assignment = Assignment {
        task: agora_protocol::TaskId::new(agora_protocol::JobId([1; 16]), 0),
        attempt: 0,
        module: m.id(),
        input: ContentId::of(b""),
        args: Vec::new(),
        limits,
        seed: 0,
        resume: None,
    };
    let receipt = executor::receipt(
        &kp,
        &assignment,
        agora_protocol::MessageId([0; 32]),
        kp.node_id(),
        &outcome,
    );
    use agora_protocol::Encode;
    let file = cli.file("lie.bin", receipt.envelope().to_bytes());
    let o = cli.agora(&[
        "verify",
        path(&file),
        "--module",
        path(&module),
        "--input",
        path(&input),
    ]);
    assert_eq!(o.status.code(), Some(1));
    let out = String::from_utf8_lossy(&o.stdout);
    assert!(
        out.starts_with("receipt does not hold") && out.contains("fuel_used:"),
        "{out}"
    );
}
