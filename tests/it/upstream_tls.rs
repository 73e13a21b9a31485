//! `https` upstreams: a TLS origin whose certificate a private CA signed (made
//! here with rcgen), reached through `upstream.ca_file`. Without the file the
//! proxy does not trust it and answers 502; with it the page comes through,
//! widget and all, over HTTP/1.1 or, where the origin offers it by ALPN,
//! HTTP/2. (A missing or empty file: `config.rs`.)

use crate::support::client::{self, TestBody};
use crate::support::harness::{Proxy, config, scratch, substitute};
use bytes::Bytes;
use http::{Method, Request, Response, StatusCode};
use http_body_util::Full;
use hyper::service::service_fn;
use hyper_util::rt::{TokioExecutor, TokioIo};
use rcgen::{BasicConstraints, CertificateParams, DnType, IsCa, Issuer, KeyPair};
use rustls::pki_types::{PrivateKeyDer, PrivatePkcs8KeyDer};
use std::convert::Infallible;
use std::sync::Arc;
use tokio::net::TcpListener;
use tokio::task::AbortHandle;
use tokio_rustls::TlsAcceptor;

/// The page, with the HTTP version the origin saw the request in.
fn page(version: http::Version) -> String {
    format!(
        "<!doctype html><html><head><title>tls</title></head><body><p>over TLS, {version:?}</p></body></html>"
    )
}

const PROXY_TOML: &str = r#"
[upstream]
{ca_line}
[inject]
dev_token = "tls-test-token"
debug_header = true

[[routes]]
name = "site"
hosts = ["site.test"]
upstream = "https://localhost:{port}"
"#;

/// An HTTPS origin serving [`page`] for `localhost`, and the PEM of the CA
/// that signed its certificate (in a file of its own). With `h2` it offers
/// HTTP/2 first by ALPN, and speaks it when the client picks it.
struct TlsOrigin {
    port: u16,
    ca_file: std::path::PathBuf,
    task: AbortHandle,
}

impl Drop for TlsOrigin {
    fn drop(&mut self) {
        self.task.abort();
    }
}

async fn tls_origin(tag: &str, h2: bool) -> TlsOrigin {
    chathub_proxy::init_crypto();
    let ca_key = KeyPair::generate().expect("CA key");
    let mut ca = CertificateParams::new(Vec::<String>::new()).expect("CA params");
    ca.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
    ca.distinguished_name
        .push(DnType::CommonName, "chathub-proxy test CA");
    let ca_pem = ca.self_signed(&ca_key).expect("CA certificate").pem();
    let issuer = Issuer::new(ca, ca_key);
    let leaf_key = KeyPair::generate().expect("leaf key");
    let leaf = CertificateParams::new(vec!["localhost".to_owned()])
        .expect("leaf params")
        .signed_by(&leaf_key, &issuer)
        .expect("leaf certificate");

    let mut tls = rustls::ServerConfig::builder()
        .with_no_client_auth()
        .with_single_cert(
            vec![leaf.der().clone()],
            PrivateKeyDer::Pkcs8(PrivatePkcs8KeyDer::from(leaf_key.serialize_der())),
        )
        .expect("server TLS config");
    tls.alpn_protocols = if h2 {
        vec![b"h2".to_vec(), b"http/1.1".to_vec()]
    } else {
        vec![b"http/1.1".to_vec()]
    };
    let acceptor = TlsAcceptor::from(Arc::new(tls));
    let listener = TcpListener::bind("127.0.0.1:0").await.expect("bind");
    let port = listener.local_addr().expect("addr").port();
    let task = tokio::spawn(async move {
        loop {
            let Ok((tcp, _)) = listener.accept().await else {
                return;
            };
            let acceptor = acceptor.clone();
            tokio::spawn(async move {
                // A client that rejects the certificate ends the handshake here.
                let Ok(tls) = acceptor.accept(tcp).await else {
                    return;
                };
                let service = service_fn(|req: Request<hyper::body::Incoming>| async move {
                    Ok::<_, Infallible>(
                        Response::builder()
                            .header("content-type", "text/html; charset=utf-8")
                            .body(Full::new(Bytes::from(page(req.version()))))
                            .expect("response"),
                    )
                });
                let h2_chosen = tls.get_ref().1.alpn_protocol() == Some(b"h2");
                let io = TokioIo::new(tls);
                let _ = if h2_chosen {
                    hyper::server::conn::http2::Builder::new(TokioExecutor::new())
                        .serve_connection(io, service)
                        .await
                } else {
                    hyper::server::conn::http1::Builder::new()
                        .serve_connection(io, service)
                        .await
                };
            });
        }
    })
    .abort_handle();
    TlsOrigin {
        port,
        ca_file: {
            let path = scratch(&format!("upstream-tls-{tag}")).join("ca.pem");
            std::fs::write(&path, ca_pem).expect("write the CA file");
            path
        },
        task,
    }
}

fn page_load() -> Request<TestBody> {
    client::request(Method::GET, "site.test", "/")
        .header("accept", "text/html")
        .header("sec-fetch-dest", "document")
        .body(client::empty())
        .expect("request")
}

fn proxy_toml(origin: &TlsOrigin, ca_line: &str) -> String {
    substitute(
        PROXY_TOML,
        &[("ca_line", ca_line), ("port", &origin.port.to_string())],
    )
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_https_upstream_on_a_private_ca_is_reached_with_upstream_ca_file() {
    let origin = tls_origin("trusted", false).await;
    let ca_line = format!("ca_file = \"{}\"", origin.ca_file.display());
    let proxy = Proxy::start(config(&proxy_toml(&origin, &ca_line))).await;
    let got = client::fetch(&client::http1(proxy.addr), page_load()).await;
    assert_eq!(got.status, StatusCode::OK, "{}", got.text());
    let body = got.text();
    assert!(body.contains("<p>over TLS, HTTP/1.1</p>"), "{body}");
    assert!(
        body.contains(r#"token="tls-test-token""#) && body.ends_with("</script></body></html>"),
        "the widget before </body>: {body}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_https_upstream_the_proxy_does_not_trust_gets_a_502() {
    let origin = tls_origin("untrusted", false).await;
    let proxy = Proxy::start(config(&proxy_toml(&origin, ""))).await;
    let got = client::fetch(&client::http1(proxy.addr), page_load()).await;
    assert_eq!(got.status, StatusCode::BAD_GATEWAY, "{}", got.text());
    assert!(!got.text().contains("over TLS"));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_https_upstream_that_offers_h2_is_reached_over_h2() {
    let origin = tls_origin("h2", true).await;
    let ca_line = format!("ca_file = \"{}\"", origin.ca_file.display());
    let proxy = Proxy::start(config(&proxy_toml(&origin, &ca_line))).await;
    // Twice: the second request goes out on the pooled h2 connection.
    for _ in 0..2 {
        let got = client::fetch(&client::http1(proxy.addr), page_load()).await;
        assert_eq!(got.status, StatusCode::OK, "{}", got.text());
        let body = got.text();
        assert!(body.contains("<p>over TLS, HTTP/2.0</p>"), "{body}");
        assert!(
            body.contains(r#"token="tls-test-token""#) && body.ends_with("</script></body></html>"),
            "the widget before </body>: {body}"
        );
    }
}
