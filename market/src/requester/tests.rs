//! The requester on its own, message by message: what a typed refusal
//! does to a provider's standing, how receipts are judged, and how agreeing
//! replicas settle and pay. (The seeded simulation, [`crate::sim`], drives
//! it through whole jobs with lost and reordered messages.)

use std::time::Duration;

use agora_protocol::capacity::Advert;
use agora_protocol::execution::{Checkpoint, ExitStatus, Progress};
use agora_protocol::market::Agreement;
use agora_protocol::rpc::Decline;
use agora_protocol::units::{Bytes, ComputeUnits, EnergyRate, Fuel, Price, Timestamp};
use agora_protocol::wire::Blob;
use agora_protocol::{ContentId, Encode, Envelope, JobId, Keypair, Nonce, Payload};

use super::*;
use crate::job::{InputSpec, JobSpec, Strategy};

const NOW: Timestamp = Timestamp(1_800_000_000_000);

fn seal<T: Payload>(kp: &Keypair, p: &T) -> Envelope {
    Envelope::seal(
        kp,
        p,
        NOW,
        Duration::from_secs(30).min(T::MAX_LIFETIME),
        Nonce(rand::random()),
    )
    .expect("seals")
}

/// A requester whose view holds `providers` idle providers.
fn world(providers: usize) -> (Keypair, Requester, View, Vec<Keypair>) {
    world_with(providers, Config::default())
}

/// An idle provider's advert in domain `d`: one slot, 256 MiB, 1000 CU,
/// calibrated at `at`.
fn idle_advert(at: Timestamp) -> Advert {
    Advert {
        seq: 1,
        domain: "d".parse().expect("domain"),
        cu: ComputeUnits(1000),
        calibrated_at: at,
        memory: Bytes::mib(256),
        slots: 1,
        free_slots: 1,
        queued: 0,
        load: 0,
        accepting: true,
        price: Price(1_000),
        energy: EnergyRate(0),
        version: "test".into(),
        addrs: vec![],
        max_task_fuel: Fuel(u64::MAX),
        max_task_time: Millis(3_600_000),
        max_output: Bytes::mib(16),
        labels: vec![],
    }
}

/// The same, with the requester configured by `config`.
fn world_with(providers: usize, config: Config) -> (Keypair, Requester, View, Vec<Keypair>) {
    let me = Keypair::from_secret([1; 32]);
    let mut view = View::new(me.node_id(), "d".parse().expect("domain"), 100);
    let kps: Vec<Keypair> = (0..providers)
        .map(|i| Keypair::from_secret([10 + i as u8; 32]))
        .collect();
    for kp in &kps {
        let a = idle_advert(NOW);
        view.on_advert(&seal(kp, &a).to_bytes(), None, NOW)
            .expect("advert accepted");
    }
    let r = Requester::new(me.node_id(), config, 7);
    (me, r, view, kps)
}

fn spec(tasks: usize, replicas: u8) -> JobSpec {
    JobSpec {
        module: ContentId([9; 32]),
        module_size: Bytes(100),
        reduce: None,
        dataset: None,
        inputs_from: None,
        inputs: (0..tasks)
            .map(|i| InputSpec {
                name: format!("in-{i}"),
                id: ContentId([i as u8; 32]),
                size: Bytes(10),
                estimate: None,
            })
            .collect(),
        args: vec![],
        reduce_args: vec![],
        // Five seconds at 1000 CU: large enough to ask several providers.
        fuel: Fuel(5_000_000_000),
        estimate: None,
        memory: Bytes::mib(64),
        deadline: Duration::from_secs(30),
        max_price: Price(10_000),
        replicas,
        domain: None,
        spot_check: 0.0,
        max_energy: None,
        seed: 1,
        strategy: Strategy::Scored,
        max_output: None,
        max_failures: 0,
        ttl: None,
        select: Vec::new(),
        class: Default::default(),
        energy_budget: None,
    }
}

/// The calls the requester wants to send, as (task, attempt, providers).
fn calls(r: &mut Requester) -> Vec<(TaskId, u16, Vec<NodeId>)> {
    std::iter::from_fn(|| r.poll_action())
        .filter_map(|a| match a {
            Action::Call {
                task, attempt, to, ..
            } => Some((task, attempt, to)),
            _ => None,
        })
        .collect()
}

#[test]
fn a_busy_provider_is_backed_off_but_an_unreachable_one_also_loses_standing() {
    let (_, mut r, view, kps) = world(2);
    r.submit(JobId([1; 16]), spec(1, 1), NOW);
    r.place(NOW, &view);
    let (task, attempt, to) = calls(&mut r).pop().expect("a call");
    assert!(to.len() >= 2, "both providers asked");
    let (busy, gone) = (kps[0].node_id(), kps[1].node_id());
    r.on_offer(
        task,
        attempt,
        busy,
        Err(Refusal::Declined(Decline::NoFreeSlot)),
        NOW,
        &view,
    );
    r.on_offer(
        task,
        attempt,
        gone,
        Err(Refusal::Unreachable("timed out".into())),
        NOW,
        &view,
    );
    let b = r.book().get(&busy).expect("known");
    let g = r.book().get(&gone).expect("known");
    assert!(
        b.backoff_until > NOW.0 && b.failed == 0,
        "busy: backed off, not failed"
    );
    assert!(
        g.backoff_until > NOW.0 && g.failed == 1,
        "unreachable: backed off and failed"
    );
    // The wording of a decline changes nothing: an invalid answer whose
    // text says "no free slot" is neither a busy provider nor a limit it
    // stated; it is only not asked again for a moment, like any answer.
    let (_, mut r, view, kps) = world(1);
    r.submit(JobId([2; 16]), spec(1, 1), NOW);
    r.place(NOW, &view);
    let (task, attempt, _) = calls(&mut r).pop().expect("a call");
    let p = kps[0].node_id();
    r.on_offer(
        task,
        attempt,
        p,
        Err(Refusal::Invalid("no free slot".into())),
        NOW,
        &view,
    );
    let s = r.book().get(&p).expect("known");
    assert_eq!(s.backoff_until, NOW.add(Config::default().busy_backoff).0);
    assert_eq!((s.stated.at, s.failed), (0, 0));
}

/// A provider that cannot be reached when it is sent the acceptance (it
/// died after offering) is backed off like one unreachable on a call: the
/// task's next attempt goes elsewhere rather than to it again at once.
#[test]
fn a_provider_unreachable_with_the_acceptance_is_backed_off_and_the_next_attempt_goes_elsewhere() {
    let (_, mut r, view, kps) = world(2);
    r.submit(JobId([3; 16]), spec(1, 1), NOW);
    r.place(NOW, &view);
    let (task, attempt, to) = calls(&mut r).pop().expect("a call");
    for p in &to {
        let kp = kps.iter().find(|k| k.node_id() == *p).expect("a provider");
        r.on_offer(task, attempt, *p, Ok(offer_from(kp, task)), NOW, &view);
    }
    let gone = std::iter::from_fn(|| r.poll_action())
        .find_map(|a| match a {
            Action::Accept { to, .. } => Some(to),
            _ => None,
        })
        .expect("an acceptance");
    r.on_agreement(task, attempt, gone, Err(Refusal::Unreachable("gone".into())), NOW);
    let g = r.book().get(&gone).expect("known");
    assert!(g.backoff_until > NOW.0 && g.failed == 1 && g.unreachable, "{g:?}");
    // Whatever the task does next (the other offer, or a new call), it
    // does not go to the unreachable provider within the back-off.
    let later = NOW.add(Duration::from_millis(100));
    r.place(later, &view);
    for a in std::iter::from_fn(|| r.poll_action()) {
        match a {
            Action::Call { to, .. } => assert!(!to.contains(&gone), "called again"),
            Action::Accept { to, .. } => assert_ne!(to, gone, "accepted again"),
            _ => {}
        }
    }
}

/// Takes a job through offer and agreement with each provider in turn,
/// returning the agreement envelope of each copy.
fn agree(r: &mut Requester, view: &View, kps: &[Keypair]) -> Vec<(Keypair, Envelope, TaskId)> {
    let mut out = Vec::new();
    for _ in 0..kps.len() {
        for (kp, accept, env) in place_round(r, view, kps, NOW) {
            out.push((kp, env, accept.assignment.task));
        }
    }
    out
}

fn receipt(
    kp: &Keypair,
    agreement: &Envelope,
    r: &Requester,
    task: TaskId,
    output: &[u8],
) -> Verified<Receipt> {
    let (_, a) = r.assignment_of(task).expect("assignment");
    let ran = crate::engine::Ran {
        output: ContentId::of(output),
        output_size: Bytes(output.len() as u64),
        fuel: Fuel(500),
        exit: ExitStatus::Success,
        started_at: NOW,
        finished_at: NOW,
        inline: None,
        stderr: Vec::new(),
        resumed: None,
        billed_from: Fuel(0),
    };
    let receipt = ran.receipt(&a, agreement.id(), r.local());
    seal(kp, &receipt).open(NOW).expect("opens")
}

#[test]
fn a_receipt_for_another_module_is_refused_and_its_copy_fails() {
    let (_, mut r, view, kps) = world(1);
    r.submit(JobId([3; 16]), spec(1, 1), NOW);
    let copies = agree(&mut r, &view, &kps);
    let (kp, ag, task) = copies.first().expect("one copy");
    let mut bad = receipt(kp, ag, &r, *task, b"out").payload().clone();
    bad.module = ContentId([7; 32]);
    let bad = seal(kp, &bad).open(NOW).expect("opens");
    assert_eq!(
        r.on_receipt(kp.node_id(), &bad, true, NOW),
        Err(ReceiptError::Mismatch("module"))
    );
    let (_, tasks) = r.job(&task.job).expect("job");
    assert!(matches!(tasks[0].copies[0].state, CopyState::Failed(_)));
}

#[test]
fn agreeing_replicas_settle_the_task_and_each_is_paid_once() {
    let (_, mut r, view, kps) = world(2);
    let job = JobId([4; 16]);
    r.submit(job, spec(1, 2), NOW);
    let copies = agree(&mut r, &view, &kps);
    assert_eq!(copies.len(), 2, "two replicas on two providers");
    for (kp, ag, task) in &copies {
        let v = receipt(kp, ag, &r, *task, b"same");
        assert_eq!(
            r.on_receipt(kp.node_id(), &v, true, NOW),
            Ok(ReceiptVerdict::Accepted)
        );
        // A retransmission is acknowledged again, not counted again.
        assert_eq!(
            r.on_receipt(kp.node_id(), &v, true, NOW),
            Ok(ReceiptVerdict::Duplicate)
        );
    }
    let pays: Vec<NodeId> = std::iter::from_fn(|| r.poll_action())
        .filter_map(|a| match a {
            Action::Pay { to, .. } => Some(to),
            _ => None,
        })
        .collect();
    assert_eq!(pays.len(), 2, "each replica paid once: {pays:?}");
    let (rec, tasks) = r.job(&job).expect("job");
    assert_eq!(tasks[0].phase, TaskPhase::Verified);
    assert_eq!(rec.state, JobState::Done);
}

#[test]
fn a_cancelled_job_pays_the_copies_that_reported_and_only_once() {
    let (_, mut r, view, kps) = world(2);
    let job = JobId([5; 16]);
    r.submit(job, spec(1, 2), NOW);
    let copies = agree(&mut r, &view, &kps);
    assert_eq!(copies.len(), 2);
    // One replica reports; the task waits for the other when the user
    // cancels the job.
    let (kp, ag, task) = &copies[0];
    let v = receipt(kp, ag, &r, *task, b"out");
    assert!(r.on_receipt(kp.node_id(), &v, true, NOW).is_ok());
    let pays = |r: &mut Requester| -> Vec<NodeId> {
        std::iter::from_fn(|| r.poll_action())
            .filter_map(|a| match a {
                Action::Pay { to, .. } => Some(to),
                _ => None,
            })
            .collect()
    };
    assert!(pays(&mut r).is_empty(), "not paid while the task is undecided");
    assert!(r.cancel(job, NOW));
    assert_eq!(pays(&mut r), vec![kp.node_id()], "the copy that ran is paid");
    assert!(!r.cancel(job, NOW));
    assert!(pays(&mut r).is_empty(), "and only once");
}

/// A task submitted with more memory than this node's own executor gives
/// one is never judged by a spot check here (a run out of memory would
/// condemn an honest provider): a second provider decides instead. With
/// enough memory, the same job is spot-checked.
#[test]
fn a_verifier_that_cannot_reproduce_a_tasks_limits_has_a_second_provider_decide() {
    let checked = |local_memory: Bytes| {
        let config = Config {
            local_memory,
            ..Config::default()
        };
        let (_, mut r, view, kps) = world_with(2, config);
        let job = JobId([6; 16]);
        let mut s = spec(1, 1);
        s.memory = Bytes::mib(200);
        s.spot_check = 1.0;
        r.submit(job, s, NOW);
        let first = agree(&mut r, &view, &kps);
        assert_eq!(first.len(), 1, "one replica asked for");
        let (kp, ag, task) = &first[0];
        let v = receipt(kp, ag, &r, *task, b"out");
        assert_eq!(
            r.on_receipt(kp.node_id(), &v, true, NOW),
            Ok(ReceiptVerdict::Accepted)
        );
        let spot = std::iter::from_fn(|| r.poll_action()).any(|a| matches!(a, Action::SpotCheck { .. }));
        (r, view, kps, job, kp.node_id(), spot)
    };
    let (_, _, _, _, _, spot) = checked(Bytes::mib(256));
    assert!(spot, "a node that can meet the limits spot-checks");

    let (mut r, view, kps, job, first, spot) = checked(Bytes::mib(64));
    assert!(!spot, "no spot check under other limits");
    let (_, tasks) = r.job(&job).expect("job");
    assert_ne!(
        tasks[0].phase,
        TaskPhase::Verified,
        "one unchecked copy settles nothing"
    );
    let second = agree(&mut r, &view, &kps);
    assert_eq!(second.len(), 1, "a second provider is asked");
    let (kp, ag, task) = &second[0];
    assert_ne!(kp.node_id(), first, "another provider");
    let v = receipt(kp, ag, &r, *task, b"out");
    assert_eq!(
        r.on_receipt(kp.node_id(), &v, true, NOW),
        Ok(ReceiptVerdict::Accepted)
    );
    let (rec, tasks) = r.job(&job).expect("job");
    assert_eq!(tasks[0].phase, TaskPhase::Verified, "two agreeing copies decide");
    assert_eq!(rec.state, JobState::Done);
}

/// Ended jobs leave memory beyond the newest `keep_finished` and after
/// `retire_after`, once their records are taken for writing: memory does
/// not grow with history.
#[test]
fn ended_jobs_leave_memory_once_written() {
    let config = Config {
        keep_finished: 2,
        retire_after: Duration::from_secs(60),
        ..Config::default()
    };
    let (_, mut r, view, kps) = world_with(1, config);
    let ids: Vec<JobId> = (0..5u8).map(|i| JobId([40 + i; 16])).collect();
    for id in &ids {
        r.submit(*id, spec(1, 1), NOW);
        let copies = agree(&mut r, &view, &kps);
        let (kp, ag, task) = &copies[0];
        let v = receipt(kp, ag, &r, *task, b"out");
        assert!(r.on_receipt(kp.node_id(), &v, true, NOW).is_ok());
        assert_eq!(
            r.job(id).expect("in memory while it runs").0.state,
            JobState::Done
        );
        while r.poll_action().is_some() {}
    }
    r.tick(NOW, &view);
    assert!(r.job(&ids[0]).is_some(), "not written yet: kept");
    let (jobs, _) = r.take_dirty();
    assert!(jobs.len() >= 5, "every job's record goes to disk");
    r.tick(NOW, &view);
    let held: Vec<bool> = ids.iter().map(|id| r.job(id).is_some()).collect();
    assert_eq!(held, [false, false, false, true, true], "the newest two stay");
    r.tick(NOW.add(Duration::from_secs(61)), &view);
    assert!(
        ids.iter().all(|id| r.job(id).is_none()),
        "and leave after a minute"
    );
}

/// A provider that refuses this requester outright is left alone for ten
/// minutes, one that declines its credit for two seconds (payments may
/// arrive), one without a free slot for a quarter second; none of these
/// counts against the provider.
#[test]
fn a_refusal_backs_off_for_as_long_as_it_is_likely_to_hold() {
    let cases = [
        (Decline::Refused, Duration::from_secs(600)),
        (Decline::Unpaid { receipts: 4 }, Duration::from_secs(2)),
        (Decline::NoFreeSlot, Duration::from_millis(250)),
    ];
    for (decline, wait) in cases {
        let (_, mut r, view, kps) = world(1);
        r.submit(JobId([8; 16]), spec(1, 1), NOW);
        r.place(NOW, &view);
        let (task, attempt, _) = calls(&mut r).pop().expect("a call");
        let p = kps[0].node_id();
        r.on_offer(
            task,
            attempt,
            p,
            Err(Refusal::Declined(decline.clone())),
            NOW,
            &view,
        );
        let s = r.book().get(&p).expect("known");
        assert_eq!(s.backoff_until, NOW.add(wait).0, "{decline:?}");
        assert_eq!(s.failed, 0, "{decline:?} is no failure of the provider");
    }
}

/// An offer from `kp` for `task`.
fn offer_from(kp: &Keypair, task: TaskId) -> Verified<Offer> {
    let offer = agora_protocol::market::Offer {
        call: MessageId([0; 32]),
        task,
        price: Price(1_000),
        expected_start: Millis(0),
        expected_run: Millis(10),
        has_module: true,
        has_input: true,
        energy: agora_protocol::units::EnergyRate(10),
    };
    seal(kp, &offer).open::<Offer>(NOW).expect("opens")
}

#[test]
fn keys_without_standing_are_asked_one_at_a_time_and_never_hold_honest_work_up() {
    // One provider with standing (a measured round trip), five keys with
    // nothing behind them but adverts.
    let (_, mut r, mut view, kps) = world(6);
    let known = kps[0].node_id();
    view.on_rtt(known, Duration::from_millis(1));
    let unknown: Vec<NodeId> = kps[1..].iter().map(|k| k.node_id()).collect();
    r.submit(JobId([7; 16]), spec(6, 1), NOW);
    r.place(NOW, &view);
    let sent = calls(&mut r);
    // The first task asks the provider with standing and one key beside
    // it; once that provider is busy, MAX_PROBES tasks ask a key each and
    // the rest wait for it.
    assert_eq!(sent.len(), 1 + place::MAX_PROBES, "{sent:?}");
    assert!(sent[0].2.contains(&known), "{sent:?}");
    for (_, _, to) in &sent {
        assert!(to.iter().filter(|n| unknown.contains(n)).count() <= 1, "{to:?}");
    }
    // The provider with standing offers: the negotiation concludes without
    // waiting for the silent key asked beside it.
    let (task, attempt, _) = sent[0].clone();
    r.on_offer(task, attempt, known, Ok(offer_from(&kps[0], task)), NOW, &view);
    let accepted =
        std::iter::from_fn(|| r.poll_action()).any(|a| matches!(a, Action::Accept { to, .. } if to == known));
    assert!(accepted, "the offer with standing is taken at once");
    // Another provider gains standing: the tasks asked only of silent keys
    // go to it at the next tick instead of waiting out the timeout.
    let newcomer = kps[5].node_id();
    view.on_rtt(newcomer, Duration::from_millis(1));
    let later = NOW.add(Duration::from_millis(100));
    r.tick(later, &view);
    let again = calls(&mut r);
    assert!(
        again
            .iter()
            .any(|(t, _, to)| to.contains(&newcomer) && sent[1..].iter().any(|s| s.0 == *t)),
        "a probed task is asked of the provider with standing: {again:?}"
    );
    // The silent keys are not blamed before the timeout, and are after it.
    let probed: Vec<NodeId> = sent[1..].iter().flat_map(|s| s.2.clone()).collect();
    assert!(
        probed
            .iter()
            .all(|p| r.book().get(p).is_none_or(|s| s.failed == 0))
    );
    r.tick(NOW.add(Duration::from_secs(4)), &view);
    let silent = probed.iter().filter(|p| *p != &newcomer);
    for p in silent {
        let s = r.book().get(p).expect("known");
        assert!(s.failed >= 1 && s.unreachable, "{p}: {s:?}");
    }
}

/// How long the jobs below wait for a provider.
const TTL: Duration = Duration::from_secs(30);

/// Drives a one-task job whose only provider answers every call with
/// `decline`, ticking every 10 ms for up to a minute: how often that
/// provider was asked, and the job as it ended.
fn declined_throughout(decline: Decline, memory: Bytes) -> (usize, JobRecord) {
    let (_, mut r, view, kps) = world(1);
    let p = kps[0].node_id();
    let id = JobId([5; 16]);
    let mut s = spec(1, 1);
    s.memory = memory;
    s.ttl = Some(TTL);
    r.submit(id, s, NOW);
    let mut asked = 0;
    let mut t = NOW;
    while t < NOW.add(Duration::from_secs(60)) && !r.job(&id).expect("known").0.state.is_terminal() {
        r.tick(t, &view);
        for (task, attempt, to) in calls(&mut r) {
            if to.contains(&p) {
                asked += 1;
                r.on_offer(
                    task,
                    attempt,
                    p,
                    Err(Refusal::Declined(decline.clone())),
                    t,
                    &view,
                );
            }
        }
        t = t.add(Duration::from_millis(10));
    }
    (asked, r.job(&id).expect("known").0.clone())
}

/// A provider whose advert (or a domain summary) promises what it then
/// declines for a lasting reason is not asked again while its word stands,
/// and a task no provider takes fails after `unplaceable_after`, saying
/// why per constraint.
#[test]
fn a_provider_that_declines_for_memory_is_asked_once_and_the_job_fails_naming_the_constraint() {
    let (asked, job) = declined_throughout(Decline::MemoryTooLarge { max: Bytes::mib(128) }, Bytes::mib(256));
    assert_eq!(asked, 1, "asked once, then excluded on its word");
    assert_eq!(job.state, JobState::Failed);
    let took = job.finished_at.expect("ended").since(NOW);
    let limit = TTL;
    assert!(
        took >= limit && took <= limit + Duration::from_secs(5),
        "failed after {took:?}"
    );
    let error = job.error.expect("a reason");
    assert!(
        error.contains("needs 256 MiB per task; the largest offer is 128 MiB (1 provider)"),
        "{error}"
    );
}

/// A provider that does not extend this node credit enough is asked again
/// only after the credit back-off, and a job nobody will run for want of
/// credit fails, saying so, instead of waiting for ever.
#[test]
fn a_job_no_provider_extends_credit_to_fails_saying_so() {
    let available = agora_protocol::units::Credits(100_000);
    let (asked, job) = declined_throughout(Decline::NoCredit { available }, Bytes::mib(64));
    let backoff = Config::default().credit_backoff.as_millis() as usize;
    assert!(asked <= 35_000 / backoff + 1, "asked {asked} times");
    assert_eq!(job.state, JobState::Failed);
    let error = job.error.expect("a reason");
    assert!(
        error.contains("the most credit extended to this node is 0.1 credits"),
        "{error}"
    );
}

/// A job that cannot work as asked is refused at submission with why:
/// more replicas than providers able to take a task, limits no advert
/// meets. With no provider known at all it is accepted (it waits).
#[test]
fn a_job_that_cannot_be_placed_as_asked_is_refused_before_anything_runs() {
    let (_, r, view, _) = world(3);
    let mut s = spec(2, 1);
    s.replicas = 9;
    let e = r.check_placeable(&s, NOW, &view).unwrap_err();
    assert!(
        e.contains("--replicas 9 needs 9 distinct providers for each task; 3 of the 3 known can take it"),
        "{e}"
    );
    let mut s = spec(2, 1);
    s.memory = Bytes::mib(512);
    let e = r.check_placeable(&s, NOW, &view).unwrap_err();
    assert!(
        e.contains("needs 512 MiB per task; the largest offer is 256 MiB (3 providers)"),
        "{e}"
    );
    assert!(r.check_placeable(&spec(2, 3), NOW, &view).is_ok());
    let (_, r, view, _) = world(0);
    assert!(
        r.check_placeable(&s, NOW, &view).is_ok(),
        "no provider known: it waits"
    );
}

/// Runs a job to its end: every copy placed reports at once, tasks whose
/// index `fails` names exiting with code 1 (on every provider, as a
/// deterministic failure does), the others succeeding.
fn run_to_end(r: &mut Requester, view: &View, kps: &[Keypair], job: JobId, fails: &[u32]) {
    for _ in 0..40 {
        if r.job(&job).is_some_and(|(rec, _)| rec.state.is_terminal()) {
            return;
        }
        for (kp, ag, task) in agree(r, view, kps) {
            let mut rc = receipt(&kp, &ag, r, task, b"out").payload().clone();
            if fails.contains(&task.index) {
                rc.exit = ExitStatus::ExitCode(1);
                rc.output = ContentId::of(b"");
                rc.output_size = Bytes(0);
            }
            let rc = seal(&kp, &rc).open(NOW).expect("opens");
            assert!(r.on_receipt(kp.node_id(), &rc, true, NOW).is_ok());
        }
    }
    panic!("the job did not end");
}

#[test]
fn with_max_failures_every_task_runs_and_the_job_is_done_naming_each_failure() {
    let (_, mut r, view, kps) = world(3);
    let job = JobId([20; 16]);
    let mut s = spec(8, 1);
    s.max_failures = 2;
    r.submit(job, s, NOW);
    run_to_end(&mut r, &view, &kps, job, &[1, 5]);
    let (rec, tasks) = r.job(&job).expect("job");
    assert_eq!(rec.state, JobState::Done, "{:?}", rec.error);
    let failed: Vec<u32> = tasks
        .iter()
        .filter(|t| t.phase == TaskPhase::Failed)
        .map(|t| t.id.index)
        .collect();
    assert_eq!(failed, [1, 5]);
    assert!(
        tasks[1]
            .error
            .as_deref()
            .is_some_and(|e| e.contains("exit code 1"))
    );
    assert_eq!(
        tasks.iter().filter(|t| t.phase == TaskPhase::Verified).count(),
        6,
        "every good task ran"
    );
}

#[test]
fn one_failure_more_than_max_failures_allows_fails_the_job_saying_how_many() {
    let (_, mut r, view, kps) = world(3);
    let job = JobId([21; 16]);
    let mut s = spec(8, 1);
    s.max_failures = 1;
    r.submit(job, s, NOW);
    run_to_end(&mut r, &view, &kps, job, &[1, 5]);
    let (rec, _) = r.job(&job).expect("job");
    assert_eq!(rec.state, JobState::Failed);
    let e = rec.error.clone().unwrap_or_default();
    assert!(
        e.starts_with("2 tasks failed, more than the 1 --max-failures allows; first, task 1 (in-1)"),
        "{e}"
    );
    // The default stays strict: the first failure ends the job.
    let (_, mut r, view, kps) = world(3);
    r.submit(job, spec(8, 1), NOW);
    run_to_end(&mut r, &view, &kps, job, &[1, 5]);
    let (rec, _) = r.job(&job).expect("job");
    assert_eq!(rec.state, JobState::Failed);
    assert!(
        rec.error.as_deref().is_some_and(|e| e.starts_with("task ")),
        "{:?}",
        rec.error
    );
}

#[test]
fn a_deterministic_failure_settles_from_one_copy_is_paid_and_is_not_run_again() {
    let (_, mut r, view, kps) = world(2);
    let job = JobId([22; 16]);
    let mut s = spec(1, 1);
    s.max_failures = 0;
    r.submit(job, s, NOW);
    let copies = agree(&mut r, &view, &kps);
    assert_eq!(copies.len(), 1);
    let (kp, ag, task) = copies.first().expect("one copy");
    let mut rc = receipt(kp, ag, &r, *task, b"").payload().clone();
    rc.exit = ExitStatus::OutOfFuel;
    rc.fuel_used = rc.fuel_limit;
    let rc = seal(kp, &rc).open(NOW).expect("opens");
    assert_eq!(
        r.on_receipt(kp.node_id(), &rc, true, NOW),
        Ok(ReceiptVerdict::Accepted)
    );
    let actions: Vec<Action> = std::iter::from_fn(|| r.poll_action()).collect();
    let paid: Vec<NodeId> = actions
        .iter()
        .filter_map(|a| match a {
            Action::Pay { to, voucher } if voucher.fuel == rc.payload().fuel_used => Some(*to),
            _ => None,
        })
        .collect();
    assert_eq!(paid, [kp.node_id()], "paid for the fuel it burnt: {actions:?}");
    let (rec, tasks) = r.job(&job).expect("job");
    assert_eq!(tasks[0].phase, TaskPhase::Failed);
    assert_eq!(rec.state, JobState::Failed);
    let e = tasks[0].error.clone().unwrap_or_default();
    assert!(e.contains("out of fuel") && e.contains("raise --fuel"), "{e}");
    r.place(NOW, &view);
    assert!(calls(&mut r).is_empty(), "not run again elsewhere");
}

#[test]
fn a_job_no_provider_fits_waits_saying_why_and_starts_when_one_appears() {
    let (_, mut r, mut view, _) = world(0);
    let id = JobId([23; 16]);
    r.submit(id, spec(2, 1), NOW);
    let mut t = NOW;
    for _ in 0..600 {
        r.tick(t, &view);
        assert!(calls(&mut r).is_empty());
        t = t.add(Duration::from_secs(1));
    }
    let (rec, _) = r.job(&id).expect("known");
    assert!(!rec.state.is_terminal(), "ten minutes on, it still waits");
    let why = r.waiting(&id, &view, t).expect("it says what it waits for");
    assert!(
        why.starts_with("waiting 10m00s for a provider (it fails after 1h00m): no providers are known"),
        "{why}"
    );
    assert!(why.contains("no providers are known"), "{why}");
    // A provider appears: the job is placed at once.
    let kp = Keypair::from_secret([40; 32]);
    let a = idle_advert(t);
    let env = Envelope::seal(&kp, &a, t, Duration::from_secs(30), Nonce(rand::random())).expect("seals");
    view.on_advert(&env.to_bytes(), None, t).expect("advert accepted");
    r.tick(t, &view);
    let to: Vec<NodeId> = calls(&mut r).into_iter().flat_map(|c| c.2).collect();
    assert!(to.contains(&kp.node_id()), "{to:?}");
    assert_eq!(r.waiting(&id, &view, t), None);
    // Left waiting past its time-to-live, a job fails saying why.
    let (_, mut r, view, _) = world(0);
    let mut s = spec(1, 1);
    s.ttl = Some(Duration::from_secs(5));
    r.submit(id, s, NOW);
    let mut t = NOW;
    while t < NOW.add(Duration::from_secs(7)) {
        r.tick(t, &view);
        t = t.add(Duration::from_millis(100));
    }
    let (rec, _) = r.job(&id).expect("known");
    assert_eq!(rec.state, JobState::Failed);
    let e = rec.error.clone().unwrap_or_default();
    assert!(
        e.starts_with("no provider could take task 0 (in-0) for 5.0s: no providers are known"),
        "{e}"
    );
}

/// Places what the requester wants placed now, every call answered with an
/// offer by the provider asked (of `kps`), every acceptance agreed; returns
/// the acceptances with their agreements.
fn place_round(
    r: &mut Requester,
    view: &View,
    kps: &[Keypair],
    now: Timestamp,
) -> Vec<(Keypair, Accept, Envelope)> {
    r.place(now, view);
    for (task, attempt, to) in calls(r) {
        for p in &to {
            if let Some(kp) = kps.iter().find(|k| k.node_id() == *p) {
                r.on_offer(task, attempt, *p, Ok(offer_from(kp, task)), now, view);
            } else {
                r.on_offer(
                    task,
                    attempt,
                    *p,
                    Err(Refusal::Unreachable("gone".into())),
                    now,
                    view,
                );
            }
        }
    }
    let accepts: Vec<(TaskId, u16, NodeId, Accept)> = std::iter::from_fn(|| r.poll_action())
        .filter_map(|a| match a {
            Action::Accept {
                task,
                attempt,
                to,
                accept,
                ..
            } => Some((task, attempt, to, accept)),
            _ => None,
        })
        .collect();
    let mut out = Vec::new();
    for (task, attempt, to, accept) in accepts {
        let kp = kps
            .iter()
            .find(|k| k.node_id() == to)
            .expect("a provider")
            .clone();
        let ag = Agreement {
            accept: MessageId([0; 32]),
            task,
            requester: r.local(),
            price: accept.price,
            due: now.add(Duration::from_secs(30)),
        };
        let env = seal(&kp, &ag);
        r.on_agreement(task, attempt, to, Ok(env.open(now).expect("opens")), now);
        out.push((kp, accept, env));
    }
    out
}

/// A checkpoint of `a` at `fuel`, taken by a run that started from `from`.
fn checkpoint_of(a: &Assignment, index: u32, from: Option<ContentId>, fuel: u64) -> Checkpoint {
    Checkpoint {
        module: a.module,
        input: a.input,
        args: a.args_digest(),
        seed: a.seed,
        fuel_limit: a.limits.fuel,
        index,
        from,
        fuel_used: Fuel(fuel),
        time: 0,
        random: 0,
        input_read: 0,
        output: Blob(Vec::new()),
        state: Blob(vec![index as u8]),
    }
}

fn progress_of(
    kp: &Keypair,
    agreement: &Envelope,
    r: &Requester,
    a: &Assignment,
    c: &Checkpoint,
) -> Verified<Progress> {
    let p = Progress {
        agreement: agreement.id(),
        task: a.task,
        requester: r.local(),
        from: c.from,
        checkpoint: c.id(),
        index: c.index,
        fuel_used: c.fuel_used,
    };
    seal(kp, &p).open(NOW).expect("opens")
}

#[test]
fn a_copy_placed_after_its_provider_died_resumes_from_its_checkpoint_and_each_provider_is_paid_for_its_own_progress()
 {
    let (_, mut r, view, kps) = world(2);
    let job = JobId([8; 16]);
    r.submit(job, spec(1, 1), NOW);
    let first = place_round(&mut r, &view, &kps, NOW);
    let (kp_a, accept_a, ag_a) = first.first().expect("one copy").clone();
    assert_eq!(
        accept_a.assignment.resume, None,
        "the first copy starts from the beginning"
    );
    let a = accept_a.assignment.clone();

    // Its provider reports a checkpoint at 300 fuel. One of another
    // computation, or from a provider without the copy, is refused.
    let cp = checkpoint_of(&a, 1, None, 300);
    let mut other = a.clone();
    other.seed += 1;
    let foreign = checkpoint_of(&other, 1, None, 300);
    assert_eq!(
        r.on_progress(
            kp_a.node_id(),
            &progress_of(&kp_a, &ag_a, &r, &a, &foreign),
            &foreign
        ),
        Err(ProgressError::Mismatch("computation"))
    );
    let stranger = Keypair::from_secret([99; 32]);
    assert_eq!(
        r.on_progress(
            stranger.node_id(),
            &progress_of(&stranger, &ag_a, &r, &a, &cp),
            &cp
        ),
        Err(ProgressError::Unknown)
    );
    let p_a = progress_of(&kp_a, &ag_a, &r, &a, &cp);
    assert_eq!(r.on_progress(kp_a.node_id(), &p_a, &cp), Ok(()));

    // It dies; the copy placed next resumes from the checkpoint.
    r.on_peer_down(kp_a.node_id(), NOW);
    let later = NOW.add(Duration::from_secs(1));
    let alive: Vec<Keypair> = kps
        .iter()
        .filter(|k| k.node_id() != kp_a.node_id())
        .cloned()
        .collect();
    let second = place_round(&mut r, &view, &alive, later);
    let (kp_b, accept_b, ag_b) = second.first().expect("a second copy").clone();
    assert_eq!(accept_b.assignment.resume, Some(cp.id()));

    // Its receipt names the checkpoint and counts fuel from the task's
    // start; one naming a checkpoint the requester never kept is refused.
    let ran = |resumed: Option<ContentId>| crate::engine::Ran {
        output: ContentId::of(b"pi"),
        output_size: Bytes(2),
        fuel: Fuel(1_000),
        exit: ExitStatus::Success,
        started_at: NOW,
        finished_at: NOW,
        inline: None,
        stderr: Vec::new(),
        resumed,
        billed_from: Fuel(300),
    };
    let bogus = ran(Some(ContentId([5; 32]))).receipt(&accept_b.assignment, ag_b.id(), r.local());
    assert!(!super::progress::started_from(
        &r.job(&job).expect("job").1[0],
        r.copy(a.task, accept_b.assignment.attempt).expect("the copy"),
        bogus.resumed
    ));
    let good = seal(
        &kp_b,
        &ran(Some(cp.id())).receipt(&accept_b.assignment, ag_b.id(), r.local()),
    );
    assert_eq!(
        r.on_receipt(kp_b.node_id(), &good.open(NOW).expect("opens"), true, later),
        Ok(ReceiptVerdict::Accepted)
    );

    // The copy that finished is paid for the 700 it added, the dead one for
    // its 300 under its progress receipt: 1,000 in all, once.
    let pays: Vec<Voucher> = std::iter::from_fn(|| r.poll_action())
        .filter_map(|a| match a {
            Action::Pay { voucher, .. } => Some(voucher),
            _ => None,
        })
        .collect();
    let mut billed: Vec<(NodeId, u64, MessageId)> =
        pays.iter().map(|v| (v.provider, v.fuel.0, v.receipt)).collect();
    billed.sort_by_key(|b| b.1);
    assert_eq!(
        billed,
        vec![(kp_a.node_id(), 300, p_a.id()), (kp_b.node_id(), 700, good.id())],
        "{pays:?}"
    );
    let (rec, tasks) = r.job(&job).expect("job");
    assert_eq!(rec.state, JobState::Done);
    assert_eq!(tasks[0].resumed, Some(cp.id()));
}

/// Resumed from a checkpoint three quarters through, a task needs a
/// quarter of its estimate: a provider too slow for the whole of it within
/// the deadline takes the rest, and its call asks for the rest only.
#[test]
fn a_copy_resumed_from_a_checkpoint_is_judged_by_the_fuel_left_not_the_whole_task() {
    let me = Keypair::from_secret([1; 32]);
    let mut view = View::new(me.node_id(), "d".parse().expect("domain"), 100);
    let fast = Keypair::from_secret([10; 32]);
    let slow = Keypair::from_secret([11; 32]);
    for (kp, cu) in [(&fast, 2000), (&slow, 1000)] {
        let a = Advert {
            cu: ComputeUnits(cu),
            ..idle_advert(NOW)
        };
        view.on_advert(&seal(kp, &a).to_bytes(), None, NOW)
            .expect("advert accepted");
    }
    let mut r = Requester::new(me.node_id(), Config::default(), 7);
    // 40 s at 1000 CU against a 30 s deadline: only the faster provider
    // can take the whole task.
    let whole = Fuel(40_000_000_000);
    r.submit(
        JobId([8; 16]),
        JobSpec {
            fuel: whole,
            ..spec(1, 1)
        },
        NOW,
    );
    let both = [fast.clone(), slow.clone()];
    let first = place_round(&mut r, &view, &both, NOW);
    let (kp_a, accept_a, ag_a) = first.first().expect("one copy").clone();
    assert_eq!(
        kp_a.node_id(),
        fast.node_id(),
        "the slow provider cannot finish in time"
    );
    let a = accept_a.assignment.clone();
    let cp = checkpoint_of(&a, 3, None, 30_000_000_000);
    assert_eq!(
        r.on_progress(kp_a.node_id(), &progress_of(&kp_a, &ag_a, &r, &a, &cp), &cp),
        Ok(())
    );
    r.on_peer_down(kp_a.node_id(), NOW);
    let later = NOW.add(Duration::from_secs(1));
    r.place(later, &view);
    let asked: Vec<(NodeId, Fuel)> = std::iter::from_fn(|| r.poll_action())
        .filter_map(|a| match a {
            Action::Call { to, cfo, .. } => Some(to.into_iter().map(move |p| (p, cfo.requirements.fuel))),
            _ => None,
        })
        .flatten()
        .collect();
    assert!(
        asked.contains(&(slow.node_id(), Fuel(10_000_000_000))),
        "the slow provider is asked for the 10 s left: {asked:?}"
    );
    assert!(
        asked.iter().all(|(_, fuel)| *fuel == Fuel(10_000_000_000)),
        "{asked:?}"
    );
}

#[test]
fn a_replicated_task_keeps_no_checkpoint() {
    let (_, mut r, view, kps) = world(2);
    r.submit(JobId([9; 16]), spec(1, 2), NOW);
    let copies = place_round(&mut r, &view, &kps, NOW);
    let (kp, accept, ag) = copies.first().expect("a copy").clone();
    let cp = checkpoint_of(&accept.assignment, 1, None, 300);
    assert_eq!(
        r.on_progress(
            kp.node_id(),
            &progress_of(&kp, &ag, &r, &accept.assignment, &cp),
            &cp
        ),
        Err(ProgressError::Replicated)
    );
}

/// A job that takes its inputs from `upstream`, allowing `max_failures`,
/// submitted as the engine does: inputs from the upstream tasks, then their
/// feeds.
fn submit_pipeline(r: &mut Requester, id: JobId, upstream: JobId, max_failures: u32) {
    let (rec, up) = r.job(&upstream).expect("upstream");
    let feeds: Vec<Feed> = up.iter().map(Feed::of).collect();
    let mut s = spec(up.len(), 1);
    s.inputs = up
        .iter()
        .zip(&feeds)
        .map(|(t, f)| f.input(rec.spec.inputs[t.id.index as usize].name.clone()))
        .collect();
    s.inputs_from = Some(upstream);
    s.max_failures = max_failures;
    r.submit(id, s, NOW);
    r.start_pipeline(id, &feeds, NOW);
}

#[test]
fn a_pipeline_task_waits_for_its_input_and_is_placed_once_that_output_is_verified() {
    let (_, mut r, view, kps) = world(2);
    let (up, down) = (JobId([40; 16]), JobId([41; 16]));
    r.submit(up, spec(2, 1), NOW);
    submit_pipeline(&mut r, down, up, 0);
    let (_, tasks) = r.job(&down).expect("downstream");
    assert!(tasks.iter().all(|t| t.phase == TaskPhase::Waiting));

    // Only the upstream tasks are placed.
    let copies = agree(&mut r, &view, &kps);
    assert!(copies.iter().all(|(_, _, t)| t.job == up), "{copies:?}");
    let (kp, ag, task) = copies.iter().find(|(_, _, t)| t.index == 0).expect("task 0");
    let v = receipt(kp, ag, &r, *task, b"first stage");
    assert_eq!(
        r.on_receipt(kp.node_id(), &v, true, NOW),
        Ok(ReceiptVerdict::Accepted)
    );

    // Task 0 downstream takes that output, named after the upstream task;
    // task 1 still waits.
    let (rec, tasks) = r.job(&down).expect("downstream");
    assert_eq!(tasks[0].phase, TaskPhase::Pending);
    assert_eq!(tasks[1].phase, TaskPhase::Waiting);
    assert_eq!(rec.spec.inputs[0].id, ContentId::of(b"first stage"));
    assert_eq!(rec.spec.inputs[0].size, Bytes(11));
    assert_eq!(rec.spec.inputs[0].name, "in-0");
    let (jobs, _) = r.take_dirty();
    assert!(jobs.iter().any(|j| j.id == down), "the bound input is persisted");

    // It is placed while the upstream job still runs, with that input.
    r.place(NOW, &view);
    let placed: Vec<TaskId> = calls(&mut r).into_iter().map(|(t, _, _)| t).collect();
    assert_eq!(placed, vec![TaskId::new(down, 0)]);
}

#[test]
fn when_an_upstream_task_fails_for_good_the_same_downstream_task_fails_naming_it() {
    let (_, mut r, _, _) = world(1);
    let (up, down) = (JobId([42; 16]), JobId([43; 16]));
    r.submit(up, spec(3, 1), NOW);
    submit_pipeline(&mut r, down, up, 0);
    r.cancel(up, NOW);
    let (rec, tasks) = r.job(&down).expect("downstream");
    assert!(tasks.iter().all(|t| t.phase == TaskPhase::Failed));
    let why = tasks[0].error.clone().unwrap_or_default();
    assert!(
        why.contains(&format!("its input, task 0 of job {up}, failed")),
        "{why}"
    );
    // With no failures allowed, the first one ends the job and names it.
    assert_eq!(rec.state, JobState::Failed);
    assert!(rec.error.clone().unwrap_or_default().contains(&why));

    // With failures allowed, each task fails for its own input.
    let (_, mut r, _, _) = world(1);
    r.submit(up, spec(3, 1), NOW);
    submit_pipeline(&mut r, down, up, 2);
    r.cancel(up, NOW);
    let (rec, tasks) = r.job(&down).expect("downstream");
    for t in tasks {
        let why = t.error.clone().unwrap_or_default();
        assert!(why.contains(&format!("task {} of job {up}", t.id.index)), "{why}");
    }
    assert_eq!(rec.state, JobState::Failed, "three failures, two allowed");
}

#[test]
fn a_pipeline_over_a_finished_job_starts_with_every_input_bound() {
    let (_, mut r, view, kps) = world(1);
    let (up, down) = (JobId([44; 16]), JobId([45; 16]));
    r.submit(up, spec(1, 1), NOW);
    let copies = agree(&mut r, &view, &kps);
    let (kp, ag, task) = copies.first().expect("a copy");
    let v = receipt(kp, ag, &r, *task, b"done");
    r.on_receipt(kp.node_id(), &v, true, NOW).expect("accepted");
    assert_eq!(r.job(&up).expect("up").0.state, JobState::Done);
    submit_pipeline(&mut r, down, up, 0);
    let (rec, tasks) = r.job(&down).expect("downstream");
    assert_eq!(tasks[0].phase, TaskPhase::Pending);
    assert_eq!(rec.spec.inputs[0].id, ContentId::of(b"done"));
}

#[test]
fn a_task_goes_to_the_provider_the_dht_names_as_holding_its_large_input() {
    let (_, mut r, view, kps) = world(3);
    let job = JobId([46; 16]);
    let mut s = spec(1, 1);
    // 512 MiB: about ten seconds at the assumed bandwidth, against a
    // five-second task.
    s.inputs[0].size = Bytes::mib(512);
    let input = s.inputs[0].id;
    let holder = kps[2].node_id();
    r.learn_holders(input, &[holder]);
    r.submit(job, s, NOW);
    r.place(NOW, &view);
    let (_, _, to) = calls(&mut r).pop().expect("a call");
    assert_eq!(to.first(), Some(&holder), "the holder is asked first: {to:?}");
    let d = r.decisions(&TaskId::new(job, 0));
    let first = &d[0].candidates[0];
    assert_eq!(first.node, holder);
    assert!(first.transfer_ms < 1.0, "nothing to send it: {first:?}");
    assert!(
        d[0].candidates[1].transfer_ms > 5_000.0,
        "{:?}",
        d[0].candidates[1]
    );
}

/// A requester whose one provider has standing, and a job of one tiny task
/// (a millisecond at its advertised speed).
fn tiny_world(config: Config) -> (Requester, View, Keypair, JobId) {
    let (_, mut r, mut view, kps) = world_with(1, config);
    view.prove(kps[0].node_id());
    // It has verified work for this requester before.
    r.book.verified(
        kps[0].node_id(),
        Fuel(1_000_000),
        Duration::from_millis(1),
        &[],
        NOW,
    );
    let mut s = spec(1, 1);
    s.fuel = Fuel(1_000_000);
    let job = JobId([1; 16]);
    r.submit(job, s, NOW);
    (r, view, kps[0].clone(), job)
}

#[test]
fn a_tiny_task_for_a_provider_with_standing_is_ordered_at_its_advertised_price_in_one_round_trip() {
    let (mut r, view, kp, job) = tiny_world(Config::default());
    r.place(NOW, &view);
    let actions: Vec<Action> = std::iter::from_fn(|| r.poll_action()).collect();
    assert!(
        !actions.iter().any(|a| matches!(a, Action::Call { .. })),
        "no call for offers: {actions:?}"
    );
    let Some(Action::Accept {
        task,
        attempt,
        to,
        accept,
        send_module,
        order: Some(requirements),
        ..
    }) = actions.into_iter().find(|a| matches!(a, Action::Accept { .. }))
    else {
        panic!("an order")
    };
    assert_eq!(to, kp.node_id());
    assert_eq!(accept.price, Price(1_000), "the advertised price");
    assert_eq!(
        accept.offer,
        agora_protocol::market::order_id(&requirements),
        "the signed acceptance names the requirements it was placed under"
    );
    assert_eq!(
        (requirements.module, requirements.input),
        (accept.assignment.module, accept.assignment.input)
    );
    assert!(send_module, "the provider is not known to hold the module yet");
    let ag = Agreement {
        accept: MessageId([0; 32]),
        task,
        requester: r.local(),
        price: accept.price,
        due: NOW.add(Duration::from_secs(30)),
    };
    r.on_agreement(
        task,
        attempt,
        to,
        Ok(seal(&kp, &ag).open(NOW).expect("opens")),
        NOW,
    );
    let (_, tasks) = r.job(&job).expect("the job");
    assert_eq!(tasks[0].copies[0].state, CopyState::Agreed);
    assert_eq!(tasks[0].copies[0].order, Order::Placed);

    // Without orders, the same task goes through a call for offers.
    let (mut r, view, _, _) = tiny_world(Config {
        orders: false,
        ..Config::default()
    });
    r.place(NOW, &view);
    assert_eq!(calls(&mut r).len(), 1);
}

#[test]
fn a_declined_order_is_not_an_attempt_and_the_task_is_placed_again_once_the_provider_has_room() {
    let config = Config {
        max_attempts: 3,
        ..Config::default()
    };
    let (mut r, view, kp, job) = tiny_world(config);
    let mut now = NOW;
    // Declined for a full queue ten times, more than `max_attempts`: the
    // task neither fails nor piles up copies.
    for round in 0..10 {
        r.place(now, &view);
        let order = std::iter::from_fn(|| r.poll_action()).find_map(|a| match a {
            Action::Accept {
                task,
                attempt,
                order: Some(_),
                ..
            } => Some((task, attempt)),
            _ => None,
        });
        let (task, attempt) = order.unwrap_or_else(|| panic!("round {round}: an order"));
        r.on_agreement(
            task,
            attempt,
            kp.node_id(),
            Err(Refusal::Declined(Decline::NoFreeSlot)),
            now,
        );
        let (record, tasks) = r.job(&job).expect("the job");
        assert!(!record.state.is_terminal(), "round {round}: {:?}", record.error);
        assert_eq!(tasks[0].copies.len(), 1, "only the latest declined order is kept");
        assert!(tasks[0].copies[0].declined_order());
        assert_eq!(
            tasks[0].copies[0].attempt, attempt,
            "attempt numbers are not reused"
        );
        // Past the busy back-off.
        now = now.add(Duration::from_secs(1));
    }
}

#[test]
fn a_module_seen_running_faster_than_advertised_is_placed_at_that_pace_on_providers_not_learnt_yet() {
    let me = Keypair::from_secret([1; 32]);
    let mut view = View::new(me.node_id(), "d".parse().expect("domain"), 100);
    let (first, second) = (Keypair::from_secret([10; 32]), Keypair::from_secret([11; 32]));
    for kp in [&first, &second] {
        let a = Advert {
            cu: ComputeUnits(1000),
            ..idle_advert(NOW)
        };
        view.on_advert(&seal(kp, &a).to_bytes(), None, NOW)
            .expect("advert accepted");
    }
    let both = [first.clone(), second.clone()];
    let mut r = Requester::new(me.node_id(), Config::default(), 7);
    // 20 s at the advertised 1,000 CU, within the 30 s deadline.
    let job = JobId([8; 16]);
    r.submit(
        job,
        JobSpec {
            fuel: Fuel(20_000_000_000),
            ..spec(1, 1)
        },
        NOW,
    );
    let (kp, _, ag) = place_round(&mut r, &view, &both, NOW)
        .first()
        .expect("one copy")
        .clone();
    let ran_on = kp.node_id();
    let other = both
        .iter()
        .find(|k| k.node_id() != ran_on)
        .expect("the other")
        .node_id();
    // It ran in 5 s: 4,000 CU, four times its advert.
    let task = TaskId::new(job, 0);
    let (_, a) = r.assignment_of(task).expect("assignment");
    let ran = crate::engine::Ran {
        output: ContentId::of(b"out"),
        output_size: Bytes(3),
        fuel: Fuel(20_000_000_000),
        exit: ExitStatus::Success,
        started_at: NOW,
        finished_at: NOW.add(Duration::from_secs(5)),
        inline: None,
        stderr: Vec::new(),
        resumed: None,
        billed_from: Fuel(0),
    };
    let receipt = seal(&kp, &ran.receipt(&a, ag.id(), r.local()))
        .open(NOW)
        .expect("opens");
    assert_eq!(
        r.on_receipt(ran_on, &receipt, true, NOW),
        Ok(ReceiptVerdict::Accepted)
    );
    // 40 s of the same module at the advert: the provider nothing was
    // learnt of is judged at the module's pace (10 s), not excluded.
    let next = JobId([9; 16]);
    r.submit(
        next,
        JobSpec {
            fuel: Fuel(40_000_000_000),
            seed: 2,
            ..spec(1, 1)
        },
        NOW,
    );
    r.place(NOW, &view);
    let asked: Vec<NodeId> = calls(&mut r).into_iter().flat_map(|(_, _, to)| to).collect();
    assert!(asked.contains(&other), "{asked:?}");
    let d = r.decisions(&TaskId::new(next, 0));
    let c = d[0]
        .candidates
        .iter()
        .find(|c| c.node == other)
        .expect("a candidate");
    assert!((c.run_ms - 10_000.0).abs() < 1.0, "{c:?}");
}
