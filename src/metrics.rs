//! Prometheus counters for everything an operator asks "why?" about: requests,
//! injected or skipped pages by reason, rewriter bail-outs, token mints and the
//! ChatHub circuit breaker. Served as text on the admin listener.

use prometheus_client::encoding::EncodeLabelSet;
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::gauge::Gauge;
use prometheus_client::registry::Registry;
use std::collections::HashMap;
use std::sync::{Arc, RwLock};

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct RequestLabels {
    route: String,
    status: u16,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct ReasonLabels {
    reason: String,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct OutcomeLabels {
    outcome: String,
    reason: String,
}

/// All counters of one proxy instance (tests run several, so nothing is global).
pub struct Metrics {
    registry: Registry,
    requests: Family<RequestLabels, Counter>,
    inject: Family<OutcomeLabels, Counter>,
    rewrite_failures: Family<ReasonLabels, Counter>,
    upstream_errors: Family<ReasonLabels, Counter>,
    token_events: Family<ReasonLabels, Counter>,
    breaker_open: Gauge,
    connections: Gauge,
    parked: Gauge,
    /// Handles of `requests` by route and status, and of `inject` "skipped" by
    /// reason (status 0): the two counters every request touches.
    hot: Handles,
}

/// Counter handles by label, in front of a `Family`. A `Family` lookup wants an
/// owned label set (an allocation) and hashes it with SipHash; this costs a
/// string hash with foldhash under a read lock. A handle shares its value with
/// the `Family`'s counter, so the exported numbers are the same.
#[derive(Default)]
struct Handles(RwLock<HandleMap>);

/// Name → (status or 0, handle); a route sees a handful of statuses.
type HandleMap = HashMap<String, Vec<(u16, Counter)>, foldhash::fast::RandomState>;

impl Handles {
    fn inc(&self, name: &str, code: u16, create: impl FnOnce() -> Counter) {
        // A poisoned lock still holds a consistent map: counting goes on.
        {
            let map = self.0.read().unwrap_or_else(|e| e.into_inner());
            if let Some((_, h)) = map
                .get(name)
                .and_then(|l| l.iter().find(|(c, _)| *c == code))
            {
                h.inc();
                return;
            }
        }
        let mut map = self.0.write().unwrap_or_else(|e| e.into_inner());
        let list = map.entry(name.to_owned()).or_default();
        match list.iter().find(|(c, _)| *c == code) {
            Some((_, h)) => {
                h.inc();
            }
            None => {
                let h = create();
                h.inc();
                list.push((code, h));
            }
        }
    }
}

impl Default for Metrics {
    fn default() -> Self {
        Self::new()
    }
}

impl Metrics {
    pub fn new() -> Self {
        let mut registry = Registry::with_prefix("chathub_proxy");
        let requests = Family::<RequestLabels, Counter>::default();
        let inject = Family::<OutcomeLabels, Counter>::default();
        let rewrite_failures = Family::<ReasonLabels, Counter>::default();
        let upstream_errors = Family::<ReasonLabels, Counter>::default();
        let token_events = Family::<ReasonLabels, Counter>::default();
        let breaker_open = Gauge::default();
        let connections = Gauge::default();
        let parked = Gauge::default();
        registry.register(
            "requests",
            "Requests answered, by route and status",
            requests.clone(),
        );
        registry.register(
            "inject",
            "HTML responses by outcome (injected/fallback/skipped) and reason",
            inject.clone(),
        );
        registry.register(
            "rewrite_failures",
            "Rewriter bail-outs; the rest of the page passed through unchanged",
            rewrite_failures.clone(),
        );
        registry.register(
            "upstream_errors",
            "Upstream failures by kind",
            upstream_errors.clone(),
        );
        registry.register(
            "token_events",
            "Token cache and ChatHub API events",
            token_events.clone(),
        );
        registry.register(
            "breaker_open",
            "1 while the ChatHub circuit breaker is open",
            breaker_open.clone(),
        );
        registry.register(
            "open_connections",
            "Client connections currently open",
            connections.clone(),
        );
        registry.register(
            "parked_connections",
            "Idle keep-alive connections waiting on the bare socket (see conn.rs)",
            parked.clone(),
        );
        Metrics {
            registry,
            requests,
            inject,
            rewrite_failures,
            upstream_errors,
            token_events,
            breaker_open,
            connections,
            parked,
            hot: Handles::default(),
        }
    }

    pub fn request(&self, route: &str, status: u16) {
        self.hot.inc(route, status, || {
            self.requests
                .get_or_create(&RequestLabels {
                    route: route.to_owned(),
                    status,
                })
                .clone()
        });
    }

    /// Count a page that got its snippet: the widget (`fallback` is `None`),
    /// or the fallback contact block in its place, labelled with why the
    /// widget could not go in. Each page is counted under one outcome only.
    pub fn inserted(&self, fallback: Option<&'static str>) {
        let (outcome, reason) = match fallback {
            None => ("injected", ""),
            Some(reason) => ("fallback", reason),
        };
        self.inject
            .get_or_create(&OutcomeLabels {
                outcome: outcome.into(),
                reason: reason.into(),
            })
            .inc();
    }

    /// Count a response that did not get the widget, and why.
    pub fn skipped(&self, reason: &str) {
        self.hot.inc(reason, 0, || {
            self.inject
                .get_or_create(&OutcomeLabels {
                    outcome: "skipped".into(),
                    reason: reason.to_owned(),
                })
                .clone()
        });
    }

    pub fn rewrite_failure(&self, reason: &str) {
        self.rewrite_failures
            .get_or_create(&ReasonLabels {
                reason: reason.to_owned(),
            })
            .inc();
    }

    pub fn upstream_error(&self, reason: &str) {
        self.upstream_errors
            .get_or_create(&ReasonLabels {
                reason: reason.to_owned(),
            })
            .inc();
    }

    /// Token layer events: `hit`, `mint`, `mint_failed`, `budget_exceeded`, `breaker_open`, ...
    pub fn token_event(&self, event: &str) {
        self.token_events
            .get_or_create(&ReasonLabels {
                reason: event.to_owned(),
            })
            .inc();
    }

    pub fn set_breaker_open(&self, open: bool) {
        self.breaker_open.set(open as i64);
    }

    pub fn connection_opened(&self) {
        self.connections.inc();
    }

    pub fn connection_closed(&self) {
        self.connections.dec();
    }

    pub fn connection_parked(&self) {
        self.parked.inc();
    }

    pub fn connection_unparked(&self) {
        self.parked.dec();
    }

    /// Client connections open right now.
    pub fn open_connections(&self) -> i64 {
        self.connections.get()
    }

    /// Connections parked right now.
    pub fn parked_connections(&self) -> i64 {
        self.parked.get()
    }

    /// Current value of a token event counter (tests and `token` command).
    pub fn token_event_count(&self, event: &str) -> u64 {
        self.token_events
            .get_or_create(&ReasonLabels {
                reason: event.to_owned(),
            })
            .get()
    }

    /// Current count of skipped responses for a reason.
    pub fn skipped_count(&self, reason: &str) -> u64 {
        self.inject
            .get_or_create(&OutcomeLabels {
                outcome: "skipped".into(),
                reason: reason.to_owned(),
            })
            .get()
    }

    pub fn rewrite_failure_count(&self, reason: &str) -> u64 {
        self.rewrite_failures
            .get_or_create(&ReasonLabels {
                reason: reason.to_owned(),
            })
            .get()
    }

    /// Prometheus text exposition.
    pub fn render(&self) -> String {
        let mut out = String::new();
        // Encoding into a String cannot fail.
        let _ = prometheus_client::encoding::text::encode(&mut out, &self.registry);
        out
    }
}

/// Shared handle.
pub type SharedMetrics = Arc<Metrics>;

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn cached_handles_count_into_the_exported_families() {
        let m = Metrics::new();
        for _ in 0..3 {
            m.request("shop", 200);
        }
        m.request("shop", 404);
        m.request("blog", 200);
        // A reason spelled like a route is its own counter (different family).
        m.skipped("shop");
        m.skipped("not_html");
        m.skipped("not_html");
        let text = m.render();
        for line in [
            r#"chathub_proxy_requests_total{route="shop",status="200"} 3"#,
            r#"chathub_proxy_requests_total{route="shop",status="404"} 1"#,
            r#"chathub_proxy_requests_total{route="blog",status="200"} 1"#,
            r#"chathub_proxy_inject_total{outcome="skipped",reason="shop"} 1"#,
            r#"chathub_proxy_inject_total{outcome="skipped",reason="not_html"} 2"#,
        ] {
            assert!(text.contains(line), "{line} missing from:\n{text}");
        }
        assert_eq!(m.skipped_count("not_html"), 2);
    }
}
