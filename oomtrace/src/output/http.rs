//! The agent's HTTP endpoint: `GET /metrics` (Prometheus text format), `/healthz` (the process
//! serves) and `/readyz` (the tracer is attached), on hyper's HTTP/1.1 server.
//!
//! Every connection is bounded (see `LIMITS`): the request head read within `header_read`, the
//! whole exchange over within `lifetime`, one request per connection (no keep-alive: a scraper
//! every 15 s gains nothing from it, and without it no idle connection outlives its request),
//! and at most `connections` at once. A connection beyond the cap is never left waiting: the
//! oldest connection that has not sent a request yet is closed to make room (idle clients
//! cannot keep a probe out), or, when every connection is busy answering, the new one is
//! closed at once. Both count in `oomtrace_http_connections_shed_total`.
use std::{
    collections::BTreeMap,
    convert::Infallible,
    os::fd::{AsRawFd, RawFd},
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
use tokio::{net::TcpListener, sync::oneshot};

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
    header_read: Duration::from_secs(3),
    lifetime: Duration::from_secs(5),
};

/// Largest request head read (hyper answers 431 beyond it).
const MAX_HEAD: usize = 8 << 10;

/// The open connections by accept order, each with its socket and a way to close it while it
/// still waits for its request (`None` once a request came).
#[derive(Default)]
struct Registry {
    seats: BTreeMap<u64, (RawFd, Option<oneshot::Sender<()>>)>,
}

/// Whether bytes wait unread on `fd`: a client that has sent its request, which the
/// connection's task has not read yet (the socket is not consumed; -1 has none).
fn request_waiting(fd: RawFd) -> bool {
    let mut byte = [0u8; 1];
    // SAFETY: recv writes at most one byte into `byte`; MSG_PEEK leaves the data queued, and
    // MSG_DONTWAIT never blocks. A closed or foreign fd only makes it fail.
    let n = unsafe {
        libc::recv(
            fd,
            byte.as_mut_ptr().cast(),
            1,
            libc::MSG_PEEK | libc::MSG_DONTWAIT,
        )
    };
    n > 0
}

impl Registry {
    /// Seats connection `seq` if there is room, or makes room by closing the oldest connection
    /// that has sent nothing yet (one whose request waits unread is about to be answered: a
    /// probe is never shed for a silent flood); `false` when every seat is busy answering.
    fn admit(&mut self, seq: u64, fd: RawFd, close: oneshot::Sender<()>, cap: usize) -> bool {
        if self.seats.len() >= cap {
            let mut oldest_idle = None;
            for (k, (fd, close)) in self.seats.iter_mut() {
                if close.is_none() {
                    continue;
                }
                if request_waiting(*fd) {
                    *close = None;
                    continue;
                }
                oldest_idle = Some(*k);
                break;
            }
            let Some(k) = oldest_idle else {
                return false;
            };
            if let Some((_, Some(close))) = self.seats.remove(&k) {
                // Its task ends at its next poll.
                let _ = close.send(());
            }
        }
        self.seats.insert(seq, (fd, Some(close)));
        true
    }

    /// Connection `seq` received a request: it is no longer one to close for room.
    fn busy(&mut self, seq: u64) {
        if let Some((_, v)) = self.seats.get_mut(&seq) {
            *v = None;
        }
    }
}

type Connections = Arc<Mutex<Registry>>;

fn registry(c: &Connections) -> std::sync::MutexGuard<'_, Registry> {
    c.lock().unwrap_or_else(PoisonError::into_inner)
}

/// Frees a connection's seat when its task ends, however it ends.
struct Seat {
    connections: Connections,
    seq: u64,
}

impl Drop for Seat {
    fn drop(&mut self) {
        registry(&self.connections).seats.remove(&self.seq);
    }
}

fn count_shed(shared: &Shared) {
    shared
        .metrics
        .lock()
        .unwrap_or_else(PoisonError::into_inner)
        .count_http_shed();
}

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
    let connections = Connections::default();
    let mut seq = 0u64;
    loop {
        let stream = match listener.accept().await {
            Ok((stream, _)) => stream,
            Err(e) => {
                log::warn!("http: accept failed: {e}");
                tokio::time::sleep(Duration::from_millis(100)).await;
                continue;
            }
        };
        seq += 1;
        let (close, closed) = oneshot::channel();
        let fd = stream.as_raw_fd();
        if !registry(&connections).admit(seq, fd, close, limits.connections) {
            drop(stream);
            count_shed(&shared);
            continue;
        }
        let seat = Seat {
            connections: Arc::clone(&connections),
            seq,
        };
        let service = {
            let shared = shared.clone();
            let connections = Arc::clone(&connections);
            service_fn(move |request: hyper::Request<hyper::body::Incoming>| {
                // A request came: this connection is no longer one to close for room.
                registry(&connections).busy(seq);
                let response = respond(request.method(), request.uri().path(), &shared);
                async move { Ok::<_, Infallible>(response) }
            })
        };
        let connection = http.serve_connection(TokioIo::new(stream), service);
        let shared = shared.clone();
        tokio::spawn(async move {
            // Resolves only when the accept loop asks this connection to make room (a dropped
            // sender, once a request came, is no such ask).
            let shed = async {
                if closed.await.is_err() {
                    std::future::pending::<()>().await;
                }
            };
            tokio::select! {
                served = tokio::time::timeout(limits.lifetime, connection) => match served {
                    Ok(Ok(())) => {}
                    Ok(Err(e)) => log::debug!("http: {e}"),
                    Err(_) => log::debug!("http: connection dropped after {:?}", limits.lifetime),
                },
                () = shed => {
                    log::debug!("http: closed an idle connection to make room");
                    count_shed(&shared);
                }
            }
            drop(seat);
        });
        // Let the new connection read its request before accepting more: a client that sends
        // its request with the connection (a probe, a scrape) is then busy, not idle, by the
        // time a burst of silent connections could otherwise close it to make room.
        tokio::task::yield_now().await;
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

    fn shed(s: &Shared) -> String {
        let text = s.metrics.lock().expect("lock").render();
        text.lines()
            .find(|l| l.starts_with("oomtrace_http_connections_shed_total "))
            .expect("the shed counter")
            .to_string()
    }

    #[tokio::test]
    async fn over_the_cap_the_oldest_idle_connection_makes_room() {
        let limits = Limits {
            connections: 3,
            ..LIMITS
        };
        let s = shared(true);
        let addr = start(s.clone(), limits).await;
        let begin = Instant::now();
        let mut idle = Vec::new();
        for _ in 0..limits.connections {
            idle.push(TcpStream::connect(addr).await.expect("connect"));
        }
        // Every seat is held by a silent client: a scrape is still answered at once, the oldest
        // silent client closed for it.
        assert_eq!(get(addr, "/healthz").await, wire("200 OK", TEXT, "ok\n"));
        assert_eq!(read_all(&mut idle[0]).await, "");
        assert!(
            begin.elapsed() < limits.header_read,
            "{:?}",
            begin.elapsed()
        );
        assert_eq!(shed(&s), "oomtrace_http_connections_shed_total 1");
        // Hundreds more: each closes an older silent one; the newest ones stay open.
        let mut flood = Vec::new();
        for _ in 0..200 {
            flood.push(TcpStream::connect(addr).await.expect("connect"));
        }
        assert_eq!(
            get(addr, "/metrics").await.lines().next(),
            Some("HTTP/1.1 200 OK")
        );
        assert!(
            begin.elapsed() < limits.header_read,
            "{:?}",
            begin.elapsed()
        );
        // Closed: the other two of the first three, and all but the newest two of the flood
        // (the newest three held the seats; the scrape took the oldest one's).
        for mut c in idle.drain(1..).chain(flood.drain(..198)) {
            assert_eq!(read_all(&mut c).await, "");
        }
        assert_eq!(shed(&s), "oomtrace_http_connections_shed_total 201");
    }

    #[test]
    fn with_every_seat_busy_a_new_connection_is_refused() {
        let mut r = Registry::default();
        let mut closed = Vec::new();
        for seq in 1..=3 {
            let (tx, rx) = oneshot::channel();
            assert!(r.admit(seq, -1, tx, 3));
            closed.push(rx);
        }
        r.busy(1);
        r.busy(3);
        // Full: the oldest idle one (2) makes room.
        let (tx, _rx4) = oneshot::channel();
        assert!(r.admit(4, -1, tx, 3));
        // A busy connection's sender is dropped (which its task ignores); only 2 is told.
        use oneshot::error::TryRecvError::Closed;
        assert_eq!(closed[1].try_recv(), Ok(()));
        assert_eq!(closed[0].try_recv(), Err(Closed));
        assert_eq!(r.seats.keys().copied().collect::<Vec<_>>(), [1, 3, 4]);
        r.busy(4);
        // Every seat busy: refused, nothing closed.
        let (tx, _rx5) = oneshot::channel();
        assert!(!r.admit(5, -1, tx, 3));
        assert_eq!(r.seats.keys().copied().collect::<Vec<_>>(), [1, 3, 4]);
        assert_eq!(closed[0].try_recv(), Err(Closed));
        assert_eq!(closed[2].try_recv(), Err(Closed));
    }

    #[test]
    fn a_connection_whose_request_waits_unread_is_not_shed() {
        use std::io::Write;
        let (mut client, server) = std::os::unix::net::UnixStream::pair().expect("socketpair");
        let mut r = Registry::default();
        let (tx, mut probe_closed) = oneshot::channel();
        assert!(r.admit(1, server.as_raw_fd(), tx, 1));
        // Silent so far: a newcomer takes its seat.
        let (tx, _rx) = oneshot::channel();
        assert!(r.admit(2, -1, tx, 1));
        assert_eq!(probe_closed.try_recv(), Ok(()));
        // Seated again, and its request sent but not yet read: it keeps its seat, and with no
        // silent connection to close the newcomer is refused.
        let mut r = Registry::default();
        let (tx, mut probe_closed) = oneshot::channel();
        assert!(r.admit(1, server.as_raw_fd(), tx, 1));
        client
            .write_all(b"GET /healthz HTTP/1.1\r\n\r\n")
            .expect("write");
        let (tx, _rx) = oneshot::channel();
        assert!(!r.admit(2, -1, tx, 1));
        assert!(probe_closed.try_recv().is_err());
        assert_eq!(r.seats.keys().copied().collect::<Vec<_>>(), [1]);
    }
}
