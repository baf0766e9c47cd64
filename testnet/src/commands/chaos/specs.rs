//! The nodes each scenario starts (see the scenario list in the parent
//! module).

use super::{ChaosCommand, SHARE, Scenario, disk, owner};
use crate::process::NodeSpec;

impl ChaosCommand {
    /// The scenario's nodes: node 0 is the requester whose job is checked.
    pub(super) fn specs(&self) -> Vec<NodeSpec> {
        let p = |d: &str| NodeSpec::provider(d).with_cpu_share(SHARE).with_slots(1);
        match self.scenario {
            Scenario::KillProvider => vec![
                NodeSpec::requester("local").with_slots(1),
                p("local"),
                p("local"),
                p("local"),
                p("local"),
            ],
            // The requester alone in its domain: every task goes to another
            // domain, found through the summaries.
            Scenario::Partition => vec![
                NodeSpec::requester("eu/a").with_slots(1),
                p("eu/b"),
                p("eu/b"),
                p("us/a"),
                p("us/a"),
            ],
            Scenario::SlowNode => vec![
                NodeSpec::requester("local").with_slots(1),
                p("local"),
                p("local"),
                p("local"),
                p("local").with_slowdown(4.0),
            ],
            Scenario::Cheater => vec![
                NodeSpec::requester("local").with_slots(1),
                p("local"),
                p("local"),
                p("local"),
                p("local").with_cheat_rate(1.0),
            ],
            Scenario::Freeloader => {
                let q = |d: &str| p(d).with_config("[credit]\npay_within = \"3s\"\n");
                vec![
                    NodeSpec::requester("local").with_slots(1),
                    q("local"),
                    q("local"),
                    q("local"),
                    q("local"),
                    NodeSpec::requester("local").with_slots(1).never_paying(),
                ]
            }
            Scenario::Sybil => {
                let mut v = vec![
                    NodeSpec::requester("local").with_slots(1),
                    p("local"),
                    p("local"),
                    p("local"),
                    p("local"),
                ];
                v.extend((0..self.sybils).map(|_| NodeSpec::requester("local").with_slots(1).unfunded()));
                v
            }
            // Whole cores: the run's wall time is what is measured. A tenth
            // of the default price, so that the requester's grant covers
            // three runs of a minute (a fuel limit of 1.2 T reserves 120
            // credits).
            Scenario::LongTask => {
                let q = || {
                    NodeSpec::provider("local")
                        .with_slots(1)
                        .with_config("[provider]\nprice = \"0.0001\"\n")
                };
                vec![NodeSpec::requester("local").with_slots(1), q(), q()]
            }
            // A fetcher and two holders; nothing runs.
            Scenario::HolderDies => (0..3).map(|_| NodeSpec::provider("local")).collect(),
            Scenario::OwnerReturns => {
                let q = || p("local").with_config(owner::CONFIG);
                vec![NodeSpec::requester("local").with_slots(1), q(), q(), q(), q()]
            }
            Scenario::DiskFill => {
                let q = || p("local").with_config(disk::CONFIG);
                vec![
                    NodeSpec::requester("local").with_slots(1),
                    q(),
                    q(),
                    q(),
                    q(),
                    NodeSpec::requester("local").with_slots(1),
                ]
            }
            Scenario::SummaryPoison => vec![
                NodeSpec::requester("eu/a").with_slots(1),
                p("eu/b"),
                p("eu/b"),
                p("us/a"),
                p("us/a"),
            ],
            Scenario::EndlessTasks | Scenario::ForgedFraud | Scenario::ReplayFlood | Scenario::SybilFlood => {
                vec![
                    NodeSpec::requester("local").with_slots(1),
                    p("local"),
                    p("local"),
                    p("local"),
                    p("local"),
                    NodeSpec::requester("local").with_slots(1),
                ]
            }
            // Its own nodes, behind NAT routers: see `relay.rs`.
            Scenario::RelayLoss => Vec::new(),
            Scenario::Fork => vec![
                NodeSpec::requester("local").with_slots(1).forking(),
                p("local"),
                p("local"),
                p("local"),
                p("local"),
            ],
        }
    }
}
