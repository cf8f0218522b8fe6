//! A small HTTP/1.1 client: one request per connection (`Connection: close`), over plain TCP or
//! rustls; responses framed by `Content-Length`, `Transfer-Encoding: chunked` or the end of
//! the connection. Enough for the API server's list, watch and create calls, nothing more.

use std::io;
use std::sync::Arc;

use rustls_pki_types::pem::PemObject;
use rustls_pki_types::{CertificateDer, ServerName};
use tokio::io::{AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt};
use tokio::net::TcpStream;
use tokio_rustls::TlsConnector;

use super::chunked::ChunkedDecoder;
use super::config::{ApiBase, Scheme};
use super::KubeError;

/// Largest response head (status line and headers) accepted.
const MAX_HEAD: usize = 64 * 1024;
/// Read size.
const READ_BUF: usize = 16 * 1024;

/// A connection, plain or TLS.
pub(crate) trait Io: AsyncRead + AsyncWrite + Unpin + Send {}
impl<T: AsyncRead + AsyncWrite + Unpin + Send> Io for T {}

/// Opens connections to one API server.
pub(crate) struct Connector {
    base: ApiBase,
    tls: Option<(TlsConnector, ServerName<'static>)>,
}

impl Connector {
    /// For `https`, trusts only the certificates in `ca_pem`, with rustls' ring provider.
    pub(crate) fn new(base: ApiBase, ca_pem: Option<&[u8]>) -> Result<Self, KubeError> {
        let tls = match base.scheme {
            Scheme::Http => None,
            Scheme::Https => {
                let pem = ca_pem.ok_or_else(|| {
                    KubeError::Config(format!("{base}: https needs a CA certificate"))
                })?;
                let config = tls_config(pem)?;
                let name = ServerName::try_from(base.host.clone()).map_err(|e| {
                    KubeError::Config(format!("{:?} as a TLS server name: {e}", base.host))
                })?;
                Some((TlsConnector::from(Arc::new(config)), name))
            }
        };
        Ok(Self { base, tls })
    }

    pub(crate) fn base(&self) -> &ApiBase {
        &self.base
    }

    pub(crate) async fn connect(&self) -> Result<Box<dyn Io>, KubeError> {
        let addr = self.base.authority();
        let tcp = TcpStream::connect((self.base.host.as_str(), self.base.port))
            .await
            .map_err(|source| KubeError::Connect {
                addr: addr.clone(),
                source,
            })?;
        match &self.tls {
            None => Ok(Box::new(tcp)),
            Some((connector, name)) => {
                let tls = connector
                    .connect(name.clone(), tcp)
                    .await
                    .map_err(|source| KubeError::Tls { addr, source })?;
                Ok(Box::new(tls))
            }
        }
    }
}

/// A rustls client configuration trusting the PEM certificates given, and nothing else.
fn tls_config(ca_pem: &[u8]) -> Result<rustls::ClientConfig, KubeError> {
    let mut roots = rustls::RootCertStore::empty();
    for cert in CertificateDer::pem_slice_iter(ca_pem) {
        let cert =
            cert.map_err(|e| KubeError::Config(format!("CA certificate file: bad PEM: {e}")))?;
        roots
            .add(cert)
            .map_err(|e| KubeError::Config(format!("CA certificate: {e}")))?;
    }
    if roots.is_empty() {
        return Err(KubeError::Config(
            "CA certificate file holds no certificate".to_string(),
        ));
    }
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    let mut config = rustls::ClientConfig::builder_with_provider(provider)
        .with_safe_default_protocol_versions()
        .map_err(|e| KubeError::Config(format!("TLS: {e}")))?
        .with_root_certificates(roots)
        .with_no_client_auth();
    config.alpn_protocols = vec![b"http/1.1".to_vec()];
    Ok(config)
}

/// Encodes a request. `path` includes the query and is already percent-encoded.
pub(crate) fn encode_request(
    method: &str,
    authority: &str,
    path: &str,
    token: Option<&str>,
    body: Option<&[u8]>,
) -> Vec<u8> {
    let mut head = format!(
        "{method} {path} HTTP/1.1\r\nHost: {authority}\r\nUser-Agent: oomtrace/{}\r\n\
         Accept: application/json\r\nConnection: close\r\n",
        env!("CARGO_PKG_VERSION")
    );
    if let Some(token) = token {
        head.push_str("Authorization: Bearer ");
        head.push_str(token);
        head.push_str("\r\n");
    }
    if let Some(body) = body {
        head.push_str("Content-Type: application/json\r\n");
        head.push_str(&format!("Content-Length: {}\r\n", body.len()));
    }
    head.push_str("\r\n");
    let mut out = head.into_bytes();
    out.extend_from_slice(body.unwrap_or_default());
    out
}

/// A response's status line and headers (names in lower case).
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct ResponseHead {
    pub status: u16,
    pub headers: Vec<(String, String)>,
}

impl ResponseHead {
    pub(crate) fn header(&self, name: &str) -> Option<&str> {
        self.headers
            .iter()
            .find(|(n, _)| n == name)
            .map(|(_, v)| v.as_str())
    }
}

/// Where the head ends (`\r\n\r\n`, or `\n\n`): the index of the body's first byte.
pub(crate) fn head_end(buf: &[u8]) -> Option<usize> {
    let mut i = 0;
    while let Some(off) = buf[i..].iter().position(|&b| b == b'\n') {
        let nl = i + off;
        match buf.get(nl + 1) {
            Some(b'\n') => return Some(nl + 2),
            Some(b'\r') if buf.get(nl + 2) == Some(&b'\n') => return Some(nl + 3),
            _ => i = nl + 1,
        }
    }
    None
}

/// Parses a response head (everything before the empty line).
pub(crate) fn parse_head(head: &[u8]) -> Result<ResponseHead, KubeError> {
    let text = std::str::from_utf8(head)
        .map_err(|_| KubeError::Http("response head is not UTF-8".to_string()))?;
    let mut lines = text.split('\n').map(|l| l.strip_suffix('\r').unwrap_or(l));
    let status_line = lines.next().unwrap_or_default();
    let mut parts = status_line.splitn(3, ' ');
    let version = parts.next().unwrap_or_default();
    let code = parts.next().unwrap_or_default();
    if !version.starts_with("HTTP/1.") || code.len() != 3 {
        return Err(KubeError::Http(format!(
            "bad status line {:?}",
            truncate(status_line, 100)
        )));
    }
    let status = code
        .parse::<u16>()
        .ok()
        .filter(|s| (100..=599).contains(s))
        .ok_or_else(|| KubeError::Http(format!("bad status code {code:?}")))?;
    let mut headers = Vec::new();
    for line in lines.filter(|l| !l.is_empty()) {
        let (name, value) = line
            .split_once(':')
            .ok_or_else(|| KubeError::Http(format!("bad header line {:?}", truncate(line, 100))))?;
        headers.push((name.trim().to_ascii_lowercase(), value.trim().to_string()));
    }
    Ok(ResponseHead { status, headers })
}

/// How the body of a response is delimited.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) enum Framing {
    Length(u64),
    Chunked,
    /// Until the server closes the connection.
    Eof,
}

pub(crate) fn framing(head: &ResponseHead) -> Result<Framing, KubeError> {
    if head.status == 204 || head.status == 304 {
        return Ok(Framing::Length(0));
    }
    if let Some(te) = head.header("transfer-encoding") {
        let last = te.rsplit(',').next().unwrap_or_default().trim();
        return if last.eq_ignore_ascii_case("chunked") {
            Ok(Framing::Chunked)
        } else {
            Err(KubeError::Http(format!(
                "unsupported Transfer-Encoding {:?}",
                truncate(te, 100)
            )))
        };
    }
    if let Some(cl) = head.header("content-length") {
        return cl
            .parse::<u64>()
            .map(Framing::Length)
            .map_err(|_| KubeError::Http(format!("bad Content-Length {:?}", truncate(cl, 100))));
    }
    Ok(Framing::Eof)
}

/// A response whose head has been read; the body is read with [`Body`].
pub(crate) struct Response {
    pub head: ResponseHead,
    pub body: Body,
}

/// Reads a response body, undoing its framing.
pub(crate) struct Body {
    io: Box<dyn Io>,
    /// Bytes read from the connection but not yet decoded.
    pending: Vec<u8>,
    state: BodyState,
    decoder: ChunkedDecoder,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum BodyState {
    /// This many bytes left.
    Length(u64),
    Chunked,
    Eof,
    Done,
}

impl Body {
    /// The next piece of body bytes (never empty), or `None` at the end of the body.
    pub(crate) async fn next_chunk(&mut self) -> Result<Option<Vec<u8>>, KubeError> {
        loop {
            match self.state {
                BodyState::Done | BodyState::Length(0) => {
                    self.state = BodyState::Done;
                    return Ok(None);
                }
                BodyState::Length(left) => {
                    if self.pending.is_empty() && !self.fill().await? {
                        return Err(KubeError::Http("body ended early".to_string()));
                    }
                    let take = usize::try_from(left)
                        .unwrap_or(usize::MAX)
                        .min(self.pending.len());
                    self.state = BodyState::Length(left - take as u64);
                    let rest = self.pending.split_off(take);
                    return Ok(Some(std::mem::replace(&mut self.pending, rest)));
                }
                BodyState::Chunked => {
                    let mut out = Vec::new();
                    let used = self
                        .decoder
                        .decode(&self.pending, &mut out)
                        .map_err(|e| KubeError::Http(e.to_string()))?;
                    self.pending.drain(..used);
                    if self.decoder.is_done() {
                        self.state = BodyState::Done;
                    }
                    if !out.is_empty() {
                        return Ok(Some(out));
                    }
                    if self.state == BodyState::Done {
                        return Ok(None);
                    }
                    if !self.fill().await? {
                        return Err(KubeError::Http(
                            "connection closed inside a chunked body".to_string(),
                        ));
                    }
                }
                BodyState::Eof => {
                    if self.pending.is_empty() && !self.fill().await? {
                        self.state = BodyState::Done;
                        return Ok(None);
                    }
                    return Ok(Some(std::mem::take(&mut self.pending)));
                }
            }
        }
    }

    /// The whole body, failing if it grows past `limit` bytes.
    pub(crate) async fn read_to_end(&mut self, limit: usize) -> Result<Vec<u8>, KubeError> {
        let mut all = Vec::new();
        while let Some(piece) = self.next_chunk().await? {
            if all.len() + piece.len() > limit {
                return Err(KubeError::Http(format!(
                    "response body larger than {limit} bytes"
                )));
            }
            all.extend_from_slice(&piece);
        }
        Ok(all)
    }

    /// Reads more from the connection into `pending`; false at end of stream.
    async fn fill(&mut self) -> Result<bool, KubeError> {
        read_more(&mut self.io, &mut self.pending).await
    }
}

async fn read_more(io: &mut Box<dyn Io>, buf: &mut Vec<u8>) -> Result<bool, KubeError> {
    let mut tmp = [0u8; READ_BUF];
    match io.read(&mut tmp).await {
        Ok(0) => Ok(false),
        Ok(n) => {
            buf.extend_from_slice(&tmp[..n]);
            Ok(true)
        }
        // A TLS peer that closes without close_notify: treat as the end of the stream, the
        // framing decides whether the body was complete.
        Err(e) if e.kind() == io::ErrorKind::UnexpectedEof => Ok(false),
        Err(source) => Err(KubeError::Io {
            context: "reading the response",
            source,
        }),
    }
}

/// Sends `request` (from [`encode_request`]) and reads the response head (skipping `1xx`).
pub(crate) async fn send(mut io: Box<dyn Io>, request: &[u8]) -> Result<Response, KubeError> {
    io.write_all(request)
        .await
        .map_err(|source| KubeError::Io {
            context: "sending the request",
            source,
        })?;
    io.flush().await.map_err(|source| KubeError::Io {
        context: "sending the request",
        source,
    })?;
    let mut buf = Vec::new();
    loop {
        let end = loop {
            if let Some(end) = head_end(&buf) {
                break end;
            }
            if buf.len() > MAX_HEAD {
                return Err(KubeError::Http("response head too large".to_string()));
            }
            if !read_more(&mut io, &mut buf).await? {
                return Err(KubeError::Http(if buf.is_empty() {
                    "connection closed before any response".to_string()
                } else {
                    "connection closed inside the response head".to_string()
                }));
            }
        };
        let head = parse_head(&buf[..end])?;
        buf.drain(..end);
        if (100..200).contains(&head.status) {
            continue;
        }
        let state = match framing(&head)? {
            Framing::Length(n) => BodyState::Length(n),
            Framing::Chunked => BodyState::Chunked,
            Framing::Eof => BodyState::Eof,
        };
        return Ok(Response {
            head,
            body: Body {
                io,
                pending: buf,
                state,
                decoder: ChunkedDecoder::new(),
            },
        });
    }
}

/// At most `max` bytes of `s`, cut at a character boundary.
pub(crate) fn truncate(s: &str, max: usize) -> &str {
    if s.len() <= max {
        return s;
    }
    let mut end = max;
    while !s.is_char_boundary(end) {
        end -= 1;
    }
    &s[..end]
}

/// Percent-encodes a query value: everything but RFC 3986 unreserved characters.
pub(crate) fn encode_query_value(s: &str) -> String {
    let mut out = String::with_capacity(s.len());
    for b in s.bytes() {
        if b.is_ascii_alphanumeric() || matches!(b, b'-' | b'.' | b'_' | b'~') {
            out.push(char::from(b));
        } else {
            out.push_str(&format!("%{b:02X}"));
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn encodes_requests() {
        let req = encode_request(
            "POST",
            "10.0.0.1:443",
            "/api/v1/x?a=b",
            Some("tok"),
            Some(b"{}"),
        );
        let text = String::from_utf8(req).expect("ascii");
        assert!(text.starts_with("POST /api/v1/x?a=b HTTP/1.1\r\nHost: 10.0.0.1:443\r\n"));
        assert!(text.contains("\r\nAuthorization: Bearer tok\r\n"));
        assert!(text.contains("\r\nContent-Length: 2\r\n"));
        assert!(text.ends_with("\r\n\r\n{}"));
        let get = String::from_utf8(encode_request("GET", "h:1", "/", None, None)).expect("ascii");
        assert!(!get.contains("Authorization") && !get.contains("Content-Length"));
        assert!(get.ends_with("Connection: close\r\n\r\n"));
    }

    #[test]
    fn parses_heads_and_framing() {
        let raw = b"HTTP/1.1 200 OK\r\nContent-Type: application/json\r\nTransfer-Encoding: chunked\r\n\r\n5\r\n";
        let end = head_end(raw).expect("complete");
        assert_eq!(&raw[end..], b"5\r\n");
        let head = parse_head(&raw[..end]).expect("valid");
        assert_eq!(head.status, 200);
        assert_eq!(head.header("content-type"), Some("application/json"));
        assert_eq!(framing(&head).expect("known"), Framing::Chunked);

        let head = parse_head(b"HTTP/1.0 410 Gone\nContent-Length: 12\n").expect("bare LF");
        assert_eq!(head.status, 410);
        assert_eq!(framing(&head).expect("known"), Framing::Length(12));
        let head = parse_head(b"HTTP/1.1 204 No Content\r\n").expect("valid");
        assert_eq!(framing(&head).expect("known"), Framing::Length(0));
        let head = parse_head(b"HTTP/1.1 200 OK\r\n").expect("valid");
        assert_eq!(framing(&head).expect("known"), Framing::Eof);
        let head = parse_head(b"HTTP/1.1 200 OK\r\nTransfer-Encoding: gzip\r\n").expect("valid");
        assert!(framing(&head).is_err());
        let head = parse_head(b"HTTP/1.1 200 OK\r\nContent-Length: -1\r\n").expect("valid");
        assert!(framing(&head).is_err());

        assert_eq!(head_end(b"HTTP/1.1 200 OK\r\nA: b\r\n"), None);
        for bad in [
            &b"SSH-2.0-OpenSSH"[..],
            b"HTTP/1.1 2000 OK",
            b"HTTP/1.1 099 X",
            b"HTTP/1.1 200 OK\r\nno colon",
            b"HTTP/1.1 \xff\xfe",
            b"",
        ] {
            assert!(parse_head(bad).is_err(), "{bad:?}");
        }
    }

    #[test]
    fn encodes_query_values() {
        assert_eq!(
            encode_query_value("spec.nodeName=node-1"),
            "spec.nodeName%3Dnode-1"
        );
        assert_eq!(encode_query_value("eyJ2Ijo/+=="), "eyJ2Ijo%2F%2B%3D%3D");
        assert_eq!(truncate("héllo", 2), "h");
    }

    #[test]
    fn tls_config_needs_a_certificate() {
        assert!(tls_config(b"").is_err());
        assert!(
            tls_config(b"-----BEGIN CERTIFICATE-----\n!!!\n-----END CERTIFICATE-----\n").is_err()
        );
        let base = ApiBase::parse("https://10.96.0.1").expect("valid");
        assert!(Connector::new(base, None).is_err());
    }
}
