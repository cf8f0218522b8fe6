//! What went wrong talking to the API server: kube's errors sorted into what a caller acts on
//! (configuration, connection, TLS, an HTTP status), with the whole cause chain in the text.

use std::error::Error;
use std::io;
use std::path::PathBuf;

/// Longest server message kept in [`KubeError::Status`].
const MESSAGE_EXCERPT: usize = 512;

/// What went wrong talking to the API server.
#[derive(Debug, thiserror::Error)]
pub enum KubeError {
    #[error("Kubernetes API configuration: {0}")]
    Config(String),
    #[error("reading {}: {source}", path.display())]
    Read {
        path: PathBuf,
        #[source]
        source: io::Error,
    },
    #[error("connecting to the Kubernetes API at {addr}: {detail}")]
    Connect {
        addr: String,
        /// The cause chain, innermost last (kube's own text stops at "client error (Connect)").
        detail: String,
        #[source]
        source: kube::Error,
    },
    #[error("TLS handshake with the Kubernetes API at {addr}: {detail}")]
    Tls {
        addr: String,
        detail: String,
        #[source]
        source: kube::Error,
    },
    #[error("Kubernetes API {context}: HTTP {status}: {message}")]
    Status {
        context: String,
        status: u16,
        /// The server's `Status.message` (or the start of a body that was not a `Status`).
        message: String,
    },
    #[error("Kubernetes API {context}: {detail}")]
    Request {
        context: String,
        detail: String,
        #[source]
        source: kube::Error,
    },
    #[error("Kubernetes API {0}: timed out")]
    Timeout(String),
}

impl KubeError {
    /// The HTTP status of a [`KubeError::Status`] error.
    pub fn status(&self) -> Option<u16> {
        match self {
            KubeError::Status { status, .. } => Some(*status),
            _ => None,
        }
    }

    /// Sorts an error of kube's from a request about `context` to the server at `addr`.
    pub(crate) fn from_kube(err: kube::Error, context: &str, addr: &str) -> Self {
        let err = match err {
            kube::Error::Api(status) => {
                return KubeError::Status {
                    context: context.to_string(),
                    status: status.code,
                    message: one_line(&status.message, MESSAGE_EXCERPT),
                }
            }
            // Ours, from the bearer-token layer: passed through as it is.
            kube::Error::Service(boxed) => match boxed.downcast::<KubeError>() {
                Ok(ours) => return *ours,
                Err(other) => kube::Error::Service(other),
            },
            other => other,
        };
        let detail = cause_text(&err);
        let (mut tls, mut connect) = (false, false);
        for_each_cause(&err, |cause| {
            tls |= cause.is::<rustls::Error>();
            connect |= cause
                .downcast_ref::<hyper_util::client::legacy::Error>()
                .is_some_and(hyper_util::client::legacy::Error::is_connect);
        });
        let addr = addr.to_string();
        if tls {
            KubeError::Tls {
                addr,
                detail,
                source: err,
            }
        } else if connect {
            KubeError::Connect {
                addr,
                detail,
                source: err,
            }
        } else {
            KubeError::Request {
                context: context.to_string(),
                detail,
                source: err,
            }
        }
    }
}

/// Calls `f` on `err` and each of its causes, including the error an `io::Error` wraps
/// (`io::Error::source` skips it and returns the wrapped error's own source).
fn for_each_cause(err: &(dyn Error + 'static), mut f: impl FnMut(&(dyn Error + 'static))) {
    let mut next = Some(err);
    while let Some(e) = next {
        f(e);
        next = match e.downcast_ref::<io::Error>().and_then(io::Error::get_ref) {
            Some(inner) => Some(inner as &(dyn Error + 'static)),
            None => e.source(),
        };
    }
}

/// The texts of the cause chain joined with `: `, leaving out a cause whose text its parent
/// already shows.
fn cause_text(err: &(dyn Error + 'static)) -> String {
    let mut parts: Vec<String> = Vec::new();
    for_each_cause(err, |cause| {
        let text = cause.to_string();
        if !parts.last().is_some_and(|last| last.contains(&text)) {
            parts.push(text);
        }
    });
    parts.join(": ")
}

/// `text` on one line, cut to at most `max` bytes at a character boundary.
fn one_line(text: &str, max: usize) -> String {
    let text: String = text
        .chars()
        .map(|c| if c.is_control() { ' ' } else { c })
        .collect();
    truncate(text.trim(), max).to_string()
}

/// `s` cut to at most `max` bytes at a character boundary.
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

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn api_statuses_keep_code_and_message() {
        let status =
            kube::core::Status::failure("events is\nforbidden", "Forbidden").with_code(403);
        let err = KubeError::from_kube(kube::Error::Api(status.boxed()), "creating", "x");
        assert_eq!(err.status(), Some(403));
        assert_eq!(
            err.to_string(),
            "Kubernetes API creating: HTTP 403: events is forbidden"
        );
    }

    #[test]
    fn our_own_errors_pass_through_the_service_layer() {
        let boxed: tower::BoxError = Box::new(KubeError::Config("bad token".to_string()));
        let err = KubeError::from_kube(kube::Error::Service(boxed), "listing", "x");
        assert!(
            matches!(err, KubeError::Config(ref m) if m == "bad token"),
            "{err}"
        );
    }

    #[test]
    fn cause_text_includes_what_io_errors_wrap() {
        let inner = io::Error::new(
            io::ErrorKind::InvalidData,
            rustls::Error::General("bad".to_string()),
        );
        let boxed: tower::BoxError = Box::new(inner);
        let err = kube::Error::Service(boxed);
        assert_eq!(cause_text(&err), "ServiceError: unexpected error: bad");
        let mut rustls_seen = false;
        for_each_cause(&err, |c| rustls_seen |= c.is::<rustls::Error>());
        assert!(rustls_seen);
    }

    #[test]
    fn truncates_at_char_boundaries() {
        assert_eq!(truncate("héllo", 2), "h");
        assert_eq!(truncate("héllo", 3), "hé");
        assert_eq!(truncate("abc", 10), "abc");
        assert_eq!(one_line(" a\r\nb ", 10), "a  b");
    }
}
