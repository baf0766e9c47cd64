//! The in-process testnet over the memory transport.

use std::time::Duration;

use agora_testnet::memory::{Options, Testnet};

#[test]
fn thirty_nodes_in_two_level_domains_converge() {
    let _turn = crate::serial();
    let rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .expect("runtime");
    rt.block_on(async {
        let net = Testnet::start(Options {
            nodes: 30,
            ..Options::default()
        })
        .await
        .expect("nodes start");
        let views = net.wait_views(Duration::from_secs(180)).await;
        let summaries = net.wait_summaries(Duration::from_secs(180)).await;
        let all = net.all_domains();
        let missing = net.incomplete_domains().await.expect("nodes answer");
        net.shutdown().await;
        views.expect("every node sees its domain");
        summaries.expect("every domain's summary reaches every node");
        assert_eq!(
            all.into_iter().collect::<Vec<_>>(),
            ["eu", "eu/a", "eu/b", "us", "us/a", "us/b"],
            "both levels are covered"
        );
        assert!(missing.is_empty(), "{missing:?}");
    });
}
