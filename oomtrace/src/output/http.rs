//! The agent's HTTP endpoint: `GET /metrics` (Prometheus text format), `/healthz` (the process
//! serves) and `/readyz` (the tracer is attached). A deliberately small HTTP/1.1 server: one
//! request per connection, bounded head size and read time, no body.
use std::{
    sync::{
        atomic::{AtomicBool, Ordering},
        Arc, Mutex,
    },
    time::Duration,
};

use tokio::{
    io::{AsyncReadExt, AsyncWriteExt},
    net::{TcpListener, TcpStream},
};

use super::metrics::Metrics;

/// State the endpoint reads.
#[derive(Clone)]
pub struct Shared {
    pub metrics: Arc<Mutex<Metrics>>,
    pub ready: Arc<AtomicBool>,
}

const MAX_HEAD: usize = 8 << 10;
const READ_TIMEOUT: Duration = Duration::from_secs(5);

/// Accepts connections until the listener fails; each is answered on its own task.
pub async fn serve(listener: TcpListener, shared: Shared) {
    loop {
        match listener.accept().await {
            Ok((stream, _)) => {
                let shared = shared.clone();
                tokio::spawn(async move {
                    if let Err(e) = answer(stream, &shared).await {
                        log::debug!("http: {e}");
                    }
                });
            }
            Err(e) => {
                log::warn!("http: accept failed: {e}");
                tokio::time::sleep(Duration::from_millis(100)).await;
            }
        }
    }
}

/// The response to a request line: status, content type, body.
pub fn respond(request_line: &str, shared: &Shared) -> (&'static str, &'static str, String) {
    let mut parts = request_line.split_whitespace();
    let (method, target) = (parts.next().unwrap_or(""), parts.next().unwrap_or(""));
    let path = target.split('?').next().unwrap_or("");
    const TEXT: &str = "text/plain; charset=utf-8";
    if method != "GET" && method != "HEAD" {
        return ("405 Method Not Allowed", TEXT, "only GET\n".into());
    }
    match path {
        "/metrics" => {
            let body = shared
                .metrics
                .lock()
                .map(|m| m.render())
                .unwrap_or_default();
            ("200 OK", "text/plain; version=0.0.4; charset=utf-8", body)
        }
        "/healthz" => ("200 OK", TEXT, "ok\n".into()),
        "/readyz" if shared.ready.load(Ordering::Relaxed) => ("200 OK", TEXT, "ready\n".into()),
        "/readyz" => ("503 Service Unavailable", TEXT, "not attached yet\n".into()),
        _ => (
            "404 Not Found",
            TEXT,
            "try /metrics, /healthz or /readyz\n".into(),
        ),
    }
}

async fn answer(mut stream: TcpStream, shared: &Shared) -> std::io::Result<()> {
    let mut head = Vec::with_capacity(512);
    let mut buf = [0u8; 1024];
    let read_head = async {
        while !head.windows(4).any(|w| w == b"\r\n\r\n") && head.len() < MAX_HEAD {
            let n = stream.read(&mut buf).await?;
            if n == 0 {
                break;
            }
            head.extend_from_slice(&buf[..n]);
        }
        Ok::<_, std::io::Error>(())
    };
    if tokio::time::timeout(READ_TIMEOUT, read_head).await.is_err() {
        return Ok(());
    }
    let text = String::from_utf8_lossy(&head);
    let request_line = text.lines().next().unwrap_or("");
    let (status, content_type, body) = respond(request_line, shared);
    let body = if request_line.starts_with("HEAD ") {
        String::new()
    } else {
        body
    };
    let response = format!(
        "HTTP/1.1 {status}\r\nContent-Type: {content_type}\r\nContent-Length: {}\r\nConnection: close\r\n\r\n{body}",
        body.len()
    );
    stream.write_all(response.as_bytes()).await?;
    stream.shutdown().await
}

#[cfg(test)]
mod tests {
    use super::*;

    fn shared(ready: bool) -> Shared {
        Shared {
            metrics: Arc::new(Mutex::new(Metrics::default())),
            ready: Arc::new(AtomicBool::new(ready)),
        }
    }

    #[test]
    fn routes() {
        let s = shared(false);
        assert_eq!(respond("GET /healthz HTTP/1.1", &s).0, "200 OK");
        assert_eq!(
            respond("GET /readyz HTTP/1.1", &s).0,
            "503 Service Unavailable"
        );
        s.ready.store(true, Ordering::Relaxed);
        assert_eq!(respond("GET /readyz HTTP/1.1", &s).0, "200 OK");
        let (status, ctype, body) = respond("GET /metrics?x=1 HTTP/1.1", &s);
        assert_eq!(status, "200 OK");
        assert!(ctype.starts_with("text/plain; version=0.0.4"));
        assert!(body.contains("oomtrace_events_lost_total 0"));
        assert_eq!(
            respond("POST /metrics HTTP/1.1", &s).0,
            "405 Method Not Allowed"
        );
        assert_eq!(respond("GET /nope HTTP/1.1", &s).0, "404 Not Found");
        assert_eq!(respond("", &s).0, "405 Method Not Allowed");
    }

    #[test]
    fn serves_over_tcp() {
        let rt = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .expect("runtime");
        rt.block_on(async {
            let listener = TcpListener::bind("127.0.0.1:0").await.expect("bind");
            let addr = listener.local_addr().expect("addr");
            tokio::spawn(serve(listener, shared(true)));
            let mut c = TcpStream::connect(addr).await.expect("connect");
            c.write_all(b"GET /readyz HTTP/1.1\r\nHost: x\r\n\r\n")
                .await
                .expect("send");
            let mut out = String::new();
            c.read_to_string(&mut out).await.expect("read");
            assert!(out.starts_with("HTTP/1.1 200 OK\r\n"), "{out}");
            assert!(out.ends_with("\r\n\r\nready\n"), "{out}");
        });
    }
}
