//! Every example job end to end on a small testnet: mandelbrot tiles
//! assembled into a PNG, seeded Monte Carlo samplers reduced into π with
//! its standard error, word counts over shards merged, and a hand-written
//! WAT job that uses no SDK.

use std::collections::BTreeMap;
use std::time::Duration;

use agora_testnet::artifacts;
use agora_testnet::job::{self, Params};
use agora_testnet::process::{NodeSpec, Testnet};
use agora_testnet::workload::{TaskInput, mandelbrot};

fn input(name: String, bytes: Vec<u8>) -> TaskInput {
    TaskInput {
        name,
        bytes,
        estimate: None,
    }
}

#[test]
fn every_example_job_runs_end_to_end() {
    let _turn = crate::serial();
    let rt = tokio::runtime::Runtime::new().unwrap();
    rt.block_on(async {
        let agora = artifacts::agora_binary().unwrap();
        let modules = artifacts::example_modules().unwrap();
        let dir = tempfile::tempdir().unwrap();
        let mut net = Testnet::new(agora.clone(), dir.path()).unwrap();
        let mut specs = vec![NodeSpec::requester("local").with_slots(1)];
        specs.extend((0..3).map(|_| NodeSpec::provider("local").with_slots(1).with_cpu_share(0.5)));
        net.start_all(specs).await.unwrap();
        net.wait_converged(Duration::from_secs(60)).await.unwrap();
        let c = net.node(0).client.clone();
        let params = Params {
            spot_check: 0.5,
            ..Params::default()
        };

        // mandelbrot: 12 tiles of a 240×180 image → one PNG.
        let tiles = mandelbrot::inputs(240, 180, 12, 200);
        let (_, s) = job::run(
            &c,
            &modules.read("mandelbrot").unwrap(),
            Some(&modules.read("mandelbrot-reduce").unwrap()),
            &tiles,
            &params,
        )
        .await
        .unwrap();
        let png = c.get_content(&s.reduced.expect("a reduced image")).await.unwrap();
        mandelbrot::check_png(&png, 240, 180).unwrap();

        // montecarlo-pi: 8 independent streams → π within 4 standard errors.
        let samplers: Vec<TaskInput> = (0..8)
            .map(|k| {
                input(
                    format!("sampler-{k}"),
                    format!("{{\"samples\":200000,\"stream\":{k}}}").into_bytes(),
                )
            })
            .collect();
        let (_, s) = job::run(
            &c,
            &modules.read("montecarlo-pi").unwrap(),
            Some(&modules.read("montecarlo-pi-reduce").unwrap()),
            &samplers,
            &params,
        )
        .await
        .unwrap();
        let est: serde_json::Value =
            serde_json::from_slice(&c.get_content(&s.reduced.unwrap()).await.unwrap()).unwrap();
        let (pi, err) = (est["pi"].as_f64().unwrap(), est["std_error"].as_f64().unwrap());
        assert_eq!(est["samples"].as_u64(), Some(1_600_000), "{est}");
        assert!(err > 0.0 && err < 0.01, "{est}");
        assert!((pi - std::f64::consts::PI).abs() < 4.0 * err, "π ≈ {pi} ± {err}");

        // wordcount: a text in 4 shards; the merged counts equal counting it whole.
        let words = [
            "agora", "compute", "market", "wasm", "node", "peer", "fuel", "receipt",
        ];
        let mut text = String::new();
        for i in 0..2000usize {
            text.push_str(words[(i * 7 + i / 3) % words.len()]);
            text.push(if i % 13 == 0 { '\n' } else { ' ' });
        }
        let mut expected: BTreeMap<String, u64> = BTreeMap::new();
        for w in text.split_whitespace() {
            *expected.entry(w.to_owned()).or_default() += 1;
        }
        let lines: Vec<&str> = text.lines().collect();
        let shards: Vec<TaskInput> = lines
            .chunks(lines.len().div_ceil(4))
            .enumerate()
            .map(|(i, l)| input(format!("shard-{i}"), (l.join("\n") + "\n").into_bytes()))
            .collect();
        let (_, s) = job::run(
            &c,
            &modules.read("wordcount").unwrap(),
            Some(&modules.read("wordcount-reduce").unwrap()),
            &shards,
            &params,
        )
        .await
        .unwrap();
        let merged: BTreeMap<String, u64> =
            serde_json::from_slice(&c.get_content(&s.reduced.unwrap()).await.unwrap()).unwrap();
        assert_eq!(merged, expected);

        // rot13.wat: any WASI command module is a job, no SDK needed.
        let wat =
            std::fs::read_to_string(artifacts::workspace_root().join("examples/wat/rot13.wat")).unwrap();
        let module = wat::parse_str(&wat).unwrap();
        let texts = [
            "Hello, Agora!",
            "The quick brown fox",
            "ROT13 twice is the identity",
        ];
        let inputs: Vec<TaskInput> = texts
            .iter()
            .enumerate()
            .map(|(i, t)| input(format!("text-{i}"), t.as_bytes().to_vec()))
            .collect();
        let (_, s) = job::run(&c, &module, None, &inputs, &Params::default())
            .await
            .unwrap();
        let outputs = job::outputs(&c, &s.id).await.unwrap();
        for ((_, got), text) in outputs.iter().zip(texts) {
            let want: String = text
                .chars()
                .map(|ch| match ch {
                    'a'..='z' => (((ch as u8 - b'a') + 13) % 26 + b'a') as char,
                    'A'..='Z' => (((ch as u8 - b'A') + 13) % 26 + b'A') as char,
                    _ => ch,
                })
                .collect();
            assert_eq!(String::from_utf8_lossy(got), want);
        }
        // Every receipt of the job holds when re-executed here, the job
        // named by a prefix of its id as the tables print it.
        let prefix = s.id.to_string()[..8].to_owned();
        let out = std::process::Command::new(&agora)
            .args(["verify", "--job", &prefix, "--json", "--data-dir"])
            .arg(&net.node(0).data_dir)
            .output()
            .unwrap();
        let report: serde_json::Value = serde_json::from_slice(&out.stdout)
            .unwrap_or_else(|e| panic!("{e}: {}", String::from_utf8_lossy(&out.stderr)));
        assert!(out.status.success(), "{report}");
        assert_eq!(report["job"], s.id.to_string());
        assert!(report["receipts"].as_u64().unwrap() >= 3, "{report}");
        assert_eq!(report["hold"], report["receipts"], "{report}");

        // Misspelt fields in 2 inputs of 6, with `--max-failures 2`: every
        // task runs, the job is done with both failures named, each in the
        // guest's own words with the line that runs it locally.
        let mut mixed: Vec<TaskInput> = (0..4)
            .map(|k| {
                input(
                    format!("good-{k}"),
                    format!("{{\"samples\":1000,\"stream\":{k}}}").into_bytes(),
                )
            })
            .collect();
        mixed.insert(
            1,
            input("typo".into(), b"{\"sampels\":1000,\"stream\":0}".to_vec()),
        );
        mixed.push(input("typo-2".into(), b"{\"samples\":1000,\"steam\":1}".to_vec()));
        let mut spec = job::prepare(
            &c,
            &modules.read("montecarlo-pi").unwrap(),
            None,
            &mixed,
            &Params::default(),
        )
        .await
        .unwrap();
        spec.max_failures = 2;
        let id = job::submit(&c, &spec).await.unwrap();
        let s = job::follow(
            &c,
            &id,
            Duration::from_secs(120),
            Duration::from_millis(100),
            |_| {},
        )
        .await
        .unwrap();
        assert_eq!(s.state, agora_node::market::job::JobState::Done, "{:?}", s.error);
        assert_eq!((s.counts.verified, s.counts.failed), (4, 2), "{:?}", s.counts);
        let s = c.job(&id).await.unwrap();
        for (t, field) in [(&s.tasks[1], "sampels"), (&s.tasks[5], "steam")] {
            let stderr = t.stderr.as_deref().unwrap_or_default();
            assert!(
                stderr.contains(field),
                "the guest's message names the field: {t:?}"
            );
        }
        let line = s.tasks[1].reproduce.as_deref().unwrap_or_default();
        assert!(
            line.starts_with("agora exec MODULE.wasm --input typo --seed "),
            "{line}"
        );

        let balances = net.settle(Duration::from_secs(30)).await.unwrap();
        assert!(balances.conserved(), "{balances:?}");
        net.stop();
    });
}
