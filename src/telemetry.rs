//! Tracing set-up: text or JSON lines on stderr, filtered by `RUST_LOG` when set,
//! else by `log.filter` from config.

use crate::config::{LogConfig, LogFormat};
use tracing_subscriber::EnvFilter;

/// Install the global subscriber. Safe to call twice (the second call is a no-op),
/// which keeps tests that start several proxies simple.
pub fn init(cfg: &LogConfig) {
    let filter = EnvFilter::try_from_default_env().unwrap_or_else(|_| EnvFilter::new(&cfg.filter));
    let builder = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(std::io::stderr)
        // A log line that cannot be written (stderr closed, a full pipe) is
        // lost; by default tracing-subscriber reports it with `eprintln!`,
        // which panics on that same stderr and took the request down with it.
        .log_internal_errors(false);
    let _ = match cfg.format {
        LogFormat::Json => builder
            .json()
            .flatten_event(true)
            .with_current_span(true)
            .try_init(),
        LogFormat::Text => builder.try_init(),
    };
}
