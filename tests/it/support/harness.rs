//! Start the proxy in-process from a TOML string, on `127.0.0.1:0`.

use chathub_proxy::config::{self, Config, raw::RawConfig};
use chathub_proxy::metrics::SharedMetrics;
use chathub_proxy::server::{self, Running};
use figment::Figment;
use figment::providers::{Format, Serialized, Toml};
use std::net::SocketAddr;
use std::sync::Once;

/// Applied above the built-in defaults and below the test's own TOML: every
/// listener on an ephemeral loopback port, and a short drain so that a test
/// that forgets to shut down does not linger.
const TEST_BASE: &str = r#"
[server]
listen = "127.0.0.1:0"
grace_period = "5s"
[admin]
listen = "127.0.0.1:0"
"#;

/// Log to the test output when `TEST_LOG` is set (e.g. `TEST_LOG=debug`).
pub fn init_logging() {
    static ONCE: Once = Once::new();
    ONCE.call_once(|| {
        if let Ok(filter) = std::env::var("TEST_LOG") {
            let _ = tracing_subscriber::fmt()
                .with_env_filter(tracing_subscriber::EnvFilter::new(filter))
                .with_test_writer()
                .try_init();
        }
    });
}

/// Replace each `{name}` placeholder with its value.
pub fn substitute(toml: &str, subs: &[(&str, &str)]) -> String {
    let mut out = toml.to_owned();
    for (k, v) in subs {
        out = out.replace(&format!("{{{k}}}"), v);
    }
    out
}

/// Defaults < [`TEST_BASE`] < `toml`, validated; panics with every issue.
pub fn config(toml: &str) -> Config {
    let fig = Figment::from(Serialized::defaults(RawConfig::default()))
        .merge(Toml::string(TEST_BASE))
        .merge(Toml::string(toml));
    config::from_figment(&fig).unwrap_or_else(|e| panic!("test config is invalid: {e}\n{toml}"))
}

/// A proxy running in this test's runtime.
pub struct Proxy {
    running: Option<Running>,
    /// The first listener.
    pub addr: SocketAddr,
    /// Every listener, in config order.
    pub addrs: Vec<SocketAddr>,
    /// The admin listener, if enabled.
    pub admin: Option<SocketAddr>,
    /// The proxy's counters.
    pub metrics: SharedMetrics,
}

impl Proxy {
    /// Start from a config.
    pub async fn start(config: Config) -> Proxy {
        init_logging();
        let running = server::start(config)
            .await
            .unwrap_or_else(|e| panic!("proxy failed to start: {e}"));
        Proxy {
            addr: running.addrs[0],
            addrs: running.addrs.clone(),
            admin: running.admin,
            metrics: running.metrics.clone(),
            running: Some(running),
        }
    }

    /// Start from TOML in which `{origin}` is replaced by `origin`'s URL.
    pub async fn with_origin(toml: &str, origin: &super::origin::Origin) -> Proxy {
        Proxy::start(config(&substitute(toml, &[("origin", &origin.url())]))).await
    }

    /// Start from TOML with the given `{name}` placeholders replaced.
    pub async fn with(toml: &str, subs: &[(&str, &str)]) -> Proxy {
        Proxy::start(config(&substitute(toml, subs))).await
    }

    /// Graceful shutdown; returns whether everything finished within the grace period.
    pub async fn shutdown(mut self) -> bool {
        match self.running.take() {
            Some(r) => r.shutdown().await,
            None => true,
        }
    }

    /// Take the running handle, e.g. to shut down from another task.
    pub fn take_running(&mut self) -> Running {
        self.running.take().expect("proxy already shut down")
    }
}

/// A route block for the common single-route case.
pub fn one_route(host: &str) -> String {
    format!(
        r#"
[[routes]]
name = "site"
hosts = ["{host}"]
upstream = "{{origin}}"
inject = false
"#
    )
}

/// A directory of its own (emptied) under the target's test scratch space.
pub fn scratch(name: &str) -> std::path::PathBuf {
    let dir = std::path::PathBuf::from(env!("CARGO_TARGET_TMPDIR"))
        .join("it-scratch")
        .join(name);
    let _ = std::fs::remove_dir_all(&dir);
    std::fs::create_dir_all(&dir).expect("scratch dir");
    dir
}

/// `chathub_proxy_inject_total` by (outcome, reason), from Prometheus text.
pub fn inject_outcomes(text: &str) -> std::collections::HashMap<(String, String), f64> {
    let label = |l: &str, key: &str| {
        let from = l.find(&format!("{key}=\"")).map(|i| i + key.len() + 2)?;
        Some(l[from..][..l[from..].find('"')?].to_owned())
    };
    text.lines()
        .filter(|l| l.starts_with("chathub_proxy_inject_total{"))
        .filter_map(|l| {
            let value = l.rsplit(' ').next()?.parse().ok()?;
            Some(((label(l, "outcome")?, label(l, "reason")?), value))
        })
        .collect()
}
