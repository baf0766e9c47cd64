//! `agora owner`: the device owner's controls over a running node — see
//! whether it takes work and why not, pause it (for a while, or until
//! resumed) and resume it, and set its limits (hours, battery,
//! temperature), all without a restart.

use std::process::ExitCode;
use std::time::Duration;

use agora_protocol::units::{Timestamp, parse_duration};

use agora_protocol::units::format_duration;

use super::common::{NodeLocator, Source, block_on, emit, print_json, utc};
use agora_market::limits::OwnerLimits;

use crate::api::OwnerState;

/// Whether the node takes work and why not; pause or resume providing.
///
/// A pause stops new work at once (the node's adverts say it is not
/// accepting) and suspends running tasks where they are; they go on from
/// there when it ends. It lasts until `agora owner resume`, or for `--for`
/// (a snooze), restarts of the node included. The owner's limits do the
/// same while one holds (`agora owner set`).
#[derive(Debug, clap::Args)]
#[command(args_conflicts_with_subcommands = true)]
pub struct OwnerCommand {
    /// Print the API's JSON object.
    #[arg(long)]
    pub json: bool,
    /// The node.
    #[command(flatten)]
    pub node: NodeLocator,
    /// Pause or resume.
    #[command(subcommand)]
    pub action: Option<OwnerAction>,
}

/// The owner's controls.
#[derive(Debug, clap::Subcommand)]
pub enum OwnerAction {
    /// Take no new work: until resumed, or for a while (`--for 30m`).
    Pause(PauseCommand),
    /// Take work again.
    Resume(ResumeCommand),
    /// Change the owner's limits, live: `max_temp=80`, `hours=22:00-07:00`,
    /// `weekdays=mon-fri`, `stop_on_battery=true`, `min_battery=30`,
    /// `cpu_share=0.5` (per task), `max_cpu=1.5` (cores, all tasks),
    /// `max_upload=10mbit` (content served to other nodes);
    /// `NAME=none` (or `=false`) lifts one. Kept across restarts, over the
    /// configuration's `[provider.limits]`.
    Set(SetCommand),
    /// What the node did for others, day by day (UTC): tasks run, compute
    /// given, credits earned, requests declined; and the last tasks run.
    /// Read from the records when the node is stopped.
    History(HistoryCommand),
}

/// `agora owner history`.
#[derive(Debug, clap::Args)]
pub struct HistoryCommand {
    /// Days, today included.
    #[arg(long, default_value_t = 7, value_parser = clap::value_parser!(u64).range(1..=366))]
    pub days: u64,
    /// Last tasks listed.
    #[arg(long, default_value_t = 10)]
    pub tasks: usize,
    /// Print the JSON object (as `GET /v1/owner/history`).
    #[arg(long)]
    pub json: bool,
    /// The node.
    #[command(flatten)]
    pub node: NodeLocator,
}

impl HistoryCommand {
    fn execute(self) -> anyhow::Result<ExitCode> {
        let tasks = self.tasks.min(agora_market::history::MAX_RAN);
        let history = match self.node.client_or_records()? {
            Source::Node(client) => block_on(async { client.owner_history(self.days, tasks).await })??,
            Source::Records(store) => {
                let now = Timestamp::from_system(std::time::SystemTime::now());
                crate::node::records_view::history(&store, self.days, tasks, now)?
            }
        };
        if self.json {
            print_json(&history)?;
        } else {
            emit(&render_history(&history))?;
        }
        Ok(ExitCode::SUCCESS)
    }
}

/// The days as a table, then the last tasks.
fn render_history(h: &crate::api::OwnerHistory) -> String {
    let mut out = format!(
        "{:<10}  {:>6}  {:>6}  {:>10}  {:>9}  {:>12}  DECLINED\n",
        "DAY (UTC)", "TASKS", "FAILED", "CU·s", "RUN", "EARNED"
    );
    for d in &h.days {
        let declined: Vec<String> = d.declined.iter().map(|(r, n)| format!("{n} {r}")).collect();
        out.push_str(&format!(
            "{:<10}  {:>6}  {:>6}  {:>10.1}  {:>9}  {:>12}  {}\n",
            d.date,
            d.tasks_run,
            d.tasks_failed,
            d.cu_s,
            format_duration(Duration::from_millis(d.run_ms)),
            agora_protocol::units::Credits(d.earned_micros).to_string(),
            if declined.is_empty() {
                "-".to_owned()
            } else {
                declined.join(", ")
            }
        ));
    }
    if !h.tasks.is_empty() {
        out.push_str("\nlast tasks run\n");
        for t in &h.tasks {
            out.push_str(&format!(
                "  {}  {}  for {}  {} fuel in {}  {}\n",
                utc(t.at),
                t.task,
                t.requester.short(),
                t.fuel.0,
                format_duration(Duration::from_millis(t.run_ms)),
                t.exit
            ));
        }
    }
    out
}

/// `agora owner set`.
#[derive(Debug, clap::Args)]
pub struct SetCommand {
    /// `NAME=VALUE` pairs.
    #[arg(value_name = "NAME=VALUE", required = true)]
    pub changes: Vec<String>,
    /// Print the API's JSON object.
    #[arg(long)]
    pub json: bool,
    /// The node.
    #[command(flatten)]
    pub node: NodeLocator,
}

/// Applies `NAME=VALUE` changes to `limits`.
pub fn apply_changes(limits: &mut OwnerLimits, changes: &[String]) -> anyhow::Result<()> {
    for c in changes {
        let (name, value) = c
            .split_once('=')
            .ok_or_else(|| anyhow::anyhow!("{c:?}: expected NAME=VALUE, e.g. max_temp=80"))?;
        let name = name.trim().replace('-', "_");
        let value = value.trim();
        let none = matches!(value, "none" | "off" | "");
        let bad = |e: String| anyhow::anyhow!("{name}: {e}");
        match name.as_str() {
            "hours" => {
                limits.hours = if none {
                    None
                } else {
                    Some(value.parse().map_err(bad)?)
                }
            }
            "weekdays" => {
                limits.weekdays = if none {
                    None
                } else {
                    Some(value.parse().map_err(bad)?)
                }
            }
            "stop_on_battery" => {
                limits.stop_on_battery = !none
                    && value
                        .parse::<bool>()
                        .map_err(|_| bad(format!("{value:?} is not true or false")))?
            }
            "min_battery" => {
                limits.min_battery = if none {
                    None
                } else {
                    Some(
                        value
                            .trim_end_matches('%')
                            .parse()
                            .map_err(|_| bad(format!("{value:?} is not a percentage")))?,
                    )
                }
            }
            "cpu_share" | "max_cpu" => {
                let v = if none {
                    None
                } else {
                    Some(
                        value
                            .parse::<f64>()
                            .map_err(|_| bad(format!("{value:?} is not a number")))?,
                    )
                };
                if name == "cpu_share" {
                    limits.cpu_share = v;
                } else {
                    limits.max_cpu = v;
                }
            }
            "max_temp" => {
                limits.max_temp = if none {
                    None
                } else {
                    Some(
                        value
                            .trim_end_matches('C')
                            .trim_end_matches('°')
                            .parse()
                            .map_err(|_| bad(format!("{value:?} is not a temperature in °C")))?,
                    )
                }
            }
            "max_upload" => {
                limits.max_upload = if none {
                    None
                } else {
                    Some(value.parse().map_err(bad)?)
                }
            }
            _ => anyhow::bail!(
                "{name:?} is not a limit (hours, weekdays, stop_on_battery, min_battery, max_temp, cpu_share, max_cpu, max_upload)"
            ),
        }
    }
    limits.validate().map_err(anyhow::Error::msg)
}

/// `agora owner pause`.
#[derive(Debug, clap::Args)]
pub struct PauseCommand {
    /// For how long, like `30m` or `2h` (a snooze); default: until resumed.
    #[arg(long = "for", value_name = "DURATION", value_parser = parse_duration)]
    pub duration: Option<Duration>,
    /// Print the API's JSON object.
    #[arg(long)]
    pub json: bool,
    /// The node.
    #[command(flatten)]
    pub node: NodeLocator,
}

/// `agora owner resume`.
#[derive(Debug, clap::Args)]
pub struct ResumeCommand {
    /// Print the API's JSON object.
    #[arg(long)]
    pub json: bool,
    /// The node.
    #[command(flatten)]
    pub node: NodeLocator,
}

impl OwnerCommand {
    /// Runs the command.
    pub fn execute(self) -> anyhow::Result<ExitCode> {
        let (state, json) = match self.action {
            Some(OwnerAction::Pause(p)) => {
                let client = p.node.client()?;
                (block_on(async { client.pause(p.duration).await })??, p.json)
            }
            Some(OwnerAction::Resume(r)) => {
                let client = r.node.client()?;
                (block_on(async { client.resume().await })??, r.json)
            }
            Some(OwnerAction::History(h)) => return h.execute(),
            Some(OwnerAction::Set(s)) => {
                let client = s.node.client()?;
                let state = block_on(async {
                    let mut limits = client.owner().await?.limits;
                    apply_changes(&mut limits, &s.changes)?;
                    anyhow::Ok(client.set_limits(&limits).await?)
                })??;
                (state, s.json)
            }
            None => {
                let client = self.node.client()?;
                (block_on(async { client.owner().await })??, self.json)
            }
        };
        if json {
            print_json(&state)?;
        } else {
            emit(&render(&state))?;
        }
        Ok(ExitCode::SUCCESS)
    }
}

/// The state in a few lines.
fn render(s: &OwnerState) -> String {
    let taking = match (&s.not_accepting, s.accepting) {
        (_, true) => "taking work".to_owned(),
        (Some(why), false) => format!("taking no new work: {why}"),
        (None, false) => "taking no new work".to_owned(),
    };
    let paused = match (s.paused, s.paused_until) {
        (false, _) => "not paused".to_owned(),
        (true, Some(Timestamp(t))) => format!(
            "paused until {} (`agora owner resume` ends it sooner)",
            utc(Timestamp(t))
        ),
        (true, None) => "paused until `agora owner resume`".to_owned(),
    };
    let suspended = if s.suspended > 0 {
        format!(" ({} suspended until it goes on)", s.suspended)
    } else {
        String::new()
    };
    let mut out = format!(
        "provider  {taking}\nowner     {paused}\ntasks     {} running{suspended}, {} accepted and not finished\n",
        s.running, s.queued
    );
    if s.limits_in_words.is_empty() {
        out.push_str("limits    none (`agora owner set max_temp=80 hours=22:00-07:00 …`)\n");
    } else {
        out.push_str(&format!("limits    {}\n", s.limits_in_words.join("; ")));
    }
    if let Some(l) = &s.held_by {
        out.push_str(&format!(
            "holding   {l}: {}\n",
            s.not_accepting.as_deref().unwrap_or("")
        ));
    }
    for u in &s.unavailable {
        out.push_str(&format!("cannot    read {u}: that limit is not applied\n"));
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_state_says_why_no_work_is_taken_and_until_when() {
        let s = OwnerState {
            accepting: false,
            not_accepting: Some("paused by its owner".into()),
            paused: true,
            paused_until: None,
            running: 1,
            queued: 2,
            suspended: 0,
            limits: OwnerLimits::default(),
            limits_in_words: vec![],
            held_by: None,
            unavailable: vec![],
            tasks: vec![],
        };
        let out = render(&s);
        assert!(out.contains("taking no new work: paused by its owner"), "{out}");
        assert!(out.contains("paused until `agora owner resume`"), "{out}");
        assert!(out.contains("1 running, 2 accepted"), "{out}");
        assert!(out.contains("limits    none"), "{out}");
    }

    #[test]
    fn a_holding_limit_and_an_unreadable_one_are_named() {
        let s = OwnerState {
            accepting: false,
            not_accepting: Some("the machine is at 91 °C, above the owner's 80 °C".into()),
            paused: false,
            paused_until: None,
            running: 1,
            queued: 1,
            suspended: 1,
            limits: OwnerLimits::default(),
            limits_in_words: vec!["stops above 80 °C".into(), "stops on battery".into()],
            held_by: Some("max_temp".into()),
            unavailable: vec!["battery: cannot read /sys/class/power_supply".into()],
            tasks: vec![],
        };
        let out = render(&s);
        assert!(out.contains("1 running (1 suspended"), "{out}");
        assert!(
            out.contains("limits    stops above 80 °C; stops on battery"),
            "{out}"
        );
        assert!(
            out.contains("holding   max_temp: the machine is at 91 °C"),
            "{out}"
        );
        assert!(out.contains("cannot    read battery"), "{out}");
    }

    #[test]
    fn owner_set_changes_lifts_and_refuses_by_name() {
        let mut l = OwnerLimits::default();
        let c = |v: &[&str]| v.iter().map(|s| s.to_string()).collect::<Vec<_>>();
        apply_changes(
            &mut l,
            &c(&[
                "max_temp=80",
                "hours=22:00-07:00",
                "stop-on-battery=true",
                "min_battery=30%",
            ]),
        )
        .unwrap();
        assert_eq!(l.max_temp, Some(80.0));
        assert_eq!(l.hours.unwrap().to_string(), "22:00-07:00");
        assert!(l.stop_on_battery);
        assert_eq!(l.min_battery, Some(30));
        apply_changes(&mut l, &c(&["max_temp=none", "hours=off"])).unwrap();
        assert_eq!((l.max_temp, l.hours), (None, None));
        assert!(
            apply_changes(&mut l, &c(&["max_tmp=80"]))
                .unwrap_err()
                .to_string()
                .contains("not a limit")
        );
        assert!(
            apply_changes(&mut l, &c(&["min_battery=120"]))
                .unwrap_err()
                .to_string()
                .contains("100")
        );
        assert!(
            apply_changes(&mut l, &c(&["hours=9-5"]))
                .unwrap_err()
                .to_string()
                .contains("hours")
        );
    }
}
