//! Part 7: moving data by content between node processes.
//!
//! Four nodes on loopback. Node 0 holds a `--fetch-mib` (default 256 MiB)
//! blob, placed in its store before it starts and published (announced in
//! the DHT). Each fetch is `POST /v1/content/{id}/fetch` on a node that
//! lacks it, timed by the node itself (`took_ms`): slices of 2 MiB, each
//! verified against the id on arrival, written to disk.
//!
//! * `fetch_mib_s_1`: node 1 fetches it while node 0 is its only holder.
//!   Node 2 then fetches it too (from nodes 0 and 1).
//! * `fetch_mib_s_3`: node 3 fetches it from its three holders at once.
//! * `fetch_tcp_mib_s`: the naive baseline in the same minutes, the same
//!   bytes over one plain loopback TCP connection in this process, with
//!   no protocol, no hashing and no disk.
//! * `serve_rss_mb`: node 0's peak resident memory (VmHWM) after it served
//!   a 1 GiB blob (`--serve-mib`) to node 1, which is also timed
//!   (`serve_fetch_mib_s`).

use std::path::Path;
use std::time::{Duration, Instant};

use agora_node::api::PublishRequest;
use agora_protocol::dataset::DatasetFile;
use agora_protocol::units::Bytes;
use anyhow::Context;
use serde::Serialize;
use tokio::io::{AsyncReadExt, AsyncWriteExt};

use crate::process::{NodeSpec, Testnet};
use crate::workload::incompressible;

/// What the part measured (NaN where it did not run).
#[derive(Debug, Clone, Serialize)]
pub struct FetchSamples {
    /// MiB/s fetching from one holder.
    pub fetch_mib_s_1: f64,
    /// MiB/s fetching from three holders.
    pub fetch_mib_s_3: f64,
    /// MiB/s of the same bytes over plain loopback TCP.
    pub fetch_tcp_mib_s: f64,
    /// The size fetched, MiB.
    pub fetch_mib: f64,
    /// Peak resident memory of a node that served the large blob, MB.
    pub serve_rss_mb: f64,
    /// That blob's size, MiB.
    pub serve_mib: f64,
    /// MiB/s of that fetch.
    pub serve_fetch_mib_s: f64,
    /// Why the part was skipped or failed, if it was or did.
    pub fetch_error: Option<String>,
}

impl FetchSamples {
    /// Not run, saying why.
    pub(super) fn failed(why: &str) -> FetchSamples {
        FetchSamples {
            fetch_mib_s_1: f64::NAN,
            fetch_mib_s_3: f64::NAN,
            fetch_tcp_mib_s: f64::NAN,
            fetch_mib: f64::NAN,
            serve_rss_mb: f64::NAN,
            serve_mib: f64::NAN,
            serve_fetch_mib_s: f64::NAN,
            fetch_error: Some(why.to_owned()),
        }
    }
}

/// Runs the part in `dir`.
pub(super) async fn measure(
    agora: std::path::PathBuf,
    dir: &Path,
    fetch_mib: u64,
    serve_mib: u64,
) -> anyhow::Result<FetchSamples> {
    eprintln!("data: {fetch_mib} MiB from one holder, then from three; a {serve_mib} MiB blob served");
    let data = incompressible(fetch_mib, 1);
    let big = incompressible(serve_mib, 2);
    let mut net = Testnet::new(agora, dir)?;
    let id = net.preload(0, &data)?;
    let big_id = net.preload(0, &big)?;
    drop(big);
    let specs = (0..4).map(|_| NodeSpec::provider("bench")).collect();
    net.start_all(specs).await?;
    net.wait_converged(Duration::from_secs(60)).await?;
    let files = [
        ("data", id, data.len()),
        ("large", big_id, (serve_mib * 1024 * 1024) as usize),
    ]
    .into_iter()
    .map(|(name, id, size)| DatasetFile {
        name: name.into(),
        id,
        size: Bytes(size as u64),
    })
    .collect();
    net.node(0)
        .client
        .publish(&PublishRequest { files })
        .await
        .context("cannot publish the blobs")?;
    let mib_s = |size: u64, ms: u64| size as f64 / (1024.0 * 1024.0) / (ms.max(1) as f64 / 1000.0);

    let one = net
        .node(1)
        .client
        .fetch_content(&id)
        .await
        .context("fetch from one holder")?;
    anyhow::ensure!(one.holders == 1, "the first fetch used {} holders", one.holders);
    net.node(2)
        .client
        .fetch_content(&id)
        .await
        .context("the second holder's fetch")?;
    let three = net
        .node(3)
        .client
        .fetch_content(&id)
        .await
        .context("fetch from three holders")?;
    let tcp = tcp_baseline(&data).await?;
    drop(data);
    let served = net
        .node(1)
        .client
        .fetch_content(&big_id)
        .await
        .context("the large fetch")?;
    let serve_rss = net.node(0).peak_rss_bytes().unwrap_or(0) as f64 / 1e6;
    eprintln!(
        "data: 1 holder {:.0} MiB/s ({} ms), {} holders {:.0} MiB/s ({} ms), plain TCP {tcp:.0} MiB/s; {serve_mib} MiB served in {} ms, server peak RSS {serve_rss:.1} MB",
        mib_s(one.size, one.took_ms),
        one.took_ms,
        three.holders,
        mib_s(three.size, three.took_ms),
        three.took_ms,
        served.took_ms
    );
    net.stop();
    Ok(FetchSamples {
        fetch_mib_s_1: mib_s(one.size, one.took_ms),
        fetch_mib_s_3: mib_s(three.size, three.took_ms),
        fetch_tcp_mib_s: tcp,
        fetch_mib: fetch_mib as f64,
        serve_rss_mb: serve_rss,
        serve_mib: serve_mib as f64,
        serve_fetch_mib_s: mib_s(served.size, served.took_ms),
        fetch_error: if three.holders < 3 {
            Some(format!("the last fetch used {} holders, not 3", three.holders))
        } else {
            None
        },
    })
}

/// MiB/s of `data` sent over one loopback TCP connection.
async fn tcp_baseline(data: &[u8]) -> anyhow::Result<f64> {
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await?;
    let addr = listener.local_addr()?;
    let len = data.len();
    let reader = tokio::spawn(async move {
        let (mut s, _) = listener.accept().await?;
        let mut buf = vec![0u8; 1 << 20];
        let mut got = 0;
        while got < len {
            let n = s.read(&mut buf).await?;
            if n == 0 {
                break;
            }
            got += n;
        }
        anyhow::Ok(got)
    });
    let started = Instant::now();
    let mut s = tokio::net::TcpStream::connect(addr).await?;
    s.write_all(data).await?;
    s.shutdown().await?;
    let got = reader.await??;
    anyhow::ensure!(got == len, "the baseline received {got} of {len} bytes");
    Ok(len as f64 / (1024.0 * 1024.0) / started.elapsed().as_secs_f64())
}
