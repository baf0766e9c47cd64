//! Data by content: a dataset published on one node (`agora publish`) is
//! the input of a job submitted on another (`agora job submit --inputs-id`);
//! providers find its files through the DHT and fetch them from whoever
//! holds them, so the submitting node never holds, or uploads, an input.

use std::collections::{BTreeMap, HashSet};
use std::path::Path;
use std::time::Duration;

use agora_protocol::ContentId;
use agora_testnet::artifacts;
use agora_testnet::job;
use agora_testnet::process::{NodeSpec, Testnet};

use crate::run_ok;

/// A shard of text over a small vocabulary: `words` words, varied by `k`.
fn shard(k: usize, words: usize) -> String {
    const VOCAB: [&str; 9] = [
        "agora", "compute", "market", "wasm", "node", "peer", "fuel", "receipt", "dataset",
    ];
    let mut text = String::with_capacity(words * 8);
    for i in 0..words {
        text.push_str(VOCAB[(i * 7 + i / 5 + k * 3) % VOCAB.len()]);
        text.push(if i % 11 == 10 { '\n' } else { ' ' });
    }
    text
}

fn counts(text: &str) -> BTreeMap<String, u64> {
    let mut c = BTreeMap::new();
    for w in text.split_whitespace() {
        *c.entry(w.to_owned()).or_default() += 1;
    }
    c
}

/// `agora ARGS… --data-dir DIR --json`, its output as JSON.
fn agora_json(agora: &Path, data_dir: &Path, args: &[&str]) -> serde_json::Value {
    agora_testnet::process::agora_json(agora, data_dir, args).unwrap_or_else(|e| panic!("{e:#}"))
}

#[test]
fn a_dataset_published_on_one_node_is_the_input_of_a_job_submitted_on_another() {
    let _turn = crate::serial();
    let rt = tokio::runtime::Runtime::new().unwrap();
    rt.block_on(async {
        let agora = artifacts::agora_binary().unwrap();
        let modules = artifacts::example_modules().unwrap();
        let dir = tempfile::tempdir().unwrap();
        let mut net = Testnet::new(agora.clone(), &dir.path().join("net")).unwrap();
        // node-0 submits; node-1 publishes (and provides); node-2 and
        // node-3 provide.
        let mut specs = vec![NodeSpec::requester("local").with_slots(1)];
        specs.extend((0..3).map(|_| NodeSpec::provider("local").with_slots(1)));
        net.start_all(specs).await.unwrap();
        net.wait_converged(Duration::from_secs(60)).await.unwrap();

        // Six shards over 1 MiB each: too large to travel inline, so every
        // provider that runs one fetches it, and announces it in turn.
        let data = dir.path().join("corpus");
        std::fs::create_dir_all(&data).unwrap();
        // The last is over two slices (2 MiB each): fetched slice by slice.
        let texts: Vec<String> = (0..6)
            .map(|k| shard(k, if k == 5 { 700_000 } else { 200_000 + 1000 * k }))
            .collect();
        for (k, t) in texts.iter().enumerate() {
            assert!(t.len() > agora_protocol::limits::MAX_INLINE_CONTENT);
            std::fs::write(data.join(format!("part-{k}.txt")), t).unwrap();
        }
        let published = agora_json(
            &agora,
            &net.node(1).data_dir,
            &["publish", data.to_str().unwrap()],
        );
        let id: ContentId = published["id"].as_str().unwrap().parse().unwrap();
        assert_eq!(published["files"].as_array().unwrap().len(), 6, "{published}");
        let total: usize = texts.iter().map(String::len).sum();
        assert_eq!(published["bytes"].as_u64(), Some(total as u64));

        // The requester finds the manifest on the network.
        let requester = net.node(0).client.clone();
        let found = requester.dataset(&id).await.unwrap();
        assert_eq!(found.files.len(), 6);
        assert!(found.files.iter().all(|f| f.name.starts_with("part-")));

        // Two replicas on three providers: every shard also runs on a node
        // that did not publish it, which must fetch it from a holder.
        let wasm = dir.path().join("wordcount.wasm");
        std::fs::write(&wasm, modules.read("wordcount").unwrap()).unwrap();
        let requester_dir = net.node(0).data_dir.clone();
        let submit = |seed: &str, replicas: &str| {
            let out = agora_json(
                &agora,
                &requester_dir,
                &[
                    "job",
                    "submit",
                    wasm.to_str().unwrap(),
                    "--inputs-id",
                    &id.to_string(),
                    "--replicas",
                    replicas,
                    "--estimate",
                    "2000000000",
                    "--seed",
                    seed,
                ],
            );
            out["id"].as_str().unwrap().parse().unwrap()
        };
        let first = submit("1", "2");
        let status = job::finish(&requester, &first, Duration::from_secs(180))
            .await
            .unwrap();
        let got = job::outputs(&requester, &first).await.unwrap();
        for ((name, bytes), text) in got.iter().zip(&texts) {
            let c: BTreeMap<String, u64> = serde_json::from_slice(bytes).unwrap();
            assert_eq!(c, counts(text), "{name}");
        }
        let names: Vec<&str> = got.iter().map(|(n, _)| n.as_str()).collect();
        assert_eq!(names, (0..6).map(|k| format!("part-{k}.txt")).collect::<Vec<_>>());
        let publisher = net.node(1).id();
        let elsewhere = status
            .tasks
            .iter()
            .filter(|t| t.providers.iter().any(|p| *p != publisher))
            .count();
        assert_eq!(elsewhere, 6, "every task ran on a node that fetched its shard");

        // The requester never held a shard, so it uploaded none.
        for f in &found.files {
            assert!(
                requester.get_content(&f.id).await.is_err(),
                "the requester holds {}",
                f.name
            );
        }

        // A job file of two stages: counts per shard, then each shard's
        // top three words, every task of the second stage starting as soon
        // as its count is verified.
        let top = dir.path().join("wordcount-top.wasm");
        std::fs::write(&top, modules.read("wordcount-top").unwrap()).unwrap();
        let file = dir.path().join("pipeline.toml");
        std::fs::write(
            &file,
            format!(
                "[[stage]]\nname = \"count\"\nmodule = \"wordcount.wasm\"\ninputs_id = \"{id}\"\nestimate = 2000000000\n\n\
                 [[stage]]\nname = \"top\"\nmodule = \"wordcount-top.wasm\"\nargs = [\"3\"]\nestimate = 100000000\n"
            ),
        )
        .unwrap();
        let stages = agora_json(&agora, &requester_dir, &["job", "submit", file.to_str().unwrap()]);
        let names: Vec<&str> = stages["stages"]
            .as_array()
            .unwrap()
            .iter()
            .map(|s| s["name"].as_str().unwrap())
            .collect();
        assert_eq!(names, ["count", "top"], "{stages}");
        let last: agora_protocol::JobId = stages["id"].as_str().unwrap().parse().unwrap();
        job::finish(&requester, &last, Duration::from_secs(180)).await.unwrap();
        let tops = job::outputs(&requester, &last).await.unwrap();
        assert_eq!(tops.len(), 6);
        for ((name, bytes), text) in tops.iter().zip(&texts) {
            let mut want: Vec<(String, u64)> = counts(text).into_iter().collect();
            want.sort_by(|a, b| b.1.cmp(&a.1).then(a.0.cmp(&b.0)));
            let want: String = want.iter().take(3).map(|(w, n)| format!("{n} {w}\n")).collect();
            assert_eq!(String::from_utf8_lossy(bytes), want, "{name}");
        }

        // With the publisher gone, the nodes that fetched the shards serve
        // them: a second job over the same dataset still completes.
        net.kill(1).unwrap();
        let second = submit("2", "1");
        let status = job::finish(&requester, &second, Duration::from_secs(180))
            .await
            .unwrap();
        let ran_on: HashSet<_> = status.tasks.iter().flat_map(|t| t.providers.clone()).collect();
        assert!(!ran_on.contains(&publisher));
        let again = job::outputs(&requester, &second).await.unwrap();
        assert_eq!(again, got, "the same outputs from the other holders");
        net.stop();
    });
}

#[test]
fn a_corpus_published_on_a_provider_is_counted_without_passing_through_the_submitter() {
    let _turn = crate::serial();
    let out =
        run_ok(crate::testnet().args(["corpus", "--mib", "12", "--chunks", "8", "--nodes", "4", "--json"]));
    let r = crate::last_json(&out);
    assert_eq!(r["counts_equal"], true, "{r}");
    assert!(r["words"].as_u64().unwrap() > 1000, "{r}");
    let sent = r["requester_sent_bytes"].as_u64().unwrap();
    assert!(sent < 1024 * 1024, "the submitter sent {sent} bytes: {r}");
    // Every chunk run away from the publisher (node-1, which may run many
    // itself: it holds them all) left it or another holder.
    let corpus = r["corpus_bytes"].as_u64().unwrap();
    let chunks = r["chunks"].as_u64().unwrap();
    let elsewhere: u64 = r["tasks_per_provider"]
        .as_array()
        .unwrap()
        .iter()
        .filter(|p| p[0] != "node-1")
        .map(|p| p[1].as_u64().unwrap())
        .sum();
    let served = r["publisher_sent_bytes"].as_u64().unwrap() + r["others_sent_bytes"].as_u64().unwrap();
    assert!(
        served >= elsewhere * (corpus / chunks) * 9 / 10,
        "{served} bytes served for {elsewhere} of {chunks} chunks run away from the publisher: {r}"
    );
}
