//! The Kubernetes API client against a fake API server on 127.0.0.1 that speaks the real
//! protocol: paged lists, chunked watch streams of JSON lines, `410 Gone`, Event creation, and
//! (when the `openssl` command is there to make certificates) TLS.
//!
//! The client is kube's (the watcher is kube-runtime's); where its requests legitimately
//! differ from the hand-written client these tests were first written for, the place says so
//! in a comment starting "kube:".

use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex, PoisonError};
use std::time::{Duration, Instant};

use oomtrace::enrich::kube::{
    ApiBase, KubeClient, KubeConfig, KubeError, Owner, PodMeta, Scheme, WatchOptions,
};
use serde_json::{json, Value};
use tokio::io::{AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt};
use tokio::net::TcpListener;

const NODE: &str = "node-1";
const TOKEN: &str = "test-token";

/// One request the fake server received.
#[derive(Debug, Clone)]
struct Seen {
    method: String,
    /// Path and query, as sent.
    target: String,
    headers: Vec<(String, String)>,
    body: Vec<u8>,
}

impl Seen {
    fn header(&self, name: &str) -> Option<&str> {
        self.headers
            .iter()
            .find(|(n, _)| n.eq_ignore_ascii_case(name))
            .map(|(_, v)| v.as_str())
    }

    fn path(&self) -> &str {
        self.target.split('?').next().unwrap_or_default()
    }

    /// A query parameter, percent-decoded.
    fn query(&self, key: &str) -> Option<String> {
        let (_, query) = self.target.split_once('?')?;
        query.split('&').find_map(|pair| {
            let (k, v) = pair.split_once('=').unwrap_or((pair, ""));
            (k == key).then(|| percent_decode(v))
        })
    }

    fn is_pod_list(&self) -> bool {
        self.method == "GET" && self.path() == "/api/v1/pods" && self.query("watch").is_none()
    }

    fn is_pod_watch(&self) -> bool {
        self.method == "GET" && self.path() == "/api/v1/pods" && self.query("watch").is_some()
    }
}

fn percent_decode(s: &str) -> String {
    let bytes = s.as_bytes();
    let mut out = Vec::new();
    let mut i = 0;
    while i < bytes.len() {
        if bytes[i] == b'%' && i + 2 < bytes.len() {
            let hex = std::str::from_utf8(&bytes[i + 1..i + 3]).expect("ascii");
            out.push(u8::from_str_radix(hex, 16).expect("hex escape"));
            i += 3;
        } else {
            out.push(bytes[i]);
            i += 1;
        }
    }
    String::from_utf8(out).expect("utf-8")
}

/// What the fake server answers.
enum Reply {
    /// A complete JSON response with `Content-Length`.
    Json { status: u16, body: Value },
    /// A `200` watch stream: `body` sent as chunks of `chunk` bytes (so that lines straddle
    /// chunks), then the last chunk, then the connection is closed.
    Stream { body: Vec<u8>, chunk: usize },
    /// A `200` watch stream that stays open and silent.
    Hold,
}

/// Decides the reply to a request, given every request seen before it.
type Handler = Arc<dyn Fn(&Seen, &[Seen]) -> Reply + Send + Sync>;

struct FakeApi {
    addr: SocketAddr,
    seen: Arc<Mutex<Vec<Seen>>>,
    task: tokio::task::JoinHandle<()>,
}

impl FakeApi {
    async fn start(handler: Handler) -> Self {
        Self::start_with(handler, None).await
    }

    async fn start_with(handler: Handler, tls: Option<tokio_rustls::TlsAcceptor>) -> Self {
        let listener = TcpListener::bind("127.0.0.1:0").await.expect("bind");
        let addr = listener.local_addr().expect("address");
        let seen: Arc<Mutex<Vec<Seen>>> = Arc::default();
        let seen_by_server = seen.clone();
        let task = tokio::spawn(async move {
            // Bounded: no test makes more than this many connections.
            for _ in 0..200 {
                let Ok((tcp, _)) = listener.accept().await else {
                    return;
                };
                let handler = handler.clone();
                let seen = seen_by_server.clone();
                let tls = tls.clone();
                tokio::spawn(async move {
                    match tls {
                        None => serve(tcp, handler, seen).await,
                        Some(acceptor) => {
                            if let Ok(stream) = acceptor.accept(tcp).await {
                                serve(stream, handler, seen).await;
                            }
                        }
                    }
                });
            }
        });
        Self { addr, seen, task }
    }

    fn base(&self, scheme: Scheme) -> ApiBase {
        ApiBase::new(scheme, "127.0.0.1", self.addr.port()).expect("valid base")
    }

    fn seen(&self) -> Vec<Seen> {
        self.seen
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .clone()
    }

    /// Waits up to 10 s for `done` to hold over the requests seen.
    async fn wait_for(&self, what: &str, done: impl Fn(&[Seen]) -> bool) -> Vec<Seen> {
        let deadline = Instant::now() + Duration::from_secs(10);
        loop {
            let seen = self.seen();
            if done(&seen) {
                return seen;
            }
            assert!(
                Instant::now() < deadline,
                "timed out waiting for {what}; requests seen: {:#?}",
                seen.iter().map(|s| &s.target).collect::<Vec<_>>()
            );
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    }
}

impl Drop for FakeApi {
    fn drop(&mut self) {
        self.task.abort();
    }
}

/// Reads one request, records it, writes the handler's reply.
async fn serve<S: AsyncRead + AsyncWrite + Unpin>(
    mut stream: S,
    handler: Handler,
    seen: Arc<Mutex<Vec<Seen>>>,
) {
    let mut buf = Vec::new();
    let head_end = loop {
        if let Some(i) = buf.windows(4).position(|w| w == b"\r\n\r\n") {
            break i + 4;
        }
        let mut tmp = [0u8; 4096];
        match stream.read(&mut tmp).await {
            Ok(0) | Err(_) => return,
            Ok(n) => buf.extend_from_slice(&tmp[..n]),
        }
    };
    let head = String::from_utf8(buf[..head_end].to_vec()).expect("request head is UTF-8");
    let mut lines = head.split("\r\n");
    let request_line = lines.next().expect("request line");
    let mut parts = request_line.split(' ');
    let method = parts.next().expect("method").to_string();
    let target = parts.next().expect("target").to_string();
    assert_eq!(parts.next(), Some("HTTP/1.1"), "{request_line}");
    let headers: Vec<(String, String)> = lines
        .filter(|l| !l.is_empty())
        .map(|l| {
            let (n, v) = l.split_once(':').expect("header line");
            (n.trim().to_string(), v.trim().to_string())
        })
        .collect();
    let length: usize = headers
        .iter()
        .find(|(n, _)| n.eq_ignore_ascii_case("content-length"))
        .map_or(0, |(_, v)| v.parse().expect("Content-Length"));
    let mut body = buf[head_end..].to_vec();
    while body.len() < length {
        let mut tmp = [0u8; 4096];
        match stream.read(&mut tmp).await {
            Ok(0) | Err(_) => return,
            Ok(n) => body.extend_from_slice(&tmp[..n]),
        }
    }
    let request = Seen {
        method,
        target,
        headers,
        body,
    };
    let reply = {
        let mut seen = seen.lock().unwrap_or_else(PoisonError::into_inner);
        let reply = handler(&request, &seen);
        seen.push(request);
        reply
    };
    let _ = write_reply(&mut stream, reply).await;
}

async fn write_reply<S: AsyncWrite + Unpin>(stream: &mut S, reply: Reply) -> std::io::Result<()> {
    const CHUNKED_OK: &[u8] = b"HTTP/1.1 200 OK\r\nContent-Type: application/json\r\n\
        Transfer-Encoding: chunked\r\n\r\n";
    match reply {
        Reply::Json { status, body } => {
            let body = serde_json::to_vec(&body).expect("JSON");
            let head = format!(
                "HTTP/1.1 {status} X\r\nContent-Type: application/json\r\nContent-Length: {}\r\n\r\n",
                body.len()
            );
            stream.write_all(head.as_bytes()).await?;
            stream.write_all(&body).await?;
        }
        Reply::Stream { body, chunk } => {
            stream.write_all(CHUNKED_OK).await?;
            for piece in body.chunks(chunk) {
                stream
                    .write_all(format!("{:x}\r\n", piece.len()).as_bytes())
                    .await?;
                stream.write_all(piece).await?;
                stream.write_all(b"\r\n").await?;
                stream.flush().await?;
                tokio::time::sleep(Duration::from_millis(2)).await;
            }
            stream.write_all(b"0\r\n\r\n").await?;
        }
        Reply::Hold => {
            stream.write_all(CHUNKED_OK).await?;
            stream.flush().await?;
            tokio::time::sleep(Duration::from_secs(60)).await;
        }
    }
    stream.flush().await?;
    stream.shutdown().await
}

fn not_found(request: &Seen) -> Reply {
    Reply::Json {
        status: 404,
        body: json!({"kind": "Status", "code": 404, "message": format!("no {}", request.target)}),
    }
}

fn pod_list(rv: &str, cont: Option<&str>, items: Vec<Value>) -> Reply {
    let mut metadata = json!({"resourceVersion": rv});
    if let Some(cont) = cont {
        metadata["continue"] = json!(cont);
    }
    Reply::Json {
        status: 200,
        body: json!({"kind": "PodList", "apiVersion": "v1", "metadata": metadata, "items": items}),
    }
}

/// A Pod object as the API server sends it (trimmed to what matters here, plus some noise).
fn pod(
    name: &str,
    uid: &str,
    rv: &str,
    labels: Value,
    owner: Option<(&str, &str)>,
    containers: &[(&str, &str)],
) -> Value {
    let owners: Vec<Value> = owner
        .iter()
        .map(|(kind, name)| {
            json!({"apiVersion": "apps/v1", "kind": kind, "name": name, "uid": "owner-uid",
                   "controller": true, "blockOwnerDeletion": true})
        })
        .collect();
    json!({
        "kind": "Pod", "apiVersion": "v1",
        "metadata": {
            "name": name, "namespace": "shop", "uid": uid, "resourceVersion": rv,
            "labels": labels, "ownerReferences": owners,
            "annotations": {"kubectl.kubernetes.io/restartedAt": "2026-11-22T00:00:00Z"},
        },
        "spec": {
            "nodeName": NODE,
            "containers": containers.iter().map(|(n, _)| json!({"name": n, "image": "x"})).collect::<Vec<_>>(),
        },
        "status": {
            "phase": "Running",
            "containerStatuses": containers.iter().map(|(n, id)| json!({
                "name": n, "containerID": id, "ready": true, "restartCount": 0
            })).collect::<Vec<_>>(),
        }
    })
}

fn event_line(kind: &str, object: Value) -> String {
    format!("{}\n", json!({"type": kind, "object": object}))
}

fn client(api: &FakeApi) -> KubeClient {
    let mut config = KubeConfig::new(api.base(Scheme::Http));
    config.token = Some(TOKEN.to_string());
    KubeClient::new(config).expect("client")
}

/// kube: the watcher's backoff is kube-runtime's default (0.8 s doubling to 30 s, plus up to
/// one initial step of jitter) and cannot be shortened: the tests wait for it instead of a
/// 50 ms test backoff.
fn watch_options() -> WatchOptions {
    WatchOptions::default()
}

fn watches_from(seen: &[Seen]) -> Vec<String> {
    seen.iter()
        .filter(|s| s.is_pod_watch())
        .map(|s| s.query("resourceVersion").unwrap_or_default())
        .collect()
}

const ID_DB: &str = "aaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaa";
const ID_WEB: &str = "bbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbb";

#[tokio::test]
async fn lists_in_pages_watches_and_resumes_from_the_last_resource_version() {
    let web = |rv: &str, labels: Value| {
        pod(
            "web-7d9f8b6c5-x2x4z",
            "uid-web",
            rv,
            labels,
            Some(("ReplicaSet", "web-7d9f8b6c5")),
            &[("app", &format!("containerd://{ID_WEB}"))],
        )
    };
    let db = pod(
        "db-0",
        "uid-db",
        "90",
        json!({"app": "db"}),
        Some(("StatefulSet", "db")),
        &[("postgres", &format!("containerd://{ID_DB}"))],
    );
    let agent = pod(
        "agent-q8x2c",
        "uid-agent",
        "91",
        json!({}),
        Some(("DaemonSet", "agent")),
        &[("agent", "")],
    );
    let mut stream = String::new();
    stream += &event_line(
        "ADDED",
        web(
            "101",
            json!({"app": "web", "pod-template-hash": "7d9f8b6c5"}),
        ),
    );
    stream += &event_line(
        "MODIFIED",
        web(
            "102",
            json!({"app": "web", "pod-template-hash": "7d9f8b6c5", "tier": "front"}),
        ),
    );
    let mut db_deleted = db.clone();
    db_deleted["metadata"]["resourceVersion"] = json!("103");
    stream += &event_line("DELETED", db_deleted);
    stream += "this line is not JSON\n";
    stream += &event_line(
        "BOOKMARK",
        json!({"kind": "Pod", "apiVersion": "v1", "metadata": {"resourceVersion": "104"}}),
    );
    let stream = stream.into_bytes();

    let handler: Handler = Arc::new(move |req: &Seen, _before: &[Seen]| {
        if req.is_pod_list() {
            return match req.query("continue").as_deref() {
                None => pod_list("100", Some("page2/token=="), vec![db.clone()]),
                Some("page2/token==") => pod_list("100", None, vec![agent.clone()]),
                Some(_) => not_found(req),
            };
        }
        if req.is_pod_watch() {
            return match req.query("resourceVersion").as_deref() {
                Some("100") => Reply::Stream {
                    body: stream.clone(),
                    chunk: 37,
                },
                Some("104") => Reply::Hold,
                _ => not_found(req),
            };
        }
        not_found(req)
    });
    let api = FakeApi::start(handler).await;
    // kube: the malformed line pauses the watcher for its first backoff step (0.8-1.6 s)
    // between the deletion and the bookmark, so the grace period is 4 s (was 1.5 s).
    let grace = Duration::from_millis(4000);
    let options = WatchOptions {
        grace,
        page_size: 1,
        ..watch_options()
    };
    let (pods, task) = client(&api)
        .spawn_pod_watch(NODE, options)
        .expect("watcher starts");

    let seen = api
        .wait_for("the watch resumed at the bookmark's resourceVersion", |s| {
            watches_from(s).contains(&"104".to_string())
        })
        .await;
    let checked_at = Instant::now();

    // Every request: the node's field selector and the bearer token.
    for req in &seen {
        assert_eq!(req.method, "GET");
        assert_eq!(
            req.query("fieldSelector").as_deref(),
            Some("spec.nodeName=node-1")
        );
        assert!(
            req.target.contains("fieldSelector=spec.nodeName%3Dnode-1"),
            "{}",
            req.target
        );
        assert_eq!(req.header("authorization"), Some("Bearer test-token"));
        assert_eq!(req.header("host"), Some(api.addr.to_string().as_str()));
    }
    let lists: Vec<&Seen> = seen.iter().filter(|s| s.is_pod_list()).collect();
    assert_eq!(lists.len(), 2, "two pages, one list");
    assert_eq!(lists[0].query("limit").as_deref(), Some("1"));
    assert_eq!(lists[0].query("continue"), None);
    assert_eq!(lists[1].query("continue").as_deref(), Some("page2/token=="));
    assert_eq!(watches_from(&seen), ["100", "104"]);
    let watch = seen.iter().find(|s| s.is_pod_watch()).expect("a watch");
    // kube: `watch=true` (was `watch=1`; the API server takes both).
    assert_eq!(watch.query("watch").as_deref(), Some("true"));
    assert_eq!(watch.query("allowWatchBookmarks").as_deref(), Some("true"));
    assert_eq!(watch.query("timeoutSeconds").as_deref(), Some("300"));

    // The added and modified pod: labels, the Deployment behind its ReplicaSet, container ids.
    let web = pods.by_uid("uid-web").expect("web pod cached");
    let want_labels: Vec<(&str, &str)> = vec![
        ("app", "web"),
        ("pod-template-hash", "7d9f8b6c5"),
        ("tier", "front"),
    ];
    assert_eq!(
        web.labels
            .iter()
            .map(|(k, v)| (k.as_str(), v.as_str()))
            .collect::<Vec<_>>(),
        want_labels
    );
    assert_eq!(
        web.owner,
        Some(Owner {
            kind: "Deployment".to_string(),
            name: "web".to_string()
        })
    );
    assert_eq!(
        (web.namespace.as_str(), web.name.as_str()),
        ("shop", "web-7d9f8b6c5-x2x4z")
    );
    assert_eq!(
        web.containers,
        vec![("app".to_string(), Some(ID_WEB.to_string()))]
    );
    assert_eq!(pods.by_container_id(ID_WEB).as_ref(), Some(&web));
    assert_eq!(
        pods.by_container_id(&format!("containerd://{ID_WEB}"))
            .map(|p| p.uid),
        Some("uid-web".to_string())
    );
    let agent = pods.by_uid("uid-agent").expect("second page's pod");
    assert_eq!(
        agent.owner,
        Some(Owner {
            kind: "DaemonSet".to_string(),
            name: "agent".to_string()
        })
    );
    assert_eq!(agent.containers, vec![("agent".to_string(), None)]);

    // The deleted pod: still there within the grace period, gone after it.
    let db = pods
        .by_uid("uid-db")
        .expect("deleted pod kept for the grace period");
    assert_eq!(
        db.owner,
        Some(Owner {
            kind: "StatefulSet".to_string(),
            name: "db".to_string()
        })
    );
    assert_eq!(
        pods.by_container_id(ID_DB).map(|p| p.name),
        Some("db-0".to_string())
    );
    assert_eq!(pods.len(), 3);
    assert!(pods.is_synced());
    let stats = pods.stats();
    assert_eq!(stats.lists, 1);
    // kube: ADDED, MODIFIED, DELETED (was 4 with the BOOKMARK: kube's watcher consumes
    // bookmarks itself; that it used this one is asserted above, the watch resumed at 104).
    assert_eq!(stats.events, 3, "{stats:?}");
    assert_eq!(stats.malformed, 1, "{stats:?}");
    assert_eq!(stats.failures, 0, "{stats:?}");

    tokio::time::sleep(grace.saturating_sub(checked_at.elapsed()) + Duration::from_millis(300))
        .await;
    assert_eq!(pods.by_uid("uid-db"), None);
    assert_eq!(pods.by_container_id(ID_DB), None);
    assert!(pods.by_uid("uid-web").is_some(), "live pods stay");
    assert_eq!(pods.len(), 2);
    task.abort();
}

#[tokio::test]
async fn gone_relists_whether_as_a_status_or_as_an_error_event() {
    let x = pod("x", "uid-x", "150", json!({}), None, &[]);
    let y = pod(
        "y",
        "uid-y",
        "250",
        json!({}),
        Some(("Job", "backup-29000000")),
        &[],
    );
    let expired = json!({"kind": "Status", "apiVersion": "v1", "status": "Failure",
        "message": "too old resource version: 300 (350)", "reason": "Expired", "code": 410});
    let handler: Handler = Arc::new(move |req: &Seen, before: &[Seen]| {
        if req.is_pod_list() {
            return match before.iter().filter(|s| s.is_pod_list()).count() {
                0 => pod_list("200", None, vec![x.clone()]),
                1 => pod_list("300", None, vec![y.clone()]),
                _ => pod_list("400", None, vec![y.clone()]),
            };
        }
        if req.is_pod_watch() {
            return match req.query("resourceVersion").as_deref() {
                Some("200") => Reply::Json {
                    status: 410,
                    body: expired.clone(),
                },
                Some("300") => Reply::Stream {
                    body: event_line("ERROR", expired.clone()).into_bytes(),
                    chunk: 1000,
                },
                Some("400") => Reply::Hold,
                _ => not_found(req),
            };
        }
        not_found(req)
    });
    let api = FakeApi::start(handler).await;
    let (pods, task) = client(&api)
        .spawn_pod_watch(NODE, watch_options())
        .expect("watcher starts");
    let seen = api
        .wait_for("the third watch", |s| {
            watches_from(s).contains(&"400".to_string())
        })
        .await;
    assert_eq!(seen.iter().filter(|s| s.is_pod_list()).count(), 3);
    assert_eq!(watches_from(&seen), ["200", "300", "400"]);
    assert_eq!(pods.stats().lists, 3);
    assert_eq!(pods.stats().failures, 0);
    // x vanished between lists: kept as deleted (default grace: 10 minutes).
    assert_eq!(pods.by_uid("uid-x").map(|p| p.name), Some("x".to_string()));
    let y = pods.by_uid("uid-y").expect("y");
    assert_eq!(
        y.owner,
        Some(Owner {
            kind: "Job".to_string(),
            name: "backup-29000000".to_string()
        })
    );
    assert_eq!(pods.len(), 2);
    task.abort();
}

#[tokio::test]
async fn failed_requests_are_retried_with_backoff() {
    let handler: Handler = Arc::new(move |req: &Seen, before: &[Seen]| {
        if req.is_pod_list() {
            return match before.iter().filter(|s| s.is_pod_list()).count() {
                0 => Reply::Json {
                    status: 500,
                    body: json!({"kind": "Status", "code": 500, "message": "etcd is sad"}),
                },
                1 => pod_list("10", None, vec![json!({"kind": "Pod", "metadata": {}})]),
                _ => pod_list("11", None, vec![]),
            };
        }
        if req.is_pod_watch() {
            return match before.iter().filter(|s| s.is_pod_watch()).count() {
                // A stream cut inside a chunk: an error, then the watch resumes.
                // kube: the bookmark carries `kind` and `apiVersion`, as the API server's do;
                // kube-core's Bookmark type requires them (the hand-written client did not).
                0 => Reply::Stream {
                    body: b"{\"type\":\"BOOKMARK\",\"object\":{\"kind\":\"Pod\",\"apiVersion\":\"v1\",\"metadata\":{\"resourceVersion\":\"12\"}}}\n{\"type\":"
                        .to_vec(),
                    chunk: 1000,
                },
                _ => Reply::Hold,
            };
        }
        not_found(req)
    });
    let api = FakeApi::start(handler).await;
    let started = Instant::now();
    let (pods, task) = client(&api)
        .spawn_pod_watch(NODE, watch_options())
        .expect("watcher starts");
    let seen = api
        .wait_for("a second watch", |s| watches_from(s).len() >= 2)
        .await;
    // kube: the default backoff's first step is at least 800 ms (was 40 ms for a 50 ms test
    // backoff).
    assert!(
        started.elapsed() >= Duration::from_millis(800),
        "waited before retrying"
    );
    assert_eq!(seen.iter().filter(|s| s.is_pod_list()).count(), 2);
    assert_eq!(watches_from(&seen), ["10", "12"]);
    let stats = pods.stats();
    assert_eq!(stats.failures, 1, "the 500: {stats:?}");
    // kube: 1 (was 2 with the cut line): kube-client drops a last line cut short at the end
    // of a watch stream without reporting it; that the watch resumed from the bookmark before
    // it is asserted above.
    assert_eq!(stats.malformed, 1, "a pod without identity: {stats:?}");
    assert!(pods.is_synced());
    assert_eq!(pods.len(), 0);
    task.abort();
}

fn shop_pod() -> PodMeta {
    PodMeta {
        namespace: "shop".to_string(),
        name: "cart-7d9f8b6c5-x2x4z".to_string(),
        uid: "0b3a3f2e-1c2d-4e5f-8a9b-0c1d2e3f4a5b".to_string(),
        ..PodMeta::default()
    }
}

/// kube: Events go to events.k8s.io/v1 (was core/v1, `/api/v1/namespaces/NS/events`), and
/// the reply names its apiVersion, as the API server's does (kube decodes the created object).
fn event_handler() -> Handler {
    Arc::new(
        |req: &Seen, _: &[Seen]| match (req.method.as_str(), req.path()) {
            ("POST", "/apis/events.k8s.io/v1/namespaces/shop/events") => Reply::Json {
                status: 201,
                body: json!({"kind": "Event", "apiVersion": "events.k8s.io/v1",
                    "metadata": {"name": "cart.oomtrace-abcde"}}),
            },
            ("POST", "/apis/events.k8s.io/v1/namespaces/locked/events") => Reply::Json {
                status: 403,
                body: json!({"kind": "Status", "code": 403, "reason": "Forbidden",
                "message": "events is forbidden: User \"system:serviceaccount:oomtrace:oomtrace\" cannot create resource \"events\""}),
            },
            _ => not_found(req),
        },
    )
}

/// `2026-11-22T03:41:07.123456Z`, as an events.k8s.io Event's `eventTime` (a MicroTime) is
/// written. kube: was to the second, as core/v1's `firstTimestamp` is.
fn to_the_microsecond(t: std::time::SystemTime) -> String {
    let ns = t
        .duration_since(std::time::UNIX_EPOCH)
        .expect("after 1970")
        .as_nanos();
    let full = oomtrace::timefmt::rfc3339_nanos(i128::try_from(ns).expect("fits"));
    format!("{}Z", &full[..26])
}

fn temp_dir(tag: &str) -> PathBuf {
    let dir = std::env::temp_dir().join(format!("oomtrace-kube-api-{tag}-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&dir);
    std::fs::create_dir_all(&dir).expect("temp dir");
    dir
}

#[tokio::test]
async fn posts_an_oom_event_and_rereads_a_rotated_token() {
    let api = FakeApi::start(event_handler()).await;
    let dir = temp_dir("event");
    let token_file = dir.join("token");
    std::fs::write(&token_file, "token-one\n").expect("write token");
    let mut config = KubeConfig::new(api.base(Scheme::Http));
    config.token_file = Some(token_file.clone());
    let client = KubeClient::new(config).expect("client");
    let pod = shop_pod();

    let before = std::time::SystemTime::now();
    client
        .post_oom_event(&pod, "OOM-killed pid 4242 (java) in container app", NODE)
        .await
        .expect("event posted");
    std::fs::write(&token_file, "token-two").expect("rotate token");
    client
        .post_oom_event(&pod, "again", NODE)
        .await
        .expect("second event posted");

    let seen = api.seen();
    assert_eq!(seen.len(), 2);
    let req = &seen[0];
    assert_eq!(req.method, "POST");
    // kube: the events.k8s.io/v1 path, and kube's `?` with no parameters after it.
    assert_eq!(req.path(), "/apis/events.k8s.io/v1/namespaces/shop/events");
    assert!(
        matches!(req.target.split_once('?'), None | Some((_, ""))),
        "{}",
        req.target
    );
    assert_eq!(req.header("content-type"), Some("application/json"));
    assert_eq!(req.header("authorization"), Some("Bearer token-one"));
    assert_eq!(seen[1].header("authorization"), Some("Bearer token-two"));
    let event: Value = serde_json::from_slice(&req.body).expect("JSON body");
    let stamp = event["eventTime"].as_str().expect("eventTime").to_string();
    assert_eq!(stamp.len(), "2026-11-22T03:41:07.123456Z".len(), "{stamp}");
    assert!(
        stamp.ends_with('Z') && stamp.as_bytes()[10] == b'T' && stamp.as_bytes()[19] == b'.',
        "{stamp}"
    );
    let after = to_the_microsecond(std::time::SystemTime::now());
    assert!(
        to_the_microsecond(before) <= stamp && stamp <= after,
        "{stamp} not between {} and {after}",
        to_the_microsecond(before)
    );
    // kube: the events.k8s.io/v1 shape (was core/v1's): `regarding` for `involvedObject`,
    // `note` for `message`, `reportingController` for `reportingComponent` and `source`, an
    // `action`, and `eventTime` instead of first/last timestamps and a count (the API refuses
    // those deprecated fields on create).
    assert_eq!(
        event,
        json!({
            "apiVersion": "events.k8s.io/v1",
            "kind": "Event",
            "metadata": {"generateName": "cart-7d9f8b6c5-x2x4z.oomtrace-", "namespace": "shop"},
            "regarding": {
                "apiVersion": "v1", "kind": "Pod", "name": "cart-7d9f8b6c5-x2x4z",
                "namespace": "shop", "uid": "0b3a3f2e-1c2d-4e5f-8a9b-0c1d2e3f4a5b"
            },
            "reason": "OOMKilling",
            "type": "Warning",
            "action": "OOMKill",
            "note": "OOM-killed pid 4242 (java) in container app",
            "reportingController": "oomtrace",
            "reportingInstance": "node-1",
            "eventTime": stamp,
        })
    );
    let second: Value = serde_json::from_slice(&seen[1].body).expect("JSON body");
    assert_eq!(second["note"], "again");
    assert_eq!(
        seen[1].method, "POST",
        "a second kill is a new Event, not a patch"
    );

    // RBAC refusal: the status and the server's message.
    let locked = PodMeta {
        namespace: "locked".to_string(),
        ..shop_pod()
    };
    let err = client
        .post_oom_event(&locked, "x", NODE)
        .await
        .expect_err("forbidden");
    assert_eq!(err.status(), Some(403), "{err}");
    let text = err.to_string();
    assert!(
        text.contains("HTTP 403") && text.contains("events is forbidden"),
        "{text}"
    );
    let _ = std::fs::remove_dir_all(&dir);
}

#[tokio::test]
async fn connection_refused_is_a_connect_error() {
    let port = {
        let l = TcpListener::bind("127.0.0.1:0").await.expect("bind");
        l.local_addr().expect("addr").port()
    };
    let base = ApiBase::new(Scheme::Http, "127.0.0.1", port).expect("base");
    let client = KubeClient::new(KubeConfig::new(base)).expect("client");
    let err = client
        .post_oom_event(&shop_pod(), "x", NODE)
        .await
        .expect_err("nothing listens");
    assert!(matches!(err, KubeError::Connect { .. }), "{err}");
}

#[test]
fn from_env_off_cluster_is_none() {
    if std::env::var_os("KUBERNETES_SERVICE_HOST").is_some() {
        eprintln!("skipped: KUBERNETES_SERVICE_HOST is set, this is not off cluster");
        return;
    }
    assert!(KubeClient::from_env()
        .expect("no error off cluster")
        .is_none());
}

/// Runs `openssl` with `args` in `dir`; false if it is not installed.
fn openssl(dir: &Path, args: &[&str]) -> bool {
    match std::process::Command::new("openssl")
        .args(args)
        .current_dir(dir)
        .output()
    {
        Ok(out) => {
            assert!(
                out.status.success(),
                "openssl {args:?}: {}",
                String::from_utf8_lossy(&out.stderr)
            );
            true
        }
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => false,
        Err(e) => panic!("running openssl: {e}"),
    }
}

/// A CA and a server certificate for 127.0.0.1 signed by it, like a cluster's. `None` without
/// the `openssl` command.
fn make_certificates(dir: &Path, with_server: bool) -> Option<()> {
    let ec = [
        "-newkey",
        "ec",
        "-pkeyopt",
        "ec_paramgen_curve:P-256",
        "-nodes",
    ];
    let mut ca = vec!["req", "-x509"];
    ca.extend(ec);
    ca.extend([
        "-keyout",
        "ca.key",
        "-out",
        "ca.crt",
        "-days",
        "2",
        "-subj",
        "/CN=test-ca",
    ]);
    if !openssl(dir, &ca) {
        return None;
    }
    if with_server {
        let mut csr = vec!["req", "-new"];
        csr.extend(ec);
        csr.extend([
            "-keyout",
            "server.key",
            "-out",
            "server.csr",
            "-subj",
            "/CN=kube-apiserver",
        ]);
        openssl(dir, &csr);
        std::fs::write(
            dir.join("ext.cnf"),
            "basicConstraints=CA:FALSE\nkeyUsage=digitalSignature\n\
             extendedKeyUsage=serverAuth\nsubjectAltName=IP:127.0.0.1\n",
        )
        .expect("write ext.cnf");
        openssl(
            dir,
            &[
                "x509",
                "-req",
                "-in",
                "server.csr",
                "-CA",
                "ca.crt",
                "-CAkey",
                "ca.key",
                "-CAcreateserial",
                "-days",
                "2",
                "-extfile",
                "ext.cnf",
                "-out",
                "server.crt",
            ],
        );
    }
    Some(())
}

#[tokio::test]
async fn speaks_tls_to_a_server_signed_by_the_given_ca() {
    use rustls_pki_types::pem::PemObject;
    use rustls_pki_types::{CertificateDer, PrivateKeyDer};

    let dir = temp_dir("tls");
    let other = dir.join("other");
    std::fs::create_dir_all(&other).expect("dir");
    if make_certificates(&dir, true).is_none() || make_certificates(&other, false).is_none() {
        eprintln!("skipped: no openssl command to make test certificates");
        return;
    }
    let read = |p: PathBuf| std::fs::read(&p).expect("read certificate file");
    let chain = vec![CertificateDer::from_pem_slice(&read(dir.join("server.crt"))).expect("cert")];
    let key = PrivateKeyDer::from_pem_slice(&read(dir.join("server.key"))).expect("key");
    let server = rustls::ServerConfig::builder_with_provider(Arc::new(
        rustls::crypto::ring::default_provider(),
    ))
    .with_safe_default_protocol_versions()
    .expect("TLS versions")
    .with_no_client_auth()
    .with_single_cert(chain, key)
    .expect("server config");
    let acceptor = tokio_rustls::TlsAcceptor::from(Arc::new(server));
    let api = FakeApi::start_with(event_handler(), Some(acceptor)).await;

    let mut config = KubeConfig::new(api.base(Scheme::Https));
    config.token = Some(TOKEN.to_string());
    config.ca_pem = Some(read(dir.join("ca.crt")));
    let client = KubeClient::new(config.clone()).expect("client");
    client
        .post_oom_event(&shop_pod(), "over TLS", NODE)
        .await
        .expect("event posted over TLS");
    let seen = api.seen();
    assert_eq!(seen.len(), 1);
    assert_eq!(seen[0].header("authorization"), Some("Bearer test-token"));

    // The CA named as a file too, as in a pod: kube verifies with the file, not the PEM read
    // at start (it re-reads the file about once a minute, for CA rotation).
    config.ca_pem = Some(read(other.join("ca.crt")));
    config.ca_file = Some(dir.join("ca.crt"));
    KubeClient::new(config.clone())
        .expect("client")
        .post_oom_event(&shop_pod(), "over TLS, CA file", NODE)
        .await
        .expect("event posted over TLS with the CA file");
    assert_eq!(api.seen().len(), 2);

    // A server the CA did not sign is refused before anything is sent, whether the CA is
    // given as PEM or as a file.
    config.ca_file = None;
    let err = KubeClient::new(config.clone())
        .expect("client")
        .post_oom_event(&shop_pod(), "x", NODE)
        .await
        .expect_err("untrusted server");
    assert!(matches!(err, KubeError::Tls { .. }), "{err}");
    config.ca_file = Some(other.join("ca.crt"));
    let err = KubeClient::new(config)
        .expect("client")
        .post_oom_event(&shop_pod(), "x", NODE)
        .await
        .expect_err("untrusted server (CA file)");
    assert!(matches!(err, KubeError::Tls { .. }), "{err}");
    assert_eq!(api.seen().len(), 2);
    let _ = std::fs::remove_dir_all(&dir);
}

/// `n` pods `p-0`…, with one container each.
fn numbered_pods(n: usize) -> Vec<Value> {
    (0..n)
        .map(|i| {
            pod(
                &format!("p-{i}"),
                &format!("uid-{i}"),
                "5",
                json!({"app": "p"}),
                None,
                &[("app", &format!("containerd://{i:064x}"))],
            )
        })
        .collect()
}

/// A list of `all`, paged as the API server pages it: `limit` items from the offset the
/// `continue` token names.
fn paged(req: &Seen, all: &[Value]) -> Reply {
    let limit: usize = req
        .query("limit")
        .map_or(all.len(), |l| l.parse().expect("limit"));
    let from: usize = req.query("continue").map_or(0, |c| {
        c.strip_prefix("off-")
            .expect("our token")
            .parse()
            .expect("offset")
    });
    let to = (from + limit).min(all.len());
    let next = (to < all.len()).then(|| format!("off-{to}"));
    pod_list("20", next.as_deref(), all[from..to].to_vec())
}

#[tokio::test]
async fn lists_in_pages_of_100_by_default() {
    let all = numbered_pods(250);
    let served = all.clone();
    let handler: Handler = Arc::new(move |req: &Seen, _: &[Seen]| {
        if req.is_pod_list() {
            return paged(req, &served);
        }
        if req.is_pod_watch() {
            return Reply::Hold;
        }
        not_found(req)
    });
    let api = FakeApi::start(handler).await;
    let (pods, task) = client(&api)
        .spawn_pod_watch(NODE, WatchOptions::default())
        .expect("watcher starts");
    let seen = api
        .wait_for("the watch after the list", |s| !watches_from(s).is_empty())
        .await;
    let lists: Vec<(Option<String>, Option<String>)> = seen
        .iter()
        .filter(|s| s.is_pod_list())
        .map(|s| (s.query("limit"), s.query("continue")))
        .collect();
    let page = |c: Option<&str>| (Some("100".to_string()), c.map(String::from));
    assert_eq!(
        lists,
        [page(None), page(Some("off-100")), page(Some("off-200"))]
    );
    assert!(pods.is_synced());
    assert_eq!(pods.len(), 250);
    assert_eq!(
        pods.by_container_id(&format!("{:064x}", 249))
            .map(|p| p.name),
        Some("p-249".to_string())
    );
    task.abort();
}

#[tokio::test]
async fn an_oversized_list_page_is_not_read_whole() {
    // One pod carrying an annotation past the cap: the page is cut off, counted as a failure
    // and listed again after the backoff, when it is small.
    let mut fat = numbered_pods(1).remove(0);
    let oversized = oomtrace::enrich::kube::MAX_RESPONSE_BYTES + 1;
    fat["metadata"]["annotations"]["padding"] = json!("x".repeat(oversized));
    let small = numbered_pods(3);
    let handler: Handler = Arc::new(move |req: &Seen, before: &[Seen]| {
        if req.is_pod_list() {
            return match before.iter().filter(|s| s.is_pod_list()).count() {
                0 => pod_list("30", None, vec![fat.clone()]),
                _ => paged(req, &small),
            };
        }
        if req.is_pod_watch() {
            return Reply::Hold;
        }
        not_found(req)
    });
    let api = FakeApi::start(handler).await;
    let (pods, task) = client(&api)
        .spawn_pod_watch(NODE, WatchOptions::default())
        .expect("watcher starts");
    let seen = api
        .wait_for("the watch after the second list", |s| {
            !watches_from(s).is_empty()
        })
        .await;
    assert_eq!(seen.iter().filter(|s| s.is_pod_list()).count(), 2);
    let stats = pods.stats();
    assert_eq!(stats.failures, 1, "the oversized page: {stats:?}");
    assert!(pods.is_synced());
    assert_eq!(pods.len(), 3);
    assert_eq!(
        pods.by_uid("uid-0").map(|p| p.name),
        Some("p-0".to_string())
    );
    task.abort();
}

#[tokio::test]
async fn a_token_over_plain_http_is_refused_unless_the_host_is_loopback() {
    let with_token = |url: &str| {
        let mut config = KubeConfig::new(ApiBase::parse(url).expect("valid URL"));
        config.token = Some(TOKEN.to_string());
        KubeClient::new(config)
    };
    // 192.0.2.0/24 is TEST-NET-1: nothing is sent anywhere, the refusal comes first.
    let Err(e) = with_token("http://192.0.2.10:8080") else {
        panic!("a token in clear text to a remote host was accepted");
    };
    assert!(matches!(e, KubeError::Config(_)), "{e:?}");
    assert_eq!(
        e.to_string(),
        "Kubernetes API configuration: refusing to send the bearer token in clear text to \
         http://192.0.2.10:8080: use https:// with a CA (--kube-ca-file), or plain http:// only \
         to a proxy on a loopback address (kubectl proxy listens on 127.0.0.1)"
    );
    // A token file counts as a token.
    let mut config = KubeConfig::new(ApiBase::parse("http://api.example").expect("valid URL"));
    config.token_file = Some(PathBuf::from("/nonexistent/token"));
    assert!(KubeClient::new(config).is_err());
    // To a loopback proxy the token goes, on every request.
    let api = FakeApi::start(event_handler()).await;
    let client = with_token(&format!("http://localhost:{}", api.addr.port())).expect("loopback");
    client
        .post_oom_event(&shop_pod(), "OOM-killed", NODE)
        .await
        .expect("posted");
    let seen = api.seen();
    assert_eq!(seen.len(), 1);
    assert_eq!(seen[0].header("authorization"), Some("Bearer test-token"));
}
