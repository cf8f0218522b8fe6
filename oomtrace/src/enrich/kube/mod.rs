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
//! The transport and the watch are kube's: its client (hyper 1 over rustls with ring) and
//! kube-runtime's `watcher`, on k8s-openapi's types, but for pods, which are decoded into the
//! small typed structs of `slim.rs` (what is kept of them, nothing else); response bodies are
//! bounded (`cap.rs`). Ours are what the agent needs on top: the
//! bearer token re-read from its file at each request, the pod cache (deleted-pod grace
//! period, container-id index, owner resolution, stats), the Event, and errors sorted into
//! what a caller acts on.

mod cache;
mod cap;
mod client;
mod config;
mod error;
mod event;
mod pod;
mod slim;
mod watch;

use std::time::Duration;

pub use cache::{PodCache, WatchStats, MAX_IDS_PER_POD};
pub use cap::{MAX_RESPONSE_BYTES, MAX_WATCH_LINE_BYTES};
pub use config::{ApiBase, KubeConfig, Scheme, SERVICE_ACCOUNT_DIR};
pub use error::KubeError;
pub use pod::{
    resolve_owner, strip_runtime_prefix, Owner, OwnerRef, PodMeta, POD_TEMPLATE_HASH_LABEL,
};
pub use watch::WatchOptions;

use k8s_openapi::api::events::v1::Event;
use kube::api::{Api, PostParams};

/// Longest wait for posting an Event (connect, TLS, send, response).
const EVENT_TIMEOUT: Duration = Duration::from_secs(30);

/// A client of one API server; clones share it.
#[derive(Clone)]
pub struct KubeClient {
    client: kube::Client,
    base: ApiBase,
}

impl std::fmt::Debug for KubeClient {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("KubeClient")
            .field("base", &self.base)
            .finish()
    }
}

impl KubeClient {
    /// The in-cluster client ([`KubeConfig::in_cluster`]); `Ok(None)`, silently, off cluster.
    /// In a cluster, must be called inside a tokio runtime (see [`Self::new`]).
    pub fn from_env() -> Result<Option<Self>, KubeError> {
        KubeConfig::in_cluster()?.map(Self::new).transpose()
    }

    /// A client for `config` (for `https`, its CA is parsed now). Must be called inside a
    /// tokio runtime (kube's client spawns its request buffer): an error otherwise.
    pub fn new(config: KubeConfig) -> Result<Self, KubeError> {
        Ok(Self {
            client: client::build(&config)?,
            base: config.base,
        })
    }

    pub fn base(&self) -> &ApiBase {
        &self.base
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
            self.client.clone(),
            node.to_string(),
            cache.clone(),
            options,
        ));
        Ok((cache, task))
    }

    /// Creates an events.k8s.io/v1 Event on `pod`: reason `OOMKilling`, type `Warning`,
    /// reported by controller `oomtrace` on instance `node`, with `message` as its note (cut to
    /// 1024 bytes). Needs RBAC `create` on `events` in group `events.k8s.io` in the pod's
    /// namespace.
    pub async fn post_oom_event(
        &self,
        pod: &PodMeta,
        message: &str,
        node: &str,
    ) -> Result<(), KubeError> {
        let event = event::oom_event(pod, message, node, k8s_openapi::jiff::Timestamp::now());
        let context = format!("creating an Event in namespace {}", pod.namespace);
        let events: Api<Event> = Api::namespaced(self.client.clone(), &pod.namespace);
        match tokio::time::timeout(EVENT_TIMEOUT, events.create(&PostParams::default(), &event))
            .await
        {
            Ok(Ok(_)) => Ok(()),
            Ok(Err(e)) => Err(KubeError::from_kube(e, &context, &self.base.to_string())),
            Err(_) => Err(KubeError::Timeout(context)),
        }
    }
}
