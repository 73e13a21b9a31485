//! Helpers for the proxy-level token tests (`proxy_tokens`): a proxy config
//! with a ChatHub account on the emulator, an HTML origin, page requests with
//! or without the session cookie, and readers for what comes back (the widget
//! tag's token, the session `Set-Cookie`, the debug header, admin metrics).

use super::client::{self, Got, TestClient, empty, fetch};
use super::origin::Origin;
use chathub_proxy::config::{self, Config};
use chathub_proxy::emulator::{Emulator, Seed};
use http::{Method, Request};
use std::future::Future;
use std::net::SocketAddr;
use std::sync::OnceLock;
use std::time::{Duration, Instant};

/// The emulator's operator-token endpoint (E6): one call per mint.
pub const GET_TOKEN: &str = "/api/operator/get-token";

/// Every ChatHub API path the proxy may call, for "ChatHub saw no call" checks.
pub const API_PATHS: [&str; 6] = [
    "/api/company/get-token",
    "/api/company/organization",
    "/api/operator",
    "/api/operator/get-token",
    "/api/operator/synchronize",
    "/api/operator/status",
];

/// The plain session cookie name (the default `session.cookie_name`).
pub const COOKIE: &str = "chathub_sid";

/// The cookie name over HTTPS.
pub const HOST_COOKIE: &str = "__Host-chathub_sid";

/// The demo company's dashboard key, for calling validate-token ourselves.
pub const DEMO_KEY: &str = "demo-key";

/// The HTML page the origin serves at `/` and `/other`.
pub const PAGE: &str = "<!doctype html>\n<html><head><meta charset=\"utf-8\"><title>Shop</title></head>\n<body>\n<h1>Welcome</h1>\n<p>Prices &amp; offers.</p>\n</body>\n</html>\n";

/// The fallback block the fail-open tests configure.
pub const FALLBACK: &str =
    r#"<p class="chat-fallback">Chat unavailable: write to support@example.com</p>"#;

/// [`PAGE`] as the proxy serves it with `html` inserted before `</body>`.
pub fn page_with(html: &str) -> String {
    PAGE.replacen("</body>", &format!("{html}</body>"), 1)
}

/// A file holding `password`, unique to this process and password, written once.
pub fn password_file(password: &str) -> String {
    static DIR: OnceLock<std::path::PathBuf> = OnceLock::new();
    let dir = DIR.get_or_init(|| {
        let d = std::env::temp_dir().join(format!(
            "chathub-proxy-proxy-tokens-{}-{:x}",
            std::process::id(),
            rand::random::<u64>()
        ));
        std::fs::create_dir_all(&d).expect("temp dir");
        d
    });
    let path = dir.join(format!("{:x}.pw", fnv(password)));
    if !path.exists() {
        // Written to a side name and renamed, so that a parallel test never
        // reads a half-written file.
        let tmp = path.with_extension(format!("tmp{:x}", rand::random::<u64>()));
        std::fs::write(&tmp, password).expect("write password file");
        std::fs::rename(&tmp, &path).expect("rename password file");
    }
    path.display().to_string()
}

fn fnv(s: &str) -> u64 {
    s.bytes().fold(0xcbf2_9ce4_8422_2325, |h, b| {
        (h ^ u64::from(b)).wrapping_mul(0x100_0000_01b3)
    })
}

/// The emulator with the built-in demo seed (company `demo`, organizations 6
/// "Customer Support" and 7 "Sales").
pub async fn emulator() -> Emulator {
    emulator_with(Seed::demo()).await
}

/// The emulator with its own seed.
pub async fn emulator_with(seed: Seed) -> Emulator {
    Emulator::start("127.0.0.1:0".parse().expect("addr"), seed)
        .await
        .expect("start the emulator")
}

/// An origin serving [`PAGE`] as HTML at `/` and `/other`, JSON at
/// `/data.json`, and an echo of the request everywhere else.
pub async fn html_origin() -> Origin {
    let html = [("content-type", "text/html; charset=utf-8")];
    Origin::builder()
        .fixed_with_headers("/", 200, &html, PAGE)
        .fixed_with_headers("/other", 200, &html, PAGE)
        .fixed_with_headers(
            "/data.json",
            200,
            &[("content-type", "application/json")],
            r#"{"ok":true}"#,
        )
        .start()
        .await
}

/// One `[[routes]]` block on `{origin}` with the ChatHub account `main`.
pub fn route(name: &str, host: &str, organization: &str, operator: &str) -> String {
    format!(
        r#"
[[routes]]
name = "{name}"
hosts = ["{host}"]
upstream = "{{origin}}"
account = "main"
organization = {organization}
operator = {operator}
"#
    )
}

/// The default route: `site.test`, organization 6, first active operator (21).
pub fn support_route() -> String {
    route("support", "site.test", "6", r#"{ rule = "first-active" }"#)
}

/// A proxy config in pieces: extra lines for each section, then routes.
#[derive(Clone, Debug, Default)]
pub struct ProxySpec {
    /// Lines added to `[server]` (e.g. `trusted_proxies = [...]`).
    pub server: String,
    /// Lines added to `[inject]` (e.g. `fallback_html = ...`).
    pub inject: String,
    /// Lines of `[token]`.
    pub token: String,
    /// Lines added to `[accounts.main]`.
    pub account: String,
    /// Whole sections after the account (e.g. `[redis]`).
    pub tail: String,
    /// `[[routes]]` blocks; [`support_route`] when empty.
    pub routes: String,
    /// The account's password; the demo company's when empty.
    pub password: String,
}

impl ProxySpec {
    /// The TOML text: loopback listeners on port 0, the admin listener on, the
    /// debug header on, the widget from the emulator, account `main` on the
    /// emulator with its password in a file.
    pub fn toml(&self, emu: &Emulator, origin: &Origin) -> String {
        let password = if self.password.is_empty() {
            "demo-password"
        } else {
            &self.password
        };
        let routes = if self.routes.is_empty() {
            support_route()
        } else {
            self.routes.clone()
        };
        let text = format!(
            r#"
[server]
listen = ["127.0.0.1:0"]
grace_period = "2s"
{server}

[admin]
listen = "127.0.0.1:0"

[inject]
widget_url = "{widget}"
debug_header = true
{inject}

[token]
{token}

[accounts.main]
base_url = "{api}"
login = "demo"
password_file = "{pw}"
{account}

{tail}

{routes}
"#,
            server = self.server,
            widget = emu.widget_url(),
            inject = self.inject,
            token = self.token,
            api = emu.url(),
            pw = password_file(password),
            // A test's own request_timeout replaces the default one.
            account = if self.account.contains("request_timeout") {
                self.account.clone()
            } else {
                format!("request_timeout = \"5s\"\n{}", self.account)
            },
            tail = self.tail,
        );
        text.replace("{origin}", &origin.url())
    }

    /// The validated config (through `config::from_toml_str`, no environment).
    pub fn config(&self, emu: &Emulator, origin: &Origin) -> Config {
        let text = self.toml(emu, origin);
        config::from_toml_str(&text)
            .unwrap_or_else(|e| panic!("test config is invalid: {e}\n{text}"))
    }
}

/// A `GET` page load of `http://{host}{path}` with the session cookie `cookie`
/// (a whole `name=value`), if any, and extra header lines.
pub fn page_request(
    host: &str,
    path: &str,
    cookie: Option<&str>,
    headers: &[(&str, &str)],
) -> Request<client::TestBody> {
    let mut b = client::request(Method::GET, host, path).header("accept", "text/html");
    if let Some(c) = cookie {
        b = b.header("cookie", c);
    }
    for (k, v) in headers {
        b = b.header(*k, *v);
    }
    b.body(empty()).expect("request")
}

/// Load a page of `site.test` and read it to the end.
pub async fn load(c: &TestClient, cookie: Option<&str>) -> Got {
    fetch(c, page_request("site.test", "/", cookie, &[])).await
}

/// A fresh, well-formed session cookie `chathub_sid=<id>` the proxy never set
/// (a returning visitor whose token the proxy has not cached).
pub fn fresh_session() -> String {
    format!("{COOKIE}={}", chathub_proxy::session::new_id().expose())
}

/// The token of the widget tag in `body`, if there is exactly one tag.
pub fn tag_token(body: &[u8]) -> Option<String> {
    let text = std::str::from_utf8(body).ok()?;
    let needle = r#"id="operator-chat-panel-script""#;
    let mut found = text.match_indices(needle);
    let (at, _) = found.next()?;
    if found.next().is_some() {
        return None;
    }
    let start = text[..at].rfind("<script")?;
    let end = at + text[at..].find("</script>")?;
    let tag = &text[start..end];
    let t = tag.split(" token=\"").nth(1)?;
    Some(t[..t.find('"')?].to_owned())
}

/// The widget tag's token, failing the test (with the page) if there is none.
pub fn must_token(got: &Got) -> String {
    tag_token(&got.body).unwrap_or_else(|| {
        panic!(
            "no widget tag (X-ChatHub-Inject: {:?}):\n{}",
            inject_header(got),
            got.text()
        )
    })
}

/// `X-ChatHub-Inject`, or an empty string.
pub fn inject_header(got: &Got) -> String {
    got.all("x-chathub-inject").join(", ")
}

/// The reason in `X-ChatHub-Inject: skipped; reason=...`, if skipped.
pub fn skip_reason(got: &Got) -> Option<String> {
    inject_header(got)
        .strip_prefix("skipped; reason=")
        .map(str::to_owned)
}

/// One parsed `Set-Cookie`.
#[derive(Clone, Debug)]
pub struct SetCookie {
    /// The cookie name.
    pub name: String,
    /// The cookie value.
    pub value: String,
    /// The attributes as written (`Path=/`, `HttpOnly`...).
    pub attrs: Vec<String>,
}

impl SetCookie {
    /// `name=value`, as a client sends it back.
    pub fn pair(&self) -> String {
        format!("{}={}", self.name, self.value)
    }

    /// Whether attribute `name` (case-insensitive) is present, with any value.
    pub fn has(&self, name: &str) -> bool {
        self.attr(name).is_some()
    }

    /// The value of attribute `name` (empty for a flag).
    pub fn attr(&self, name: &str) -> Option<String> {
        self.attrs.iter().find_map(|a| {
            let (k, v) = a.split_once('=').unwrap_or((a, ""));
            k.trim()
                .eq_ignore_ascii_case(name)
                .then(|| v.trim().to_owned())
        })
    }
}

/// Every `Set-Cookie` of a response, parsed.
pub fn set_cookies(got: &Got) -> Vec<SetCookie> {
    got.all("set-cookie")
        .iter()
        .map(|line| {
            let mut parts = line.split(';').map(str::trim);
            let (name, value) = parts
                .next()
                .unwrap_or("")
                .split_once('=')
                .unwrap_or(("", ""));
            SetCookie {
                name: name.to_owned(),
                value: value.to_owned(),
                attrs: parts.filter(|p| !p.is_empty()).map(str::to_owned).collect(),
            }
        })
        .collect()
}

/// The proxy's session cookie in a response (either name), if set.
pub fn session_cookie(got: &Got) -> Option<SetCookie> {
    set_cookies(got)
        .into_iter()
        .find(|c| c.name == COOKIE || c.name == HOST_COOKIE)
}

/// The JWT claims of an emulator token (signature not checked).
pub fn claims(token: &str) -> serde_json::Map<String, serde_json::Value> {
    chathub_proxy::emulator::decode_claims(token)
        .unwrap_or_else(|| panic!("not a JWT: {} chars", token.len()))
}

/// `(operator_id, organization_id)` of an emulator token.
pub fn operator_and_org(token: &str) -> (i64, i64) {
    let c = claims(token);
    (
        c["operator_id"].as_i64().expect("operator_id"),
        c["organization_id"].as_i64().expect("organization_id"),
    )
}

/// Ask the emulator (E7, with company auth) whether `token` is valid; the answer's JSON.
pub async fn validate(emu: &Emulator, token: &str) -> serde_json::Value {
    let c = client::http1(emu.addr());
    let req = client::request(
        Method::POST,
        &emu.addr().to_string(),
        "/api/operator/validate-token",
    )
    .header("x-authorization-key", DEMO_KEY)
    .header("content-type", "application/json")
    .body(client::full(
        serde_json::json!({ "token": token }).to_string(),
    ))
    .expect("request");
    let got = fetch(&c, req).await;
    assert_eq!(got.status, 200, "validate-token: {}", got.text());
    serde_json::from_slice(&got.body).expect("validate-token JSON")
}

/// Assert that the emulator accepts `token` for operator `operator`.
pub async fn assert_valid(emu: &Emulator, token: &str, operator: i64) {
    let v = validate(emu, token).await;
    assert_eq!(v["isValid"], true, "{v}");
    assert_eq!(v["operatorId"], operator, "{v}");
}

/// Calls the emulator has seen on every API path.
pub fn api_calls(emu: &Emulator) -> u64 {
    API_PATHS.iter().map(|p| emu.calls(p)).sum()
}

/// The admin listener's `/metrics` text.
pub async fn admin_metrics(admin: SocketAddr) -> String {
    let got = client::fetch_get(&client::http1(admin), &admin.to_string(), "/metrics").await;
    assert_eq!(got.status, 200);
    got.text()
}

/// The value of an unlabelled metric line `name value`.
pub fn metric(text: &str, name: &str) -> Option<f64> {
    text.lines()
        .find_map(|l| l.strip_prefix(name)?.strip_prefix(' ')?.trim().parse().ok())
}

/// Poll `f` every 25 ms until it yields `Some`, for at most `limit`.
pub async fn poll<T, F, Fut>(limit: Duration, mut f: F) -> Option<T>
where
    F: FnMut() -> Fut,
    Fut: Future<Output = Option<T>>,
{
    let deadline = Instant::now() + limit;
    loop {
        if let Some(v) = f().await {
            return Some(v);
        }
        if Instant::now() >= deadline {
            return None;
        }
        tokio::time::sleep(Duration::from_millis(25)).await;
    }
}

/// A loopback port on which nothing listens (bound a moment ago, then freed).
pub fn closed_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0")
        .and_then(|l| l.local_addr())
        .expect("bind")
        .port()
}

/// A Redis key prefix no other test (or run) uses.
pub fn unique_prefix(test: &str) -> String {
    format!(
        "chathub-proxy-test:proxy-{test}:{}:{:x}:",
        std::process::id(),
        rand::random::<u64>()
    )
}

/// A `[redis]` section.
pub fn redis_section(url: &str, prefix: &str) -> String {
    format!(
        "[redis]\nurl = \"{url}\"\nkey_prefix = \"{prefix}\"\ntimeout = \"500ms\"\nlock_ttl = \"5s\"\n"
    )
}

/// Fail with a clear message unless Redis answers on 127.0.0.1:6379.
pub async fn require_redis() {
    let ok = tokio::net::TcpStream::connect("127.0.0.1:6379")
        .await
        .is_ok();
    assert!(
        ok,
        "this test needs Redis on 127.0.0.1:6379: redis-server --daemonize yes --bind 127.0.0.1 -::1 --port 6379 --save \"\" --appendonly no --dir /tmp"
    );
}
