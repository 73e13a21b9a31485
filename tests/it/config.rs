//! Configuration as an operator meets it: every mistake reported at once with
//! its key, environment overrides, and `chathub-proxy check-config` (run as the
//! built binary, because the environment is process-global).

use crate::support::client::{self, fetch_get};
use crate::support::harness::scratch;
use crate::support::origin::Origin;
use chathub_proxy::config::{self, ConfigIssue};
use http::StatusCode;
use std::io::{BufRead, BufReader};
use std::net::SocketAddr;
use std::process::{Child, Command, Stdio};
use std::time::Duration;

/// A config with a mistake in nearly every section.
const MANY_MISTAKES: &str = r#"
[server]
listen = ["not-an-address"]
max_connections = 0
header_read_timeout = "soon"
trusted_proxies = ["10.0.0.0/33"]
[admin]
listen = "nowhere"
[log]
format = "xml"
[upstream]
response_timeout = "0s"
[inject]
widget_url = "ftp://widget.test/x.js"
statuses = ["600-700"]
token_path = "relative/path"
[session]
cookie_name = "bad name"
[token]
lifetime = "48h"
[redis]
url = "http://not-redis"
[accounts.main]
login = "acme"
password = "inline-Hunter2"
[[routes]]
hosts = ["bad host!"]
upstream = "ftp://x"
path_prefix = "noslash"
csp = "maybe"
[[routes]]
name = "second"
hosts = []
"#;

const MANY_MISTAKES_KEYS: [&str; 21] = [
    "server.listen",
    "server.max_connections",
    "server.header_read_timeout",
    "server.trusted_proxies",
    "admin.listen",
    "log.format",
    "upstream.response_timeout",
    "inject.widget_url",
    "inject.statuses",
    "inject.token_path",
    "session.cookie_name",
    "token.lifetime",
    "redis.url",
    "accounts.main.password",
    "routes[0].hosts",
    "routes[0].upstream",
    "routes[0].path_prefix",
    "routes[0].csp",
    "routes[1].hosts",
    "routes[1].upstream",
    "accounts.main.password_env",
];

fn issues(toml: &str) -> Vec<ConfigIssue> {
    match config::from_toml_str(toml) {
        Ok(_) => panic!("config unexpectedly valid:\n{toml}"),
        Err(e) => e.issues,
    }
}

#[test]
fn every_invalid_key_is_reported_at_once_with_its_name() {
    let got = issues(MANY_MISTAKES);
    let keys: Vec<&str> = got.iter().map(|i| i.key.as_str()).collect();
    for want in MANY_MISTAKES_KEYS {
        assert!(keys.contains(&want), "{want} not reported; got {keys:?}");
    }
    let text = config::ConfigError {
        issues: got.clone(),
    }
    .to_string();
    for want in MANY_MISTAKES_KEYS {
        assert!(
            text.contains(want),
            "{want} missing from the message:\n{text}"
        );
    }
    assert!(
        !text.contains("inline-Hunter2"),
        "an inline secret was echoed back:\n{text}"
    );
}

#[test]
fn a_missing_or_empty_upstream_ca_file_names_its_key() {
    let dir = scratch("ca-file");
    let empty = dir.join("empty.pem");
    std::fs::write(&empty, "not a certificate\n").expect("write");
    let missing = dir.join("missing.pem");
    for (path, says) in [(&missing, "cannot read"), (&empty, "no PEM certificate")] {
        let got = issues(&format!(
            "[upstream]\nca_file = \"{}\"\n[[routes]]\nname = \"s\"\nhosts = [\"s.test\"]\nupstream = \"https://localhost:1\"\n",
            path.display()
        ));
        assert!(
            got.iter()
                .any(|i| i.key == "upstream.ca_file" && i.message.contains(says)),
            "{}: {got:?}",
            path.display()
        );
    }
}

#[test]
fn a_wrongly_typed_value_names_its_key() {
    let got = issues("[server]\nmax_connections = \"lots\"\n");
    assert!(
        got.iter().any(|i| i.key == "server.max_connections"),
        "{got:?}"
    );
}

#[test]
fn an_unknown_key_is_named() {
    let got = issues("[server]\nlisten_adress = \"127.0.0.1:8080\"\n");
    assert!(
        got.iter().any(|i| i.to_string().contains("listen_adress")),
        "{got:?}"
    );
}

#[test]
fn a_number_in_a_string_field_stays_a_string() {
    let cfg = config::from_toml_str(
        r#"
default_route = 5000
[session]
cookie_name = 12345
[[routes]]
name = "5000"
hosts = ["example.test"]
upstream = "http://127.0.0.1:1"
"#,
    )
    .expect("valid");
    assert_eq!(cfg.session.cookie_name, "12345");
    assert_eq!(
        cfg.default_route.map(|i| cfg.routes[i].name.as_str()),
        Some("5000")
    );
}

// --- the binary -------------------------------------------------------------

const VALID: &str = r#"
[server]
listen = "127.0.0.1:18080"
[admin]
listen = "127.0.0.1:18081"
[[routes]]
name = "shop"
hosts = ["shop.example.test", "*.shop.example.test"]
path_prefix = "/store"
upstream = "http://127.0.0.1:18082"
[[routes]]
name = "5000"
hosts = ["numbers.example.test"]
upstream = "http://127.0.0.1:18083"
[[routes]]
name = "0123"
hosts = ["zeros.example.test"]
upstream = "http://127.0.0.1:18084"
"#;

struct Run {
    code: i32,
    stdout: String,
    stderr: String,
}

impl Run {
    fn all(&self) -> String {
        format!("{}{}", self.stdout, self.stderr)
    }
}

/// `chathub-proxy check-config --config FILE` with exactly these
/// `CHATHUB_PROXY_*` variables (inherited ones are removed) plus `env`.
fn check_config(name: &str, toml: &str, env: &[(&str, &str)]) -> Run {
    let dir = scratch(name);
    let path = dir.join("config.toml");
    std::fs::write(&path, toml).expect("write config");
    run_check(
        &dir,
        &[
            "check-config",
            "--config",
            path.to_str().expect("utf-8 path"),
        ],
        env,
    )
}

/// The binary with `args`, none of this process's `CHATHUB_*` variables (they
/// would override the config under test) and no `RUST_LOG`.
fn proxy_command(args: &[&str]) -> Command {
    let mut cmd = Command::new(env!("CARGO_BIN_EXE_chathub-proxy"));
    cmd.args(args).env_remove("RUST_LOG");
    for (k, _) in std::env::vars() {
        if k.starts_with(config::ENV_PREFIX) {
            cmd.env_remove(k);
        }
    }
    cmd
}

fn run_check(dir: &std::path::Path, args: &[&str], env: &[(&str, &str)]) -> Run {
    let mut cmd = proxy_command(args);
    cmd.current_dir(dir);
    cmd.envs(env.iter().copied());
    let out = cmd.output().expect("run chathub-proxy");
    Run {
        code: out.status.code().expect("exit code"),
        stdout: String::from_utf8_lossy(&out.stdout).into_owned(),
        stderr: String::from_utf8_lossy(&out.stderr).into_owned(),
    }
}

#[test]
fn check_config_exits_0_and_lists_the_resolved_routes() {
    let run = check_config("valid", VALID, &[]);
    assert_eq!(run.code, 0, "{}", run.all());
    for want in [
        "shop",
        "shop.example.test",
        "*.shop.example.test",
        "/store",
        "127.0.0.1:18082",
        "5000",
        "0123",
    ] {
        assert!(
            run.stdout.contains(want),
            "{want} missing from:\n{}",
            run.stdout
        );
    }
}

#[test]
fn check_config_exits_2_and_names_every_bad_key() {
    let run = check_config("invalid", MANY_MISTAKES, &[]);
    assert_eq!(run.code, 2, "{}", run.all());
    for want in MANY_MISTAKES_KEYS {
        assert!(
            run.all().contains(want),
            "{want} missing from:\n{}",
            run.all()
        );
    }
    assert!(!run.all().contains("inline-Hunter2"));
}

#[test]
fn a_missing_config_file_is_exit_2_naming_the_path() {
    let dir = scratch("missing");
    let path = dir.join("no-such-config.toml");
    let run = run_check(
        &dir,
        &["check-config", "--config", path.to_str().unwrap()],
        &[],
    );
    assert_eq!(run.code, 2, "{}", run.all());
    assert!(run.all().contains("no-such-config.toml"), "{}", run.all());
}

#[test]
fn environment_variables_override_the_file() {
    let run = check_config(
        "env-listen",
        VALID,
        &[("CHATHUB_PROXY_SERVER__LISTEN", "127.0.0.1:18099")],
    );
    assert_eq!(run.code, 0, "{}", run.all());
    assert!(run.stdout.contains("127.0.0.1:18099"), "{}", run.stdout);
    assert!(
        !run.stdout.contains("127.0.0.1:18080"),
        "the file's listen address survived the override:\n{}",
        run.stdout
    );

    // A valid file made invalid from the environment: the env value was read,
    // and the report names the key and where the value came from.
    let run = check_config(
        "env-bad",
        VALID,
        &[("CHATHUB_PROXY_SERVER__MAX_CONNECTIONS", "0")],
    );
    assert_eq!(run.code, 2, "{}", run.all());
    assert!(
        run.all().contains("server.max_connections"),
        "{}",
        run.all()
    );

    let run = check_config("env-source", VALID, &[("CHATHUB_PROXY_LOG__FORMAT", "xml")]);
    assert_eq!(run.code, 2, "{}", run.all());
    assert!(run.all().contains("log.format"), "{}", run.all());
    assert!(
        run.all().contains("CHATHUB_PROXY_"),
        "the report should say the value came from the environment:\n{}",
        run.all()
    );
}

#[test]
fn a_number_looking_env_value_stays_a_string() {
    // figment parses `5000` as an integer; the route name must still match.
    let run = check_config(
        "env-number",
        VALID,
        &[
            ("CHATHUB_PROXY_DEFAULT_ROUTE", "5000"),
            ("CHATHUB_PROXY_SESSION__COOKIE_NAME", "12345"),
        ],
    );
    assert_eq!(run.code, 0, "{}", run.all());
    // Leading zeros survive only quoted, as the README tells operators.
    let run = check_config(
        "env-quoted",
        VALID,
        &[("CHATHUB_PROXY_DEFAULT_ROUTE", "\"0123\"")],
    );
    assert_eq!(run.code, 0, "{}", run.all());
    // And a name that matches no route is still caught, so the two above were checked.
    let run = check_config(
        "env-unknown",
        VALID,
        &[("CHATHUB_PROXY_DEFAULT_ROUTE", "4999")],
    );
    assert_eq!(run.code, 2, "{}", run.all());
    assert!(run.all().contains("default_route"), "{}", run.all());
}

const WITH_ACCOUNTS: &str = r#"
[accounts.main]
base_url = "http://127.0.0.1:18090"
login = "acme-login"
password_env = "CHP_TEST_PASSWORD"
[accounts.keyed]
base_url = "http://127.0.0.1:18091"
api_key_file = "api.key"
[[routes]]
name = "support-site"
hosts = ["support.example.test"]
upstream = "http://127.0.0.1:18092"
account = "main"
organization = 6
operator = { rule = "fixed", id = 42 }
[[routes]]
name = "keyed-site"
hosts = ["keyed.example.test"]
upstream = "http://127.0.0.1:18093"
account = "keyed"
organization = "Customer Support"
operator = { rule = "first-active" }
"#;

const PASSWORD: &str = "Sup3r-S3cret-Pa55word";
const API_KEY: &str = "KEY-a1b2c3-very-secret";

#[test]
fn check_config_lists_routes_with_secrets_redacted() {
    let dir = scratch("secrets");
    std::fs::write(dir.join("api.key"), format!("{API_KEY}\n")).unwrap();
    let path = dir.join("config.toml");
    // The key file path is relative to the working directory, which run_check sets.
    std::fs::write(&path, WITH_ACCOUNTS).unwrap();
    let run = run_check(
        &dir,
        &["check-config", "--config", path.to_str().unwrap()],
        &[("CHP_TEST_PASSWORD", PASSWORD)],
    );
    assert_eq!(run.code, 0, "{}", run.all());
    for want in [
        "support-site",
        "support.example.test",
        "127.0.0.1:18092",
        "keyed-site",
        "main",
        "keyed",
    ] {
        assert!(
            run.stdout.contains(want),
            "{want} missing from:\n{}",
            run.stdout
        );
    }
    for secret in [PASSWORD, API_KEY] {
        assert!(
            !run.all().contains(secret),
            "a secret was printed:\n{}",
            run.all()
        );
    }
}

#[test]
fn an_unset_password_variable_is_exit_2_naming_the_key() {
    let dir = scratch("no-password");
    std::fs::write(dir.join("api.key"), API_KEY).unwrap();
    let path = dir.join("config.toml");
    std::fs::write(&path, WITH_ACCOUNTS).unwrap();
    let run = run_check(
        &dir,
        &["check-config", "--config", path.to_str().unwrap()],
        &[],
    );
    assert_eq!(run.code, 2, "{}", run.all());
    assert!(
        run.all().contains("accounts.main.password_env"),
        "{}",
        run.all()
    );
    assert!(
        run.all().contains("CHP_TEST_PASSWORD"),
        "the report should name the missing variable:\n{}",
        run.all()
    );
}

/// The root config.toml is the documented example and must work as is.
#[test]
fn the_commented_example_config_validates_as_is() {
    let path = concat!(env!("CARGO_MANIFEST_DIR"), "/config.toml");
    let toml = std::fs::read_to_string(path).expect("config.toml");
    let cfg = chathub_proxy::config::from_toml_str(&toml).expect("config.toml must validate");
    assert_eq!(cfg.routes.len(), 1);
    assert!(
        cfg.inject.dev_token.is_some(),
        "the example injects the development token"
    );
}

/// `chathub-proxy token HOST/PATH` mints through the configured account and
/// route (the emulator plays ChatHub), and names the route when none matches.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_token_command_mints_through_the_configured_route() {
    use chathub_proxy::emulator::{Emulator, Seed};
    let emu = Emulator::start("127.0.0.1:0".parse().expect("addr"), Seed::demo())
        .await
        .expect("emulator");
    let dir = scratch("token-command");
    std::fs::write(dir.join("password"), "demo-password").expect("password file");
    let toml = format!(
        r#"
        [accounts.demo]
        base_url = "{url}"
        login = "demo"
        password_file = "{pw}"
        [[routes]]
        name = "shop"
        hosts = ["shop.test"]
        path_prefix = "/shop"
        upstream = "http://127.0.0.1:9"
        organization = "Sales"
        operator = {{ rule = "fixed", id = 32 }}
        "#,
        url = emu.url(),
        pw = dir.join("password").display()
    );
    std::fs::write(dir.join("config.toml"), toml).expect("config");
    let dir2 = dir.clone();
    let run = tokio::task::spawn_blocking(move || {
        run_check(
            &dir2,
            &["token", "--config", "config.toml", "shop.test/shop/cart"],
            &[],
        )
    })
    .await
    .expect("join");
    assert_eq!(run.code, 0, "{}", run.all());
    assert!(run.stdout.contains("route: shop"), "{}", run.stdout);
    let token = run
        .stdout
        .lines()
        .find_map(|l| l.strip_prefix("token: "))
        .expect("token line")
        .to_owned();
    let claims =
        chathub_proxy::emulator::jwt::decode_claims(&token).expect("a JWT from the emulator");
    assert_eq!(claims["operator_id"], 32, "{claims:?}");
    assert_eq!(emu.calls("/api/operator/get-token"), 1);
    // A target no route serves is an error naming it, not a token.
    let run = tokio::task::spawn_blocking(move || {
        run_check(
            &dir,
            &["token", "--config", "config.toml", "other.test/"],
            &[],
        )
    })
    .await
    .expect("join");
    assert_ne!(run.code, 0);
    assert!(
        run.all().contains("no route for other.test/"),
        "{}",
        run.all()
    );
}

/// Start the binary on `toml` (JSON logs, its listener on port 0) and return
/// it with the address it bound, read from its "proxy listening" log line.
/// With `keep_stderr` a thread drains the rest of its log; without, the pipe
/// is closed once the address is known, so every later log write fails.
async fn spawn_proxy(name: &str, toml: &str, keep_stderr: bool) -> (Child, SocketAddr) {
    let dir = scratch(name);
    let path = dir.join("config.toml");
    std::fs::write(&path, toml).expect("write config");
    let mut child = proxy_command(&["run", "--config", path.to_str().expect("utf-8 path")])
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .spawn()
        .expect("start chathub-proxy");
    let stderr = child.stderr.take().expect("stderr");
    let addr = tokio::task::spawn_blocking(move || {
        let mut lines = BufReader::new(stderr).lines().map_while(Result::ok);
        let addr = lines
            .by_ref()
            .filter_map(|l| serde_json::from_str::<serde_json::Value>(&l).ok())
            .find(|l| l["message"] == "proxy listening")
            .and_then(|l| l["addr"].as_str()?.parse::<SocketAddr>().ok());
        if keep_stderr {
            std::thread::spawn(move || lines.for_each(drop));
        }
        addr
    });
    let addr = tokio::time::timeout(Duration::from_secs(30), addr)
        .await
        .expect("no listening line within 30 s")
        .expect("reader")
        .expect("an address in the listening line");
    (child, addr)
}

fn one_route_config(origin: &Origin, workers: usize) -> String {
    format!(
        r#"
[server]
listen = ["127.0.0.1:0"]
worker_threads = {workers}
[admin]
listen = ""
[log]
format = "json"
filter = "info"
[[routes]]
name = "site"
hosts = ["one.test"]
upstream = "{}"
inject = false
"#,
        origin.url()
    )
}

/// `server.worker_threads = 1` runs the proxy on a current-thread runtime
/// (everything on the main thread): the binary serves a page that way.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn one_worker_thread_serves_on_a_current_thread_runtime() {
    let origin = Origin::builder().fixed("/", 200, "served").start().await;
    let (mut child, addr) = spawn_proxy("one-worker", &one_route_config(&origin, 1), true).await;
    let got = fetch_get(&client::http1(addr), "one.test", "/").await;
    let _ = child.kill();
    let _ = child.wait();
    assert_eq!(got.status, StatusCode::OK);
    assert_eq!(got.text(), "served");
}

/// Regression: with stderr closed, every request's connection was dropped
/// unanswered: the access-log line failed to write, and tracing-subscriber
/// reported that with `eprintln!`, which panicked on the same stderr.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_closed_stderr_does_not_break_requests() {
    let origin = Origin::builder().fixed("/", 200, "served").start().await;
    let (mut child, addr) =
        spawn_proxy("closed-stderr", &one_route_config(&origin, 0), false).await;
    let c = client::http1(addr);
    let first = fetch_get(&c, "one.test", "/").await;
    let second = fetch_get(&c, "one.test", "/").await;
    let _ = child.kill();
    let _ = child.wait();
    assert_eq!(
        (first.status, first.text().as_str()),
        (StatusCode::OK, "served")
    );
    assert_eq!(second.status, StatusCode::OK);
}
