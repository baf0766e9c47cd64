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
