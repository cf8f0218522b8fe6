//! The in-cluster Kubernetes API client of `oomtrace agent`: a cache of this node's pods (names,
//! labels, owning workload, container ids) kept by list+watch, and Kubernetes Events on pods.
//!
//! Off cluster nothing happens: [`KubeClient::from_env`] returns `Ok(None)` without a word when
//! `KUBERNETES_SERVICE_HOST` is unset or no service account token is mounted.
//!
//! ```no_run
//! # async fn agent(node: &str) -> Result<(), oomtrace::enrich::kube::KubeError> {
//! use oomtrace::enrich::kube::{KubeClient, WatchOptions};
//! if let Some(client) = KubeClient::from_env()? {
//!     let (pods, _task) = client.spawn_pod_watch(node, WatchOptions::default())?;
//!     // Later, for each OOM record (synchronous, cheap):
//!     if let Some(pod) = pods.by_container_id("0123abcd…") {
//!         client.post_oom_event(&pod, "OOM-killed pid 123 (java) in container app", node).await?;
//!     }
//! }
//! # Ok(())
//! # }
//! ```
//!
//! The protocol is plain HTTP/1.1 over tokio (and rustls with ring for `https`), one request
//! per connection (`Connection: close`), bodies framed by `Content-Length`, chunked encoding or
//! the connection's end; a watch is a long chunked response of JSON lines. Kept small on
//! purpose: no hyper, no kube-rs, no OpenAPI types.

mod cache;
mod chunked;
mod config;
mod event;
mod http;
mod lines;
mod pod;
mod watch;

use std::io;
use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

pub use cache::{PodCache, WatchStats, MAX_IDS_PER_POD};
pub use config::{ApiBase, KubeConfig, Scheme, SERVICE_ACCOUNT_DIR};
pub use pod::{
    resolve_owner, strip_runtime_prefix, Owner, OwnerRef, PodMeta, POD_TEMPLATE_HASH_LABEL,
};
pub use watch::WatchOptions;

use http::{Connector, Response};

/// Longest wait for a whole non-watch request (connect, TLS, send, response).
const REQUEST_TIMEOUT: Duration = Duration::from_secs(30);
/// Bytes of an error response kept in [`KubeError::Status`].
const ERROR_BODY_EXCERPT: usize = 512;

/// What went wrong talking to the API server.
#[derive(Debug, thiserror::Error)]
pub enum KubeError {
    #[error("Kubernetes API configuration: {0}")]
    Config(String),
    #[error("reading {}: {source}", path.display())]
    Read {
        path: PathBuf,
        #[source]
        source: io::Error,
    },
    #[error("connecting to the Kubernetes API at {addr}: {source}")]
    Connect {
        addr: String,
        #[source]
        source: io::Error,
    },
    #[error("TLS handshake with the Kubernetes API at {addr}: {source}")]
    Tls {
        addr: String,
        #[source]
        source: io::Error,
    },
    #[error("Kubernetes API connection, {context}: {source}")]
    Io {
        context: &'static str,
        #[source]
        source: io::Error,
    },
    #[error("Kubernetes API: malformed HTTP response: {0}")]
    Http(String),
    #[error("Kubernetes API {method} {path}: HTTP {status}: {body}")]
    Status {
        method: &'static str,
        path: String,
        status: u16,
        /// The first bytes of the response body (usually a `Status` object with a message).
        body: String,
    },
    #[error("Kubernetes API {context}: bad JSON: {source}")]
    Json {
        context: &'static str,
        #[source]
        source: serde_json::Error,
    },
    #[error("Kubernetes API {0}: timed out")]
    Timeout(String),
    #[error("Kubernetes API watch ended with an error (code {code:?}): {message}")]
    WatchEvent { code: Option<u64>, message: String },
    #[error("Kubernetes API: unexpected response: {0}")]
    Unexpected(String),
}

impl KubeError {
    /// The HTTP status of a [`KubeError::Status`] error.
    pub fn status(&self) -> Option<u16> {
        match self {
            KubeError::Status { status, .. } => Some(*status),
            _ => None,
        }
    }
}

/// A client of one API server; clones share it.
#[derive(Clone)]
pub struct KubeClient {
    inner: Arc<Inner>,
}

struct Inner {
    config: KubeConfig,
    connector: Connector,
}

impl std::fmt::Debug for KubeClient {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("KubeClient")
            .field("config", &self.inner.config)
            .finish()
    }
}

impl KubeClient {
    /// The in-cluster client ([`KubeConfig::in_cluster`]); `Ok(None)`, silently, off cluster.
    pub fn from_env() -> Result<Option<Self>, KubeError> {
        KubeConfig::in_cluster()?.map(Self::new).transpose()
    }

    /// A client for `config` (for `https`, its CA is parsed now).
    pub fn new(config: KubeConfig) -> Result<Self, KubeError> {
        let connector = Connector::new(config.base.clone(), config.ca_pem.as_deref())?;
        Ok(Self {
            inner: Arc::new(Inner { config, connector }),
        })
    }

    pub fn base(&self) -> &ApiBase {
        self.inner.connector.base()
    }

    /// Starts the task that lists and watches the pods of `node` into the returned cache, for
    /// as long as the task runs (it never ends by itself; abort the handle to stop it). Must be
    /// called inside a tokio runtime. Failures are logged and retried with backoff; the cache
    /// stays empty (and [`PodCache::is_synced`] false) until a first list succeeds.
    pub fn spawn_pod_watch(
        &self,
        node: &str,
        options: WatchOptions,
    ) -> Result<(PodCache, tokio::task::JoinHandle<()>), KubeError> {
        if node.is_empty() {
            return Err(KubeError::Config(
                "watching pods needs the node name (--node-name or NODE_NAME)".to_string(),
            ));
        }
        let runtime = tokio::runtime::Handle::try_current()
            .map_err(|e| KubeError::Config(format!("watching pods needs a tokio runtime: {e}")))?;
        let cache = PodCache::new(options.grace, options.max_entries);
        let task = runtime.spawn(watch::run(
            self.clone(),
            node.to_string(),
            cache.clone(),
            options,
        ));
        Ok((cache, task))
    }

    /// Posts a core/v1 Event on `pod`: reason `OOMKilling`, type `Warning`, from component
    /// `oomtrace` on `node`, with `message` (cut to 1024 bytes). Needs RBAC `create` on
    /// `events` in the pod's namespace.
    pub async fn post_oom_event(
        &self,
        pod: &PodMeta,
        message: &str,
        node: &str,
    ) -> Result<(), KubeError> {
        let body = event::oom_event(pod, message, node, event::unix_now_ns());
        let body = serde_json::to_vec(&body).map_err(|source| KubeError::Json {
            context: "event",
            source,
        })?;
        let path = format!(
            "/api/v1/namespaces/{}/events",
            http::encode_query_value(&pod.namespace)
        );
        self.call("POST", &path, Some(&body), 64 * 1024).await?;
        Ok(())
    }

    /// Sends a request and reads the response head.
    async fn start(
        &self,
        method: &'static str,
        path: &str,
        body: Option<&[u8]>,
    ) -> Result<Response, KubeError> {
        let token = self.inner.config.current_token()?;
        let request = http::encode_request(
            method,
            &self.inner.connector.base().authority(),
            path,
            token.as_deref(),
            body,
        );
        let io = self.inner.connector.connect().await?;
        http::send(io, &request).await
    }

    /// A whole request: the body of a `2xx` response (at most `limit` bytes), else
    /// [`KubeError::Status`].
    async fn call(
        &self,
        method: &'static str,
        path: &str,
        body: Option<&[u8]>,
        limit: usize,
    ) -> Result<Vec<u8>, KubeError> {
        let request = async {
            let mut response = self.start(method, path, body).await?;
            if !(200..300).contains(&response.head.status) {
                return Err(status_error(method, path, &mut response).await);
            }
            response.body.read_to_end(limit).await
        };
        tokio::time::timeout(REQUEST_TIMEOUT, request)
            .await
            .map_err(|_| KubeError::Timeout(format!("{method} {path}")))?
    }
}

/// A [`KubeError::Status`] with the start of the response's body.
async fn status_error(method: &'static str, path: &str, response: &mut Response) -> KubeError {
    let mut excerpt = Vec::new();
    let read = async {
        while excerpt.len() < ERROR_BODY_EXCERPT {
            match response.body.next_chunk().await {
                Ok(Some(piece)) => excerpt.extend_from_slice(&piece),
                _ => break,
            }
        }
    };
    let _ = tokio::time::timeout(Duration::from_secs(5), read).await;
    let text = String::from_utf8_lossy(&excerpt);
    let text: String = http::truncate(&text, ERROR_BODY_EXCERPT)
        .chars()
        .map(|c| if c.is_control() { ' ' } else { c })
        .collect();
    KubeError::Status {
        method,
        path: path.to_string(),
        status: response.head.status,
        body: text.trim().to_string(),
    }
}
