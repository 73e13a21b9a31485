//! `https` upstreams: a TLS origin whose certificate a private CA signed (made
//! here with rcgen), reached through `upstream.ca_file`. Without the file the
//! proxy does not trust it and answers 502; with it the page comes through,
//! widget and all. A missing or empty file is a start-up error naming the key.

use crate::support::client::{self, TestBody};
use crate::support::harness::{Proxy, config, substitute};
use bytes::Bytes;
use chathub_proxy::config::{self as cfg, raw::RawConfig};
use figment::Figment;
use figment::providers::{Format, Serialized, Toml};
use http::{Method, Request, Response, StatusCode};
use http_body_util::Full;
use hyper::service::service_fn;
use hyper_util::rt::TokioIo;
use rcgen::{BasicConstraints, CertificateParams, DnType, IsCa, Issuer, KeyPair};
use rustls::pki_types::{PrivateKeyDer, PrivatePkcs8KeyDer};
use std::convert::Infallible;
use std::sync::Arc;
use tokio::net::TcpListener;
use tokio::task::AbortHandle;
use tokio_rustls::TlsAcceptor;

const PAGE: &str =
    "<!doctype html><html><head><title>tls</title></head><body><p>over TLS</p></body></html>";

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

/// An HTTPS origin serving [`PAGE`] for `localhost`, and the PEM of the CA
/// that signed its certificate (in a file of its own).
struct TlsOrigin {
    port: u16,
    ca_file: TempFile,
    task: AbortHandle,
}

impl Drop for TlsOrigin {
    fn drop(&mut self) {
        self.task.abort();
    }
}

/// A file under the system's temp directory, unique to this process and
/// name, removed on drop.
struct TempFile(std::path::PathBuf);

impl TempFile {
    fn write(name: &str, contents: &str) -> TempFile {
        let path =
            std::env::temp_dir().join(format!("chathub-proxy-test-{}-{name}", std::process::id()));
        std::fs::write(&path, contents).expect("write temp file");
        TempFile(path)
    }

    fn as_str(&self) -> &str {
        self.0.to_str().expect("utf-8 temp path")
    }
}

impl Drop for TempFile {
    fn drop(&mut self) {
        let _ = std::fs::remove_file(&self.0);
    }
}

async fn tls_origin(tag: &str) -> TlsOrigin {
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
    tls.alpn_protocols = vec![b"http/1.1".to_vec()];
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
                let service = service_fn(|_req: Request<hyper::body::Incoming>| async {
                    Ok::<_, Infallible>(
                        Response::builder()
                            .header("content-type", "text/html; charset=utf-8")
                            .body(Full::new(Bytes::from_static(PAGE.as_bytes())))
                            .expect("response"),
                    )
                });
                let _ = hyper::server::conn::http1::Builder::new()
                    .serve_connection(TokioIo::new(tls), service)
                    .await;
            });
        }
    })
    .abort_handle();
    TlsOrigin {
        port,
        ca_file: TempFile::write(&format!("{tag}-ca.pem"), &ca_pem),
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
    let origin = tls_origin("trusted").await;
    let ca_line = format!("ca_file = \"{}\"", origin.ca_file.as_str());
    let proxy = Proxy::start(config(&proxy_toml(&origin, &ca_line))).await;
    let got = client::fetch(&client::http1(proxy.addr), page_load()).await;
    assert_eq!(got.status, StatusCode::OK, "{}", got.text());
    let body = got.text();
    assert!(body.contains("<p>over TLS</p>"), "{body}");
    assert!(
        body.contains(r#"token="tls-test-token""#) && body.ends_with("</script></body></html>"),
        "the widget before </body>: {body}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_https_upstream_the_proxy_does_not_trust_gets_a_502() {
    let origin = tls_origin("untrusted").await;
    let proxy = Proxy::start(config(&proxy_toml(&origin, ""))).await;
    let got = client::fetch(&client::http1(proxy.addr), page_load()).await;
    assert_eq!(got.status, StatusCode::BAD_GATEWAY, "{}", got.text());
    assert!(!got.text().contains("over TLS"));
}

#[test]
fn a_missing_or_empty_ca_file_is_a_start_up_error_naming_the_key() {
    let empty = TempFile::write("empty-ca.pem", "not a certificate\n");
    let missing = "/nonexistent/chathub-proxy/ca.pem";
    for (path, says) in [
        (missing, "cannot read"),
        (empty.as_str(), "no PEM certificate"),
    ] {
        let toml = format!(
            "[upstream]\nca_file = \"{path}\"\n[[routes]]\nname = \"s\"\nhosts = [\"s.test\"]\nupstream = \"https://localhost:1\"\n"
        );
        let fig =
            Figment::from(Serialized::defaults(RawConfig::default())).merge(Toml::string(&toml));
        let err = cfg::from_figment(&fig)
            .expect_err("a bad ca_file must not validate")
            .to_string();
        assert!(
            err.contains("upstream.ca_file") && err.contains(says),
            "{path}: {err}"
        );
    }
}
