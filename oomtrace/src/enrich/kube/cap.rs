//! Bounds on what the API server can make the agent hold: a response that is not a watch (a
//! pod list page, an Event) is read up to [`MAX_RESPONSE_BYTES`], and a watch stream's lines
//! (one event, one pod object each) up to [`MAX_WATCH_LINE_BYTES`]. Beyond either the body
//! ends with an error: the list fails (and is retried with the watcher's backoff) instead of
//! being buffered whole. kube reads bodies whole and splits watch lines without a limit, so
//! this is a tower layer around its transport.

use std::future::Future;
use std::pin::Pin;
use std::task::{ready, Context, Poll};

use bytes::Bytes;
use http::{Request, Response};
use hyper::body::{Body, Frame, SizeHint};

type BoxError = Box<dyn std::error::Error + Send + Sync>;

/// Largest response body of a request that is not a watch: a page of 100 pods is about 1 MB
/// at 10 kB a pod, so this leaves room for pods heavy with annotations.
pub const MAX_RESPONSE_BYTES: usize = 32 << 20;

/// Longest line of a watch stream (an object is at most about 1.5 MB in etcd).
pub const MAX_WATCH_LINE_BYTES: usize = 8 << 20;

/// The error that ends an oversized body.
#[derive(Debug, thiserror::Error)]
#[error("the API server sent {what} larger than {limit} bytes; not read further")]
pub(crate) struct TooLarge {
    what: &'static str,
    limit: usize,
}

/// How a body is bounded.
#[derive(Debug, Clone, Copy)]
enum Bound {
    Total(usize),
    Line(usize),
}

/// The layer that bounds every response body.
#[derive(Debug, Clone, Copy)]
pub(crate) struct CapLayer {
    total: usize,
    line: usize,
}

impl Default for CapLayer {
    fn default() -> Self {
        Self {
            total: MAX_RESPONSE_BYTES,
            line: MAX_WATCH_LINE_BYTES,
        }
    }
}

impl<S> tower::Layer<S> for CapLayer {
    type Service = Cap<S>;

    fn layer(&self, inner: S) -> Cap<S> {
        Cap { inner, caps: *self }
    }
}

#[derive(Debug, Clone)]
pub(crate) struct Cap<S> {
    inner: S,
    caps: CapLayer,
}

/// A watch request: `watch=true` (kube) or `watch=1` in the query.
fn is_watch<B>(request: &Request<B>) -> bool {
    request.uri().query().is_some_and(|q| {
        q.split('&')
            .any(|pair| matches!(pair, "watch=true" | "watch=1"))
    })
}

impl<S, ReqB, ResB> tower::Service<Request<ReqB>> for Cap<S>
where
    S: tower::Service<Request<ReqB>, Response = Response<ResB>>,
    S::Future: Send + 'static,
    ResB: Body<Data = Bytes> + Send + 'static,
{
    type Response = Response<Capped<ResB>>;
    type Error = S::Error;
    type Future = Pin<Box<dyn Future<Output = Result<Self::Response, S::Error>> + Send>>;

    fn poll_ready(&mut self, cx: &mut Context<'_>) -> Poll<Result<(), S::Error>> {
        self.inner.poll_ready(cx)
    }

    fn call(&mut self, request: Request<ReqB>) -> Self::Future {
        let bound = if is_watch(&request) {
            Bound::Line(self.caps.line)
        } else {
            Bound::Total(self.caps.total)
        };
        let response = self.inner.call(request);
        Box::pin(async move {
            Ok(response.await?.map(|body| Capped {
                inner: Box::pin(body),
                bound,
                run: 0,
            }))
        })
    }
}

/// A response body that ends with [`TooLarge`] past its bound.
pub(crate) struct Capped<B> {
    inner: Pin<Box<B>>,
    bound: Bound,
    /// Bytes so far (`Total`), or since the last newline (`Line`).
    run: usize,
}

impl<B> Capped<B> {
    /// Counts `data`; the error when it crosses the bound.
    fn count(&mut self, data: &[u8]) -> Result<(), TooLarge> {
        match self.bound {
            Bound::Total(limit) => {
                self.run = self.run.saturating_add(data.len());
                if self.run > limit {
                    return Err(TooLarge {
                        what: "a response",
                        limit,
                    });
                }
            }
            Bound::Line(limit) => {
                let too_long = TooLarge {
                    what: "a watch event line",
                    limit,
                };
                match (
                    data.iter().position(|&b| b == b'\n'),
                    data.iter().rposition(|&b| b == b'\n'),
                ) {
                    (Some(first), Some(last)) => {
                        let longest_inside = data[first..=last]
                            .split(|&b| b == b'\n')
                            .map(<[u8]>::len)
                            .max()
                            .unwrap_or(0);
                        if self.run.saturating_add(first) > limit || longest_inside > limit {
                            return Err(too_long);
                        }
                        self.run = data.len() - last - 1;
                    }
                    _ => self.run = self.run.saturating_add(data.len()),
                }
                if self.run > limit {
                    return Err(too_long);
                }
            }
        }
        Ok(())
    }
}

impl<B> Body for Capped<B>
where
    B: Body<Data = Bytes>,
    B::Error: Into<BoxError>,
{
    type Data = Bytes;
    type Error = BoxError;

    fn poll_frame(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Bytes>, BoxError>>> {
        let this = &mut *self;
        match ready!(this.inner.as_mut().poll_frame(cx)) {
            Some(Ok(frame)) => {
                if let Some(data) = frame.data_ref() {
                    if let Err(e) = this.count(data) {
                        return Poll::Ready(Some(Err(Box::new(e))));
                    }
                }
                Poll::Ready(Some(Ok(frame)))
            }
            Some(Err(e)) => Poll::Ready(Some(Err(e.into()))),
            None => Poll::Ready(None),
        }
    }

    fn is_end_stream(&self) -> bool {
        self.inner.is_end_stream()
    }

    fn size_hint(&self) -> SizeHint {
        self.inner.size_hint()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn capped(bound: Bound) -> Capped<http_body_util::Empty<Bytes>> {
        Capped {
            inner: Box::pin(http_body_util::Empty::new()),
            bound,
            run: 0,
        }
    }

    #[test]
    fn a_total_bound_counts_every_byte() {
        let mut c = capped(Bound::Total(10));
        assert!(c.count(b"12345").is_ok());
        assert!(c.count(b"67890").is_ok());
        let e = c.count(b"1").expect_err("11 bytes");
        assert_eq!(
            e.to_string(),
            "the API server sent a response larger than 10 bytes; not read further"
        );
    }

    #[test]
    fn a_line_bound_counts_across_chunks_and_restarts_at_newlines() {
        let mut c = capped(Bound::Line(4));
        // Lines of 4 split over chunks, any number of them.
        for chunk in [&b"ab"[..], b"cd\nabcd\nab", b"cd\n", b"abcd\n"] {
            assert!(c.count(chunk).is_ok(), "{chunk:?}");
        }
        assert!(capped(Bound::Line(4)).count(b"abcde").is_err());
        assert!(capped(Bound::Line(4)).count(b"ab\nabcde\nab").is_err());
        let mut c = capped(Bound::Line(4));
        assert!(c.count(b"abc").is_ok());
        assert!(c.count(b"de\n").is_err(), "5 bytes before the newline");
    }

    #[test]
    fn watches_are_told_from_lists() {
        let r = |uri: &str| Request::get(uri).body(()).expect("request");
        assert!(is_watch(&r("/api/v1/pods?watch=true&resourceVersion=1")));
        assert!(is_watch(&r("/api/v1/pods?fieldSelector=x&watch=1")));
        assert!(!is_watch(&r("/api/v1/pods?limit=100")));
        assert!(!is_watch(&r("/api/v1/pods?watch=false")));
        assert!(!is_watch(&r("/api/v1/pods")));
    }
}
