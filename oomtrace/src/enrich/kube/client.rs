//! A [`KubeConfig`] → kube's `Client`: hyper 1 over rustls (ring), the CA as the only trust
//! anchor, and our own bearer-token layer (see [`KubeConfig::current_token`] for why).

use std::sync::Arc;
use std::time::Duration;

use http::header::{HeaderValue, AUTHORIZATION};
use rustls_pki_types::pem::PemObject;
use rustls_pki_types::CertificateDer;

use super::config::{KubeConfig, Scheme};
use super::KubeError;

/// Longest wait for a byte from the server on an open connection. Longer than the pod watch's
/// server-side timeout (5 minutes), so that only a dead connection trips it; it also bounds a
/// list request the server accepted and never answered.
const READ_TIMEOUT: Duration = Duration::from_secs(360);

/// Builds the client. Needs a tokio runtime (kube's client spawns its request buffer).
pub(crate) fn build(config: &KubeConfig) -> Result<kube::Client, KubeError> {
    if tokio::runtime::Handle::try_current().is_err() {
        return Err(KubeError::Config(
            "the Kubernetes API client needs a tokio runtime".to_string(),
        ));
    }
    let url = config.base.to_string();
    let has_token = config.token.is_some() || config.token_file.is_some();
    if config.base.scheme == Scheme::Http && has_token && !is_loopback(&config.base.host) {
        return Err(KubeError::Config(format!(
            "refusing to send the bearer token in clear text to {url}: use https:// with a CA \
             (--kube-ca-file), or plain http:// only to a proxy on a loopback address \
             (kubectl proxy listens on 127.0.0.1)"
        )));
    }
    if config.base.scheme == Scheme::Https && config.ca_pem.is_none() && config.ca_file.is_none() {
        // kube would fall back to the system's roots; an API server's CA is the cluster's own.
        return Err(KubeError::Config(format!(
            "{url}: https needs a CA certificate"
        )));
    }
    let uri: http::Uri = url
        .parse()
        .map_err(|e| KubeError::Config(format!("API server URL {url}: {e}")))?;
    let mut kube_config = kube::Config::new(uri);
    kube_config.root_cert = config.ca_pem.as_deref().map(der_certificates).transpose()?;
    kube_config.root_cert_file.clone_from(&config.ca_file);
    kube_config.read_timeout = Some(READ_TIMEOUT);
    // The read timeout counts from the request, not from when a pooled connection went idle.
    kube_config.reset_reader_on_write = true;
    // No `auth_info`: the token comes from the layer below.
    let tokens = Arc::new(config.clone());
    let bearer = tower::filter::FilterLayer::new(
        move |mut request: http::Request<kube::client::Body>| -> Result<_, KubeError> {
            if let Some(token) = tokens.current_token()? {
                let mut value = HeaderValue::try_from(format!("Bearer {token}")).map_err(|_| {
                    KubeError::Config("the bearer token is not printable ASCII".to_string())
                })?;
                value.set_sensitive(true);
                request.headers_mut().insert(AUTHORIZATION, value);
            }
            Ok(request)
        },
    );
    let builder = kube::client::ClientBuilder::try_from(kube_config)
        .map_err(|e| KubeError::from_kube(e, "client setup", &url))?;
    Ok(builder
        .with_layer(&bearer)
        .with_layer(&super::cap::CapLayer::default())
        .build())
}

/// `localhost`, or an IP address of the loopback range: traffic that never leaves the host.
fn is_loopback(host: &str) -> bool {
    host.eq_ignore_ascii_case("localhost")
        || host
            .parse::<std::net::IpAddr>()
            .is_ok_and(|ip| ip.is_loopback())
}

/// The DER certificates of a PEM bundle; an error when it holds none.
fn der_certificates(pem: &[u8]) -> Result<Vec<Vec<u8>>, KubeError> {
    let certs = CertificateDer::pem_slice_iter(pem)
        .map(|c| c.map(|c| c.to_vec()))
        .collect::<Result<Vec<_>, _>>()
        .map_err(|e| KubeError::Config(format!("CA bundle: {e}")))?;
    if certs.is_empty() {
        return Err(KubeError::Config(
            "CA bundle: no PEM certificate in it".to_string(),
        ));
    }
    Ok(certs)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_ca_bundle_without_certificates_is_refused() {
        assert!(matches!(
            der_certificates(b"PEM"),
            Err(KubeError::Config(ref m)) if m.contains("no PEM certificate")
        ));
        // Base64 of three bytes, inside the markers: one certificate of 3 DER bytes.
        let pem = b"-----BEGIN CERTIFICATE-----\nAQID\n-----END CERTIFICATE-----\n";
        assert_eq!(der_certificates(pem).expect("one"), vec![vec![1, 2, 3]]);
    }

    #[tokio::test]
    async fn https_needs_a_ca() {
        let base = super::super::ApiBase::parse("https://127.0.0.1:6443").expect("valid");
        assert!(matches!(
            build(&KubeConfig::new(base)),
            Err(KubeError::Config(ref m)) if m.contains("https needs a CA")
        ));
    }

    #[tokio::test]
    async fn a_token_over_http_goes_to_loopback_only() {
        let with_token = |url: &str| {
            let mut c = KubeConfig::new(super::super::ApiBase::parse(url).expect("valid"));
            c.token = Some("t".into());
            build(&c)
        };
        for url in [
            "http://127.0.0.1:8001",
            "http://localhost:8001",
            "http://[::1]:8001",
        ] {
            assert!(with_token(url).is_ok(), "{url}");
        }
        for url in [
            "http://10.0.0.1:8080",
            "http://api.example:80",
            "http://[fe80::1]:80",
        ] {
            let Err(e) = with_token(url) else {
                panic!("{url}: a token in clear text was accepted");
            };
            let e = e.to_string();
            assert!(
                e.contains("refusing to send the bearer token in clear text to http://")
                    && e.contains("https://"),
                "{e}"
            );
        }
        // No token: nothing to leak.
        let plain = KubeConfig::new(super::super::ApiBase::parse("http://10.0.0.1").expect("ok"));
        assert!(build(&plain).is_ok());
        assert!(is_loopback("127.3.2.1") && !is_loopback("128.0.0.1"));
    }

    #[test]
    fn building_needs_a_runtime() {
        let base = super::super::ApiBase::parse("http://127.0.0.1:1").expect("valid");
        assert!(matches!(
            build(&KubeConfig::new(base)),
            Err(KubeError::Config(_))
        ));
    }
}
