//! The CLI commands that talk to a running node (`status`, `peers`,
//! `domains`, `jobs`, `ledger`, `job …`), against one real node process on
//! loopback. One node cannot run a job (it never places work on itself), so
//! jobs are only planned, submitted, inspected and cancelled here.

use std::fs::File;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Output, Stdio};
use std::thread;
use std::time::{Duration, Instant};

use serde_json::Value;
use tempfile::TempDir;

use crate::executor::CAT;

const AGORA: &str = env!("CARGO_BIN_EXE_agora");

/// A node process, killed when dropped (also when a test panics).
struct NodeProcess {
    child: Child,
    dir: TempDir,
    info: Value,
    extra: Vec<String>,
}

/// `agora node` on `dir` with the test's flags and `extra`, logging to `log`.
fn spawn_node(dir: &Path, extra: &[String], log: File) -> Child {
    Command::new(AGORA)
        .args(["node", "--data-dir"])
        .arg(dir)
        .args([
            "--listen",
            "/ip4/127.0.0.1/tcp/0",
            "--idle-policy",
            "off",
            "--slots",
            "1",
        ])
        .args(extra)
        .env_remove("AGORA_DATA_DIR")
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(log)
        .spawn()
        .unwrap()
}

impl NodeProcess {
    /// Starts a node in a fresh data dir with `extra` flags and waits until
    /// it wrote node.json.
    fn start_with(extra: &[&str]) -> NodeProcess {
        let dir = tempfile::tempdir().unwrap();
        let log = File::create(dir.path().join("node.log")).unwrap();
        let extra: Vec<String> = extra.iter().map(|s| (*s).to_owned()).collect();
        let child = spawn_node(dir.path(), &extra, log);
        let mut node = NodeProcess {
            child,
            dir,
            info: Value::Null,
            extra,
        };
        node.info = node.wait_ready();
        node
    }

    fn wait_ready(&mut self) -> Value {
        let path = self.dir.path().join("node.json");
        let start = Instant::now();
        loop {
            // Parsing, not mere existence: the file may be half-written.
            if let Some(info) = std::fs::read(&path)
                .ok()
                .and_then(|b| serde_json::from_slice::<Value>(&b).ok())
            {
                return info;
            }
            if let Some(status) = self.child.try_wait().unwrap() {
                panic!("the node exited ({status}) before it was ready:\n{}", self.log());
            }
            assert!(
                start.elapsed() < Duration::from_secs(60),
                "the node wrote no node.json within 60 s:\n{}",
                self.log()
            );
            thread::sleep(Duration::from_millis(50));
        }
    }

    /// Kills the node (its pause, like everything acknowledged, is on
    /// disk) and starts it again on the same data dir.
    fn restart(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
        let _ = std::fs::remove_file(self.dir.path().join("node.json"));
        let log = std::fs::OpenOptions::new()
            .append(true)
            .open(self.dir.path().join("node.log"))
            .unwrap();
        self.child = spawn_node(self.dir.path(), &self.extra, log);
        self.info = self.wait_ready();
    }

    fn data_dir(&self) -> &Path {
        self.dir.path()
    }

    fn log(&self) -> String {
        std::fs::read_to_string(self.dir.path().join("node.log")).unwrap_or_default()
    }

    /// Runs `agora ARGS… --data-dir DIR`.
    fn agora(&self, args: &[&str]) -> Output {
        let mut all: Vec<&str> = args.to_vec();
        let dir = self.data_dir().to_str().unwrap();
        all.extend(["--data-dir", dir]);
        agora(&all)
    }

    /// Runs a command that must succeed and print JSON.
    fn json(&self, args: &[&str]) -> Value {
        let out = self.agora(args);
        let stdout = String::from_utf8_lossy(&out.stdout);
        assert!(
            out.status.success(),
            "agora {args:?} failed: {}\nstdout: {stdout}\nstderr: {}",
            out.status,
            String::from_utf8_lossy(&out.stderr)
        );
        serde_json::from_str(&stdout)
            .unwrap_or_else(|e| panic!("agora {args:?} printed no JSON ({e}): {stdout}"))
    }

    /// Runs a command that must succeed; its stdout.
    fn text(&self, args: &[&str]) -> String {
        let out = self.agora(args);
        assert!(
            out.status.success(),
            "agora {args:?} failed: {}\nstderr: {}",
            out.status,
            String::from_utf8_lossy(&out.stderr)
        );
        String::from_utf8(out.stdout).unwrap()
    }
}

impl Drop for NodeProcess {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

fn agora(args: &[&str]) -> Output {
    Command::new(AGORA)
        .args(args)
        .env_remove("AGORA_DATA_DIR")
        .stdin(Stdio::null())
        .output()
        .unwrap()
}

fn stderr(out: &Output) -> String {
    String::from_utf8_lossy(&out.stderr).into_owned()
}

fn write_inputs(dir: &Path, names: &[&str]) -> PathBuf {
    let inputs = dir.join("inputs");
    std::fs::create_dir_all(&inputs).unwrap();
    for n in names {
        std::fs::write(inputs.join(n), format!("input {n}\n")).unwrap();
    }
    inputs
}

#[test]
fn cli_commands_against_one_node() {
    let issuer_dir = tempfile::tempdir().unwrap();
    let issuer = agora_node::identity::load_or_create(issuer_dir.path())
        .unwrap()
        .node_id();
    let mut node = NodeProcess::start_with(&["--issuer", &issuer.to_string()]);
    let work = tempfile::tempdir().unwrap();
    let module = work.path().join("cat.wat");
    std::fs::write(&module, CAT).unwrap();
    let module = module.to_str().unwrap();

    // status: the node's own identity and the slots it was given.
    let status = node.json(&["status", "--json"]);
    assert_eq!(status["peer_id"], node.info["peer_id"]);
    assert_eq!(status["slots"], 1);
    assert!(status["per_slot_cu"].as_u64().unwrap() > 0, "{status}");
    let text = node.text(&["status"]);
    assert!(text.contains(node.info["peer_id"].as_str().unwrap()), "{text}");
    assert!(text.contains("1 free of 1"), "{text}");

    // The same through --api and --token; a wrong token is refused.
    let api = node.info["api"].as_str().unwrap();
    let token = node.info["token"].as_str().unwrap();
    let out = agora(&["status", "--json", "--api", api, "--token", token]);
    assert!(out.status.success(), "{}", stderr(&out));
    let out = agora(&["status", "--api", api, "--token", "wrong"]);
    assert_eq!(out.status.code(), Some(1));
    assert!(stderr(&out).contains("token"), "{}", stderr(&out));

    // peers: an array (empty, alone); every row has the contract's keys.
    let peers = node.json(&["peers", "--json"]);
    for p in peers.as_array().unwrap() {
        for key in [
            "peer_id",
            "domain",
            "cu",
            "free_slots",
            "memory",
            "price_micros",
            "rtt_ms",
            "advert_age_ms",
        ] {
            assert!(p.get(key).is_some(), "peer row without {key}: {p}");
        }
    }
    let domain = status["domain"].as_str().unwrap();
    let peers = node.json(&["peers", "--json", "--domain", domain]);
    assert!(peers.is_array());

    // domains: the node's own, marked.
    let text = node.text(&["domains"]);
    assert!(text.starts_with("DOMAIN"), "{text}");
    assert!(text.contains(&format!("{domain} *")), "{text}");
    let domains = node.json(&["domains", "--json"]);
    assert!(
        domains.as_array().unwrap().iter().any(|d| d["local"] == true),
        "{domains}"
    );

    // jobs: none yet.
    assert_eq!(node.json(&["jobs", "--json"]), serde_json::json!([]));

    // owner: a pause stops new work at once and says why; resume ends it.
    let state = node.json(&["owner", "--json"]);
    assert_eq!(
        (state["accepting"].as_bool(), state["paused"].as_bool()),
        (Some(true), Some(false)),
        "{state}"
    );
    let paused = node.json(&["owner", "pause", "--for", "1h", "--json"]);
    assert_eq!(paused["paused"], true, "{paused}");
    assert_eq!(paused["accepting"], false, "{paused}");
    assert_eq!(paused["not_accepting"], "paused by its owner", "{paused}");
    assert!(paused["paused_until"].as_u64().is_some(), "{paused}");
    let s = node.json(&["status", "--json"]);
    assert_eq!(s["not_accepting"], "paused by its owner", "{s}");
    assert!(node.text(&["status"]).contains("no: paused by its owner"));
    // Limits set live are shown, kept across a restart, and refused by
    // name when misspelt.
    let set = node.json(&["owner", "set", "max_temp=85", "weekdays=mon-sun", "--json"]);
    assert_eq!(set["limits"]["max_temp"], 85.0, "{set}");
    assert_eq!(set["limits"]["weekdays"], "mon,tue,wed,thu,fri,sat,sun", "{set}");
    assert!(
        set["limits_in_words"]
            .as_array()
            .unwrap()
            .contains(&Value::from("stops above 85 °C")),
        "{set}"
    );
    let typo = node.agora(&["owner", "set", "max_tmp=85"]);
    assert!(!typo.status.success());
    assert!(
        stderr(&typo).contains("\"max_tmp\" is not a limit"),
        "{}",
        stderr(&typo)
    );
    // A pause holds across a restart.
    let forever = node.json(&["owner", "pause", "--json"]);
    assert!(forever["paused_until"].is_null(), "{forever}");
    node.restart();
    let again = node.json(&["owner", "--json"]);
    assert_eq!(again["paused"], true, "{again}");
    assert_eq!(again["not_accepting"], "paused by its owner", "{again}");
    let resumed = node.json(&["owner", "resume", "--json"]);
    assert_eq!(
        (resumed["paused"].as_bool(), resumed["accepting"].as_bool()),
        (Some(false), Some(true)),
        "{resumed}"
    );
    assert!(resumed["not_accepting"].is_null(), "{resumed}");
    assert_eq!(
        resumed["limits"]["max_temp"], 85.0,
        "limits survive a restart: {resumed}"
    );
    // Hours that leave out the present hold the node at once, saying so;
    // lifting them lets it take work again.
    let now = agora_node::sensors::local_time().unwrap();
    let hhmm = |m: u16| format!("{:02}:{:02}", (m / 60) % 24, m % 60);
    let away = format!(
        "hours={}-{}",
        hhmm((now.minute + 120) % 1440),
        hhmm((now.minute + 180) % 1440)
    );
    let held = node.json(&["owner", "set", &away, "--json"]);
    assert_eq!(held["held_by"], "hours", "{held}");
    assert_eq!(held["accepting"], false, "{held}");
    assert!(
        held["not_accepting"]
            .as_str()
            .unwrap()
            .starts_with("outside the owner's hours"),
        "{held}"
    );
    assert!(
        node.text(&["owner"])
            .contains("holding   hours: outside the owner's hours")
    );
    let free = node.json(&[
        "owner",
        "set",
        "hours=none",
        "max_temp=none",
        "weekdays=none",
        "--json",
    ]);
    assert_eq!(free["accepting"], true, "{free}");
    assert!(
        free["held_by"].is_null() && free["limits_in_words"] == serde_json::json!([]),
        "{free}"
    );
    // The share of a core each task gets is set live too.
    let before = node.json(&["status", "--json"])["cpu_share"].as_f64().unwrap();
    node.json(&["owner", "set", "cpu_share=0.25", "max_cpu=2", "--json"]);
    assert_eq!(node.json(&["status", "--json"])["cpu_share"], 0.25);
    node.json(&["owner", "set", "cpu_share=none", "max_cpu=none", "--json"]);
    assert_eq!(
        node.json(&["status", "--json"])["cpu_share"].as_f64(),
        Some(before)
    );

    // ledger: nothing before a grant; a grant from the trusted issuer
    // counts once; one from anyone else not at all.
    let peer = node.info["peer_id"].as_str().unwrap();
    let ledger = node.json(&["ledger", "--json"]);
    assert_eq!(ledger["balance_micros"], 0, "{ledger}");
    assert_eq!(ledger["entries"], serde_json::json!([]));
    let grant = |dir: &Path| {
        let out = agora(&[
            "ledger",
            "grant",
            "--issuer-dir",
            dir.to_str().unwrap(),
            "--to",
            peer,
            "--amount",
            "1000",
            "--json",
        ]);
        assert!(out.status.success(), "{}", stderr(&out));
        let v: Value = serde_json::from_slice(&out.stdout).unwrap();
        v["grant"].as_str().unwrap().to_owned()
    };
    let g = grant(issuer_dir.path());
    let answer = node.json(&["ledger", "import", &g, "--json"]);
    assert_eq!(answer["balance_micros"], 1_000_000_000i64, "{answer}");
    assert_eq!(answer["amount_micros"], 1_000_000_000i64, "{answer}");
    units_follow_the_convention(&answer);
    let again = node.agora(&["ledger", "import", &g]);
    assert!(!again.status.success());
    assert!(stderr(&again).contains("already taken"), "{}", stderr(&again));
    let stranger = tempfile::tempdir().unwrap();
    let forged = node.agora(&["ledger", "import", &grant(stranger.path())]);
    assert!(!forged.status.success());
    assert!(
        stderr(&forged).contains("not signed by an issuer"),
        "{}",
        stderr(&forged)
    );
    let ledger = node.json(&["ledger", "--json"]);
    assert_eq!(ledger["balance_micros"], 1_000_000_000i64);
    units_follow_the_convention(&ledger);
    assert_eq!(ledger["seq"], 1);
    assert_eq!(ledger["entries"][0]["kind"], "grant");
    assert_eq!(ledger["entries"][0]["counterparty"], issuer.to_string());
    let text = node.text(&["ledger", "--limit", "5"]);
    assert!(text.contains("balance   1000 credits"), "{text}");
    // Its own chain, audited link by link, gives the same balance.
    let audit = node.json(&["ledger", "--audit", peer, "--json"]);
    assert_eq!(audit["balance_micros"], 1_000_000_000i64, "{audit}");
    assert_eq!(
        audit["backed_micros"], 1_000_000_000i64,
        "a grant is backed: {audit}"
    );
    assert_eq!(audit["blocks"], 1);
    units_follow_the_convention(&audit);
    units_follow_the_convention(&node.json(&["status", "--json"]));

    // A dry run with no peers: valid JSON, and no task has a candidate.
    let inputs = write_inputs(work.path(), &["b.json", "a.json", "c.json"]);
    let inputs = inputs.to_str().unwrap();
    let plan = node.json(&["job", "submit", module, "--inputs", inputs, "--dry-run", "--json"]);
    assert_eq!(plan["dry_run"], true);
    assert_eq!(plan["tasks"], 3);
    assert_eq!(plan["placeable"], 0);
    let tasks = plan["plan"].as_array().unwrap();
    let names: Vec<&str> = tasks.iter().map(|t| t["name"].as_str().unwrap()).collect();
    assert_eq!(names, ["a.json", "b.json", "c.json"]);
    for t in tasks {
        assert_eq!(t["candidates"], serde_json::json!([]), "{t}");
        assert!(t["chosen"].is_null(), "{t}");
    }
    // Without --estimate, the estimate is measured on the largest input
    // here: exactly the fuel `agora exec` of it uses, not the limit.
    assert_eq!(plan["estimate"]["source"], "measured", "{}", plan["estimate"]);
    let ran = node.json(&["exec", module, "--input", &format!("{inputs}/a.json"), "--json"]);
    assert_eq!(plan["estimate"]["fuel"], ran["fuel_used"], "{}", plan["estimate"]);
    // A sample that runs out of fuel tells nothing: the limit stands in,
    // and the output says it is a guess.
    let guess = node.json(&[
        "job",
        "submit",
        module,
        "--inputs",
        inputs,
        "--dry-run",
        "--json",
        "--fuel",
        "10",
    ]);
    assert_eq!(guess["estimate"]["source"], "guess", "{}", guess["estimate"]);
    assert_eq!(guess["estimate"]["fuel"], 10);
    let given = node.json(&[
        "job",
        "submit",
        module,
        "--inputs",
        inputs,
        "--dry-run",
        "--json",
        "--estimate",
        "77",
    ]);
    assert_eq!(
        given["estimate"],
        serde_json::json!({"source": "given", "fuel": 77})
    );
    let text = node.text(&["job", "submit", module, "--inputs", inputs, "--dry-run"]);
    assert!(text.contains("0 would be placed"), "{text}");
    assert!(text.contains("fuel per task, measured on "), "{text}");
    assert!(text.contains("no candidates"), "{text}");
    assert_eq!(
        node.json(&["jobs", "--json"]),
        serde_json::json!([]),
        "a dry run persists nothing"
    );

    // A real submission is persisted even with no provider to place it on.
    let single = format!("{inputs}/a.json");
    let submitted = node.json(&["job", "submit", module, "--input", &single, "--json"]);
    let id = submitted["id"].as_str().unwrap().to_owned();
    assert_eq!(id.len(), 32, "{submitted}");
    let jobs = node.json(&["jobs", "--json"]);
    assert_eq!(jobs[0]["id"], id.as_str());
    // Named by a prefix of its id, as anywhere a job id is taken.
    let job = node.json(&["job", "status", &id[..6], "--json"]);
    assert_eq!(job["id"], id.as_str());
    assert_eq!(job["total"], 1);
    units_follow_the_convention(&job);
    assert_eq!(job["tasks"][0]["name"], "a.json");
    assert!(
        ["pending", "running"].contains(&job["state"].as_str().unwrap()),
        "{job}"
    );
    let text = node.text(&["job", "status", &id]);
    assert!(text.contains("a.json"), "{text}");

    // Its result is refused until it is done.
    let out_dir = work.path().join("out");
    let out = node.agora(&["job", "result", &id, "--out", out_dir.to_str().unwrap()]);
    assert_eq!(out.status.code(), Some(1));
    assert!(stderr(&out).contains("not done"), "{}", stderr(&out));

    // A status request that waits for the job's end: answered after the
    // wait with the job as it is while it goes on, and at once when it ends
    // (here by its cancellation) however long the wait asked.
    let (api, token) = (
        node.info["api"].as_str().unwrap().to_owned(),
        node.info["token"].as_str().unwrap().to_owned(),
    );
    let waiting = |ms: u64| {
        let url = format!("http://{api}/v1/jobs/{id}?tasks=false&wait_ms={ms}");
        let token = token.clone();
        thread::spawn(move || {
            crate::common::rt().block_on(async {
                let t = Instant::now();
                let r = reqwest::Client::new()
                    .get(url)
                    .bearer_auth(token)
                    .send()
                    .await
                    .unwrap();
                assert_eq!(r.status(), 200);
                (r.json::<Value>().await.unwrap(), t.elapsed())
            })
        })
    };
    let (job, took) = waiting(300).join().unwrap();
    assert!(
        took >= Duration::from_millis(300) && took < Duration::from_secs(5),
        "{took:?}"
    );
    assert!(
        ["pending", "running"].contains(&job["state"].as_str().unwrap()),
        "{job}"
    );
    // A submission that waits for its job's end, which cannot come here
    // (no provider): answered after the wait with the stored job's id and
    // its state then.
    let wasm = wat::parse_str(CAT).unwrap();
    let input = std::fs::read(&single).unwrap();
    let spec = serde_json::json!({"spec": {
        "module": agora_protocol::ContentId::of(&wasm).to_string(),
        "module_size": wasm.len(),
        "inputs": [{"name": "a.json", "id": agora_protocol::ContentId::of(&input).to_string(), "size": input.len()}],
        "fuel": 1_000_000,
        "memory": 64 << 20,
        "deadline_ms": 60_000,
        "max_price_micros": 1_000,
        "replicas": 1,
    }});
    let (answer, took) = crate::common::rt().block_on(async {
        let t = Instant::now();
        let r = reqwest::Client::new()
            .post(format!("http://{api}/v1/jobs?tasks=false&wait_ms=300"))
            .bearer_auth(&token)
            .json(&spec)
            .send()
            .await
            .unwrap();
        assert_eq!(r.status(), 200);
        (r.json::<Value>().await.unwrap(), t.elapsed())
    });
    assert!(
        took >= Duration::from_millis(300) && took < Duration::from_secs(5),
        "{took:?}"
    );
    let waited = answer["id"].as_str().unwrap();
    assert_eq!(answer["status"]["id"], waited, "{answer}");
    assert_eq!(answer["status"]["state"], "pending", "{answer}");
    assert!(
        answer["status"]
            .get("tasks")
            .is_none_or(|t| t.as_array().is_some_and(Vec::is_empty)),
        "{answer}"
    );
    let jobs = node.json(&["jobs", "--json"]);
    assert!(
        jobs.as_array().unwrap().iter().any(|j| j["id"] == waited),
        "{jobs}"
    );
    let cancelled = node.json(&["job", "cancel", waited, "--json"]);
    assert_eq!(cancelled["state"], "cancelled");

    let long = waiting(20_000);
    thread::sleep(Duration::from_millis(300));
    let t = Instant::now();

    // Cancelling ends it as cancelled; watch then exits 1 saying so, and
    // its result names the output missing and why (exit status 3).
    let cancelled = node.json(&["job", "cancel", &id, "--json"]);
    assert_eq!(cancelled["state"], "cancelled");
    let (job, _) = long.join().unwrap();
    assert_eq!(job["state"], "cancelled", "{job}");
    assert!(
        t.elapsed() < Duration::from_secs(5),
        "the waiting request heard of the end {:?} after the cancellation",
        t.elapsed()
    );
    let out = node.agora(&["job", "watch", &id]);
    assert_eq!(out.status.code(), Some(1), "{}", stderr(&out));
    assert!(stderr(&out).contains("was cancelled"), "{}", stderr(&out));
    let out = node.agora(&["job", "result", &id, "--out", out_dir.to_str().unwrap()]);
    assert_eq!(out.status.code(), Some(3), "{}", stderr(&out));
    let text = String::from_utf8_lossy(&out.stdout);
    assert!(
        text.contains("wrote 0 of 1 output(s)")
            && text.contains("task 0 (a.json): not run: the job was cancelled"),
        "{text}"
    );
    let explain = node.json(&["job", "explain", &id, "--json"]);
    assert_eq!(explain["id"], id.as_str());

    // Its receipts, none: nothing to hold.
    let verified = node.json(&["verify", "--job", &id[..6], "--json"]);
    assert_eq!(
        (verified["receipts"].as_u64(), verified["hold"].as_u64()),
        (Some(0), Some(0))
    );
    let out = node.agora(&["job", "status", "ffffff"]);
    assert_eq!(out.status.code(), Some(1));
    assert!(
        stderr(&out).contains("no job known here matches"),
        "{}",
        stderr(&out)
    );

    // An unknown job: a clear error, exit status 1.
    let out = node.agora(&["job", "status", "0123456789abcdef0123456789abcdef"]);
    assert_eq!(out.status.code(), Some(1));
    assert!(stderr(&out).contains("no job"), "{}", stderr(&out));
}

#[test]
fn cli_says_when_no_node_runs() {
    let empty = tempfile::tempdir().unwrap();
    let out = agora(&["status", "--data-dir", empty.path().to_str().unwrap()]);
    assert!(!out.status.success());
    assert!(stderr(&out).contains("no node is running"), "{}", stderr(&out));
    let out = agora(&["jobs", "--json", "--data-dir", empty.path().to_str().unwrap()]);
    assert!(!out.status.success());
    assert!(stderr(&out).contains("no node is running"), "{}", stderr(&out));
}

/// SPEC.md §13: every quantity in JSON is a number in its base unit, and
/// money says so in its key (`…_micros`), as durations do (`…_ms`) and
/// points in time (`…_at`).
fn units_follow_the_convention(v: &Value) {
    const MONEY: [&str; 9] = [
        "price",
        "paid",
        "balance",
        "amount",
        "spent",
        "granted",
        "received",
        "backed",
        "unsettled",
    ];
    match v {
        Value::Object(map) => {
            for (k, x) in map {
                let number = x.is_number() || x.is_null();
                if MONEY.iter().any(|m| k.contains(m)) {
                    assert!(k.ends_with("_micros") && number, "money key `{k}`: {x}");
                }
                if k.ends_with("_ms") || k.ends_with("_at") || k.ends_with("_micros") {
                    assert!(number, "`{k}` is not a number: {x}");
                }
                units_follow_the_convention(x);
            }
        }
        Value::Array(xs) => xs.iter().for_each(units_follow_the_convention),
        _ => {}
    }
}
