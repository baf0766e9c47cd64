//! Fault scenarios end to end: the job still comes out right.

#[test]
fn a_cheating_provider_is_caught_unpaid_and_banned() {
    let _turn = crate::serial();
    let out = crate::run_ok(crate::testnet().args(["chaos", "cheater", "--tasks", "30", "--json"]));
    let r = crate::last_json(&out);
    assert_eq!(r["ok"], true, "{r}");
    assert!(r["wrong_caught"].as_u64().unwrap_or(0) > 0, "{r}");
    let cheater = r["providers"]
        .as_array()
        .expect("providers")
        .iter()
        .find(|p| p["role"].as_str().is_some_and(|s| s.contains("cheats")))
        .expect("a cheater")
        .clone();
    assert_eq!(cheater["paid_micros"], 0, "{cheater}");
    let identified = r["checks"]
        .as_array()
        .expect("checks")
        .iter()
        .find(|c| c["what"].as_str().is_some_and(|w| w.contains("identified")))
        .expect("an identification check")
        .clone();
    assert_eq!(identified["ok"], true, "{identified}");
    assert_eq!(cheater["accepted"], 0, "{cheater}");
}

#[test]
fn a_provider_killed_mid_job_does_not_stop_it() {
    let _turn = crate::serial();
    let out = crate::run_ok(crate::testnet().args(["chaos", "kill-provider", "--tasks", "40", "--json"]));
    let r = crate::last_json(&out);
    assert_eq!(r["ok"], true, "{r}");
    let events = r["events"].as_array().expect("events");
    assert!(
        events
            .iter()
            .any(|e| e[1].as_str().is_some_and(|s| s.contains("SIGKILL"))),
        "a provider was killed: {r}"
    );
    assert_eq!(r["total_micros"], r["expected_micros"], "{r}");
}

/// The `what` of every check of a report.
fn checks(r: &serde_json::Value) -> Vec<(String, bool)> {
    r["checks"]
        .as_array()
        .expect("checks")
        .iter()
        .map(|c| (c["what"].as_str().unwrap_or("").to_owned(), c["ok"] == true))
        .collect()
}

#[test]
fn a_requester_that_never_pays_is_refused_once_its_receipts_are_late() {
    let _turn = crate::serial();
    let out = crate::run_ok(crate::testnet().args(["chaos", "freeloader", "--tasks", "24", "--json"]));
    let r = crate::last_json(&out);
    assert_eq!(r["ok"], true, "{r}");
    let per_provider: Vec<_> = checks(&r)
        .into_iter()
        .filter(|(w, _)| w.contains("for the freeloader"))
        .collect();
    assert_eq!(per_provider.len(), 4, "one check per provider: {r}");
    assert!(per_provider.iter().all(|(_, ok)| *ok), "{r}");
    assert!(
        checks(&r)
            .iter()
            .any(|(w, ok)| w.contains("got nothing more") && *ok),
        "{r}"
    );
    assert!(
        checks(&r).iter().any(|(w, ok)| w.starts_with("audit:") && *ok),
        "{r}"
    );
}

#[test]
fn a_forked_chain_is_proven_everywhere_and_its_owner_gets_no_more_work() {
    let _turn = crate::serial();
    let out = crate::run_ok(crate::testnet().args(["chaos", "fork", "--tasks", "30", "--json"]));
    let r = crate::last_json(&out);
    assert_eq!(r["ok"], true, "{r}");
    let c = checks(&r);
    assert!(c.iter().any(|(w, ok)| w == "the fork was detected" && *ok), "{r}");
    assert!(c.iter().any(|(w, ok)| w.contains("knew the fork") && *ok), "{r}");
    assert!(
        c.iter().any(|(w, ok)| w.contains("no further work") && *ok),
        "{r}"
    );
}

#[test]
fn fresh_keys_without_grants_and_credits_minted_between_accomplices_get_no_more_than_credit_lines() {
    let _turn = crate::serial();
    let out =
        crate::run_ok(crate::testnet().args(["chaos", "sybil", "--sybils", "12", "--tasks", "24", "--json"]));
    let r = crate::last_json(&out);
    assert_eq!(r["ok"], true, "{r}");
    let c = checks(&r);
    assert!(c.iter().any(|(w, ok)| w.contains("fresh keys") && *ok), "{r}");
    assert!(
        c.iter()
            .any(|(w, ok)| w.contains("minted credits") && w.contains("unbacked 1000") && *ok),
        "a provider's audit counts the minted credits as unbacked: {r}"
    );
}

#[test]
fn endless_tasks_are_never_taken_or_stop_within_a_second_of_a_cancel() {
    let _turn = crate::serial();
    let out = crate::run_ok(crate::testnet().args(["chaos", "endless-tasks", "--tasks", "16", "--json"]));
    let r = crate::last_json(&out);
    assert_eq!(r["ok"], true, "{r}");
    let c = checks(&r);
    assert!(
        c.iter()
            .any(|(w, ok)| w.starts_with("unbounded tasks are not run") && *ok),
        "{r}"
    );
    assert!(
        c.iter()
            .any(|(w, ok)| w.starts_with("cancelling the job stopped") && *ok),
        "{r}"
    );
}

/// Runs a scenario; asserts the report is ok and that a check starting with
/// each of `must` held.
fn scenario_holds(args: &[&str], must: &[&str]) {
    let _turn = crate::serial();
    let mut all = vec!["chaos"];
    all.extend_from_slice(args);
    all.push("--json");
    let out = crate::run_ok(crate::testnet().args(&all));
    let r = crate::last_json(&out);
    assert_eq!(r["ok"], true, "{r}");
    let c = checks(&r);
    for m in must {
        assert!(c.iter().any(|(w, ok)| w.starts_with(m) && *ok), "{m}: {r}");
    }
}

#[test]
fn forged_fraud_proofs_ban_no_honest_provider_and_cost_at_most_the_quota() {
    scenario_holds(
        &["forged-fraud", "--tasks", "8"],
        &[
            "re-execution stays within each node's quota",
            "no honest provider banned by any node",
            "the honest job after the attack is done",
        ],
    );
}

#[test]
fn a_replay_flood_declines_no_genuine_call() {
    scenario_holds(
        &["replay-flood", "--tasks", "8"],
        &[
            "genuine calls declined as stale or replayed during the flood: 0 of",
            "the honest job during the flood is done",
        ],
    );
}

/// The flood keeps no newcomer out and the honest job comes out right.
/// The scenario judges the job's slowdown (at most 2×) on release builds
/// only: in a debug build the flood's per-message cost takes the cores
/// the tasks run on (see the scenario).
#[test]
fn a_flood_of_fake_identities_keeps_out_no_newcomer_and_stops_no_job() {
    scenario_holds(
        &["sybil-flood", "--fake-ids", "2000", "--tasks", "16"],
        &[
            "a new honest provider entered the requester's view",
            "the honest job during the flood is done",
            "the honest job took",
            "the chains sum to the grants issued",
        ],
    );
}

#[test]
fn poisoned_summaries_list_no_invented_domain_and_draw_no_call() {
    scenario_holds(
        &["summary-poison", "--tasks", "8"],
        &[
            "no node lists an invented domain",
            "each of the",
            "the poisoned summaries' contact got 0 calls for offers",
            "the honest job is done",
        ],
    );
}

#[test]
fn outputs_meant_to_fill_disks_stay_within_the_owners_caps() {
    scenario_holds(
        &["disk-fill", "--tasks", "8"],
        &[
            "no provider takes a task whose output may exceed its owner's cap",
            "every provider's stored content stayed within its 16 MiB cap",
            "within 20 s of the job's end",
            "an honest job after the attack is done",
        ],
    );
}

#[test]
fn owners_taking_two_providers_back_mid_job_suspend_their_tasks_and_the_job_comes_out_right() {
    scenario_holds(
        &["owner-returns", "--tasks", "40"],
        &[
            "job done",
            "all 40 outputs equal the expected prime counts",
            "both heated providers held within 2 s and suspended their running tasks",
            "every task suspended mid-run was finished",
            "cooled, 2 of 2 take work again",
            "ledger balanced",
        ],
    );
}

#[test]
fn a_long_task_goes_on_from_its_last_checkpoint_when_its_provider_dies_or_restarts() {
    scenario_holds(
        &["long-task", "--task-secs", "25"],
        &[
            "provider killed, the task moved: the output equals the uninterrupted run's",
            "provider killed, the task moved: the receipt resumed from checkpoint",
            "provider restarted on its data dir: the output equals the uninterrupted run's",
            "provider restarted on its data dir: the receipt resumed from checkpoint",
            "the chains sum to the grants issued",
        ],
    );
}

#[test]
fn a_fetch_goes_on_from_another_holder_when_one_dies_mid_transfer() {
    scenario_holds(
        &["holder-dies", "--mib", "48"],
        &[
            "the fetcher holds exactly the blob's bytes",
            "only the slices in flight on the dead holder were asked again",
            "both holders sent slices",
        ],
    );
}
