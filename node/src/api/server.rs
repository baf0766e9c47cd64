//! The API server. Each route turns its request into an [`ApiCommand`] for
//! the node's driver (the single owner of the node's state) and waits for
//! the answer; content uploads and downloads go straight to the blob store.

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use agora_protocol::{ContentId, Decode, Domain, Envelope, JobId, NodeId};
use axum::body::Bytes as Body;
use axum::extract::{DefaultBodyLimit, Path, Query, Request, State};
use axum::http::{HeaderMap, Method, StatusCode, header};
use axum::middleware::{self, Next};
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post, put};
use axum::{Json, Router};
use serde::Deserialize;
use tokio::sync::{mpsc, oneshot};
use tokio_util::sync::CancellationToken;

use super::dashboard;
use super::{
    AuditReport, ContentRef, DomainRow, ErrorBody, Explain, GrantRequest, GrantResponse, JobResult,
    JobStatus, JobSummary, Ledger, OwnerState, PauseRequest, PeerRow, Status, SubmitRequest, SubmitResponse,
};
use crate::store::Store;

/// Largest upload (one module or input).
pub const MAX_UPLOAD: usize = agora_protocol::limits::MAX_BLOB;
/// Largest JSON request.
pub const MAX_JSON: usize = 16 * 1024 * 1024;

/// An error with its HTTP status.
#[derive(Debug, Clone)]
pub struct ApiError {
    /// The status.
    pub status: StatusCode,
    /// The message.
    pub message: String,
}

impl ApiError {
    /// 400.
    pub fn bad_request(m: impl Into<String>) -> ApiError {
        ApiError {
            status: StatusCode::BAD_REQUEST,
            message: m.into(),
        }
    }
    /// 403.
    pub fn forbidden(m: impl Into<String>) -> ApiError {
        ApiError {
            status: StatusCode::FORBIDDEN,
            message: m.into(),
        }
    }
    /// 404.
    pub fn not_found(m: impl Into<String>) -> ApiError {
        ApiError {
            status: StatusCode::NOT_FOUND,
            message: m.into(),
        }
    }
    /// 409.
    pub fn conflict(m: impl Into<String>) -> ApiError {
        ApiError {
            status: StatusCode::CONFLICT,
            message: m.into(),
        }
    }
    /// 500.
    pub fn internal(m: impl Into<String>) -> ApiError {
        ApiError {
            status: StatusCode::INTERNAL_SERVER_ERROR,
            message: m.into(),
        }
    }
    /// 503.
    pub fn unavailable(m: impl Into<String>) -> ApiError {
        ApiError {
            status: StatusCode::SERVICE_UNAVAILABLE,
            message: m.into(),
        }
    }
}

impl IntoResponse for ApiError {
    fn into_response(self) -> Response {
        (self.status, Json(ErrorBody { error: self.message })).into_response()
    }
}

/// What the API asks of the driver.
#[derive(Debug)]
pub enum ApiCommand {
    /// Node status.
    Status(oneshot::Sender<Status>),
    /// Peers, optionally within a domain.
    Peers(Option<Domain>, oneshot::Sender<Vec<PeerRow>>),
    /// Domains.
    Domains(oneshot::Sender<Vec<DomainRow>>),
    /// Metrics text.
    Metrics(oneshot::Sender<String>),
    /// Publish a dataset of stored files: announce them and the manifest.
    Publish(
        agora_protocol::dataset::Dataset,
        oneshot::Sender<Result<crate::api::DatasetView, ApiError>>,
    ),
    /// Content fetched here from its holders.
    FetchContent(
        ContentId,
        oneshot::Sender<Result<crate::api::FetchedContent, ApiError>>,
    ),
    /// A dataset's manifest, from here or from its holders.
    Dataset(
        ContentId,
        oneshot::Sender<Result<crate::api::DatasetView, ApiError>>,
    ),
    /// Submit (or plan) a job; with a wait, answered once it has ended,
    /// with its status in the detail asked.
    Submit(
        Box<SubmitRequest>,
        JobDetail,
        oneshot::Sender<Result<SubmitResponse, ApiError>>,
    ),
    /// List jobs.
    Jobs(oneshot::Sender<Vec<JobSummary>>),
    /// One job, in the detail asked.
    Job(JobId, JobDetail, oneshot::Sender<Option<JobStatus>>),
    /// Placement decisions.
    Explain(JobId, oneshot::Sender<Option<Explain>>),
    /// Live logs, of one task or all.
    Logs(JobId, Option<u32>, oneshot::Sender<Option<crate::api::JobLogs>>),
    /// Outputs.
    Result(JobId, oneshot::Sender<Option<JobResult>>),
    /// Cancel.
    Cancel(JobId, oneshot::Sender<Result<JobSummary, ApiError>>),
    /// Ledger.
    Ledger(usize, oneshot::Sender<Ledger>),
    /// Take an issuer's grant.
    Grant(Envelope, oneshot::Sender<Result<GrantResponse, ApiError>>),
    /// Audit a peer's chain.
    Audit(NodeId, oneshot::Sender<Result<AuditReport, ApiError>>),
    /// The owner's controls: pause (for a while, or until resumed),
    /// resume, or neither (just the state).
    Owner(Option<OwnerChange>, oneshot::Sender<OwnerState>),
    /// The owner's history: days, tasks.
    History {
        /// Days, newest first.
        days: u64,
        /// Last tasks.
        tasks: usize,
        /// Where the answer goes.
        reply: oneshot::Sender<Result<crate::api::OwnerHistory, ApiError>>,
    },
}

/// What the owner changes.
#[derive(Debug, Clone, PartialEq)]
pub enum OwnerChange {
    /// New limits, in force from the next reading.
    Limits(agora_market::limits::OwnerLimits),
    /// Take no new work, for this long or until resumed.
    Pause(Option<std::time::Duration>),
    /// Take work again.
    Resume,
}

/// What every route shares.
#[derive(Clone)]
pub(crate) struct Ctx {
    token: Arc<String>,
    tx: mpsc::Sender<ApiCommand>,
    store: Store,
    /// The API's port (what the `Host` of a request must name).
    pub(crate) port: u16,
    /// Dashboard logins.
    pub(crate) sessions: Arc<std::sync::Mutex<dashboard::session::Sessions>>,
    /// Dashboard event streams open.
    pub(crate) streams: Arc<std::sync::atomic::AtomicUsize>,
}

impl Ctx {
    pub(crate) async fn ask<T>(
        &self,
        make: impl FnOnce(oneshot::Sender<T>) -> ApiCommand,
    ) -> Result<T, ApiError> {
        let (tx, rx) = oneshot::channel();
        self.tx
            .send(make(tx))
            .await
            .map_err(|_| ApiError::unavailable("the node is shutting down"))?;
        tokio::time::timeout(Duration::from_secs(30), rx)
            .await
            .map_err(|_| ApiError::unavailable("the node did not answer in time"))?
            .map_err(|_| ApiError::unavailable("the node is shutting down"))
    }
}

fn parse_json<T: for<'de> Deserialize<'de>>(body: &[u8]) -> Result<T, ApiError> {
    serde_json::from_slice(body).map_err(|e| ApiError::bad_request(format!("malformed JSON: {e}")))
}

fn parse_job(id: &str) -> Result<JobId, ApiError> {
    id.parse().map_err(|e| ApiError::bad_request(format!("{e}")))
}

async fn auth(State(ctx): State<Ctx>, headers: HeaderMap, req: Request, next: Next) -> Response {
    if let Err(refused) = dashboard::guard(&headers, ctx.port) {
        return refused.into_response();
    }
    let path = req.uri().path().to_owned();
    // The login page and its style sheet hold nothing of the node.
    if path == "/login" || path == "/app.css" {
        return next.run(req).await;
    }
    let given = headers
        .get(header::AUTHORIZATION)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.strip_prefix("Bearer "));
    if given.is_some_and(|g| constant_time_eq(g.as_bytes(), ctx.token.as_bytes())) {
        return next.run(req).await;
    }
    let page = matches!(path.as_str(), "/" | "/app.js");
    if given.is_none() && dashboard::session_of(&ctx, &headers).is_some() {
        let changes = !matches!(*req.method(), Method::GET | Method::HEAD);
        if path == "/v1/dashboard/code" {
            return ApiError::forbidden("login codes are for the bearer token's holder (`agora dashboard`)")
                .into_response();
        }
        if changes && headers.get(header::ORIGIN).is_none() {
            return ApiError::forbidden(
                "a request that changes anything must say where it comes from (Origin)",
            )
            .into_response();
        }
        return next.run(req).await;
    }
    if page {
        return dashboard::login_page(
            StatusCode::UNAUTHORIZED,
            "This page needs a login. Run `agora dashboard` on the node's machine and open the link it prints.",
        );
    }
    let msg = if given.is_none() {
        "missing bearer token: send `Authorization: Bearer <token>` with the token from node.json"
    } else {
        "wrong bearer token: use the token from the node's node.json"
    };
    ApiError {
        status: StatusCode::UNAUTHORIZED,
        message: msg.into(),
    }
    .into_response()
}

use dashboard::session::constant_time_eq;

/// Builds the router (exposed for tests that drive it directly).
pub fn router(token: String, tx: mpsc::Sender<ApiCommand>, store: Store, port: u16) -> Router {
    let ctx = Ctx {
        token: Arc::new(token),
        tx,
        store,
        port,
        sessions: Arc::default(),
        streams: Arc::default(),
    };
    Router::new()
        .route("/", get(dashboard::index))
        .route("/app.js", get(dashboard::app_js))
        .route("/app.css", get(dashboard::app_css))
        .route("/login", get(dashboard::login))
        .route("/v1/dashboard/code", post(dashboard::code))
        .route("/v1/dashboard/logout", post(dashboard::logout))
        .route("/v1/events", get(dashboard::events))
        .route("/v1/status", get(status))
        .route("/v1/peers", get(peers))
        .route("/v1/domains", get(domains))
        .route("/metrics", get(metrics))
        .route(
            "/v1/content",
            put(put_content).layer(DefaultBodyLimit::max(MAX_UPLOAD)),
        )
        .route("/v1/content/{id}", get(get_content))
        .route("/v1/content/{id}/fetch", post(fetch_content))
        .route("/v1/datasets", post(publish))
        .route("/v1/datasets/{id}", get(dataset))
        .route("/v1/jobs", post(submit).get(jobs))
        .route("/v1/jobs/{id}", get(job))
        .route("/v1/jobs/{id}/explain", get(explain))
        .route("/v1/jobs/{id}/logs", get(logs))
        .route("/v1/jobs/{id}/result", get(result))
        .route("/v1/jobs/{id}/cancel", post(cancel))
        .route("/v1/ledger", get(ledger))
        .route("/v1/ledger/grants", post(grant))
        .route("/v1/ledger/audit/{peer}", get(audit))
        .route("/v1/owner", get(owner))
        .route("/v1/owner/pause", post(owner_pause))
        .route("/v1/owner/resume", post(owner_resume))
        .route("/v1/owner/limits", post(owner_limits))
        .route("/v1/owner/history", get(owner_history))
        .fallback(|| async { ApiError::not_found("no such route; see the API table in `agora_node::api`") })
        .layer(DefaultBodyLimit::max(MAX_JSON))
        .layer(middleware::from_fn_with_state(ctx.clone(), auth))
        .with_state(ctx)
}

/// Serves the API on `addr` until `cancel` fires; returns the bound address.
pub async fn serve(
    addr: SocketAddr,
    token: String,
    tx: mpsc::Sender<ApiCommand>,
    store: Store,
    cancel: CancellationToken,
) -> std::io::Result<(SocketAddr, tokio::task::JoinHandle<()>)> {
    let listener = tokio::net::TcpListener::bind(addr).await?;
    let bound = listener.local_addr()?;
    let app = router(token, tx, store, bound.port());
    let handle = tokio::spawn(async move {
        let _ = axum::serve(listener, app)
            .with_graceful_shutdown(cancel.cancelled_owned())
            .await;
    });
    Ok((bound, handle))
}

async fn status(State(ctx): State<Ctx>) -> Result<Json<Status>, ApiError> {
    Ok(Json(ctx.ask(ApiCommand::Status).await?))
}

#[derive(Deserialize)]
struct PeersQuery {
    domain: Option<String>,
}

async fn peers(State(ctx): State<Ctx>, Query(q): Query<PeersQuery>) -> Result<Json<Vec<PeerRow>>, ApiError> {
    let domain = match q.domain {
        Some(d) => Some(
            d.parse::<Domain>()
                .map_err(|e| ApiError::bad_request(e.to_string()))?,
        ),
        None => None,
    };
    Ok(Json(ctx.ask(|tx| ApiCommand::Peers(domain, tx)).await?))
}

async fn domains(State(ctx): State<Ctx>) -> Result<Json<Vec<DomainRow>>, ApiError> {
    Ok(Json(ctx.ask(ApiCommand::Domains).await?))
}

async fn metrics(State(ctx): State<Ctx>) -> Result<Response, ApiError> {
    let text = ctx.ask(ApiCommand::Metrics).await?;
    Ok(([(header::CONTENT_TYPE, "text/plain; version=0.0.4")], text).into_response())
}

async fn put_content(State(ctx): State<Ctx>, body: Body) -> Result<Json<ContentRef>, ApiError> {
    let size = body.len() as u64;
    let id = ctx
        .store
        .content()
        .put(body.to_vec())
        .await
        .map_err(|e| ApiError::internal(e.to_string()))?;
    Ok(Json(ContentRef { id, size }))
}

async fn get_content(State(ctx): State<Ctx>, Path(id): Path<String>) -> Result<Response, ApiError> {
    let id: ContentId = id.parse().map_err(|e| ApiError::bad_request(format!("{e}")))?;
    match ctx
        .store
        .content()
        .get(&id)
        .await
        .map_err(|e| ApiError::internal(e.to_string()))?
    {
        Some(bytes) => Ok(([(header::CONTENT_TYPE, "application/octet-stream")], bytes).into_response()),
        None => Err(ApiError::not_found(format!("no content {id} here"))),
    }
}

async fn publish(State(ctx): State<Ctx>, body: Body) -> Result<Json<crate::api::DatasetView>, ApiError> {
    let req: crate::api::PublishRequest = parse_json(&body)?;
    let dataset =
        agora_protocol::dataset::Dataset::new(req.files).map_err(|e| ApiError::bad_request(e.to_string()))?;
    Ok(Json(ctx.ask(|tx| ApiCommand::Publish(dataset, tx)).await??))
}

async fn fetch_content(
    State(ctx): State<Ctx>,
    Path(id): Path<String>,
) -> Result<Json<crate::api::FetchedContent>, ApiError> {
    let id: ContentId = id.parse().map_err(|e| ApiError::bad_request(format!("{e}")))?;
    let (tx, rx) = oneshot::channel();
    ctx.tx
        .send(ApiCommand::FetchContent(id, tx))
        .await
        .map_err(|_| ApiError::unavailable("the node is shutting down"))?;
    // A large fetch takes longer than the other commands' 30 s.
    rx.await
        .map_err(|_| ApiError::unavailable("the node is shutting down"))?
        .map(Json)
}

async fn dataset(
    State(ctx): State<Ctx>,
    Path(id): Path<String>,
) -> Result<Json<crate::api::DatasetView>, ApiError> {
    let id: ContentId = id.parse().map_err(|e| ApiError::bad_request(format!("{e}")))?;
    Ok(Json(ctx.ask(|tx| ApiCommand::Dataset(id, tx)).await??))
}

/// `POST /v1/jobs` takes the query of `GET /v1/jobs/{id}`: with
/// `wait_ms`, the answer waits for the stored job's end and holds its
/// status in that detail.
async fn submit(
    State(ctx): State<Ctx>,
    Query(wait): Query<JobDetail>,
    body: Body,
) -> Result<Json<SubmitResponse>, ApiError> {
    tracing::debug!(target: "hop", "api call in");
    let req: SubmitRequest = parse_json(&body)?;
    let answer = ctx
        .ask(|tx| ApiCommand::Submit(Box::new(req), wait, tx))
        .await??;
    tracing::debug!(target: "hop", "api call out");
    Ok(Json(answer))
}

async fn jobs(State(ctx): State<Ctx>) -> Result<Json<Vec<JobSummary>>, ApiError> {
    Ok(Json(ctx.ask(ApiCommand::Jobs).await?))
}

/// How much of a job's status to send: per-task rows are large for big
/// jobs, receipts larger still.
#[derive(Debug, Clone, Copy, Deserialize)]
pub struct JobDetail {
    /// Include a row per task (default true).
    #[serde(default = "yes")]
    pub tasks: bool,
    /// Include each copy's signed receipt (default false).
    #[serde(default)]
    pub receipts: bool,
    /// Answer once the job has ended, or after this many milliseconds (at
    /// most [`MAX_JOB_WAIT_MS`]) with its state then; 0 (the default)
    /// answers at once. A client waiting for a job asks once instead of
    /// polling, and hears of its end as soon as the node knows it.
    #[serde(default)]
    pub wait_ms: u64,
}

/// The longest a `GET /v1/jobs/{id}?wait_ms=` waits for the job to end.
pub const MAX_JOB_WAIT_MS: u64 = 20_000;

fn yes() -> bool {
    true
}

async fn job(
    State(ctx): State<Ctx>,
    Path(id): Path<String>,
    Query(detail): Query<JobDetail>,
) -> Result<Json<JobStatus>, ApiError> {
    let id = parse_job(&id)?;
    ctx.ask(|tx| ApiCommand::Job(id, detail, tx))
        .await?
        .map(Json)
        .ok_or_else(|| unknown(id))
}

async fn explain(State(ctx): State<Ctx>, Path(id): Path<String>) -> Result<Json<Explain>, ApiError> {
    let id = parse_job(&id)?;
    ctx.ask(|tx| ApiCommand::Explain(id, tx))
        .await?
        .map(Json)
        .ok_or_else(|| unknown(id))
}

#[derive(Deserialize)]
struct LogsQuery {
    task: Option<u32>,
}

async fn logs(
    State(ctx): State<Ctx>,
    Path(id): Path<String>,
    Query(q): Query<LogsQuery>,
) -> Result<Json<crate::api::JobLogs>, ApiError> {
    let id = parse_job(&id)?;
    ctx.ask(|tx| ApiCommand::Logs(id, q.task, tx))
        .await?
        .map(Json)
        .ok_or_else(|| unknown(id))
}

async fn result(State(ctx): State<Ctx>, Path(id): Path<String>) -> Result<Json<JobResult>, ApiError> {
    let id = parse_job(&id)?;
    ctx.ask(|tx| ApiCommand::Result(id, tx))
        .await?
        .map(Json)
        .ok_or_else(|| unknown(id))
}

async fn cancel(State(ctx): State<Ctx>, Path(id): Path<String>) -> Result<Json<JobSummary>, ApiError> {
    let id = parse_job(&id)?;
    Ok(Json(ctx.ask(|tx| ApiCommand::Cancel(id, tx)).await??))
}

async fn owner(State(ctx): State<Ctx>) -> Result<Json<OwnerState>, ApiError> {
    Ok(Json(ctx.ask(|tx| ApiCommand::Owner(None, tx)).await?))
}

async fn owner_pause(State(ctx): State<Ctx>, body: Body) -> Result<Json<OwnerState>, ApiError> {
    let req: PauseRequest = if body.is_empty() {
        PauseRequest::default()
    } else {
        parse_json(&body)?
    };
    let pause = req.for_ms.map(std::time::Duration::from_millis);
    Ok(Json(
        ctx.ask(|tx| ApiCommand::Owner(Some(OwnerChange::Pause(pause)), tx))
            .await?,
    ))
}

#[derive(Deserialize)]
struct HistoryQuery {
    days: Option<u64>,
    tasks: Option<usize>,
}

/// `GET /v1/owner/history?days=7&tasks=20`.
async fn owner_history(
    State(ctx): State<Ctx>,
    Query(q): Query<HistoryQuery>,
) -> Result<Json<crate::api::OwnerHistory>, ApiError> {
    let days = q.days.unwrap_or(7).clamp(1, 366);
    let tasks = q.tasks.unwrap_or(20).min(agora_market::history::MAX_RAN);
    Ok(Json(
        ctx.ask(|reply| ApiCommand::History { days, tasks, reply })
            .await??,
    ))
}

/// `POST /v1/owner/limits`: the whole set of limits (as `GET /v1/owner`
/// shows them under `limits`), in force at once and kept across restarts.
async fn owner_limits(State(ctx): State<Ctx>, body: Body) -> Result<Json<OwnerState>, ApiError> {
    let limits: agora_market::limits::OwnerLimits = parse_json(&body)?;
    limits.validate().map_err(ApiError::bad_request)?;
    Ok(Json(
        ctx.ask(|tx| ApiCommand::Owner(Some(OwnerChange::Limits(limits)), tx))
            .await?,
    ))
}

async fn owner_resume(State(ctx): State<Ctx>) -> Result<Json<OwnerState>, ApiError> {
    Ok(Json(
        ctx.ask(|tx| ApiCommand::Owner(Some(OwnerChange::Resume), tx))
            .await?,
    ))
}

#[derive(Deserialize)]
struct LedgerQuery {
    limit: Option<usize>,
}

async fn ledger(State(ctx): State<Ctx>, Query(q): Query<LedgerQuery>) -> Result<Json<Ledger>, ApiError> {
    let limit = q.limit.unwrap_or(20).min(10_000);
    Ok(Json(ctx.ask(|tx| ApiCommand::Ledger(limit, tx)).await?))
}

async fn grant(State(ctx): State<Ctx>, body: Body) -> Result<Json<GrantResponse>, ApiError> {
    let req: GrantRequest = parse_json(&body)?;
    let bytes = hex::decode(req.grant.trim())
        .map_err(|e| ApiError::bad_request(format!("the grant is not hex: {e}")))?;
    let env = Envelope::from_bytes(&bytes)
        .map_err(|e| ApiError::bad_request(format!("the grant is not a signed envelope: {e}")))?;
    Ok(Json(ctx.ask(|tx| ApiCommand::Grant(env, tx)).await??))
}

async fn audit(State(ctx): State<Ctx>, Path(peer): Path<String>) -> Result<Json<AuditReport>, ApiError> {
    let peer: NodeId = peer
        .parse()
        .map_err(|e| ApiError::bad_request(format!("not a peer id: {e}")))?;
    Ok(Json(ctx.ask(|tx| ApiCommand::Audit(peer, tx)).await??))
}

fn unknown(id: JobId) -> ApiError {
    ApiError::not_found(format!("no job {id} on this node (`agora jobs` lists them)"))
}
