//! The built-in demo: a small demo site on loopback, and the proxy configuration
//! that puts it behind the proxy with the ChatHub emulator as the token source.
//! `main` starts the emulator, this site and the proxy together.
//!
//! The site's pages each show one thing the proxy has to get right: a plain page,
//! a page without `</body>`, a page with its own scripts, a form and decoy
//! `</body>` strings, a page streamed slowly, a page under a strict CSP, plus a
//! JSON endpoint and an event stream that must pass through untouched.

use crate::body::{self, Body};
use crate::emulator::Emulator;
use bytes::Bytes;
use http::{HeaderValue, Method, Request, Response, StatusCode, header};
use http_body_util::{BodyExt, Limited, StreamBody};
use hyper::body::{Frame, Incoming};
use hyper::server::conn::http1;
use hyper::service::service_fn;
use hyper_util::rt::{TokioIo, TokioTimer};
use std::convert::Infallible;
use std::net::SocketAddr;
use std::time::Duration;
use tokio::net::TcpListener;
use tokio::sync::watch;
use tracing::{debug, info};

/// The environment variable the demo config names for the emulator's password.
pub const DEMO_PASSWORD_ENV: &str = "CHATHUB_DEMO_PASSWORD";
/// The password of the emulator's demo company ([`crate::emulator::Seed::demo`]);
/// `main` puts it into [`DEMO_PASSWORD_ENV`] before loading the demo config.
pub const DEMO_PASSWORD: &str = "demo-password";

const STYLE_CSS: &str = "body{font:16px/1.5 system-ui,sans-serif;max-width:46rem;margin:2rem auto;padding:0 1rem;color:#222}\
nav a{margin-right:1rem}code{background:#eee;padding:0 .2em}.note{color:#555}\n";

const APP_JS: &str = "// The demo site's own script: it must keep working with the widget on the page.\n\
document.addEventListener('DOMContentLoaded', function () {\n\
  var out = document.getElementById('own-script');\n\
  if (out) { out.textContent = 'The page\\'s own external script ran.'; }\n\
});\n";

/// A running demo site; it stops on [`DemoSite::shutdown`] or when dropped.
#[derive(Debug)]
pub struct DemoSite {
    addr: SocketAddr,
    stop: watch::Sender<bool>,
}

impl DemoSite {
    /// The bound address.
    pub fn addr(&self) -> SocketAddr {
        self.addr
    }

    /// Stop accepting connections; open ones finish their current request.
    pub fn shutdown(&self) {
        self.stop.send_replace(true);
    }
}

/// Serve the demo site on `addr` (port 0 picks a free port). Returns the bound
/// address and the handle that keeps it running.
pub async fn start_demo_site(addr: SocketAddr) -> std::io::Result<(SocketAddr, DemoSite)> {
    let listener = TcpListener::bind(addr).await?;
    let addr = listener.local_addr()?;
    let (stop, mut stop_rx) = watch::channel(false);
    tokio::spawn(async move {
        loop {
            let stream = tokio::select! {
                r = listener.accept() => match r {
                    Ok((s, _)) => s,
                    Err(e) => {
                        debug!(error = %e, "demo site accept failed");
                        tokio::time::sleep(Duration::from_millis(50)).await;
                        continue;
                    }
                },
                _ = stop_rx.changed() => break,
            };
            let mut stop = stop_rx.clone();
            tokio::spawn(async move {
                let conn = http1::Builder::new()
                    .timer(TokioTimer::new())
                    .header_read_timeout(Duration::from_secs(30))
                    .serve_connection(
                        TokioIo::new(stream),
                        service_fn(|req| async { Ok::<_, Infallible>(handle(req).await) }),
                    );
                tokio::pin!(conn);
                tokio::select! {
                    r = conn.as_mut() => if let Err(e) = r {
                        debug!(error = %e, "demo site connection ended with an error");
                    },
                    _ = stop.changed() => {
                        conn.as_mut().graceful_shutdown();
                        let _ = tokio::time::timeout(Duration::from_secs(5), conn).await;
                    }
                }
            });
        }
    });
    info!(%addr, "demo site listening");
    Ok((addr, DemoSite { addr, stop }))
}

/// The proxy configuration for the demo: the site behind the proxy on `listen`,
/// every host routed to it, tokens from the emulator's demo company. The password
/// is named, never written: `main` sets [`DEMO_PASSWORD_ENV`] in-process.
pub fn demo_config_toml(site: SocketAddr, emulator: &Emulator, listen: SocketAddr) -> String {
    format!(
        r#"# chathub-proxy demo configuration (generated). The ChatHub account below is the
# local ChatHub EMULATOR, not the real service.

default_route = "demo"

[server]
listen = ["{listen}"]

[admin]
listen = ""

[inject]
widget_url = "{widget}"
debug_header = true

[accounts.demo]
base_url = "{api}"
login = "demo"
password_env = "{env}"

[[routes]]
name = "demo"
hosts = ["127.0.0.1", "localhost"]
upstream = "http://{site}"
account = "demo"
organization = "Customer Support"
operator = {{ rule = "first-active" }}
"#,
        widget = emulator.widget_url(),
        api = emulator.url(),
        env = DEMO_PASSWORD_ENV,
    )
}

async fn handle(req: Request<Incoming>) -> Response<Body> {
    let path = req.uri().path().to_owned();
    match (req.method().clone(), path.as_str()) {
        (Method::GET | Method::HEAD, "/") => html(StatusCode::OK, &index_page()),
        (Method::GET | Method::HEAD, "/no-body-end") => html(StatusCode::OK, NO_BODY_END),
        (Method::GET | Method::HEAD, "/app") => html(StatusCode::OK, APP_PAGE),
        (Method::POST, "/submit") => submit(req).await,
        (Method::GET | Method::HEAD, "/slow") => slow_page(),
        (Method::GET | Method::HEAD, "/csp") => {
            let mut r = html(StatusCode::OK, CSP_PAGE);
            r.headers_mut().insert(
                header::CONTENT_SECURITY_POLICY,
                HeaderValue::from_static(
                    "default-src 'self'; script-src 'self' 'nonce-demo2024'; style-src 'self'",
                ),
            );
            r
        }
        (Method::GET | Method::HEAD, "/api/data.json") => respond(
            StatusCode::OK,
            "application/json",
            body::full(
                r#"{"items":[{"id":1,"name":"Tea"},{"id":2,"name":"Coffee"}],"note":"JSON passes through untouched"}"#,
            ),
        ),
        (Method::GET, "/events") => events(),
        (Method::GET | Method::HEAD, "/static/style.css") => respond(
            StatusCode::OK,
            "text/css; charset=utf-8",
            body::full(STYLE_CSS),
        ),
        (Method::GET | Method::HEAD, "/static/app.js") => respond(
            StatusCode::OK,
            "text/javascript; charset=utf-8",
            body::full(APP_JS),
        ),
        _ => html(
            StatusCode::NOT_FOUND,
            &page("Not found", "<p>No such page on the demo site.</p>"),
        ),
    }
}

fn respond(status: StatusCode, content_type: &'static str, body: Body) -> Response<Body> {
    let mut r = Response::new(body);
    *r.status_mut() = status;
    r.headers_mut()
        .insert(header::CONTENT_TYPE, HeaderValue::from_static(content_type));
    r
}

fn html(status: StatusCode, text: &str) -> Response<Body> {
    respond(
        status,
        "text/html; charset=utf-8",
        body::full(text.to_owned()),
    )
}

const NAV: &str = r#"<nav><a href="/">Home</a><a href="/no-body-end">No &lt;/body&gt;</a><a href="/app">Scripts and form</a><a href="/slow">Slow stream</a><a href="/csp">Strict CSP</a><a href="/api/data.json">JSON</a><a href="/events">Events</a></nav>"#;

fn page(title: &str, content: &str) -> String {
    format!(
        "<!doctype html>\n<html lang=\"en\">\n<head>\n<meta charset=\"utf-8\">\n<title>{title} - chathub-proxy demo</title>\n\
         <link rel=\"stylesheet\" href=\"/static/style.css\">\n</head>\n<body>\n{NAV}\n<h1>{title}</h1>\n{content}\n</body>\n</html>\n"
    )
}

fn index_page() -> String {
    page(
        "chathub-proxy demo site",
        "<p>This small site knows nothing about ChatHub. The proxy in front of it adds the operator chat \
         panel to every HTML page: look for the panel in the bottom-right corner. In this demo the panel \
         comes from the local <strong>ChatHub EMULATOR</strong>, not the real service.</p>\n\
         <p class=\"note\">Each page in the menu shows one case the proxy must handle.</p>",
    )
}

const NO_BODY_END: &str = "<!doctype html>\n<html lang=\"en\">\n<head><meta charset=\"utf-8\"><title>No closing body tag - chathub-proxy demo</title>\
<link rel=\"stylesheet\" href=\"/static/style.css\"></head>\n<body>\n<h1>A page without a closing body tag</h1>\n\
<p>Browsers accept pages that end without <code>&lt;/body&gt;&lt;/html&gt;</code>; the widget must still appear, once.</p>\n\
<p><a href=\"/\">Back home</a></p>\n";

const APP_PAGE: &str = r#"<!doctype html>
<html lang="en">
<head>
<meta charset="utf-8">
<title>Scripts and a form - chathub-proxy demo</title>
<link rel="stylesheet" href="/static/style.css">
<script src="/static/app.js"></script>
</head>
<body>
<p><a href="/">Back home</a></p>
<h1>A page with its own scripts and a form</h1>
<!-- A decoy: this comment mentions </body> and must not receive the widget. -->
<p id="own-script">The page's own external script has not run.</p>
<p id="inline-script">The inline script has not run.</p>
<script>
  // Another decoy: the string "</body>" inside a script is not the end of the body.
  var decoy = "</body>";
  document.getElementById('inline-script').textContent = 'The inline script ran (decoy length ' + decoy.length + ').';
</script>
<form method="post" action="/submit">
  <label>Your name <input name="name" value="Ada"></label>
  <button type="submit">Send</button>
</form>
</body>
</html>
"#;

const CSP_PAGE: &str = r#"<!doctype html>
<html lang="en">
<head>
<meta charset="utf-8">
<title>Strict CSP - chathub-proxy demo</title>
<link rel="stylesheet" href="/static/style.css">
</head>
<body>
<p><a href="/">Back home</a></p>
<h1>A page under a strict Content-Security-Policy</h1>
<p>This page sends <code>script-src 'self' 'nonce-demo2024'</code>. The proxy has to adapt the policy
so that the widget may run, without weakening it for anything else.</p>
<p id="nonce-script">The nonced inline script has not run.</p>
<script nonce="demo2024">document.getElementById('nonce-script').textContent = 'The nonced inline script ran.';</script>
</body>
</html>
"#;

/// Echo the form's `name`, escaped.
async fn submit(req: Request<Incoming>) -> Response<Body> {
    let bytes = match Limited::new(req.into_body(), 16 * 1024).collect().await {
        Ok(c) => c.to_bytes(),
        Err(_) => {
            return html(
                StatusCode::PAYLOAD_TOO_LARGE,
                &page("Too large", "<p>That form was too large.</p>"),
            );
        }
    };
    let name = url::form_urlencoded::parse(&bytes)
        .find(|(k, _)| k == "name")
        .map(|(_, v)| v.into_owned())
        .unwrap_or_default();
    html(
        StatusCode::OK,
        &page(
            "Thank you",
            &format!(
                "<p>Thanks, {}. The form posted through the proxy.</p>",
                escape(&name)
            ),
        ),
    )
}

fn escape(s: &str) -> String {
    let mut out = String::with_capacity(s.len());
    for c in s.chars() {
        match c {
            '&' => out.push_str("&amp;"),
            '<' => out.push_str("&lt;"),
            '>' => out.push_str("&gt;"),
            '"' => out.push_str("&quot;"),
            '\'' => out.push_str("&#39;"),
            c => out.push(c),
        }
    }
    out
}

/// A stream of `(delay before, chunk)` pairs as a response body.
fn timed_body(chunks: Vec<(Duration, String)>) -> Body {
    let stream = futures_util::stream::unfold(chunks.into_iter(), |mut it| async move {
        let (delay, chunk) = it.next()?;
        tokio::time::sleep(delay).await;
        Some((Ok::<_, Infallible>(Frame::data(Bytes::from(chunk))), it))
    });
    body::boxed(StreamBody::new(stream))
}

/// An HTML page that arrives in parts over about two seconds, to show that the
/// proxy streams instead of buffering.
fn slow_page() -> Response<Body> {
    let head = "<!doctype html>\n<html lang=\"en\">\n<head><meta charset=\"utf-8\"><title>Slow stream - chathub-proxy demo</title>\
                <link rel=\"stylesheet\" href=\"/static/style.css\"></head>\n<body>\n<p><a href=\"/\">Back home</a></p>\n\
                <h1>A page streamed in parts</h1>\n<p>Part 1 arrived at once.</p>\n";
    let mut chunks = vec![(Duration::ZERO, head.to_owned())];
    for i in 2..=4 {
        chunks.push((
            Duration::from_millis(600),
            format!("<p>Part {i} arrived later.</p>\n"),
        ));
    }
    chunks.push((Duration::from_millis(300), "</body>\n</html>\n".to_owned()));
    respond(
        StatusCode::OK,
        "text/html; charset=utf-8",
        timed_body(chunks),
    )
}

/// Server-sent events: five ticks, one a second, then the stream ends.
fn events() -> Response<Body> {
    let chunks = (1..=5)
        .map(|i| {
            (
                if i == 1 {
                    Duration::ZERO
                } else {
                    Duration::from_secs(1)
                },
                format!("id: {i}\nevent: tick\ndata: {{\"tick\":{i}}}\n\n"),
            )
        })
        .collect();
    let mut r = respond(StatusCode::OK, "text/event-stream", timed_body(chunks));
    r.headers_mut()
        .insert(header::CACHE_CONTROL, HeaderValue::from_static("no-cache"));
    r
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::emulator::Seed;

    #[tokio::test]
    async fn demo_config_validates_apart_from_the_password_variable() {
        let emu = Emulator::start("127.0.0.1:0".parse().unwrap(), Seed::demo())
            .await
            .unwrap();
        let toml = demo_config_toml(
            "127.0.0.1:8081".parse().unwrap(),
            &emu,
            "127.0.0.1:8080".parse().unwrap(),
        );
        assert!(
            !toml.contains(DEMO_PASSWORD),
            "the password is named, never written"
        );
        match crate::config::from_toml_str(&toml) {
            Ok(cfg) => {
                assert_eq!(cfg.routes.len(), 1);
                assert_eq!(cfg.inject.widget_url, emu.widget_url());
                assert_eq!(
                    cfg.accounts[0].base_url.as_str().trim_end_matches('/'),
                    emu.url()
                );
            }
            // The variable is set by `main`, not by this test (setting it is unsafe in edition 2024).
            Err(e) => assert!(
                e.issues
                    .iter()
                    .all(|i| i.key == "accounts.demo.password_env"),
                "{e}"
            ),
        }
        emu.shutdown();
    }

    #[test]
    fn escape_covers_markup() {
        assert_eq!(
            escape(r#"<a href="x">&'"#),
            "&lt;a href=&quot;x&quot;&gt;&amp;&#39;"
        );
    }
}
