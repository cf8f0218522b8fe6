//! List+watch of the pods of one node into a [`PodCache`].
//!
//! 1. List: `GET /api/v1/pods?fieldSelector=spec.nodeName%3D<node>&limit=<page>`, following
//!    `metadata.continue`; the list replaces the cache's live set (pods missing from it are
//!    kept as deleted for the grace period).
//! 2. Watch from the list's `resourceVersion` with bookmarks and a server-side timeout; every
//!    event (bookmarks too) moves the resume point.
//! 3. When the watch ends, resume from the last resourceVersion; on `410 Gone` (as the HTTP
//!    status or as an ERROR event) relist. Failures wait 1 s doubling to 30 s (±20% jitter),
//!    back to 1 s after a watch that made progress; a watch that made progress and ended
//!    cleanly is resumed at once.

use std::collections::hash_map::RandomState;
use std::hash::{BuildHasher, Hasher};
use std::time::{Duration, Instant};

use serde_json::Value;

use super::cache::PodCache;
use super::http::{encode_query_value, truncate};
use super::lines::{LineSplitter, LineTooLong};
use super::pod::parse_pod;
use super::{status_error, KubeClient, KubeError, REQUEST_TIMEOUT};

/// Largest list page body accepted.
const MAX_LIST_BODY: usize = 128 * 1024 * 1024;
/// Most list pages followed (a server repeating `continue` forever is cut off).
const MAX_LIST_PAGES: usize = 1000;
/// Largest watch event line accepted (a pod is typically 5–50 kB of JSON).
const MAX_EVENT_LINE: usize = 16 * 1024 * 1024;
/// A watch that lasted this long made progress even with no event.
const PROGRESS_TIME: Duration = Duration::from_secs(10);
/// How long a watch may stay silent beyond its server-side timeout before it is dropped.
const IDLE_SLACK: Duration = Duration::from_secs(30);

/// How the pod watcher behaves.
#[derive(Debug, Clone)]
pub struct WatchOptions {
    /// How long deleted pods stay in the cache (default 10 minutes).
    pub grace: Duration,
    /// Most pods held, deleted ones included (default 10 000).
    pub max_entries: usize,
    /// Pods per list page (default 500).
    pub page_size: u32,
    /// The watch's `timeoutSeconds` (default 300 s).
    pub watch_timeout: Duration,
    /// First retry delay after a failure (default 1 s), doubling up to `backoff_max` (30 s).
    pub backoff_initial: Duration,
    pub backoff_max: Duration,
}

impl Default for WatchOptions {
    fn default() -> Self {
        Self {
            grace: Duration::from_secs(600),
            max_entries: 10_000,
            page_size: 500,
            watch_timeout: Duration::from_secs(300),
            backoff_initial: Duration::from_secs(1),
            backoff_max: Duration::from_secs(30),
        }
    }
}

/// The pods path with the node's field selector, then `extra` (starting with `&`).
pub(crate) fn pods_path(node: &str, extra: &str) -> String {
    format!(
        "/api/v1/pods?fieldSelector={}{extra}",
        encode_query_value(&format!("spec.nodeName={node}"))
    )
}

/// The watcher task: never returns.
pub(crate) async fn run(client: KubeClient, node: String, cache: PodCache, opts: WatchOptions) {
    let mut backoff = Backoff::new(opts.backoff_initial, opts.backoff_max);
    let mut resume: Option<String> = None;
    loop {
        let rv = match resume.take() {
            Some(rv) => rv,
            None => match list(&client, &node, &cache, &opts).await {
                Ok(rv) => rv,
                Err(e) => {
                    cache.update_stats(|s| s.failures += 1);
                    let delay = backoff.next_delay();
                    log::warn!("listing the pods of node {node}: {e} (retrying in {delay:.1?})");
                    tokio::time::sleep(delay).await;
                    continue;
                }
            },
        };
        let mut progress = Progress { rv, events: 0 };
        let started = Instant::now();
        let result = watch(&client, &node, &cache, &opts, &mut progress).await;
        let progressed = progress.events > 0 || started.elapsed() >= PROGRESS_TIME;
        if progressed {
            backoff.reset();
        }
        match result {
            Ok(WatchEnd::Closed) => {
                log::debug!(
                    "pod watch closed after {} events at resourceVersion {}",
                    progress.events,
                    progress.rv
                );
                resume = Some(progress.rv);
            }
            Ok(WatchEnd::Expired) => {
                log::debug!(
                    "pod watch: resourceVersion {} expired (410 Gone), relisting",
                    progress.rv
                );
            }
            Err(e) => {
                cache.update_stats(|s| s.failures += 1);
                log::warn!(
                    "watching the pods of node {node}: {e} (resuming from resourceVersion {})",
                    progress.rv
                );
                resume = Some(progress.rv);
                tokio::time::sleep(backoff.next_delay()).await;
                continue;
            }
        }
        if !progressed {
            tokio::time::sleep(backoff.next_delay()).await;
        }
    }
}

/// Lists the node's pods into the cache; returns the list's resourceVersion.
async fn list(
    client: &KubeClient,
    node: &str,
    cache: &PodCache,
    opts: &WatchOptions,
) -> Result<String, KubeError> {
    let mut pods = Vec::new();
    let mut malformed = 0u64;
    let mut token: Option<String> = None;
    for _ in 0..MAX_LIST_PAGES {
        let mut path = pods_path(node, &format!("&limit={}", opts.page_size.max(1)));
        if let Some(token) = &token {
            path.push_str("&continue=");
            path.push_str(&encode_query_value(token));
        }
        let body = client.call("GET", &path, None, MAX_LIST_BODY).await?;
        let page: Value = serde_json::from_slice(&body).map_err(|source| KubeError::Json {
            context: "pod list",
            source,
        })?;
        drop(body);
        match page.get("items") {
            Some(Value::Array(items)) => {
                for item in items {
                    match parse_pod(item) {
                        Some(pod) => pods.push(pod),
                        None => malformed += 1,
                    }
                }
            }
            None | Some(Value::Null) => {}
            Some(_) => {
                return Err(KubeError::Unexpected(
                    "pod list: items is not a list".into(),
                ))
            }
        }
        let text = |ptr: &str| {
            page.pointer(ptr)
                .and_then(Value::as_str)
                .filter(|s| !s.is_empty())
                .map(str::to_string)
        };
        token = text("/metadata/continue");
        if token.is_none() {
            let rv = text("/metadata/resourceVersion").ok_or_else(|| {
                KubeError::Unexpected("pod list without metadata.resourceVersion".into())
            })?;
            log::debug!(
                "listed {} pods of node {node} at resourceVersion {rv}",
                pods.len()
            );
            cache.replace_all(pods, Instant::now());
            if malformed > 0 {
                log::debug!("pod list: skipped {malformed} items without uid, name or namespace");
                cache.update_stats(|s| s.malformed += malformed);
            }
            return Ok(rv);
        }
    }
    Err(KubeError::Unexpected(format!(
        "pod list longer than {MAX_LIST_PAGES} pages"
    )))
}

/// Where a watch got to.
struct Progress {
    rv: String,
    /// Events applied.
    events: u64,
}

enum WatchEnd {
    /// The server ended the stream (its timeout, or a restart): resume from `rv`.
    Closed,
    /// The resourceVersion is too old: relist.
    Expired,
}

/// One watch request, applying its events until the stream ends.
async fn watch(
    client: &KubeClient,
    node: &str,
    cache: &PodCache,
    opts: &WatchOptions,
    progress: &mut Progress,
) -> Result<WatchEnd, KubeError> {
    let timeout_secs = opts.watch_timeout.as_secs().max(1);
    let path = pods_path(
        node,
        &format!(
            "&watch=1&resourceVersion={}&allowWatchBookmarks=true&timeoutSeconds={timeout_secs}",
            encode_query_value(&progress.rv)
        ),
    );
    let mut response = tokio::time::timeout(REQUEST_TIMEOUT, client.start("GET", &path, None))
        .await
        .map_err(|_| KubeError::Timeout("starting the pod watch".to_string()))??;
    match response.head.status {
        200 => {}
        410 => return Ok(WatchEnd::Expired),
        _ => return Err(status_error("GET", &path, &mut response).await),
    }
    cache.update_stats(|s| s.watches += 1);
    let idle = Duration::from_secs(timeout_secs).saturating_add(IDLE_SLACK);
    let mut lines = LineSplitter::new(MAX_EVENT_LINE);
    loop {
        let piece = tokio::time::timeout(idle, response.body.next_chunk())
            .await
            .map_err(|_| KubeError::Timeout(format!("pod watch silent for {idle:?}")))??;
        let Some(piece) = piece else {
            if lines.pending() > 0 {
                log::debug!("pod watch ended inside a line: dropped");
                cache.update_stats(|s| s.malformed += 1);
            }
            return Ok(WatchEnd::Closed);
        };
        lines.push(&piece);
        while let Some(line) = lines.next_line() {
            match line {
                Err(LineTooLong) => {
                    log::debug!("pod watch: skipped a line longer than {MAX_EVENT_LINE} bytes");
                    cache.update_stats(|s| s.malformed += 1);
                }
                Ok(line) if line.trim_ascii().is_empty() => {}
                Ok(line) => {
                    if let Some(end) = apply_event(line, cache, progress)? {
                        return Ok(end);
                    }
                }
            }
        }
    }
}

/// Applies one watch line. `Some` when the watch must end.
fn apply_event(
    line: &[u8],
    cache: &PodCache,
    progress: &mut Progress,
) -> Result<Option<WatchEnd>, KubeError> {
    let malformed = |why: &str| {
        let text = String::from_utf8_lossy(line);
        log::debug!(
            "pod watch: skipped a malformed event ({why}): {}",
            truncate(&text, 200)
        );
        cache.update_stats(|s| s.malformed += 1);
    };
    let event: Value = match serde_json::from_slice(line) {
        Ok(v) => v,
        Err(e) => {
            malformed(&e.to_string());
            return Ok(None);
        }
    };
    let kind = event
        .get("type")
        .and_then(Value::as_str)
        .unwrap_or_default();
    let Some(object) = event.get("object") else {
        malformed("no object");
        return Ok(None);
    };
    let rv = object
        .pointer("/metadata/resourceVersion")
        .and_then(Value::as_str)
        .filter(|s| !s.is_empty());
    match kind {
        "ADDED" | "MODIFIED" | "DELETED" => {
            // A skipped event still moves the resume point: replaying it would fail again.
            if let Some(rv) = rv {
                progress.rv = rv.to_string();
            }
            match parse_pod(object) {
                Some(pod) if kind == "DELETED" => {
                    let uid = pod.meta.uid.clone();
                    cache.delete(&uid, Some(pod), Instant::now());
                }
                Some(pod) => cache.upsert(pod, Instant::now()),
                None => {
                    malformed("pod without uid, name or namespace");
                    return Ok(None);
                }
            }
        }
        "BOOKMARK" => match rv {
            Some(rv) => progress.rv = rv.to_string(),
            None => {
                malformed("bookmark without resourceVersion");
                return Ok(None);
            }
        },
        "ERROR" => {
            let code = object.get("code").and_then(Value::as_u64);
            let reason = object.get("reason").and_then(Value::as_str);
            if code == Some(410) || matches!(reason, Some("Expired" | "Gone")) {
                return Ok(Some(WatchEnd::Expired));
            }
            let message = object
                .get("message")
                .and_then(Value::as_str)
                .unwrap_or_default();
            return Err(KubeError::WatchEvent {
                code,
                message: truncate(message, 300).to_string(),
            });
        }
        _ => {
            malformed("unknown event type");
            return Ok(None);
        }
    }
    progress.events += 1;
    cache.update_stats(|s| s.events += 1);
    Ok(None)
}

/// Retry delays: `initial` doubling up to `max`, each with ±20% jitter so that the agents of
/// many nodes do not all come back at once after an API server restart.
struct Backoff {
    initial: Duration,
    max: Duration,
    next: Duration,
    random: RandomState,
    draws: u64,
}

impl Backoff {
    fn new(initial: Duration, max: Duration) -> Self {
        Self {
            initial,
            max: max.max(initial),
            next: initial,
            random: RandomState::new(),
            draws: 0,
        }
    }

    /// The un-jittered delay to use next, then doubles it.
    fn next_base(&mut self) -> Duration {
        let delay = self.next;
        self.next = self.next.saturating_mul(2).min(self.max);
        delay
    }

    fn next_delay(&mut self) -> Duration {
        let base = self.next_base();
        // Keys differ between processes, so do the agents' sequences.
        let mut hasher = self.random.build_hasher();
        self.draws += 1;
        hasher.write_u64(self.draws);
        // 0.8 ..= 1.2
        let factor = 0.8 + 0.4 * (hasher.finish() as f64 / u64::MAX as f64);
        Duration::try_from_secs_f64(base.as_secs_f64() * factor).unwrap_or(base)
    }

    fn reset(&mut self) {
        self.next = self.initial;
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn backoff_doubles_to_the_cap_and_resets() {
        let mut b = Backoff::new(Duration::from_secs(1), Duration::from_secs(30));
        let seq: Vec<u64> = (0..7).map(|_| b.next_base().as_secs()).collect();
        assert_eq!(seq, [1, 2, 4, 8, 16, 30, 30]);
        b.reset();
        for _ in 0..20 {
            let d = b.next_delay();
            assert!(
                d >= Duration::from_millis(800) && d <= Duration::from_secs(36),
                "{d:?}"
            );
        }
        b.reset();
        let d = b.next_delay();
        assert!(d >= Duration::from_millis(800) && d <= Duration::from_millis(1200));
    }

    #[test]
    fn paths_carry_the_node_selector() {
        assert_eq!(
            pods_path("node-1", "&limit=500"),
            "/api/v1/pods?fieldSelector=spec.nodeName%3Dnode-1&limit=500"
        );
    }

    fn progress() -> Progress {
        Progress {
            rv: "1".to_string(),
            events: 0,
        }
    }

    #[test]
    fn applies_events_and_moves_the_resume_point() {
        let cache = PodCache::new(Duration::from_secs(60), 100);
        let mut p = progress();
        let added = br#"{"type":"ADDED","object":{"metadata":{"name":"a","namespace":"n","uid":"u","resourceVersion":"5"}}}"#;
        assert!(apply_event(added, &cache, &mut p).expect("ok").is_none());
        assert_eq!((p.rv.as_str(), p.events), ("5", 1));
        assert!(cache.by_uid("u").is_some());
        let bookmark =
            br#"{"type":"BOOKMARK","object":{"kind":"Pod","metadata":{"resourceVersion":"9"}}}"#;
        assert!(apply_event(bookmark, &cache, &mut p).expect("ok").is_none());
        assert_eq!(p.rv, "9");
        let deleted = br#"{"type":"DELETED","object":{"metadata":{"name":"a","namespace":"n","uid":"u","resourceVersion":"10"}}}"#;
        assert!(apply_event(deleted, &cache, &mut p).expect("ok").is_none());
        assert_eq!((p.rv.as_str(), p.events), ("10", 3));
        assert!(cache.by_uid("u").is_some(), "kept for the grace period");
        assert_eq!(cache.stats().events, 3);
    }

    #[test]
    fn skips_and_counts_malformed_lines() {
        let cache = PodCache::new(Duration::from_secs(60), 100);
        let mut p = progress();
        for line in [
            &b"not json"[..],
            b"{\"type\":\"ADDED\"}",
            b"{\"type\":\"WHAT\",\"object\":{}}",
            b"{\"type\":\"ADDED\",\"object\":{\"metadata\":{\"name\":\"x\"}}}",
            b"{\"type\":\"BOOKMARK\",\"object\":{}}",
            b"[1,2]",
            b"\xff\xfe",
        ] {
            assert!(apply_event(line, &cache, &mut p)
                .expect("skipped")
                .is_none());
        }
        assert_eq!(cache.stats().malformed, 7);
        assert_eq!((p.rv.as_str(), p.events), ("1", 0));
    }

    #[test]
    fn error_events_expire_or_fail() {
        let cache = PodCache::new(Duration::from_secs(60), 100);
        let mut p = progress();
        let gone = br#"{"type":"ERROR","object":{"kind":"Status","code":410,"reason":"Expired","message":"too old resource version"}}"#;
        assert!(matches!(
            apply_event(gone, &cache, &mut p),
            Ok(Some(WatchEnd::Expired))
        ));
        let other = br#"{"type":"ERROR","object":{"kind":"Status","code":500,"message":"boom"}}"#;
        match apply_event(other, &cache, &mut p) {
            Err(KubeError::WatchEvent { code, message }) => {
                assert_eq!((code, message.as_str()), (Some(500), "boom"));
            }
            _ => panic!("expected a watch error"),
        }
    }
}
