//! The dashboard: a web page every node serves on its API address, for the
//! owner (what runs here, what it earned, pause and resume), the developer
//! (jobs, their tasks, placements, receipts, logs) and anyone looking at the
//! network (domains, nodes).
//!
//! | method | path | answer |
//! | --- | --- | --- |
//! | POST | `/v1/dashboard/code` | [`LoginCode`] (bearer token only) |
//! | GET | `/login?code=CODE` | a session cookie, and on to `/` |
//! | POST | `/v1/dashboard/logout` | the session ends |
//! | GET | `/`, `/app.js` | the page (a session needed) |
//! | GET | `/app.css` | its style sheet (also for the login notice) |
//! | GET | `/v1/events?view=VIEW[&job=ID]` | server-sent events: a snapshot of the view each time it changes |
//!
//! The page is one HTML file, one script and one style sheet, embedded in
//! the binary (no framework, nothing fetched from elsewhere). It writes
//! everything a peer controls (domains, labels, versions, error text) as
//! text nodes, never as markup, and the content security policy forbids
//! inline script besides. Views update from one event stream per open view:
//! the node polls its own driver and sends only what changed.
//!
//! Logging in is in [`session`].

pub mod session;

use std::convert::Infallible;
use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::{Duration, Instant};

use agora_protocol::JobId;
use axum::extract::{Query, State};
use axum::http::{HeaderMap, HeaderValue, StatusCode, header};
use axum::response::sse::{Event, KeepAlive, Sse};
use axum::response::{IntoResponse, Response};
use futures::Stream;
use serde::{Deserialize, Serialize};

use super::server::{ApiCommand, ApiError, Ctx, JobDetail};
use session::{CODE_TTL, LoginError, MAX_CODE_TTL};

/// The page.
pub const INDEX_HTML: &str = include_str!("assets/index.html");
/// Its script.
pub const APP_JS: &str = include_str!("assets/app.js");
/// Its style sheet.
pub const APP_CSS: &str = include_str!("assets/app.css");
/// What a browser without a session sees.
const LOGIN_HTML: &str = include_str!("assets/login.html");

/// Snapshots larger than this (bytes of JSON) are sent at most once a
/// second.
const LARGE_SNAPSHOT: usize = 256 * 1024;

/// Most event streams open at once (one per open view of a browser tab).
pub const MAX_STREAMS: usize = 16;

/// The content security policy of every page: script, style and requests
/// only from the node itself, images also from `blob:` (previews of
/// outputs), no frames, no inline script.
pub const CSP: &str = "default-src 'none'; script-src 'self'; style-src 'self'; img-src 'self' blob: data:; \
                       connect-src 'self'; form-action 'self'; frame-ancestors 'none'; base-uri 'none'";

/// `POST /v1/dashboard/code` body.
#[derive(Debug, Clone, Default, Serialize, Deserialize)]
pub struct CodeRequest {
    /// How long the code stays valid, ms (default 2 minutes, at most 15).
    #[serde(default)]
    pub ttl_ms: Option<u64>,
}

/// `POST /v1/dashboard/code` answer: a one-time login code.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct LoginCode {
    /// The code.
    pub code: String,
    /// The URL that logs a browser in with it.
    pub url: String,
    /// How long it stays valid, ms.
    pub ttl_ms: u64,
}

/// Whether a request reached the node under its own name and, when it says
/// where it comes from, from the node's own page; `Err` is the refusal.
pub(crate) fn guard(headers: &HeaderMap, port: u16) -> Result<(), ApiError> {
    let host = headers
        .get(header::HOST)
        .and_then(|h| h.to_str().ok())
        .ok_or_else(|| ApiError::forbidden("a request must name the node in its Host header"))?;
    if !session::host_allowed(host, port) {
        return Err(ApiError::forbidden(format!(
            "Host `{host}` is not this node: reach the API at 127.0.0.1:{port}, localhost:{port} or another of its IP addresses"
        )));
    }
    if let Some(origin) = headers.get(header::ORIGIN) {
        let origin = origin.to_str().unwrap_or("");
        if !session::origin_allowed(origin, host) {
            return Err(ApiError::forbidden(format!(
                "requests from `{origin}` are refused: only the node's own page may call its API"
            )));
        }
    }
    Ok(())
}

/// The session a request's cookie names, if it is open.
pub(crate) fn session_of(ctx: &Ctx, headers: &HeaderMap) -> Option<String> {
    let name = session::cookie_name(ctx.port);
    let value = headers
        .get_all(header::COOKIE)
        .iter()
        .filter_map(|h| h.to_str().ok())
        .find_map(|h| session::cookie_value(h, &name))?;
    let open = ctx
        .sessions
        .lock()
        .is_ok_and(|s| s.is_open(value, Instant::now()));
    open.then(|| value.to_owned())
}

/// What a browser without a session gets instead of a page.
pub(crate) fn login_page(status: StatusCode, why: &str) -> Response {
    let page = LOGIN_HTML.replace("{why}", &escape_html(why));
    (status, page_headers("text/html; charset=utf-8"), page).into_response()
}

fn page_headers(content_type: &'static str) -> [(header::HeaderName, HeaderValue); 6] {
    [
        (header::CONTENT_TYPE, HeaderValue::from_static(content_type)),
        (header::CONTENT_SECURITY_POLICY, HeaderValue::from_static(CSP)),
        (
            header::X_CONTENT_TYPE_OPTIONS,
            HeaderValue::from_static("nosniff"),
        ),
        (header::X_FRAME_OPTIONS, HeaderValue::from_static("DENY")),
        // The login URL carries a code: no page passes its address on.
        (header::REFERRER_POLICY, HeaderValue::from_static("no-referrer")),
        (header::CACHE_CONTROL, HeaderValue::from_static("no-store")),
    ]
}

/// Escapes text for HTML (only the login page is assembled on the server).
pub fn escape_html(s: &str) -> String {
    let mut out = String::with_capacity(s.len());
    for c in s.chars() {
        match c {
            '&' => out.push_str("&amp;"),
            '<' => out.push_str("&lt;"),
            '>' => out.push_str("&gt;"),
            '"' => out.push_str("&quot;"),
            '\'' => out.push_str("&#39;"),
            c => out.push(c),
        }
    }
    out
}

/// `GET /`.
pub(crate) async fn index() -> Response {
    (page_headers("text/html; charset=utf-8"), INDEX_HTML).into_response()
}

/// `GET /app.js`.
pub(crate) async fn app_js() -> Response {
    (page_headers("text/javascript; charset=utf-8"), APP_JS).into_response()
}

/// `GET /app.css`.
pub(crate) async fn app_css() -> Response {
    (page_headers("text/css; charset=utf-8"), APP_CSS).into_response()
}

/// `POST /v1/dashboard/code`.
pub(crate) async fn code(
    State(ctx): State<Ctx>,
    headers: HeaderMap,
    body: axum::body::Bytes,
) -> Result<axum::Json<LoginCode>, ApiError> {
    let req: CodeRequest = if body.is_empty() {
        CodeRequest::default()
    } else {
        serde_json::from_slice(&body).map_err(|e| ApiError::bad_request(format!("malformed JSON: {e}")))?
    };
    let ttl = req
        .ttl_ms
        .map_or(CODE_TTL, Duration::from_millis)
        .min(MAX_CODE_TTL);
    let code = hex::encode(rand::random::<[u8; 16]>());
    ctx.sessions
        .lock()
        .map_err(|_| ApiError::internal("the session table is poisoned"))?
        .issue_code(code.clone(), Instant::now(), ttl);
    // The host the caller used is one the guard accepted: the browser
    // reaches the node the same way.
    let host = headers
        .get(header::HOST)
        .and_then(|h| h.to_str().ok())
        .map_or_else(|| format!("127.0.0.1:{}", ctx.port), str::to_owned);
    Ok(axum::Json(LoginCode {
        url: format!("http://{host}/login?code={code}"),
        code,
        ttl_ms: ttl.as_millis() as u64,
    }))
}

#[derive(Deserialize)]
pub(crate) struct LoginQuery {
    code: Option<String>,
}

/// `GET /login?code=CODE`.
pub(crate) async fn login(State(ctx): State<Ctx>, Query(q): Query<LoginQuery>) -> Response {
    let Some(code) = q.code else {
        return login_page(
            StatusCode::UNAUTHORIZED,
            "This link has no login code. Run `agora dashboard` for one.",
        );
    };
    let session = hex::encode(rand::random::<[u8; 32]>());
    let redeemed = match ctx.sessions.lock() {
        Ok(mut s) => s.redeem(&code, session.clone(), Instant::now()),
        Err(_) => Err(LoginError::Unknown),
    };
    if let Err(e) = redeemed {
        return login_page(
            StatusCode::UNAUTHORIZED,
            &format!("{e}. Run `agora dashboard` for a new one."),
        );
    }
    let cookie = format!(
        "{}={session}; HttpOnly; SameSite=Strict; Path=/; Max-Age={}",
        session::cookie_name(ctx.port),
        session::SESSION_TTL.as_secs()
    );
    let mut r = (StatusCode::SEE_OTHER, [(header::LOCATION, "/")]).into_response();
    if let Ok(v) = HeaderValue::from_str(&cookie) {
        r.headers_mut().insert(header::SET_COOKIE, v);
    }
    r.headers_mut()
        .insert(header::REFERRER_POLICY, HeaderValue::from_static("no-referrer"));
    r
}

/// `POST /v1/dashboard/logout`.
pub(crate) async fn logout(State(ctx): State<Ctx>, headers: HeaderMap) -> Response {
    if let Some(s) = session_of(&ctx, &headers)
        && let Ok(mut sessions) = ctx.sessions.lock()
    {
        sessions.close(&s);
    }
    let cookie = format!(
        "{}=; HttpOnly; SameSite=Strict; Path=/; Max-Age=0",
        session::cookie_name(ctx.port)
    );
    let mut r = StatusCode::NO_CONTENT.into_response();
    if let Ok(v) = HeaderValue::from_str(&cookie) {
        r.headers_mut().insert(header::SET_COOKIE, v);
    }
    r
}

/// Which view an event stream feeds.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum View {
    /// This node, the domains, the peers.
    Network,
    /// Every job.
    Jobs,
    /// One job: its tasks and live logs.
    Job,
    /// The owner's view: status, controls, history, earnings.
    Machine,
    /// The ledger.
    Ledger,
}

impl View {
    /// How often the node looks for a change.
    fn period(self) -> Duration {
        match self {
            View::Network | View::Jobs | View::Job => Duration::from_millis(250),
            View::Machine | View::Ledger => Duration::from_millis(1000),
        }
    }
}

#[derive(Deserialize)]
pub(crate) struct EventsQuery {
    view: View,
    job: Option<String>,
}

/// Counts an open stream while it lives.
struct StreamSlot(Arc<AtomicUsize>);

impl Drop for StreamSlot {
    fn drop(&mut self) {
        self.0.fetch_sub(1, Ordering::Relaxed);
    }
}

/// `GET /v1/events?view=VIEW[&job=ID]`: a `snapshot` event with the view's
/// data (JSON) at once and again whenever it changes; a `failure` event ends
/// the stream.
pub(crate) async fn events(
    State(ctx): State<Ctx>,
    Query(q): Query<EventsQuery>,
) -> Result<Sse<impl Stream<Item = Result<Event, Infallible>>>, ApiError> {
    let job = match (q.view, q.job) {
        (View::Job, Some(id)) => Some(
            id.parse::<JobId>()
                .map_err(|e| ApiError::bad_request(format!("{e}")))?,
        ),
        (View::Job, None) => return Err(ApiError::bad_request("view=job needs job=ID")),
        _ => None,
    };
    if ctx.streams.fetch_add(1, Ordering::Relaxed) >= MAX_STREAMS {
        ctx.streams.fetch_sub(1, Ordering::Relaxed);
        return Err(ApiError::unavailable(format!(
            "{MAX_STREAMS} event streams are open already; close a dashboard tab"
        )));
    }
    let slot = StreamSlot(ctx.streams.clone());
    let view = q.view;
    struct St {
        ctx: Ctx,
        last: Option<String>,
        first: bool,
        done: bool,
        _slot: StreamSlot,
    }
    let st = St {
        ctx,
        last: None,
        first: true,
        done: false,
        _slot: slot,
    };
    let stream = futures::stream::unfold(st, move |mut st| async move {
        if st.done {
            return None;
        }
        loop {
            if !st.first {
                // A large view is sent less often.
                let slow = st.last.as_ref().is_some_and(|l| l.len() > LARGE_SNAPSHOT);
                let period = if slow {
                    Duration::from_secs(1)
                } else {
                    view.period()
                };
                tokio::time::sleep(period).await;
            }
            st.first = false;
            match snapshot(&st.ctx, view, job).await {
                Ok(v) => {
                    let text = v.to_string();
                    if st.last.as_deref() != Some(text.as_str()) {
                        st.last = Some(text.clone());
                        return Some((Ok(Event::default().event("snapshot").data(text)), st));
                    }
                }
                Err(e) => {
                    st.done = true;
                    return Some((Ok(Event::default().event("failure").data(e.message)), st));
                }
            }
        }
    });
    Ok(Sse::new(stream).keep_alive(KeepAlive::default()))
}

/// The largest job whose tasks the job view lists one by one.
pub const MAX_GRID_TASKS: usize = 4096;

/// Ledger entries the machine and ledger views show.
const LEDGER_ROWS: usize = 500;

async fn snapshot(ctx: &Ctx, view: View, job: Option<JobId>) -> Result<serde_json::Value, ApiError> {
    let json = |v: serde_json::Result<serde_json::Value>| v.map_err(|e| ApiError::internal(e.to_string()));
    Ok(match view {
        View::Network => {
            let status = ctx.ask(ApiCommand::Status).await?;
            let domains = ctx.ask(ApiCommand::Domains).await?;
            let peers = ctx.ask(|tx| ApiCommand::Peers(None, tx)).await?;
            serde_json::json!({ "status": json(serde_json::to_value(status))?, "domains": json(serde_json::to_value(domains))?, "peers": json(serde_json::to_value(peers))? })
        }
        View::Jobs => {
            let jobs = ctx.ask(ApiCommand::Jobs).await?;
            serde_json::json!({ "jobs": json(serde_json::to_value(jobs))? })
        }
        View::Job => {
            let id = job.ok_or_else(|| ApiError::bad_request("view=job needs job=ID"))?;
            let ask = |tasks| {
                let detail = JobDetail {
                    tasks,
                    receipts: false,
                    wait_ms: 0,
                };
                async move {
                    ctx.ask(|tx| ApiCommand::Job(id, detail, tx))
                        .await?
                        .ok_or_else(|| ApiError::not_found(format!("no job {id} on this node")))
                }
            };
            // A row per task, up to a bound: beyond it the view shows the
            // counts only.
            let mut status = ask(false).await?;
            if status.total <= MAX_GRID_TASKS {
                status = ask(true).await?;
            }
            let logs = ctx.ask(|tx| ApiCommand::Logs(id, None, tx)).await?;
            serde_json::json!({ "job": json(serde_json::to_value(status))?, "logs": json(serde_json::to_value(logs))? })
        }
        View::Machine => {
            let status = ctx.ask(ApiCommand::Status).await?;
            let owner = ctx.ask(|tx| ApiCommand::Owner(None, tx)).await?;
            let history = ctx
                .ask(|reply| ApiCommand::History {
                    days: 14,
                    tasks: 20,
                    reply,
                })
                .await??;
            let ledger = ctx.ask(|tx| ApiCommand::Ledger(LEDGER_ROWS, tx)).await?;
            serde_json::json!({
                "status": json(serde_json::to_value(status))?,
                "owner": json(serde_json::to_value(owner))?,
                "history": json(serde_json::to_value(history))?,
                "ledger": json(serde_json::to_value(ledger))?,
            })
        }
        View::Ledger => {
            let ledger = ctx.ask(|tx| ApiCommand::Ledger(LEDGER_ROWS, tx)).await?;
            serde_json::json!({ "ledger": json(serde_json::to_value(ledger))? })
        }
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn escaping_leaves_no_markup() {
        assert_eq!(
            escape_html(r#""><img src=x onerror=alert(1)><script>&'"#),
            "&quot;&gt;&lt;img src=x onerror=alert(1)&gt;&lt;script&gt;&amp;&#39;"
        );
    }

    #[test]
    fn the_page_loads_nothing_from_elsewhere_and_has_no_inline_script() {
        for asset in [INDEX_HTML, APP_JS, APP_CSS, LOGIN_HTML] {
            for far in [
                "src=\"http",
                "href=\"http",
                "url(",
                "@import",
                "fetch('http",
                "fetch(\"http",
            ] {
                assert!(!asset.contains(far), "{far} in an asset");
            }
        }
        for page in [INDEX_HTML, LOGIN_HTML] {
            assert!(!page.contains("<script>"), "inline script in a page");
            let handler = page.split(" on").skip(1).any(|rest| {
                let name: String = rest.chars().take_while(char::is_ascii_lowercase).collect();
                !name.is_empty() && rest[name.len()..].starts_with('=')
            });
            assert!(!handler, "an inline event handler in a page");
        }
        assert!(INDEX_HTML.contains(r#"<script src="/app.js""#));
    }

    #[test]
    fn the_script_never_writes_markup() {
        for sink in [
            "innerHTML",
            "outerHTML",
            "insertAdjacentHTML",
            "document.write",
            "eval(",
        ] {
            assert!(!APP_JS.contains(sink), "app.js uses {sink}");
        }
    }
}
