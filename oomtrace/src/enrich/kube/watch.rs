//! The pods of one node into a [`PodCache`], through kube-runtime's `watcher`.
//!
//! The watcher lists `/api/v1/pods?fieldSelector=spec.nodeName=<node>` in pages, then watches
//! from the list's resourceVersion with bookmarks, resumes a watch that ended from the last
//! resourceVersion it saw, and relists after `410 Gone` sent as an ERROR event. Errors pause
//! the stream with its default backoff (0.8 s doubling to 30 s, with jitter). What is ours:
//! a complete list replaces the cache's live set (pods missing from it are kept as deleted for
//! the grace period), the stats, and one case the watcher does not handle: `410 Gone` as the
//! HTTP status of the watch request (kube-rs issue 1042) would have it retry the expired
//! resourceVersion forever, so the watcher is started over, which relists.

use std::pin::pin;
use std::time::{Duration, Instant};

use futures::stream::{self, BoxStream};
use futures::{Stream, StreamExt};
use kube::runtime::watcher::{self, Event};
use kube::runtime::WatchStreamExt;
use kube::Api;

use super::cache::PodCache;
use super::pod::{parse_pod, ParsedPod};
use super::slim::SlimPod;

/// How the pod watcher behaves.
#[derive(Debug, Clone)]
pub struct WatchOptions {
    /// How long deleted pods stay in the cache (default 10 minutes).
    pub grace: Duration,
    /// Most pods held, deleted ones included (default 10 000).
    pub max_entries: usize,
    /// Pods per list page (default 100: a page is read whole, up to
    /// [`super::MAX_RESPONSE_BYTES`]).
    pub page_size: u32,
    /// The watch's `timeoutSeconds` (default 300 s).
    pub watch_timeout: Duration,
}

impl Default for WatchOptions {
    fn default() -> Self {
        Self {
            grace: Duration::from_secs(600),
            max_entries: 10_000,
            page_size: 100,
            watch_timeout: Duration::from_secs(300),
        }
    }
}

/// The watcher's settings for `node`.
fn watcher_config(node: &str, opts: &WatchOptions) -> watcher::Config {
    let timeout = u32::try_from(opts.watch_timeout.as_secs()).unwrap_or(u32::MAX);
    watcher::Config::default()
        .fields(&format!("spec.nodeName={node}"))
        .page_size(opts.page_size.max(1))
        .timeout(timeout.max(1))
}

/// The watcher task: never returns.
pub(crate) async fn run(client: kube::Client, node: String, cache: PodCache, opts: WatchOptions) {
    let api: Api<SlimPod> = Api::all(client);
    let mut events = pin!(restarting(api, watcher_config(&node, &opts)).default_backoff());
    // The pods of the list in progress, applied at its end.
    let mut listed: Vec<ParsedPod> = Vec::new();
    while let Some(item) = events.next().await {
        let event = match item {
            Ok(event) => event,
            Err(e) => {
                record_error(&e, &node, &cache);
                continue;
            }
        };
        match event {
            Event::Init => listed.clear(),
            Event::InitApply(pod) => match parse_pod(&pod) {
                Some(pod) => listed.push(pod),
                None => malformed(&cache, "listed"),
            },
            Event::InitDone => {
                log::debug!("listed {} pods of node {node}", listed.len());
                cache.replace_all(std::mem::take(&mut listed), Instant::now());
            }
            Event::Apply(pod) => match parse_pod(&pod) {
                Some(pod) => {
                    cache.upsert(pod, Instant::now());
                    cache.update_stats(|s| s.events += 1);
                }
                None => malformed(&cache, "watched"),
            },
            Event::Delete(pod) => match parse_pod(&pod) {
                Some(pod) => {
                    let uid = pod.meta.uid.clone();
                    cache.delete(&uid, Some(pod), Instant::now());
                    cache.update_stats(|s| s.events += 1);
                }
                None => malformed(&cache, "deleted"),
            },
        }
    }
}

type PodEvents = BoxStream<'static, watcher::Result<Event<SlimPod>>>;

/// kube's watcher, started over (so relisting) after it failed to start a watch with
/// `410 Gone`; the error itself is passed on first, so the backoff applies to the restart.
fn restarting(
    api: Api<SlimPod>,
    config: watcher::Config,
) -> impl Stream<Item = watcher::Result<Event<SlimPod>>> + Send {
    stream::repeat_with(move || {
        until_expired(watcher::watcher(api.clone(), config.clone()).boxed())
    })
    .flatten()
}

/// `events` up to and including a `410 Gone` at the start of a watch. Not polled after it:
/// polling again would make the watcher retry the expired resourceVersion.
fn until_expired(events: PodEvents) -> impl Stream<Item = watcher::Result<Event<SlimPod>>> + Send {
    stream::unfold(Some(events), |events| async move {
        let mut events = events?;
        let item = events.next().await?;
        let go_on = !matches!(&item, Err(e) if expired_at_start(e));
        Some((item, go_on.then_some(events)))
    })
}

/// `410 Gone` as the status of a watch request.
fn expired_at_start(e: &watcher::Error) -> bool {
    matches!(e, watcher::Error::WatchStartFailed(kube::Error::Api(s)) if s.code == 410)
}

/// Counts and logs an error the watcher handed over (it retries by itself).
fn record_error(e: &watcher::Error, node: &str, cache: &PodCache) {
    match e {
        // The resume point is too old: the watcher relists (after an ERROR event), or is
        // started over (after a 410 status).
        watcher::Error::WatchError(s) if s.code == 410 => {
            log::debug!("pod watch: resourceVersion expired (410 Gone), relisting");
        }
        _ if expired_at_start(e) => {
            log::debug!("pod watch: resourceVersion expired (HTTP 410), relisting");
        }
        // A watch line that is not a watch event: skipped, the watch goes on.
        watcher::Error::WatchFailed(kube::Error::SerdeError(err)) => {
            log::debug!("pod watch: skipped a malformed event: {err}");
            cache.update_stats(|s| s.malformed += 1);
        }
        _ => {
            log::warn!("watching the pods of node {node}: {e} (retrying with backoff)");
            cache.update_stats(|s| s.failures += 1);
        }
    }
}

fn malformed(cache: &PodCache, what: &str) {
    log::debug!("pod watch: skipped a {what} pod without uid, name or namespace");
    cache.update_stats(|s| s.malformed += 1);
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_watcher_is_set_from_the_options() {
        let c = watcher_config(
            "node-1",
            &WatchOptions {
                page_size: 0,
                watch_timeout: Duration::from_millis(10),
                ..WatchOptions::default()
            },
        );
        assert_eq!(c.field_selector.as_deref(), Some("spec.nodeName=node-1"));
        assert_eq!((c.page_size, c.timeout), (Some(1), Some(1)));
        assert!(c.bookmarks);
        let c = watcher_config("n", &WatchOptions::default());
        assert_eq!((c.page_size, c.timeout), (Some(100), Some(300)));
    }

    #[test]
    fn only_410_at_watch_start_restarts() {
        let status = |code| {
            kube::core::Status::failure("x", "y")
                .with_code(code)
                .boxed()
        };
        let gone = watcher::Error::WatchStartFailed(kube::Error::Api(status(410)));
        assert!(expired_at_start(&gone));
        let forbidden = watcher::Error::WatchStartFailed(kube::Error::Api(status(403)));
        assert!(!expired_at_start(&forbidden));
        assert!(!expired_at_start(&watcher::Error::WatchError(status(410))));
        assert!(!expired_at_start(&watcher::Error::InitialListFailed(
            kube::Error::Api(status(410))
        )));
    }

    #[test]
    fn errors_are_sorted_into_the_stats() {
        let cache = PodCache::new(Duration::from_secs(60), 10);
        let status = |code| {
            kube::core::Status::failure("x", "y")
                .with_code(code)
                .boxed()
        };
        record_error(&watcher::Error::WatchError(status(410)), "n", &cache);
        record_error(
            &watcher::Error::WatchStartFailed(kube::Error::Api(status(410))),
            "n",
            &cache,
        );
        let junk = serde_json::from_str::<serde_json::Value>("{").expect_err("bad JSON");
        record_error(
            &watcher::Error::WatchFailed(kube::Error::SerdeError(junk)),
            "n",
            &cache,
        );
        record_error(&watcher::Error::WatchError(status(500)), "n", &cache);
        record_error(
            &watcher::Error::InitialListFailed(kube::Error::Api(status(500))),
            "n",
            &cache,
        );
        let s = cache.stats();
        assert_eq!((s.malformed, s.failures, s.events), (1, 2, 0));
    }
}
