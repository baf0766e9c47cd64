//! `agora-testnet corpus`: a text corpus published from one provider and
//! counted by a job submitted on another node, which never holds it.
//!
//! A `--mib` (default 256) corpus of generated text, cut at whitespace
//! into `--chunks` (default 64) files, is published from node 1 with
//! `agora publish`. Node 0 (a requester that provides nothing) submits a
//! job file with `agora job submit`: a word-count map over the dataset's
//! files (`inputs_id`) and the wordcount reduce. The providers fetch the
//! chunks from node 1 (and from each other, as they announce what they
//! fetched). The merged counts must equal a native count of the corpus in
//! this process, and node 0 must have sent under 1 MiB of content
//! (`agora_content_sent_bytes_total`): the module, not the data.

use std::collections::HashMap;
use std::path::PathBuf;
use std::process::ExitCode;
use std::time::{Duration, Instant};

use agora_protocol::{ContentId, JobId};
use anyhow::{Context, bail};
use serde::Serialize;

use crate::process::{NodeSpec, Testnet, agora_json};
use crate::{artifacts, job};

/// Content node 0 may send: the modules to each provider, not the corpus.
const MAX_REQUESTER_UPLOAD: u64 = 1024 * 1024;

/// Publish a text corpus from one provider and count its words with a job
/// submitted on another node; check the counts against a native run.
#[derive(Debug, clap::Args)]
pub struct CorpusCommand {
    /// Size of the corpus, MiB.
    #[arg(long, default_value_t = 256)]
    pub mib: u64,
    /// Files it is cut into: one map task each.
    #[arg(long, default_value_t = 64)]
    pub chunks: usize,
    /// Nodes: a requester and the rest providers (the first publishes).
    #[arg(long, default_value_t = 6)]
    pub nodes: usize,
    /// Where the nodes' data dirs go. Default: a temporary directory.
    #[arg(long, value_name = "DIR")]
    pub dir: Option<PathBuf>,
    /// Print the report as one JSON object.
    #[arg(long)]
    pub json: bool,
}

/// What the run measured.
#[derive(Debug, Clone, Serialize)]
pub struct CorpusReport {
    /// The corpus, bytes.
    pub corpus_bytes: u64,
    /// Its files.
    pub chunks: usize,
    /// Nodes in the testnet.
    pub nodes: usize,
    /// Whether the job's counts equal the native count.
    pub counts_equal: bool,
    /// Distinct words counted.
    pub words: usize,
    /// `agora publish` on node 1, ms.
    pub publish_ms: u64,
    /// Submit to the job's end (map and reduce), ms.
    pub job_ms: u64,
    /// The corpus over the job's time, MiB/s.
    pub job_mib_s: f64,
    /// The native count in this process, ms.
    pub native_ms: u64,
    /// Content bytes node 0 (the submitter) sent.
    pub requester_sent_bytes: u64,
    /// Content bytes node 1 (the publisher) sent.
    pub publisher_sent_bytes: u64,
    /// Content bytes the other providers sent (to each other).
    pub others_sent_bytes: u64,
    /// Map tasks per provider that ran them.
    pub tasks_per_provider: Vec<(String, usize)>,
}

impl CorpusCommand {
    /// Runs the command.
    pub fn execute(self) -> anyhow::Result<ExitCode> {
        let report = super::block_on(self.run())??;
        if self.json {
            println!("{}", serde_json::to_string(&report)?);
        } else {
            print(&report);
        }
        let ok = report.counts_equal && report.requester_sent_bytes < MAX_REQUESTER_UPLOAD;
        Ok(if ok { ExitCode::SUCCESS } else { ExitCode::FAILURE })
    }

    async fn run(&self) -> anyhow::Result<CorpusReport> {
        if self.nodes < 3 {
            bail!("--nodes must be at least 3: a requester, the publisher and another provider");
        }
        let agora = artifacts::agora_binary()?;
        let modules = artifacts::example_modules()?;
        let work = super::WorkDir::new(self.dir.as_deref(), "agora-corpus-")?;
        let dir = work.path();
        let say = |s: String| {
            if !self.json {
                eprintln!("{s}");
            }
        };
        let text = corpus(self.mib);
        let data = dir.join("corpus");
        std::fs::create_dir_all(&data)?;
        for (i, chunk) in cut(&text, self.chunks).iter().enumerate() {
            std::fs::write(data.join(format!("chunk-{i:03}.txt")), chunk)?;
        }
        say(format!("a {} MiB corpus in {} files", self.mib, self.chunks));
        let started = Instant::now();
        let native = count(&text);
        let native_ms = started.elapsed().as_millis() as u64;
        let corpus_bytes = text.len() as u64;
        drop(text);

        let mut net = Testnet::new(agora.clone(), &dir.join("net"))?;
        let mut specs = vec![NodeSpec::requester("corpus")];
        specs.extend((1..self.nodes).map(|_| NodeSpec::provider("corpus")));
        net.start_all(specs).await?;
        net.wait_converged(Duration::from_secs(60)).await?;
        let result = self.job(&net, &agora, &modules, &data, dir, &say).await;
        let report = match result {
            Ok((id, publish_ms, job_ms)) => {
                let client = net.node(0).client.clone();
                let status = client.job(&id).await?;
                let merged: HashMap<String, u64> = serde_json::from_slice(
                    &client
                        .get_content(&status.reduced.context("the job has no reduced output")?)
                        .await?,
                )?;
                let mut sent = Vec::new();
                for n in net.nodes() {
                    sent.push(content_sent(&n.client).await?);
                }
                let names: HashMap<_, _> = net.nodes().iter().map(|n| (n.id(), n.name())).collect();
                let mut per: HashMap<String, usize> = HashMap::new();
                for t in &status.tasks {
                    for p in &t.providers {
                        *per.entry(names.get(p).cloned().unwrap_or_default()).or_default() += 1;
                    }
                }
                let mut tasks_per_provider: Vec<(String, usize)> = per.into_iter().collect();
                tasks_per_provider.sort();
                CorpusReport {
                    corpus_bytes,
                    chunks: self.chunks,
                    nodes: self.nodes,
                    counts_equal: merged == native,
                    words: native.len(),
                    publish_ms,
                    job_ms,
                    job_mib_s: corpus_bytes as f64 / (1024.0 * 1024.0) / (job_ms.max(1) as f64 / 1000.0),
                    native_ms,
                    requester_sent_bytes: sent[0],
                    publisher_sent_bytes: sent[1],
                    others_sent_bytes: sent[2..].iter().sum(),
                    tasks_per_provider,
                }
            }
            Err(e) => {
                net.stop();
                work.keep();
                return Err(e);
            }
        };
        net.stop();
        Ok(report)
    }

    /// Publishes the corpus from node 1 and runs the job file from node 0:
    /// the job's id, and how long publishing and the job took.
    async fn job(
        &self,
        net: &Testnet,
        agora: &std::path::Path,
        modules: &artifacts::Modules,
        data: &std::path::Path,
        dir: &std::path::Path,
        say: &impl Fn(String),
    ) -> anyhow::Result<(JobId, u64, u64)> {
        let t = Instant::now();
        let out = agora_json(
            agora,
            &net.node(1).data_dir,
            &["publish", &data.display().to_string()],
        )?;
        let dataset: ContentId = out["id"].as_str().context("publish printed no id")?.parse()?;
        let publish_ms = t.elapsed().as_millis() as u64;
        say(format!("node-1 published dataset {dataset} in {publish_ms} ms"));
        std::fs::write(dir.join("wordcount.wasm"), modules.read("wordcount")?)?;
        std::fs::write(
            dir.join("wordcount-reduce.wasm"),
            modules.read("wordcount-reduce")?,
        )?;
        let file = dir.join("corpus.toml");
        std::fs::write(
            &file,
            format!(
                "# Word frequencies of a published corpus: a map task per file, then the merge.\n\
                 [[stage]]\nname = \"count\"\nmodule = \"wordcount.wasm\"\ninputs_id = \"{dataset}\"\n\
                 reduce = \"wordcount-reduce.wasm\"\nestimate = 20000000000\nfuel = 200000000000\n\
                 deadline = \"5m\"\nmemory = \"256MiB\"\n"
            ),
        )?;
        let t = Instant::now();
        let out = agora_json(
            agora,
            &net.node(0).data_dir,
            &["job", "submit", &file.display().to_string()],
        )?;
        let id: JobId = out["id"].as_str().context("submit printed no id")?.parse()?;
        say(format!("node-0 submitted job {id}"));
        job::finish(&net.node(0).client, &id, Duration::from_secs(1800)).await?;
        let job_ms = t.elapsed().as_millis() as u64;
        say(format!("the job ended in {job_ms} ms"));
        Ok((id, publish_ms, job_ms))
    }
}

/// The node's `agora_content_sent_bytes_total`.
async fn content_sent(client: &agora_node::api::client::Client) -> anyhow::Result<u64> {
    let text = client.metrics().await?;
    Ok(crate::metrics::value(&text, "agora_content_sent_bytes_total").unwrap_or(0.0) as u64)
}

/// `mib` MiB of text: lines of lowercase words from a vocabulary of a few
/// thousand, drawn with a skew (a few words common, most rare), as text is.
pub fn corpus(mib: u64) -> String {
    const SYLLABLES: [&str; 16] = [
        "ka", "lo", "mi", "ne", "ru", "sa", "te", "vo", "da", "fi", "go", "hu", "ja", "pe", "qi", "zu",
    ];
    let vocab: Vec<String> = (0..4096u32)
        .map(|i| {
            let n = 1 + (i % 3) as usize;
            (0..=n)
                .map(|k| SYLLABLES[((i >> (4 * k)) & 15) as usize])
                .collect()
        })
        .collect();
    let target = (mib * 1024 * 1024) as usize;
    let mut text = String::with_capacity(target + 64);
    let mut x: u64 = 0x9e37_79b9_7f4a_7c15;
    let mut on_line = 0;
    while text.len() < target {
        x ^= x << 13;
        x ^= x >> 7;
        x ^= x << 17;
        // Skewed: the product of two uniforms favours small indices.
        let a = (x & 0xffff) as usize;
        let b = ((x >> 16) & 0xffff) as usize;
        text.push_str(&vocab[(a * b) >> 20]);
        on_line += 1;
        if on_line == 12 {
            text.push('\n');
            on_line = 0;
        } else {
            text.push(' ');
        }
    }
    text
}

/// `text` cut at whitespace into `n` pieces of about equal size.
pub fn cut(text: &str, n: usize) -> Vec<&str> {
    let n = n.max(1);
    let mut out = Vec::with_capacity(n);
    let mut start = 0;
    for i in 1..n {
        let target = (text.len() * i / n).max(start);
        let at = text[target..]
            .find(char::is_whitespace)
            .map_or(text.len(), |k| target + k);
        out.push(&text[start..at]);
        start = at;
    }
    out.push(&text[start..]);
    out
}

/// Word counts of `text`, natively.
pub fn count(text: &str) -> HashMap<String, u64> {
    let mut c: HashMap<String, u64> = HashMap::new();
    for w in text.split_whitespace() {
        match c.get_mut(w) {
            Some(n) => *n += 1,
            None => {
                c.insert(w.to_owned(), 1);
            }
        }
    }
    c
}

fn print(r: &CorpusReport) {
    let mib = |b: u64| b as f64 / (1024.0 * 1024.0);
    println!(
        "corpus: {:.0} MiB in {} files, {} distinct words, on {} nodes",
        mib(r.corpus_bytes),
        r.chunks,
        r.words,
        r.nodes
    );
    println!(
        "counts equal the native count: {}",
        if r.counts_equal { "yes" } else { "NO" }
    );
    println!(
        "publish {} ms; job (map and reduce) {} ms, {:.1} MiB/s; native count {} ms",
        r.publish_ms, r.job_ms, r.job_mib_s, r.native_ms
    );
    println!(
        "content sent: submitter {:.2} MiB (under 1 MiB: {}), publisher {:.1} MiB, other providers {:.1} MiB",
        mib(r.requester_sent_bytes),
        if r.requester_sent_bytes < MAX_REQUESTER_UPLOAD {
            "yes"
        } else {
            "NO"
        },
        mib(r.publisher_sent_bytes),
        mib(r.others_sent_bytes)
    );
    let per: Vec<String> = r
        .tasks_per_provider
        .iter()
        .map(|(n, k)| format!("{n} {k}"))
        .collect();
    println!("map tasks per provider: {}", per.join(", "));
}
