//! The work an engine asks for, carried out: executions, transfers, local
//! re-executions, probes, calibrations. Each runs as one task in the
//! driver's bounded set and returns a [`Done`] for the engine; none
//! touches the engine's state or decides anything.

use std::sync::Arc;
use std::sync::atomic::AtomicBool;
use std::time::Duration;

use agora_market::engine::{Inline, Ran, RequestId, Work};
use agora_protocol::dataset::{Dataset, content_key};
use agora_protocol::execution::{Checkpoint, ExitStatus};
use agora_protocol::limits::{MAX_INLINE_BLOBS, MAX_INLINE_CONTENT};
use agora_protocol::market::{Assignment, LatencyClass};
use agora_protocol::rpc::{ContentRequest, ContentResponse, MarketRequest, MarketResponse};
use agora_protocol::units::{ComputeUnits, Fuel};
use agora_protocol::wire::Blob;
use agora_protocol::{ContentId, Decode, Encode, JobId, MessageId, NodeId, TaskId};

use super::Shared;
use crate::api::DatasetView;
use crate::api::server::ApiError;
use crate::executor::{self, CheckpointSink, LiveLog, Task};

/// Work finished, for the engine.
#[derive(Debug)]
pub(crate) enum Done {
    Executed(MessageId, Result<Ran, String>),
    Stored(u64, Result<(), String>),
    Fetched(TaskId, u16, bool),
    SpotChecked(TaskId, u16, Result<Ran, String>),
    Reduced(JobId, Result<ContentId, String>),
    FraudChecked(MessageId, Result<Ran, String>),
    Probed(NodeId, bool),
    Calibrated(Result<ComputeUnits, String>),
    /// Stored content was collected.
    Collected(crate::store::Collected),
    /// The answer to a request sent alone (an acceptance with content).
    Answer(RequestId, Result<MarketResponse, String>),
    /// Holders the DHT names for content (placement near data).
    Holders(Vec<(ContentId, Vec<NodeId>)>),
    /// Nothing to report (content kept, a content request served).
    Nothing,
}

/// Carries out one piece of work (`cancel` stops an execution).
pub(crate) async fn run(
    sh: Shared,
    work: Work,
    cancel: Option<Arc<AtomicBool>>,
    live: Option<LiveLog>,
    saved: Option<CheckpointSink>,
) -> Done {
    match work {
        Work::Execute {
            agreement,
            requester,
            assignment,
            inline,
            class,
            restart_from,
        } => Done::Executed(
            agreement,
            execute(
                &sh,
                Run {
                    requester,
                    a: &assignment,
                    inline: &inline,
                    class,
                    restart_from,
                    cancel,
                    live,
                    saved,
                },
            )
            .await,
        ),
        Work::Keep { id, bytes } => {
            if let Err(e) = sh.store.content().put_lazy(id, bytes.to_vec()).await {
                tracing::warn!(content = %id, error = %e, "cannot keep inline content");
            }
            Done::Nothing
        }
        Work::StoreOutput { token, id, bytes } => {
            // A small output is applied to the database now and reaches the
            // disk with its next flush, which whatever lets its provider
            // forget it waits for (the receipt's `Ack`, the payment: both go
            // after their turn's durable write). A larger one is a file of
            // its own, synced here.
            let content = sh.store.content();
            let stored = if bytes.len() <= crate::store::SMALL_BLOB_MAX {
                content.put_lazy(id, bytes).await
            } else {
                content.put_verified(id, bytes).await
            };
            Done::Stored(token, stored.map_err(|e| e.to_string()))
        }
        Work::Fetch {
            task,
            attempt,
            from,
            output,
        } => Done::Fetched(
            task,
            attempt,
            super::transfer::fetch_into_store(&sh, Some(from), output)
                .await
                .is_ok(),
        ),
        Work::SpotCheck {
            task,
            attempt,
            assignment,
        } => Done::SpotChecked(
            task,
            attempt,
            run_here(&sh, &assignment, None).await.map(|(ran, _)| ran),
        ),
        Work::Reduce {
            job,
            module,
            outputs,
            args,
            limits,
            seed,
        } => Done::Reduced(job, reduce(&sh, job, module, &outputs, args, limits, seed).await),
        Work::CheckFraud {
            proof,
            publisher,
            assignment,
        } => Done::FraudChecked(proof, check_fraud(&sh, publisher, &assignment).await),
        Work::Probe { peer } => Done::Probed(peer, probe(&sh, peer).await),
        Work::Calibrate => Done::Calibrated(calibrate(&sh).await),
        Work::Collect { keep } => Done::Collected(collect(&sh, keep).await),
    }
}

/// Sends an acceptance with the content the provider lacks, read from the
/// store, on its own (content does not join a batch): at most
/// [`MAX_INLINE_BLOBS`] of them, in the order given; the provider fetches
/// the rest by id.
pub(crate) async fn send_with_content(
    sh: Shared,
    id: RequestId,
    to: NodeId,
    request: MarketRequest,
    attach: Vec<ContentId>,
) -> Done {
    let mut request = request;
    if let Some(content) = request.content_mut() {
        for c in attach {
            if content.len() == MAX_INLINE_BLOBS {
                break;
            }
            if let Ok(Some(bytes)) = sh.store.content().get(&c).await
                && bytes.len() <= MAX_INLINE_CONTENT
            {
                content.push(Blob(bytes));
            }
        }
    }
    Done::Answer(id, sh.net.market(to, request).await.map_err(|e| e.to_string()))
}

/// Answers a content request from the store: the whole blob, or one
/// verifiable slice read from disk.
pub(crate) async fn serve_content(
    sh: Shared,
    request: ContentRequest,
    channel: crate::network::ContentReply,
) -> Done {
    let resp = match request.slice {
        Some(slice) => {
            let store = sh.store.clone();
            let id = request.id;
            match tokio::task::spawn_blocking(move || store.content().slice(&id, slice.start, slice.len))
                .await
            {
                Ok(Ok(Some(b))) => {
                    sh.upload.wait(b.len()).await;
                    ContentResponse::Slice(Blob(b))
                }
                Ok(Err(e)) => {
                    tracing::warn!(content = %id, error = %e, "cannot read a slice");
                    ContentResponse::NotFound
                }
                _ => ContentResponse::NotFound,
            }
        }
        None => match sh.store.content().get(&request.id).await {
            Ok(Some(b)) => {
                sh.upload.wait(b.len()).await;
                ContentResponse::Found(Blob(b))
            }
            _ => ContentResponse::NotFound,
        },
    };
    sh.net.respond_content(channel, resp).await;
    Done::Nothing
}

/// Content from the inline set, the store, the peer the work came from or
/// any holder.
async fn content(sh: &Shared, inline: &Inline, id: ContentId, from: NodeId) -> Result<Arc<Vec<u8>>, String> {
    if let Some((_, b)) = inline.iter().find(|(i, _)| *i == id) {
        return Ok(b.clone());
    }
    super::transfer::fetch(sh, Some(from), id).await.map(Arc::new)
}

/// Runs `a` with `module` (bytes, or compiled already) on a blocking thread.
async fn run_blocking(
    sh: &Shared,
    a: &Assignment,
    module: ModuleSource,
    input: Arc<Vec<u8>>,
    resume: Option<Arc<Checkpoint>>,
    cancel: Option<Arc<AtomicBool>>,
    whose: Whose,
) -> Result<executor::Outcome, String> {
    let ex = sh.executor.clone();
    let args: Vec<String> = a.args.iter().map(|x| x.0.clone()).collect();
    let (limits, seed) = (a.limits, a.seed);
    tracing::debug!(target: "hop", "run queued");
    let outcome = tokio::task::spawn_blocking(move || {
        tracing::debug!(target: "hop", "run starts");
        let module = match module {
            ModuleSource::Compiled(m) => Ok(m),
            ModuleSource::Bytes(b) => ex.load(&b),
        };
        match module {
            Ok(m) => {
                let task = Task {
                    input: &input,
                    args: &args,
                    limits,
                    seed,
                    resume,
                    checkpoints: match &whose {
                        Whose::Provided { saved, .. } => saved.clone(),
                        Whose::Own => None,
                    },
                };
                match whose {
                    Whose::Provided { live, pause, .. } => ex.run_provided(&m, &task, cancel, live, pause),
                    Whose::Own => ex.run_cancellable(&m, &task, cancel),
                }
            }
            // The module itself is bad: that is a (deterministic) result too.
            Err(e) => executor::Outcome::failed(e),
        }
    })
    .await
    .map_err(|e| format!("execution thread failed: {e}"))?;
    Ok(outcome)
}

/// For whom a run is: a task accepted from another node (suspended while
/// the owner's pause or limits hold) or this node's own checking work.
enum Whose {
    /// With the live log its stderr is copied to, the flag it parks on
    /// while an interactive task has its slot, and where its checkpoints
    /// go.
    Provided {
        live: Option<LiveLog>,
        pause: Option<Arc<AtomicBool>>,
        saved: Option<CheckpointSink>,
    },
    Own,
}

/// An accepted task to run, and what its run reports to.
struct Run<'a> {
    requester: NodeId,
    a: &'a Assignment,
    inline: &'a Inline,
    class: LatencyClass,
    /// A checkpoint of its own to go on from, after a restart.
    restart_from: Option<ContentId>,
    cancel: Option<Arc<AtomicBool>>,
    live: Option<LiveLog>,
    saved: Option<CheckpointSink>,
}

/// The checkpoint `id`, from the inline set, the store or `from`, checked
/// against the task it is to resume.
async fn checkpoint(
    sh: &Shared,
    inline: &Inline,
    id: ContentId,
    from: NodeId,
    a: &Assignment,
) -> Result<Arc<Checkpoint>, String> {
    let bytes = content(sh, inline, id, from).await?;
    let c = Checkpoint::from_bytes(&bytes).map_err(|e| format!("checkpoint {id} does not decode: {e}"))?;
    if !c.belongs_to(&a.module, &a.input, &a.args_digest(), a.seed, a.limits.fuel) {
        return Err(format!("checkpoint {id} belongs to another task"));
    }
    Ok(Arc::new(c))
}

enum ModuleSource {
    Compiled(Arc<executor::Module>),
    Bytes(Arc<Vec<u8>>),
}

/// Runs an accepted task. A large output is stored before the receipt
/// goes out (the requester fetches it by id); a small one travels inline.
async fn execute(sh: &Shared, run: Run<'_>) -> Result<Ran, String> {
    let Run {
        requester,
        a,
        inline,
        class,
        restart_from,
        cancel,
        live,
        saved,
    } = run;
    let module = match sh.executor.cached(&a.module) {
        Some(m) => ModuleSource::Compiled(m),
        None => ModuleSource::Bytes(content(sh, inline, a.module, requester).await?),
    };
    let input = content(sh, inline, a.input, requester).await?;
    // The assignment's checkpoint is what the requester does not pay for;
    // after a restart, the run goes on from its own latest instead.
    let assigned = match a.resume {
        Some(id) => Some(checkpoint(sh, inline, id, requester, a).await?),
        None => None,
    };
    let billed_from = assigned.as_ref().map_or(Fuel(0), |c| c.fuel_used);
    let resume = match restart_from {
        Some(id) if Some(id) != a.resume => match checkpoint(sh, inline, id, requester, a).await {
            Ok(c) => Some(c),
            Err(e) => {
                tracing::warn!(task = %a.task, error = %e, "cannot go on from this task's last checkpoint; going on from its assignment's");
                assigned
            }
        },
        _ => assigned,
    };
    // A slot, or for an interactive task on full slots, a batch run paused
    // while it runs (see `preempt`).
    let interactive = class == LatencyClass::Interactive;
    let (permit, _paused) = match sh.exec_permits.clone().try_acquire_owned() {
        Ok(p) => (Some(p), None),
        Err(_) => match interactive.then(|| sh.preempt.pause_one()).flatten() {
            Some(paused) => (None, Some(paused)),
            None => (
                Some(
                    sh.exec_permits
                        .clone()
                        .acquire_owned()
                        .await
                        .map_err(|e| e.to_string())?,
                ),
                None,
            ),
        },
    };
    let batch = (!interactive && permit.is_some()).then(|| sh.preempt.batch());
    let pause = batch.as_ref().map(super::preempt::BatchRun::flag);
    let whose = Whose::Provided { live, pause, saved };
    let mut outcome = run_blocking(sh, a, module, input, resume, cancel, whose).await?;
    tracing::debug!(target: "hop", "run ends");
    drop((permit, batch));
    sh.faults.tamper(&mut outcome);
    let id = outcome.output_id();
    let mut ran = outcome.ran();
    ran.billed_from = billed_from;
    if outcome.output.len() > MAX_INLINE_CONTENT {
        sh.store
            .content()
            .put_lazy(id, outcome.output)
            .await
            .map_err(|e| e.to_string())?;
    } else {
        // Travels with the receipt; the engine has it kept.
        ran.inline = Some(outcome.output);
    }
    Ok(ran)
}

/// Runs an assignment here, with module and input from the store (a spot
/// check) or the given input (the reduce step); keeps the output. Returns
/// the run and the guest's stderr.
async fn run_here(sh: &Shared, a: &Assignment, input: Option<Vec<u8>>) -> Result<(Ran, Vec<u8>), String> {
    let module = stored(sh, &a.module, "module").await?;
    let input = match input {
        Some(i) => i,
        // A dataset's input may be held only by its publishers.
        None => super::transfer::fetch(sh, None, a.input).await?,
    };
    let resume = match a.resume {
        Some(id) => Some(Arc::new(
            Checkpoint::from_bytes(&stored(sh, &id, "checkpoint").await?)
                .map_err(|e| format!("checkpoint {id} does not decode: {e}"))?,
        )),
        None => None,
    };
    let outcome = run_blocking(
        sh,
        a,
        ModuleSource::Bytes(Arc::new(module)),
        Arc::new(input),
        resume,
        None,
        Whose::Own,
    )
    .await?;
    if !outcome.output.is_empty() {
        sh.store
            .content()
            .put_verified(outcome.output_id(), outcome.output.clone())
            .await
            .map_err(|e| e.to_string())?;
    }
    Ok((outcome.ran(), outcome.stderr))
}

async fn stored(sh: &Shared, id: &ContentId, what: &str) -> Result<Vec<u8>, String> {
    sh.store
        .content()
        .get(id)
        .await
        .map_err(|e| e.to_string())?
        .ok_or_else(|| format!("{what} {id} missing"))
}

/// Runs a job's reduce module over its outputs, framed as the SDK expects:
/// each output as a `u32` little-endian length and its bytes, in task order.
async fn reduce(
    sh: &Shared,
    job: JobId,
    module: ContentId,
    outputs: &[ContentId],
    args: Vec<String>,
    limits: agora_protocol::market::Limits,
    seed: u64,
) -> Result<ContentId, String> {
    let mut framed = Vec::new();
    for (i, id) in outputs.iter().enumerate() {
        let bytes = if *id == ContentId::of(&[]) {
            Vec::new()
        } else {
            stored(sh, id, &format!("output of task {i}")).await?
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
    let input = sh
        .store
        .content()
        .put(framed.clone())
        .await
        .map_err(|e| e.to_string())?;
    let a = Assignment {
        task: TaskId::new(job, u32::MAX),
        attempt: 0,
        module,
        input,
        args: agora_market::engine::args_of(&args),
        limits,
        seed,
        resume: None,
    };
    let (ran, stderr) = run_here(sh, &a, Some(framed)).await?;
    if ran.exit != ExitStatus::Success {
        let tail = String::from_utf8_lossy(&stderr[stderr.len().saturating_sub(512)..])
            .trim()
            .to_string();
        return Err(if tail.is_empty() {
            ran.exit.to_string()
        } else {
            format!("{}: {tail}", ran.exit)
        });
    }
    Ok(ran.output)
}

/// Re-executes a fraud proof's computation with the module and input
/// fetched from its publisher.
async fn check_fraud(sh: &Shared, publisher: NodeId, a: &Assignment) -> Result<Ran, String> {
    let module = super::transfer::fetch(sh, Some(publisher), a.module).await?;
    let input = super::transfer::fetch(sh, Some(publisher), a.input).await?;
    let outcome = run_blocking(
        sh,
        a,
        ModuleSource::Bytes(Arc::new(module)),
        Arc::new(input),
        None,
        None,
        Whose::Own,
    )
    .await?;
    Ok(outcome.ran())
}

/// Whether a peer still answers (after its connection closed).
async fn probe(sh: &Shared, peer: NodeId) -> bool {
    tokio::time::sleep(Duration::from_millis(200)).await;
    let ask = sh
        .net
        .market(peer, MarketRequest::Summaries(agora_protocol::Domain::root()));
    matches!(tokio::time::timeout(Duration::from_secs(3), ask).await, Ok(Ok(_)))
}

/// Removes stored content nothing keeps, on a blocking thread.
async fn collect(sh: &Shared, keep: std::collections::HashSet<ContentId>) -> crate::store::Collected {
    let (store, retention, cap) = (sh.store.clone(), sh.disk.retention, sh.disk.cap);
    let done = tokio::task::spawn_blocking(move || store.content().collect(&keep, retention, cap.0)).await;
    let c = done.unwrap_or_default();
    if c.removed > 0 {
        tracing::info!(
            removed = c.removed,
            freed = c.freed,
            held = c.held,
            "collected stored content"
        );
    }
    c
}

async fn calibrate(sh: &Shared) -> Result<ComputeUnits, String> {
    crate::capacity::measure(&sh.executor, sh.calibration_budget)
        .await
        .map(|c| c.cu)
        .map_err(|e| e.to_string())
}

/// Publishes a dataset whose files are stored here: stores its manifest,
/// records it (kept from collection, announced again at every start) and
/// announces the manifest and every file in the DHT. Answered once the
/// record is on disk.
pub(crate) async fn publish(sh: &Shared, d: Dataset) -> Result<DatasetView, ApiError> {
    for f in &d.files {
        match held_size(sh, &f.id) {
            None => {
                return Err(ApiError::bad_request(format!(
                    "the file {} ({}) is not on this node: upload it first (PUT /v1/content)",
                    f.name, f.id
                )));
            }
            Some(n) if n != f.size.0 => {
                return Err(ApiError::bad_request(format!(
                    "the file {} is declared as {} bytes but {n} bytes were uploaded",
                    f.name, f.size.0
                )));
            }
            Some(_) => {}
        }
    }
    let manifest = d.to_bytes();
    let id = ContentId::of(&manifest);
    let internal = |e: crate::store::StoreError| ApiError::internal(format!("cannot store the dataset: {e}"));
    sh.store
        .content()
        .put_verified(id, manifest)
        .await
        .map_err(internal)?;
    let empty = ContentId::of(&[]);
    let mut ids = vec![id];
    ids.extend(d.files.iter().map(|f| f.id).filter(|i| *i != empty));
    ids.dedup();
    let mut batch = crate::store::Batch::new();
    batch.put(agora_market::records::published_key(&id), &ids);
    sh.store.write(batch).await.map_err(internal)?;
    announce(sh, &ids).await;
    tracing::info!(dataset = %id, files = d.files.len(), bytes = d.bytes().0, "dataset published");
    Ok(DatasetView::of(d))
}

/// Announces this node in the DHT as a holder of each of `ids`.
pub(crate) async fn announce(sh: &Shared, ids: &[ContentId]) {
    for id in ids {
        sh.net.start_providing(content_key(id)).await;
    }
}

/// A dataset's manifest, from the store or from its holders.
pub(crate) async fn dataset(sh: &Shared, id: ContentId) -> Result<DatasetView, ApiError> {
    let bytes = super::transfer::fetch(sh, None, id).await.map_err(|e| {
        ApiError::not_found(format!(
            "{e} (is the id right, and is a node that published it online?)"
        ))
    })?;
    let d = Dataset::from_bytes(&bytes)
        .map_err(|e| ApiError::bad_request(format!("{id} is not a dataset manifest: {e}")))?;
    Ok(DatasetView::of(d))
}

/// The size of content held, for results (the empty output is never stored).
pub(crate) fn held_size(sh: &Shared, id: &ContentId) -> Option<u64> {
    sh.store
        .content()
        .size(id)
        .or((*id == ContentId::of(&[])).then_some(0))
}
