//! The agent's HTTP endpoint: `GET /metrics` (Prometheus text format), `/healthz` (the process
//! serves) and `/readyz` (the tracer is attached), on hyper's HTTP/1.1 server.
//!
//! Every connection is bounded (see `LIMITS`): so many at once, the request head read within
//! `header_read`, the whole exchange over within `lifetime`, one request per connection (no
//! keep-alive: a scraper every 15 s gains nothing from it, and without it no idle connection
//! outlives its request).
use std::{
    convert::Infallible,
    sync::{
        atomic::{AtomicBool, Ordering},
        Arc, Mutex, PoisonError,
    },
    time::Duration,
};

use bytes::Bytes;
use http_body_util::Full;
use hyper::{
    header::{HeaderValue, ALLOW, CONTENT_TYPE},
    server::conn::http1,
    service::service_fn,
    Method, Response, StatusCode,
};
use hyper_util::rt::{TokioIo, TokioTimer};
use tokio::{net::TcpListener, sync::Semaphore};

use super::metrics::Metrics;

/// State the endpoint reads.
#[derive(Clone)]
pub struct Shared {
    pub metrics: Arc<Mutex<Metrics>>,
    pub ready: Arc<AtomicBool>,
}

/// How much one client can hold.
#[derive(Debug, Clone, Copy)]
struct Limits {
    /// Connections served at once.
    connections: usize,
    /// From accept to the end of the request head.
    header_read: Duration,
    /// From accept to the last byte of the response: a client that stops reading is dropped.
    lifetime: Duration,
}

const LIMITS: Limits = Limits {
    connections: 64,
    header_read: Duration::from_secs(5),
    lifetime: Duration::from_secs(10),
};

/// Largest request head read (hyper answers 431 beyond it).
const MAX_HEAD: usize = 8 << 10;

/// Accepts connections until the listener fails; each is answered on its own task.
pub async fn serve(listener: TcpListener, shared: Shared) {
    serve_with(listener, shared, LIMITS).await
}

/// hyper's HTTP/1.1 server as the endpoint runs it.
fn builder(limits: Limits) -> http1::Builder {
    let mut http = http1::Builder::new();
    http.timer(TokioTimer::new())
        .header_read_timeout(limits.header_read)
        .max_header_size(MAX_HEAD)
        .keep_alive(false)
        // The same head as the hand-written server had: no Date, title-case names.
        .auto_date_header(false)
        .title_case_headers(true);
    http
}

async fn serve_with(listener: TcpListener, shared: Shared, limits: Limits) {
    let http = builder(limits);
    let slots = Arc::new(Semaphore::new(limits.connections));
    loop {
        // A slot is taken before accepting, so beyond the cap new connections wait in the
        // kernel's accept queue, in arrival order, and cost no task; every held slot frees
        // within `lifetime`, so a scrape behind a burst of idle connections is served late
        // rather than refused (closing it instead would let a client that reconnects quickly
        // keep the scraper out).
        let Ok(slot) = Arc::clone(&slots).acquire_owned().await else {
            return; // the semaphore is never closed
        };
        let stream = match listener.accept().await {
            Ok((stream, _)) => stream,
            Err(e) => {
                log::warn!("http: accept failed: {e}");
                tokio::time::sleep(Duration::from_millis(100)).await;
                continue;
            }
        };
        let shared = shared.clone();
        let service = service_fn(move |request: hyper::Request<hyper::body::Incoming>| {
            let response = respond(request.method(), request.uri().path(), &shared);
            async move { Ok::<_, Infallible>(response) }
        });
        let connection = http.serve_connection(TokioIo::new(stream), service);
        tokio::spawn(async move {
            match tokio::time::timeout(limits.lifetime, connection).await {
                Ok(Ok(())) => {}
                Ok(Err(e)) => log::debug!("http: {e}"),
                Err(_) => log::debug!("http: connection dropped after {:?}", limits.lifetime),
            }
            drop(slot);
        });
    }
}

/// The response to one request; `/metrics` is rendered here, once per request. hyper sends no
/// body to HEAD (keeping the GET's Content-Length).
fn respond(method: &Method, path: &str, shared: &Shared) -> Response<Full<Bytes>> {
    const TEXT: &str = "text/plain; charset=utf-8";
    if method != Method::GET && method != Method::HEAD {
        let mut response = reply(StatusCode::METHOD_NOT_ALLOWED, TEXT, "only GET\n");
        response
            .headers_mut()
            .insert(ALLOW, HeaderValue::from_static("GET, HEAD"));
        return response;
    }
    match path {
        "/metrics" => {
            // A poisoned lock means a panic mid-update of monotonic counters: still worth
            // showing.
            let text = shared
                .metrics
                .lock()
                .unwrap_or_else(PoisonError::into_inner)
                .render();
            reply(
                StatusCode::OK,
                "text/plain; version=0.0.4; charset=utf-8",
                text,
            )
        }
        "/healthz" => reply(StatusCode::OK, TEXT, "ok\n"),
        "/readyz" if shared.ready.load(Ordering::Relaxed) => reply(StatusCode::OK, TEXT, "ready\n"),
        "/readyz" => reply(StatusCode::SERVICE_UNAVAILABLE, TEXT, "not attached yet\n"),
        _ => reply(
            StatusCode::NOT_FOUND,
            TEXT,
            "try /metrics, /healthz or /readyz\n",
        ),
    }
}

/// One connection's exchange for the fuzz target: `request` sent whole by the client, then
/// the response read to the end, over an in-memory pipe.
#[cfg(feature = "fuzzing")]
pub(crate) fn fuzz_exchange(request: &[u8]) {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let Ok(rt) = tokio::runtime::Builder::new_current_thread()
        .enable_time()
        .build()
    else {
        return;
    };
    let shared = Shared {
        metrics: Arc::new(Mutex::new(Metrics::new("fuzz"))),
        ready: Arc::new(AtomicBool::new(true)),
    };
    let response = rt.block_on(async {
        let (mut client, server) = tokio::io::duplex(64 << 10);
        let service = service_fn(move |request: hyper::Request<hyper::body::Incoming>| {
            let response = respond(request.method(), request.uri().path(), &shared);
            async move { Ok::<_, Infallible>(response) }
        });
        let connection = builder(LIMITS).serve_connection(TokioIo::new(server), service);
        let exchange = async {
            let _ = client.write_all(request).await;
            let _ = client.shutdown().await;
            let mut response = Vec::new();
            let _ = client.read_to_end(&mut response).await;
            response
        };
        let (_, response) = tokio::join!(connection, exchange);
        response
    });
    assert!(
        response.is_empty()
            || response.starts_with(b"HTTP/1.1 ")
            || response.starts_with(b"HTTP/1.0 "),
        "not an HTTP response: {:?}",
        String::from_utf8_lossy(&response)
    );
}

/// `body` becomes the response's `Bytes` without a copy (a `String` hands over its buffer).
fn reply(
    status: StatusCode,
    content_type: &'static str,
    body: impl Into<Bytes>,
) -> Response<Full<Bytes>> {
    let mut response = Response::new(Full::new(body.into()));
    *response.status_mut() = status;
    response
        .headers_mut()
        .insert(CONTENT_TYPE, HeaderValue::from_static(content_type));
    response
}

#[cfg(test)]
mod tests {
    use std::{net::SocketAddr, time::Instant};

    use tokio::{
        io::{AsyncReadExt, AsyncWriteExt},
        net::TcpStream,
    };

    use super::*;
    use crate::output::metrics::KillLabels;

    /// Every wait in these tests ends by this.
    const BOUND: Duration = Duration::from_secs(10);

    fn shared(ready: bool) -> Shared {
        let mut metrics = Metrics::new("9.9.9");
        metrics.count_kill(KillLabels {
            namespace: "shop".into(),
            pod: "cart-1".into(),
            container: "app".into(),
            constraint: "memcg".into(),
            scope: "container".into(),
            reason: "leak".into(),
        });
        Shared {
            metrics: Arc::new(Mutex::new(metrics)),
            ready: Arc::new(AtomicBool::new(ready)),
        }
    }

    async fn start(shared: Shared, limits: Limits) -> SocketAddr {
        let listener = TcpListener::bind("127.0.0.1:0").await.expect("bind");
        let addr = listener.local_addr().expect("addr");
        tokio::spawn(serve_with(listener, shared, limits));
        addr
    }

    /// All the server sends on `c` until it closes.
    async fn read_all(c: &mut TcpStream) -> String {
        let mut out = Vec::new();
        tokio::time::timeout(BOUND, c.read_to_end(&mut out))
            .await
            .expect("the server closes the connection")
            .expect("read");
        String::from_utf8(out).expect("utf-8")
    }

    async fn exchange(addr: SocketAddr, request: &str) -> String {
        let mut c = TcpStream::connect(addr).await.expect("connect");
        c.write_all(request.as_bytes()).await.expect("send");
        read_all(&mut c).await
    }

    async fn get(addr: SocketAddr, path: &str) -> String {
        exchange(addr, &format!("GET {path} HTTP/1.1\r\nHost: t\r\n\r\n")).await
    }

    /// The response the hand-written server sent, but for the order of the last two headers.
    fn wire(status: &str, content_type: &str, body: &str) -> String {
        format!(
            "HTTP/1.1 {status}\r\nContent-Type: {content_type}\r\nConnection: close\r\nContent-Length: {}\r\n\r\n{body}",
            body.len()
        )
    }

    const TEXT: &str = "text/plain; charset=utf-8";
    const PROMETHEUS: &str = "text/plain; version=0.0.4; charset=utf-8";

    #[tokio::test]
    async fn answers_every_endpoint_exactly() {
        let s = shared(false);
        let addr = start(s.clone(), LIMITS).await;
        assert_eq!(get(addr, "/healthz").await, wire("200 OK", TEXT, "ok\n"));
        assert_eq!(
            get(addr, "/readyz").await,
            wire("503 Service Unavailable", TEXT, "not attached yet\n")
        );
        s.ready.store(true, Ordering::Relaxed);
        assert_eq!(get(addr, "/readyz").await, wire("200 OK", TEXT, "ready\n"));

        let rendered = s.metrics.lock().expect("lock").render();
        assert!(rendered.contains(
            "\noomtrace_oom_kills_total{namespace=\"shop\",pod=\"cart-1\",container=\"app\",constraint=\"memcg\",scope=\"container\",reason=\"leak\"} 1\n"
        ));
        assert_eq!(
            get(addr, "/metrics?x=1").await,
            wire("200 OK", PROMETHEUS, &rendered)
        );
        // HEAD: the GET's head, no body.
        let head = exchange(addr, "HEAD /metrics HTTP/1.1\r\nHost: t\r\n\r\n").await;
        let get_head = wire("200 OK", PROMETHEUS, &rendered);
        assert_eq!(head, get_head.trim_end_matches(rendered.as_str()));

        assert_eq!(
            get(addr, "/nope").await,
            wire("404 Not Found", TEXT, "try /metrics, /healthz or /readyz\n")
        );
        assert_eq!(
            exchange(addr, "POST /metrics HTTP/1.1\r\nHost: t\r\nContent-Length: 0\r\n\r\n")
                .await,
            "HTTP/1.1 405 Method Not Allowed\r\nContent-Type: text/plain; charset=utf-8\r\nAllow: GET, HEAD\r\nConnection: close\r\nContent-Length: 9\r\n\r\nonly GET\n"
        );
    }

    #[tokio::test]
    async fn header_timeout_closes_a_silent_connection() {
        let limits = Limits {
            header_read: Duration::from_millis(300),
            ..LIMITS
        };
        let addr = start(shared(true), limits).await;
        let begin = Instant::now();
        let mut c = TcpStream::connect(addr).await.expect("connect");
        let sent = read_all(&mut c).await;
        let waited = begin.elapsed();
        assert!(
            waited >= limits.header_read && waited < limits.lifetime,
            "closed after {waited:?}"
        );
        // hyper closes without a response when no byte of a request came.
        assert_eq!(sent, "");
    }

    #[tokio::test]
    async fn lifetime_ends_a_connection_in_any_phase() {
        // The header timeout is out of reach here: only the lifetime can end this one, as it
        // ends one whose client stops reading the response.
        let limits = Limits {
            header_read: BOUND,
            lifetime: Duration::from_millis(300),
            ..LIMITS
        };
        let addr = start(shared(true), limits).await;
        let begin = Instant::now();
        let mut c = TcpStream::connect(addr).await.expect("connect");
        c.write_all(b"GET /metrics HTTP/1.1\r\n")
            .await
            .expect("send");
        assert_eq!(read_all(&mut c).await, "");
        let waited = begin.elapsed();
        assert!(
            waited >= limits.lifetime && waited < BOUND,
            "closed after {waited:?}"
        );
    }

    #[tokio::test]
    async fn over_the_cap_a_scrape_waits_for_a_slot() {
        let limits = Limits {
            connections: 3,
            header_read: Duration::from_secs(1),
            ..LIMITS
        };
        let addr = start(shared(true), limits).await;
        let begin = Instant::now();
        let mut idle = Vec::new();
        for _ in 0..limits.connections - 1 {
            idle.push(TcpStream::connect(addr).await.expect("connect"));
        }
        // One slot is left: a scrape is answered at once.
        assert_eq!(get(addr, "/healthz").await, wire("200 OK", TEXT, "ok\n"));
        assert!(
            begin.elapsed() < limits.header_read,
            "{:?}",
            begin.elapsed()
        );

        idle.push(TcpStream::connect(addr).await.expect("connect"));
        // Every slot is held: the scrape waits until the idle connections time out.
        assert_eq!(get(addr, "/healthz").await, wire("200 OK", TEXT, "ok\n"));
        assert!(
            begin.elapsed() >= limits.header_read,
            "{:?}",
            begin.elapsed()
        );
        for mut c in idle {
            assert_eq!(read_all(&mut c).await, "");
        }
    }
}
