//! `chaos holder-dies`: a large blob held by two nodes, fetched by a third
//! (`POST /v1/content/{id}/fetch`), one holder killed (SIGKILL) once a
//! third of it is on the fetcher's disk. The fetch must finish from the
//! other holder with the exact bytes, asking again only the slices that
//! were in flight on the dead one: nothing written is fetched twice.

use std::time::{Duration, Instant};

use super::{ChaosCommand, ChaosReport, Check, Run};
use crate::process::Testnet;
use crate::workload::incompressible;

/// The most slices a fetch has in flight at once: at most these are asked
/// again when a holder dies.
const MAX_IN_FLIGHT: u64 = 8;
/// The most slices a fetch asks of one holder at once.
const PER_HOLDER: u64 = 2;
/// The bytes in a slice.
const SLICE: u64 = 2 << 20;

impl ChaosCommand {
    /// `holder-dies`: see the module docs.
    pub(super) async fn holder_dies(&self, net: &mut Testnet) -> anyhow::Result<ChaosReport> {
        let data = incompressible(self.mib, 3);
        let id = net.preload(1, &data)?;
        net.preload(2, &data)?;
        self.start(net).await?;
        let mut run = Run::labelled(net, 1, self.json);
        let files = vec![agora_protocol::dataset::DatasetFile {
            name: "blob".into(),
            id,
            size: agora_protocol::units::Bytes(data.len() as u64),
        }];
        for i in [1, 2] {
            net.node(i)
                .client
                .publish(&agora_node::api::PublishRequest { files: files.clone() })
                .await?;
        }
        run.event(format!("node-1 and node-2 hold {} MiB and announce it", self.mib));

        let fetcher = net.node(0).client.clone();
        let fetch = tokio::spawn(async move { fetcher.fetch_content(&id).await });
        // The partial file's allocated blocks are the bytes written so far.
        let store = net.node(0).data_dir.join(agora_node::store::CONTENT_DIR);
        let until = Instant::now() + Duration::from_secs(120);
        let third = data.len() as u64 / 3;
        // Killed once a third is written and the fetcher has a slice from
        // node-1 (on a loaded machine its first answer can lag: it builds
        // the blob's tree first). A holder counts a slice as sent when it
        // queues the answer, so an answer sent may die with it; but the
        // fetcher asks a holder for at most PER_HOLDER slices at a time and
        // asks again only once an answer is in, so a holder that has sent
        // more than PER_HOLDER answers has had one of them received. An
        // answer is a slice and its proof, a few percent over the slice:
        // more than PER_HOLDER + 1 slices' bytes take more answers.
        let doomed = net.node(1).client.clone();
        let served = || async {
            doomed.metrics().await.ok().is_some_and(|text| {
                crate::metrics::value(&text, "agora_content_sent_bytes_total")
                    .is_some_and(|b| b > ((PER_HOLDER + 1) * SLICE) as f64)
            })
        };
        loop {
            anyhow::ensure!(
                !fetch.is_finished(),
                "the fetch ended before a third was written with both holders serving"
            );
            anyhow::ensure!(Instant::now() < until, "a third was never written");
            if written(&store, &id.to_string()) >= third && served().await {
                break;
            }
            tokio::time::sleep(Duration::from_millis(5)).await;
        }
        net.kill(1)?;
        run.event(
            "node-1 killed (SIGKILL) with a third of the blob written, after the fetcher had a slice from it"
                .into(),
        );
        let got = fetch.await??;
        let slices = got.slices;
        run.event(format!(
            "fetched in {} ms from {} holders: {slices} slices, {} asked again",
            got.took_ms, got.holders, got.retried
        ));
        let bytes = net.node(0).client.get_content(&id).await?;
        let checks = vec![
            Check {
                what: "the fetcher holds exactly the blob's bytes".into(),
                ok: bytes == data,
            },
            Check {
                what: format!(
                    "only the slices in flight on the dead holder were asked again ({} of {slices}, at most {MAX_IN_FLIGHT})",
                    got.retried
                ),
                ok: got.retried <= MAX_IN_FLIGHT && slices == (data.len() as u64).div_ceil(SLICE),
            },
            Check {
                what: format!("both holders sent slices ({})", got.holders),
                ok: got.holders == 2,
            },
        ];
        net.restart(1).await?;
        run.event("node-1 restarted".into());
        Ok(self.bare_report(run, checks, net).await)
    }
}

/// Bytes allocated to the partial file of `id` in `store` (0 if none yet).
fn written(store: &std::path::Path, id: &str) -> u64 {
    use std::os::unix::fs::MetadataExt;
    std::fs::read_dir(store)
        .into_iter()
        .flatten()
        .flatten()
        .filter(|e| {
            let n = e.file_name().to_string_lossy().into_owned();
            n.starts_with(id) && n.ends_with(".tmp") && !n.contains("obao")
        })
        .filter_map(|e| e.metadata().ok())
        .map(|m| m.blocks() * 512)
        .max()
        .unwrap_or(0)
}
