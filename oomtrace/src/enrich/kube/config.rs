//! Where the API server is and how to authenticate: in-cluster (service account) or injected.

use std::fmt;
use std::io;
use std::path::{Path, PathBuf};

use super::KubeError;

/// The service account directory the kubelet mounts into every pod that has a token.
pub const SERVICE_ACCOUNT_DIR: &str = "/var/run/secrets/kubernetes.io/serviceaccount";

/// `http` (tests, `kubectl proxy`) or `https` (the API server).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Scheme {
    Http,
    Https,
}

/// The API server's base URL: scheme, host (a DNS name or an IP address, IPv6 without
/// brackets) and port. No path: the API paths start at `/`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ApiBase {
    pub scheme: Scheme,
    pub host: String,
    pub port: u16,
}

impl ApiBase {
    /// Parses `http://HOST[:PORT]` or `https://HOST[:PORT]` (IPv6 as `[addr]`; a trailing `/`
    /// is allowed, any other path is not). The default ports are 80 and 443.
    pub fn parse(url: &str) -> Result<Self, KubeError> {
        let bad = |why: &str| KubeError::Config(format!("API server URL {url:?}: {why}"));
        let (scheme, rest) = if let Some(rest) = url.strip_prefix("https://") {
            (Scheme::Https, rest)
        } else if let Some(rest) = url.strip_prefix("http://") {
            (Scheme::Http, rest)
        } else {
            return Err(bad("must start with http:// or https://"));
        };
        let authority = rest.strip_suffix('/').unwrap_or(rest);
        let default_port = match scheme {
            Scheme::Http => 80,
            Scheme::Https => 443,
        };
        let (host, port) = if let Some(v6) = authority.strip_prefix('[') {
            let (host, after) = v6.split_once(']').ok_or_else(|| bad("unclosed '['"))?;
            match after {
                "" => (host, None),
                _ => (
                    host,
                    Some(
                        after
                            .strip_prefix(':')
                            .ok_or_else(|| bad("junk after ']'"))?,
                    ),
                ),
            }
        } else {
            match authority.rsplit_once(':') {
                Some((host, port)) => (host, Some(port)),
                None => (authority, None),
            }
        };
        let port = match port {
            None => default_port,
            Some(p) => parse_port(p).ok_or_else(|| bad("bad port"))?,
        };
        Self::new(scheme, host, port)
    }

    /// Checks the host (no spaces, slashes, user info or control characters).
    pub fn new(scheme: Scheme, host: &str, port: u16) -> Result<Self, KubeError> {
        let host = host
            .strip_prefix('[')
            .and_then(|h| h.strip_suffix(']'))
            .unwrap_or(host);
        let valid = !host.is_empty()
            && host.bytes().all(|b| {
                b.is_ascii_alphanumeric() || matches!(b, b'.' | b'-' | b':' | b'_' | b'%')
            });
        if !valid {
            return Err(KubeError::Config(format!("bad API server host {host:?}")));
        }
        Ok(Self {
            scheme,
            host: host.to_string(),
            port,
        })
    }

    /// `host:port` as the `Host` header wants it (IPv6 in brackets).
    pub fn authority(&self) -> String {
        if self.host.contains(':') {
            format!("[{}]:{}", self.host, self.port)
        } else {
            format!("{}:{}", self.host, self.port)
        }
    }
}

impl fmt::Display for ApiBase {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let scheme = match self.scheme {
            Scheme::Http => "http",
            Scheme::Https => "https",
        };
        write!(f, "{scheme}://{}", self.authority())
    }
}

fn parse_port(s: &str) -> Option<u16> {
    match s.parse::<u16>() {
        Ok(p) if p != 0 && s.bytes().all(|b| b.is_ascii_digit()) => Some(p),
        _ => None,
    }
}

/// How to reach and authenticate to the API server.
///
/// The bearer token is `token_file`'s content, re-read at every request (bound service
/// account tokens rotate, about hourly), or `token` when there is no file or it cannot be read
/// at that moment. `ca_pem` (PEM certificates) is the only trust anchor for `https`; when
/// `ca_file` is set too, kube verifies with that file instead, re-reading it about once a
/// minute (the service account's CA rotates like its token). `https` needs one of them.
#[derive(Clone)]
pub struct KubeConfig {
    pub base: ApiBase,
    pub token: Option<String>,
    pub token_file: Option<PathBuf>,
    pub ca_pem: Option<Vec<u8>>,
    pub ca_file: Option<PathBuf>,
}

impl fmt::Debug for KubeConfig {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("KubeConfig")
            .field("base", &self.base)
            .field("token", &self.token.as_ref().map(|_| "<redacted>"))
            .field("token_file", &self.token_file)
            .field("ca_pem", &self.ca_pem.as_ref().map(Vec::len))
            .field("ca_file", &self.ca_file)
            .finish()
    }
}

impl KubeConfig {
    /// A configuration with no token and no CA (enough for `http://` test servers).
    pub fn new(base: ApiBase) -> Self {
        Self {
            base,
            token: None,
            token_file: None,
            ca_pem: None,
            ca_file: None,
        }
    }

    /// The in-cluster configuration: `KUBERNETES_SERVICE_HOST`/`KUBERNETES_SERVICE_PORT` and
    /// the service account's token and CA under [`SERVICE_ACCOUNT_DIR`].
    ///
    /// `Ok(None)`, quietly, when not running in a pod: either variable unset or empty, or no
    /// token file (`automountServiceAccountToken: false`). An error when it looks like a pod
    /// but something is wrong: a bad port, an unreadable token or CA.
    pub fn in_cluster() -> Result<Option<Self>, KubeError> {
        let host = std::env::var("KUBERNETES_SERVICE_HOST").ok();
        let port = std::env::var("KUBERNETES_SERVICE_PORT").ok();
        Self::in_cluster_from(
            host.as_deref(),
            port.as_deref(),
            Path::new(SERVICE_ACCOUNT_DIR),
        )
    }

    /// [`Self::in_cluster`] with the variables' values and the directory given.
    pub fn in_cluster_from(
        host: Option<&str>,
        port: Option<&str>,
        service_account_dir: &Path,
    ) -> Result<Option<Self>, KubeError> {
        let (Some(host), Some(port)) = (host, port) else {
            return Ok(None);
        };
        if host.is_empty() || port.is_empty() {
            return Ok(None);
        }
        let token_file = service_account_dir.join("token");
        let token = match std::fs::read_to_string(&token_file) {
            Ok(t) => clean_token(&t, &token_file)?,
            Err(e) if e.kind() == io::ErrorKind::NotFound => return Ok(None),
            Err(source) => {
                return Err(KubeError::Read {
                    path: token_file,
                    source,
                })
            }
        };
        let port = parse_port(port).ok_or_else(|| {
            KubeError::Config(format!("KUBERNETES_SERVICE_PORT {port:?} is not a port"))
        })?;
        let base = ApiBase::new(Scheme::Https, host, port)?;
        let ca_file = service_account_dir.join("ca.crt");
        let ca_pem = std::fs::read(&ca_file).map_err(|source| KubeError::Read {
            path: ca_file.clone(),
            source,
        })?;
        Ok(Some(Self {
            base,
            token: Some(token),
            token_file: Some(token_file),
            ca_pem: Some(ca_pem),
            ca_file: Some(ca_file),
        }))
    }

    /// The token to send now: the file's current content, else the fixed token.
    ///
    /// Not kube's token-file auth: that one re-reads the file only once a minute and sends its
    /// content as it is, so a file ending in a newline (`echo $TOKEN > file`) makes every
    /// request fail with an invalid `Authorization` header.
    pub(crate) fn current_token(&self) -> Result<Option<String>, KubeError> {
        if let Some(path) = &self.token_file {
            match std::fs::read_to_string(path) {
                Ok(t) => return clean_token(&t, path).map(Some),
                Err(e) => log::debug!(
                    "re-reading the service account token {}: {e}; using the previous one",
                    path.display()
                ),
            }
        }
        match &self.token {
            Some(t) => clean_token(t, Path::new("the configured token")).map(Some),
            None => Ok(None),
        }
    }
}

/// Trims the token; refuses an empty one or one that would break the `Authorization` header.
fn clean_token(raw: &str, from: &Path) -> Result<String, KubeError> {
    let token = raw.trim();
    if token.is_empty() || token.bytes().any(|b| b.is_ascii_control()) {
        return Err(KubeError::Config(format!(
            "bearer token from {} is empty or has control characters",
            from.display()
        )));
    }
    Ok(token.to_string())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_base_urls() {
        let b = ApiBase::parse("http://127.0.0.1:8080").expect("valid");
        assert_eq!(
            (b.scheme, b.host.as_str(), b.port),
            (Scheme::Http, "127.0.0.1", 8080)
        );
        assert_eq!(b.to_string(), "http://127.0.0.1:8080");
        let b = ApiBase::parse("https://kubernetes.default.svc/").expect("valid");
        assert_eq!((b.scheme, b.port), (Scheme::Https, 443));
        let b = ApiBase::parse("https://[fd00::1]:6443").expect("valid");
        assert_eq!((b.host.as_str(), b.port), ("fd00::1", 6443));
        assert_eq!(b.authority(), "[fd00::1]:6443");
        let b = ApiBase::new(Scheme::Https, "fd00::1", 443).expect("valid");
        assert_eq!(b.authority(), "[fd00::1]:443");
        for bad in [
            "ftp://x",
            "http://",
            "http://a b:80",
            "http://h:0",
            "http://h:99999",
            "http://h:+80",
            "http://user@h:80",
            "http://h:80/api",
            "https://[::1",
            "https://[::1]x",
        ] {
            assert!(ApiBase::parse(bad).is_err(), "{bad}");
        }
    }

    fn temp_dir(tag: &str) -> PathBuf {
        let dir = std::env::temp_dir().join(format!("oomtrace-kube-{tag}-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&dir);
        std::fs::create_dir_all(&dir).expect("temp dir");
        dir
    }

    #[test]
    fn off_cluster_is_quietly_none() {
        let dir = temp_dir("off");
        assert!(KubeConfig::in_cluster_from(None, Some("443"), &dir)
            .expect("no error")
            .is_none());
        assert!(KubeConfig::in_cluster_from(Some(""), Some("443"), &dir)
            .expect("no error")
            .is_none());
        assert!(KubeConfig::in_cluster_from(Some("10.96.0.1"), None, &dir)
            .expect("no error")
            .is_none());
        // Variables set, but no token mounted.
        assert!(
            KubeConfig::in_cluster_from(Some("10.96.0.1"), Some("443"), &dir)
                .expect("no error")
                .is_none()
        );
        let _ = std::fs::remove_dir_all(&dir);
    }

    #[test]
    fn in_cluster_reads_token_and_ca_and_follows_rotation() {
        let dir = temp_dir("in");
        std::fs::write(dir.join("token"), "tok-1\n").expect("write");
        // A token but no CA: misconfigured, an error.
        assert!(matches!(
            KubeConfig::in_cluster_from(Some("10.96.0.1"), Some("443"), &dir),
            Err(KubeError::Read { .. })
        ));
        std::fs::write(dir.join("ca.crt"), b"PEM").expect("write");
        assert!(matches!(
            KubeConfig::in_cluster_from(Some("10.96.0.1"), Some("https"), &dir),
            Err(KubeError::Config(_))
        ));
        let c = KubeConfig::in_cluster_from(Some("10.96.0.1"), Some("443"), &dir)
            .expect("valid")
            .expect("in cluster");
        assert_eq!(c.base.to_string(), "https://10.96.0.1:443");
        assert_eq!(c.ca_pem.as_deref(), Some(&b"PEM"[..]));
        assert_eq!(c.ca_file, Some(dir.join("ca.crt")));
        assert_eq!(c.current_token().expect("token").as_deref(), Some("tok-1"));
        assert!(!format!("{c:?}").contains("tok-1"), "Debug hides the token");
        std::fs::write(dir.join("token"), "tok-2").expect("write");
        assert_eq!(c.current_token().expect("token").as_deref(), Some("tok-2"));
        // The file vanishes for a moment: the last configured token is used.
        std::fs::remove_file(dir.join("token")).expect("rm");
        assert_eq!(c.current_token().expect("token").as_deref(), Some("tok-1"));
        std::fs::write(dir.join("token"), "bad\r\ntoken").expect("write");
        assert!(c.current_token().is_err());
        let _ = std::fs::remove_dir_all(&dir);
    }

    #[test]
    fn from_env_without_service_host_is_none() {
        if std::env::var_os("KUBERNETES_SERVICE_HOST").is_some() {
            eprintln!("skipped: KUBERNETES_SERVICE_HOST is set in this environment");
            return;
        }
        assert!(KubeConfig::in_cluster().expect("no error").is_none());
        assert!(super::super::KubeClient::from_env()
            .expect("no error")
            .is_none());
    }
}
