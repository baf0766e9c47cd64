//! Work the driver spawns: requests to peers, executions, transfers. Each
//! function does its I/O and reports back to the driver as an [`Internal`]
//! message; none touches the driver's state.

use std::sync::Arc;
use std::time::Duration;

use crate::network::Answer;
use agora_protocol::execution::{ExitStatus, Receipt};
use agora_protocol::fraud::FraudProof;
use agora_protocol::limits::MAX_INLINE_CONTENT;
use agora_protocol::market::{Accept, Agreement, Assignment, CallForOffers, Offer};
use agora_protocol::rpc::{ContentRequest, ContentResponse, MarketRequest, MarketResponse};
use agora_protocol::units::{Bytes, Fuel, Millis, Timestamp};
use agora_protocol::wire::Blob;
use agora_protocol::{ContentId, Encode, Envelope, JobId, MessageId, NodeId, Nonce, TaskId, Verified};
use rand::RngExt;
use tokio::sync::mpsc;

use super::Shared;
use crate::executor::{self, Task};
use crate::market::provider::Accepted;

/// A task's outcome as receipts report it: output id, fuel, exit status.
pub(crate) type Outcome = (ContentId, Fuel, ExitStatus);
/// Content that arrived inline with an accept.
pub(crate) type Inline = Vec<(ContentId, Arc<Vec<u8>>)>;

/// Results of spawned work, for the driver.
#[derive(Debug)]
pub(crate) enum Internal {
    Offer {
        task: TaskId,
        attempt: u16,
        from: NodeId,
        answer: Result<Verified<Offer>, String>,
    },
    Agreement {
        task: TaskId,
        attempt: u16,
        from: NodeId,
        answer: Result<Verified<Agreement>, String>,
    },
    Output {
        task: TaskId,
        attempt: u16,
        ok: bool,
    },
    SpotChecked {
        task: TaskId,
        attempt: u16,
        result: Result<(Outcome, Vec<u8>), String>,
    },
    Reduced {
        job: JobId,
        result: Result<ContentId, String>,
    },
    Executed {
        agreement: MessageId,
        result: Result<Executed, String>,
    },
    ReceiptDelivered {
        agreement: MessageId,
        result: Delivery,
    },
    VoucherDelivered {
        key: MessageId,
        result: Delivery,
    },
    ReceiptIn {
        peer: NodeId,
        receipt: Box<Verified<Receipt>>,
        channel: crate::network::Reply,
    },
    Probe {
        peer: NodeId,
        alive: bool,
    },
    Calibrated {
        result: Result<agora_protocol::units::ComputeUnits, String>,
    },
    FraudChecked {
        culprit: NodeId,
        guilty: bool,
        detail: String,
    },
}

/// How a delivery ended.
#[derive(Debug)]
pub(crate) enum Delivery {
    /// Acknowledged.
    Done,
    /// Refused for good (the peer does not know it, or it is invalid).
    Refused(String),
    /// Unreachable after the retries.
    GaveUp(String),
}

/// A finished execution, its receipt signed.
#[derive(Debug)]
pub(crate) struct Executed {
    pub(crate) receipt: Envelope,
    pub(crate) output: Vec<u8>,
}

fn now() -> Timestamp {
    Timestamp::from_system(std::time::SystemTime::now())
}

async fn report(tx: &mpsc::Sender<Internal>, m: Internal) {
    let _ = tx.send(m).await;
}

/// Reports the offer answering a call for offers sent through the turn's
/// outbox.
pub(crate) async fn call(
    tx: mpsc::Sender<Internal>,
    task: TaskId,
    attempt: u16,
    to: NodeId,
    call_id: MessageId,
    answer: Answer,
) {
    let answer = match answer.get().await {
        Ok(MarketResponse::Offer(o)) => match o.open::<Offer>(now()) {
            Ok(v) if v.signer() != to => Err("offer signed by another node".into()),
            Ok(v) if v.payload().call != call_id => Err("offer answers another call".into()),
            Ok(v) => Ok(v),
            Err(e) => Err(format!("invalid offer: {e}")),
        },
        Ok(MarketResponse::Declined(d)) => Err(d.to_string()),
        Ok(other) => Err(format!("unexpected answer {other:?}")),
        Err(e) => Err(e.to_string()),
    };
    report(
        &tx,
        Internal::Offer {
            task,
            attempt,
            from: to,
            answer,
        },
    )
    .await;
}

/// Where an accept goes: through the turn's outbox when it carries no
/// content, or alone after its inline content is read from the store.
pub(crate) enum AcceptVia {
    Outbox(Answer),
    Inline(Box<(Shared, Envelope, Vec<ContentId>)>),
}

/// Sends an accept if it still must be sent, and reports the agreement.
pub(crate) async fn accept(
    tx: mpsc::Sender<Internal>,
    task: TaskId,
    attempt: u16,
    to: NodeId,
    accept_id: MessageId,
    via: AcceptVia,
) {
    let answer = match via {
        AcceptVia::Outbox(a) => a.get().await,
        AcceptVia::Inline(boxed) => {
            let (sh, env, inline) = *boxed;
            let mut content = Vec::new();
            for id in inline {
                if let Ok(Some(bytes)) = sh.store.content().get(&id).await
                    && bytes.len() <= MAX_INLINE_CONTENT
                {
                    content.push(Blob(bytes));
                }
            }
            sh.net
                .market(to, MarketRequest::Accept { accept: env, content })
                .await
        }
    };
    let answer = match answer {
        Ok(MarketResponse::Agreement(a)) => match a.open::<Agreement>(now()) {
            Ok(v) if v.signer() != to => Err("agreement signed by another node".into()),
            Ok(v) if v.payload().accept != accept_id => Err("agreement for another acceptance".into()),
            Ok(v) => Ok(v),
            Err(e) => Err(format!("invalid agreement: {e}")),
        },
        Ok(MarketResponse::Declined(d)) => Err(d.to_string()),
        Ok(other) => Err(format!("unexpected answer {other:?}")),
        Err(e) => Err(e.to_string()),
    };
    report(
        &tx,
        Internal::Agreement {
            task,
            attempt,
            from: to,
            answer,
        },
    )
    .await;
}

/// Logs a message whose answer does not matter (cancels) if it fails.
pub(crate) async fn fire(to: NodeId, answer: Answer) {
    if let Err(e) = answer.get().await {
        tracing::debug!(peer = %to.short(), error = %e, "message not delivered");
    }
}

/// Fetches content from a peer, checks it against its id and stores it.
pub(crate) async fn fetch(sh: &Shared, from: NodeId, id: ContentId) -> Result<Vec<u8>, String> {
    if let Ok(Some(b)) = sh.store.content().get(&id).await {
        return Ok(b);
    }
    match sh.net.fetch(from, ContentRequest { id }).await {
        Ok(ContentResponse::Found(Blob(bytes))) => {
            if !id.matches(&bytes) {
                return Err(format!("content from {} does not match {id}", from.short()));
            }
            sh.store
                .content()
                .put_verified(id, bytes.clone())
                .await
                .map_err(|e| e.to_string())?;
            Ok(bytes)
        }
        Ok(ContentResponse::NotFound) => Err(format!("{} does not hold {id}", from.short())),
        Err(e) => Err(e.to_string()),
    }
}

/// Fetches a copy's output and reports whether it arrived intact.
pub(crate) async fn fetch_output(
    sh: Shared,
    tx: mpsc::Sender<Internal>,
    task: TaskId,
    attempt: u16,
    from: NodeId,
    id: ContentId,
) {
    let ok = fetch(&sh, from, id).await.is_ok();
    report(&tx, Internal::Output { task, attempt, ok }).await;
}

/// Gets content from the inline set, the store, or the requester.
async fn content(
    sh: &Shared,
    inline: &[(ContentId, Arc<Vec<u8>>)],
    id: ContentId,
    from: NodeId,
) -> Result<Arc<Vec<u8>>, String> {
    if let Some((_, b)) = inline.iter().find(|(i, _)| *i == id) {
        return Ok(b.clone());
    }
    fetch(sh, from, id).await.map(Arc::new)
}

fn args_of(a: &Assignment) -> Vec<String> {
    a.args.iter().map(|x| x.0.clone()).collect()
}

/// Runs an accepted task and signs its receipt.
pub(crate) async fn execute(
    sh: Shared,
    tx: mpsc::Sender<Internal>,
    acc: Accepted,
    inline: Vec<(ContentId, Arc<Vec<u8>>)>,
) {
    let agreement = acc.agreement;
    let result = execute_inner(&sh, &acc, &inline).await;
    report(&tx, Internal::Executed { agreement, result }).await;
}

async fn execute_inner(
    sh: &Shared,
    acc: &Accepted,
    inline: &[(ContentId, Arc<Vec<u8>>)],
) -> Result<Executed, String> {
    let a = &acc.assignment;
    let module = sh.executor.cached(&a.module);
    let module_bytes = if module.is_none() {
        Some(content(sh, inline, a.module, acc.requester).await?)
    } else {
        None
    };
    let input = content(sh, inline, a.input, acc.requester).await?;
    let _permit = sh
        .exec_permits
        .clone()
        .acquire_owned()
        .await
        .map_err(|e| e.to_string())?;
    let ex = sh.executor.clone();
    let args = args_of(a);
    let limits = a.limits;
    let seed = a.seed;
    let args2 = args.clone();
    let outcome = tokio::task::spawn_blocking(move || {
        let module = match module {
            Some(m) => m,
            None => match ex.load(module_bytes.as_deref().map(|v| v.as_slice()).unwrap_or(&[])) {
                Ok(m) => m,
                Err(e) => return Err(e),
            },
        };
        Ok(ex.run(
            &module,
            &Task {
                input: &input,
                args: &args2,
                limits,
                seed,
            },
        ))
    })
    .await
    .map_err(|e| format!("execution thread failed: {e}"))?;
    let mut outcome = match outcome {
        Ok(o) => o,
        Err(e) => {
            // The module itself is bad: that is a (deterministic) result too.
            let t = now();
            executor::Outcome {
                result: Err(e),
                output: Vec::new(),
                stderr: Vec::new(),
                fuel_used: Fuel(0),
                started_at: t,
                finished_at: t,
                wall: Duration::ZERO,
            }
        }
    };
    if sh.cheat_rate > 0.0 && rand::rng().random_bool(sh.cheat_rate.min(1.0)) {
        // Test-only switch: return a plausible but wrong output.
        outcome.output.extend_from_slice(b" (forged)");
        outcome.result = Ok(());
    }
    let receipt = executor::receipt(
        &sh.keypair,
        acc.agreement,
        a.task,
        acc.requester,
        a.module,
        a.input,
        &args,
        seed,
        &limits,
        &outcome,
    );
    if outcome.output.len() > MAX_INLINE_CONTENT {
        // Too large to travel with the receipt: the requester fetches it by
        // id, so it must be stored first.
        sh.store
            .content()
            .put_lazy(receipt.payload().output, outcome.output.clone())
            .await
            .map_err(|e| e.to_string())?;
    } else if !outcome.output.is_empty() {
        // Travels inline; kept in the background (after a crash the task
        // runs again from its persisted agreement).
        let (sh, id, out) = (sh.clone(), receipt.payload().output, outcome.output.clone());
        tokio::spawn(async move {
            if let Err(e) = sh.store.content().put_lazy(id, out).await {
                tracing::warn!(error = %e, "cannot keep a task output");
            }
        });
    }
    Ok(Executed {
        receipt: receipt.envelope().clone(),
        output: outcome.output,
    })
}

/// The request that delivers a receipt (its output inline when small).
pub(crate) fn receipt_request(receipt: Envelope, output: Option<Vec<u8>>) -> MarketRequest {
    MarketRequest::Receipt {
        receipt,
        output: output
            .filter(|o| !o.is_empty() && o.len() <= MAX_INLINE_CONTENT)
            .map(Blob),
    }
}

/// Delivers a receipt: `first` is its first sending (through an outbox),
/// then it is sent again while the requester is unreachable.
pub(crate) async fn deliver_receipt(
    sh: Shared,
    tx: mpsc::Sender<Internal>,
    agreement: MessageId,
    to: NodeId,
    request: MarketRequest,
    first: Answer,
) {
    let result = retry(first, || {
        let net = sh.net.clone();
        let req = request.clone();
        async move { net.market(to, req).await }
    })
    .await;
    report(&tx, Internal::ReceiptDelivered { agreement, result }).await;
}

/// Delivers a voucher: `first` is its first sending (through an outbox),
/// then it is sent again while the provider is unreachable.
pub(crate) async fn deliver_voucher(
    sh: Shared,
    tx: mpsc::Sender<Internal>,
    key: MessageId,
    to: NodeId,
    voucher: Envelope,
    first: Answer,
) {
    let result = retry(first, || {
        let req = MarketRequest::Voucher(voucher.clone());
        let net = sh.net.clone();
        async move { net.market(to, req).await }
    })
    .await;
    report(&tx, Internal::VoucherDelivered { key, result }).await;
}

async fn retry<F, Fut>(first: Answer, mut send: F) -> Delivery
where
    F: FnMut() -> Fut,
    Fut: std::future::Future<Output = Result<MarketResponse, crate::network::NetworkError>>,
{
    let mut delay = Duration::from_millis(100);
    let mut last = String::new();
    let mut first = Some(first);
    for _ in 0..12 {
        let answer = match first.take() {
            Some(a) => a.get().await,
            None => send().await,
        };
        match answer {
            Ok(MarketResponse::Ack) => return Delivery::Done,
            Ok(MarketResponse::Declined(d)) => return Delivery::Refused(d.to_string()),
            Ok(other) => return Delivery::Refused(format!("unexpected answer {other:?}")),
            Err(e) => last = e.to_string(),
        }
        tokio::time::sleep(delay).await;
        delay = (delay * 2).min(Duration::from_secs(10));
    }
    Delivery::GaveUp(last)
}

/// Runs a task locally (a spot check) and signs this node's own receipt.
pub(crate) async fn spot_check(
    sh: Shared,
    tx: mpsc::Sender<Internal>,
    task: TaskId,
    attempt: u16,
    a: Assignment,
) {
    let result = local_run(&sh, &a, None)
        .await
        .map(|(outcome_triplet, env, _)| (outcome_triplet, env.to_bytes()));
    report(
        &tx,
        Internal::SpotChecked {
            task,
            attempt,
            result,
        },
    )
    .await;
}

type LocalRun = ((ContentId, Fuel, ExitStatus), Envelope, Vec<u8>);

async fn local_run(sh: &Shared, a: &Assignment, input_override: Option<Vec<u8>>) -> Result<LocalRun, String> {
    let module = sh
        .store
        .content()
        .get(&a.module)
        .await
        .map_err(|e| e.to_string())?
        .ok_or("module missing")?;
    let input = match input_override {
        Some(i) => i,
        None => sh
            .store
            .content()
            .get(&a.input)
            .await
            .map_err(|e| e.to_string())?
            .ok_or("input missing")?,
    };
    let ex = sh.executor.clone();
    let args = args_of(a);
    let limits = a.limits;
    let seed = a.seed;
    let args2 = args.clone();
    let outcome = tokio::task::spawn_blocking(move || {
        let m = ex.load(&module)?;
        Ok::<_, executor::TaskError>(ex.run(
            &m,
            &Task {
                input: &input,
                args: &args2,
                limits,
                seed,
            },
        ))
    })
    .await
    .map_err(|e| e.to_string())?;
    let outcome = match outcome {
        Ok(o) => o,
        Err(e) => {
            let t = now();
            executor::Outcome {
                result: Err(e),
                output: Vec::new(),
                stderr: Vec::new(),
                fuel_used: Fuel(0),
                started_at: t,
                finished_at: t,
                wall: Duration::ZERO,
            }
        }
    };
    let me = sh.keypair.node_id();
    let receipt = executor::receipt(
        &sh.keypair,
        MessageId([0; 32]),
        a.task,
        me,
        a.module,
        a.input,
        &args,
        seed,
        &limits,
        &outcome,
    );
    if !outcome.output.is_empty() {
        sh.store
            .content()
            .put_verified(receipt.payload().output, outcome.output.clone())
            .await
            .map_err(|e| e.to_string())?;
    }
    let r = receipt.payload();
    Ok((
        (r.output, r.fuel_used, r.exit.clone()),
        receipt.envelope().clone(),
        outcome.stderr,
    ))
}

/// Runs a job's reduce module over its outputs, framed as the SDK expects:
/// each output as a `u32` little-endian length and its bytes, in task order.
#[allow(clippy::too_many_arguments)] // the reduce step's whole assignment
pub(crate) async fn reduce(
    sh: Shared,
    tx: mpsc::Sender<Internal>,
    job: JobId,
    reduce: ContentId,
    outputs: Vec<Option<ContentId>>,
    args: Vec<String>,
    limits: agora_protocol::market::Limits,
    seed: u64,
) {
    let result = async {
        let mut framed = Vec::new();
        for (i, o) in outputs.iter().enumerate() {
            let bytes = match o {
                Some(id) if *id == ContentId::of(&[]) => Vec::new(),
                Some(id) => sh
                    .store
                    .content()
                    .get(id)
                    .await
                    .map_err(|e| e.to_string())?
                    .ok_or(format!("output of task {i} missing"))?,
                None => return Err(format!("task {i} has no output")),
            };
            framed.extend_from_slice(&(bytes.len() as u32).to_le_bytes());
            framed.extend_from_slice(&bytes);
        }
        if framed.len() > agora_protocol::limits::MAX_BLOB {
            return Err(format!(
                "the task outputs ({} bytes framed) exceed the reduce input limit of {} bytes",
                framed.len(),
                agora_protocol::limits::MAX_BLOB
            ));
        }
        let input_id = sh
            .store
            .content()
            .put(framed.clone())
            .await
            .map_err(|e| e.to_string())?;
        let a = Assignment {
            task: TaskId::new(job, u32::MAX),
            attempt: 0,
            module: reduce,
            input: input_id,
            args: args.into_iter().map(agora_protocol::market::Arg).collect(),
            limits,
            seed,
        };
        let ((out, _, exit), _, stderr) = local_run(&sh, &a, Some(framed)).await?;
        if !exit.is_success() {
            let tail = String::from_utf8_lossy(&stderr[stderr.len().saturating_sub(512)..])
                .trim()
                .to_string();
            return Err(if tail.is_empty() {
                exit.to_string()
            } else {
                format!("{exit}: {tail}")
            });
        }
        Ok(out)
    }
    .await;
    report(&tx, Internal::Reduced { job, result }).await;
}

/// Checks a fraud proof by re-executing its computation, with the module
/// and input fetched from the node that published it.
pub(crate) async fn check_fraud(
    sh: Shared,
    tx: mpsc::Sender<Internal>,
    publisher: NodeId,
    proof: FraudProof,
) {
    let (culprit, guilty, detail) = match check_fraud_inner(&sh, publisher, &proof).await {
        Ok(v) => v,
        Err(e) => (
            NodeId::from_public_key_bytes([0; 32]).unwrap_or(publisher),
            false,
            e,
        ),
    };
    report(
        &tx,
        Internal::FraudChecked {
            culprit,
            guilty,
            detail,
        },
    )
    .await;
}

async fn check_fraud_inner(
    sh: &Shared,
    publisher: NodeId,
    proof: &FraudProof,
) -> Result<(NodeId, bool, String), String> {
    let conflict = proof.check().map_err(|e| e.to_string())?;
    let (accused, other) = if proof.guilty == 0 {
        (&conflict.first, &conflict.second)
    } else {
        (&conflict.second, &conflict.first)
    };
    let r = accused.payload();
    let module = fetch(sh, publisher, r.module).await?;
    let input = fetch(sh, publisher, r.input).await?;
    let ex = sh.executor.clone();
    let args: Vec<String> = proof.args.iter().map(|a| a.0.clone()).collect();
    let limits = agora_protocol::market::Limits {
        fuel: r.fuel_limit,
        memory: Bytes::mib(256),
        timeout: Millis(60_000),
        max_output: Bytes(agora_protocol::limits::MAX_BLOB as u64),
    };
    let seed = r.seed;
    let outcome = tokio::task::spawn_blocking(move || {
        let m = ex.load(&module)?;
        Ok::<_, executor::TaskError>(ex.run(
            &m,
            &Task {
                input: &input,
                args: &args,
                limits,
                seed,
            },
        ))
    })
    .await
    .map_err(|e| e.to_string())?
    .map_err(|e| e.to_string())?;
    let truth = (outcome.output_id(), outcome.fuel_used, outcome.exit_status());
    let accused_wrong = (r.output, r.fuel_used, r.exit.clone()) != truth;
    let other_right = {
        let o = other.payload();
        (o.output, o.fuel_used, o.exit.clone()) == truth
    };
    Ok((
        accused.signer(),
        accused_wrong && other_right,
        format!("re-execution gives output {}", truth.0),
    ))
}

/// Checks whether a peer still answers (after its connection closed).
pub(crate) async fn probe(sh: Shared, tx: mpsc::Sender<Internal>, peer: NodeId) {
    tokio::time::sleep(Duration::from_millis(200)).await;
    let alive = matches!(
        tokio::time::timeout(
            Duration::from_secs(3),
            sh.net
                .market(peer, MarketRequest::Summaries(agora_protocol::Domain::root()))
        )
        .await,
        Ok(Ok(_))
    );
    report(&tx, Internal::Probe { peer, alive }).await;
}

/// Seals a payload now with a random nonce.
pub(crate) fn seal<T: agora_protocol::Payload>(sh: &Shared, payload: &T, lifetime: Duration) -> Envelope {
    Envelope::seal(
        &sh.keypair,
        payload,
        now(),
        lifetime.min(T::MAX_LIFETIME),
        Nonce(rand::random()),
    )
    // Our own messages are small and within their type's lifetime.
    .expect("own messages always seal")
}

/// The call for offers a requester sends, sealed.
pub(crate) fn seal_call(sh: &Shared, cfo: &CallForOffers) -> Envelope {
    seal(sh, cfo, Duration::from_secs(20))
}

/// The accept, sealed.
pub(crate) fn seal_accept(sh: &Shared, a: &Accept) -> Envelope {
    seal(sh, a, Duration::from_secs(20))
}
