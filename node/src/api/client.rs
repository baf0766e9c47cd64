//! A client of the local API, used by the CLI and the testnet.

use std::path::{Path, PathBuf};
use std::time::Duration;

use agora_protocol::{ContentId, Encode, JobId, NodeId};
use serde::de::DeserializeOwned;

use super::{
    AuditReport, ContentRef, DomainRow, ErrorBody, Explain, GrantRequest, GrantResponse, JobResult,
    JobStatus, JobSummary, Ledger, NodeInfo, OwnerState, PauseRequest, PeerRow, Status, SubmitRequest,
    SubmitResponse,
};

/// Where a node is: its API address and token.
#[derive(Debug, Clone)]
pub struct Endpoint {
    /// `http://127.0.0.1:PORT`.
    pub base: String,
    /// The bearer token.
    pub token: String,
}

/// Errors talking to a node.
#[derive(Debug, thiserror::Error)]
pub enum ClientError {
    /// No `node.json` in the data dir.
    #[error(
        "no node is running with data dir {dir} (no node.json there); start one with `agora node --data-dir {dir}` or point at one with --api and --token"
    )]
    NoNode {
        /// The data dir.
        dir: String,
    },
    /// `node.json` is unreadable.
    #[error("cannot read {path}: {reason}")]
    BadNodeInfo {
        /// The file.
        path: String,
        /// Why.
        reason: String,
    },
    /// The node did not answer.
    #[error("no node answers at {base} ({reason}); is it running? (`agora node` starts one)")]
    Unreachable {
        /// The address.
        base: String,
        /// Why.
        reason: String,
    },
    /// The node answered with an error.
    #[error("{message}")]
    Api {
        /// HTTP status.
        status: u16,
        /// The node's message.
        message: String,
    },
    /// The answer did not parse.
    #[error("unexpected answer from the node: {0}")]
    Decode(String),
}

/// Reads `DATA_DIR/node.json`.
pub fn read_node_info(data_dir: &Path) -> Result<NodeInfo, ClientError> {
    let path = data_dir.join("node.json");
    let text = match std::fs::read_to_string(&path) {
        Ok(t) => t,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => {
            return Err(ClientError::NoNode {
                dir: data_dir.display().to_string(),
            });
        }
        Err(e) => {
            return Err(ClientError::BadNodeInfo {
                path: path.display().to_string(),
                reason: e.to_string(),
            });
        }
    };
    serde_json::from_str(&text).map_err(|e| ClientError::BadNodeInfo {
        path: path.display().to_string(),
        reason: e.to_string(),
    })
}

/// The endpoint from `--api`/`--token`, or else from the data dir's `node.json`.
pub fn locate(
    data_dir: Option<PathBuf>,
    api: Option<String>,
    token: Option<String>,
) -> Result<Endpoint, ClientError> {
    if let Some(api) = api {
        let base = if api.starts_with("http://") {
            api
        } else {
            format!("http://{api}")
        };
        return Ok(Endpoint {
            base,
            token: token.unwrap_or_default(),
        });
    }
    let dir = crate::paths::data_dir(data_dir);
    let info = read_node_info(&dir)?;
    Ok(Endpoint {
        base: format!("http://{}", info.api),
        token: token.unwrap_or(info.token),
    })
}

/// A client of one node.
#[derive(Debug, Clone)]
pub struct Client {
    endpoint: Endpoint,
    http: reqwest::Client,
}

impl Client {
    /// A client for `endpoint`.
    pub fn new(endpoint: Endpoint) -> Client {
        let http = reqwest::Client::builder()
            .timeout(Duration::from_secs(120))
            .pool_max_idle_per_host(8)
            .build()
            .unwrap_or_default();
        Client { endpoint, http }
    }

    /// The endpoint.
    pub fn endpoint(&self) -> &Endpoint {
        &self.endpoint
    }

    fn url(&self, path: &str) -> String {
        format!("{}{path}", self.endpoint.base)
    }

    async fn send(&self, req: reqwest::RequestBuilder) -> Result<reqwest::Response, ClientError> {
        let resp =
            req.bearer_auth(&self.endpoint.token)
                .send()
                .await
                .map_err(|e| ClientError::Unreachable {
                    base: self.endpoint.base.clone(),
                    reason: e.to_string(),
                })?;
        if resp.status().is_success() {
            return Ok(resp);
        }
        let status = resp.status().as_u16();
        let text = resp.text().await.unwrap_or_default();
        let message = serde_json::from_str::<ErrorBody>(&text)
            .map(|b| b.error)
            .unwrap_or(text);
        Err(ClientError::Api { status, message })
    }

    async fn json<T: DeserializeOwned>(&self, req: reqwest::RequestBuilder) -> Result<T, ClientError> {
        let resp = self.send(req).await?;
        let bytes = resp
            .bytes()
            .await
            .map_err(|e| ClientError::Decode(e.to_string()))?;
        serde_json::from_slice(&bytes).map_err(|e| ClientError::Decode(e.to_string()))
    }

    /// `GET /v1/status`.
    pub async fn status(&self) -> Result<Status, ClientError> {
        self.json(self.http.get(self.url("/v1/status"))).await
    }

    /// `GET /v1/peers`.
    pub async fn peers(&self, domain: Option<&str>) -> Result<Vec<PeerRow>, ClientError> {
        let path = match domain {
            // Domains are [a-z0-9_-/] only: no escaping needed.
            Some(d) => format!("/v1/peers?domain={d}"),
            None => "/v1/peers".to_owned(),
        };
        self.json(self.http.get(self.url(&path))).await
    }

    /// `GET /v1/domains`.
    pub async fn domains(&self) -> Result<Vec<DomainRow>, ClientError> {
        self.json(self.http.get(self.url("/v1/domains"))).await
    }

    /// `GET /metrics`.
    pub async fn metrics(&self) -> Result<String, ClientError> {
        let resp = self.send(self.http.get(self.url("/metrics"))).await?;
        resp.text().await.map_err(|e| ClientError::Decode(e.to_string()))
    }

    /// `PUT /v1/content`.
    pub async fn put_content(&self, bytes: Vec<u8>) -> Result<ContentRef, ClientError> {
        self.json(self.http.put(self.url("/v1/content")).body(bytes))
            .await
    }

    /// `GET /v1/content/{id}`.
    pub async fn get_content(&self, id: &ContentId) -> Result<Vec<u8>, ClientError> {
        let resp = self
            .send(self.http.get(self.url(&format!("/v1/content/{id}"))))
            .await?;
        let bytes = resp
            .bytes()
            .await
            .map_err(|e| ClientError::Decode(e.to_string()))?;
        if !id.matches(&bytes) {
            return Err(ClientError::Decode(format!("content {id} does not match its id")));
        }
        Ok(bytes.to_vec())
    }

    /// Fetches content to the node from its holders.
    pub async fn fetch_content(&self, id: &ContentId) -> Result<crate::api::FetchedContent, ClientError> {
        self.json(self.http.post(self.url(&format!("/v1/content/{id}/fetch"))))
            .await
    }

    /// Publishes uploaded files as a dataset.
    pub async fn publish(
        &self,
        req: &crate::api::PublishRequest,
    ) -> Result<crate::api::DatasetView, ClientError> {
        self.json(self.http.post(self.url("/v1/datasets")).json(req))
            .await
    }

    /// A dataset's manifest, found by the node here or on the network.
    pub async fn dataset(&self, id: &ContentId) -> Result<crate::api::DatasetView, ClientError> {
        self.json(self.http.get(self.url(&format!("/v1/datasets/{id}"))))
            .await
    }

    /// `POST /v1/jobs`.
    pub async fn submit(&self, req: &SubmitRequest) -> Result<SubmitResponse, ClientError> {
        self.json(self.http.post(self.url("/v1/jobs")).json(req)).await
    }

    /// `POST /v1/jobs?wait_ms=`: submits, and answers once the job is
    /// stored and has ended, or after `wait`, with its status then
    /// (`status`; with a row per task if `tasks`).
    pub async fn submit_waiting(
        &self,
        req: &SubmitRequest,
        wait: Duration,
        tasks: bool,
    ) -> Result<SubmitResponse, ClientError> {
        let ms = wait.as_millis().max(1);
        self.json(
            self.http
                .post(self.url(&format!("/v1/jobs?tasks={tasks}&wait_ms={ms}")))
                .json(req),
        )
        .await
    }

    /// `GET /v1/jobs`.
    pub async fn jobs(&self) -> Result<Vec<JobSummary>, ClientError> {
        self.json(self.http.get(self.url("/v1/jobs"))).await
    }

    /// `GET /v1/jobs/{id}`.
    pub async fn job(&self, id: &JobId) -> Result<JobStatus, ClientError> {
        self.json(self.http.get(self.url(&format!("/v1/jobs/{id}"))))
            .await
    }

    /// `GET /v1/jobs/{id}?tasks=false`: counts and providers, no task rows
    /// (cheap to poll).
    pub async fn job_summary(&self, id: &JobId) -> Result<JobStatus, ClientError> {
        self.json(self.http.get(self.url(&format!("/v1/jobs/{id}?tasks=false"))))
            .await
    }

    /// `GET /v1/jobs/{id}?wait_ms=`: the job once it has ended, or after
    /// `wait` (at most 20 s) as it is then. With `tasks` false, without its
    /// task rows.
    pub async fn job_waiting(
        &self,
        id: &JobId,
        wait: Duration,
        tasks: bool,
    ) -> Result<JobStatus, ClientError> {
        let ms = wait.as_millis().max(1);
        self.json(
            self.http
                .get(self.url(&format!("/v1/jobs/{id}?tasks={tasks}&wait_ms={ms}"))),
        )
        .await
    }

    /// `GET /v1/jobs/{id}?receipts=true`: with every copy's signed receipt.
    pub async fn job_with_receipts(&self, id: &JobId) -> Result<JobStatus, ClientError> {
        self.json(self.http.get(self.url(&format!("/v1/jobs/{id}?receipts=true"))))
            .await
    }

    /// `GET /v1/jobs/{id}/explain`.
    pub async fn explain(&self, id: &JobId) -> Result<Explain, ClientError> {
        self.json(self.http.get(self.url(&format!("/v1/jobs/{id}/explain"))))
            .await
    }

    /// `GET /v1/jobs/{id}/logs[?task=N]`.
    pub async fn logs(&self, id: &JobId, task: Option<u32>) -> Result<crate::api::JobLogs, ClientError> {
        let q = task.map(|t| format!("?task={t}")).unwrap_or_default();
        self.json(self.http.get(self.url(&format!("/v1/jobs/{id}/logs{q}"))))
            .await
    }

    /// `GET /v1/jobs/{id}/result`.
    pub async fn result(&self, id: &JobId) -> Result<JobResult, ClientError> {
        self.json(self.http.get(self.url(&format!("/v1/jobs/{id}/result"))))
            .await
    }

    /// `POST /v1/jobs/{id}/cancel`.
    pub async fn cancel(&self, id: &JobId) -> Result<JobSummary, ClientError> {
        self.json(self.http.post(self.url(&format!("/v1/jobs/{id}/cancel"))))
            .await
    }

    /// `GET /v1/owner`.
    pub async fn owner(&self) -> Result<OwnerState, ClientError> {
        self.json(self.http.get(self.url("/v1/owner"))).await
    }

    /// `POST /v1/dashboard/code`: a one-time login link for a browser,
    /// valid for `ttl` (the node's default when `None`).
    pub async fn dashboard_code(
        &self,
        ttl: Option<std::time::Duration>,
    ) -> Result<super::dashboard::LoginCode, ClientError> {
        let body = super::dashboard::CodeRequest {
            ttl_ms: ttl.map(|t| t.as_millis() as u64),
        };
        self.json(self.http.post(self.url("/v1/dashboard/code")).json(&body))
            .await
    }

    /// `POST /v1/owner/pause`: for `pause`, or until resumed.
    pub async fn pause(&self, pause: Option<std::time::Duration>) -> Result<OwnerState, ClientError> {
        let body = PauseRequest {
            for_ms: pause.map(|d| d.as_millis() as u64),
        };
        self.json(self.http.post(self.url("/v1/owner/pause")).json(&body))
            .await
    }

    /// `GET /v1/owner/history`.
    pub async fn owner_history(
        &self,
        days: u64,
        tasks: usize,
    ) -> Result<crate::api::OwnerHistory, ClientError> {
        self.json(
            self.http
                .get(self.url(&format!("/v1/owner/history?days={days}&tasks={tasks}"))),
        )
        .await
    }

    /// `POST /v1/owner/limits`: replaces the owner's limits.
    pub async fn set_limits(
        &self,
        limits: &agora_market::limits::OwnerLimits,
    ) -> Result<OwnerState, ClientError> {
        self.json(self.http.post(self.url("/v1/owner/limits")).json(limits))
            .await
    }

    /// `POST /v1/owner/resume`.
    pub async fn resume(&self) -> Result<OwnerState, ClientError> {
        self.json(self.http.post(self.url("/v1/owner/resume"))).await
    }

    /// `GET /v1/ledger`.
    pub async fn ledger(&self, limit: usize) -> Result<Ledger, ClientError> {
        self.json(self.http.get(self.url(&format!("/v1/ledger?limit={limit}"))))
            .await
    }

    /// `POST /v1/ledger/grants`.
    pub async fn grant(&self, grant: &agora_protocol::Envelope) -> Result<GrantResponse, ClientError> {
        let body = GrantRequest {
            grant: hex::encode(grant.to_bytes()),
        };
        self.json(self.http.post(self.url("/v1/ledger/grants")).json(&body))
            .await
    }

    /// `GET /v1/ledger/audit/{peer}`.
    pub async fn audit(&self, peer: &NodeId) -> Result<AuditReport, ClientError> {
        self.json(self.http.get(self.url(&format!("/v1/ledger/audit/{peer}"))))
            .await
    }
}
