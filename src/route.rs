//! Host and path to route, by hash lookups: the exact host first, then each
//! wildcard suffix of it, never a scan over all routes. Pure; no I/O.

use crate::config::{Config, Route, path_has_prefix};
use std::borrow::Cow;
use std::collections::HashMap;
use std::sync::Arc;

/// The tables' hasher: foldhash, several times cheaper than the default
/// SipHash on a short host name. Its keys come from config, so a client
/// choosing Host values cannot crowd a bucket (and the seed is random anyway).
type Hasher = foldhash::fast::RandomState;

#[derive(Debug, Clone)]
struct Entry {
    port: Option<u16>,
    prefix: String,
    route: Arc<Route>,
}

/// The routing table, built once per config.
#[derive(Debug, Clone, Default)]
pub struct RouteTable {
    exact: HashMap<String, Vec<Entry>, Hasher>,
    wildcard: HashMap<String, Vec<Entry>, Hasher>,
    default: Option<Arc<Route>>,
}

/// A Host value split into a lower-case name (no trailing dot) and a port.
/// The name borrows from `raw` when it is already in that form (nearly every
/// request), so a lookup allocates nothing.
pub fn normalize_host(raw: &str) -> Option<(Cow<'_, str>, Option<u16>)> {
    let raw = raw.trim();
    if raw.is_empty() {
        return None;
    }
    let (name, port) = if let Some(rest) = raw.strip_prefix('[') {
        // IPv6 literal: [::1]:8080
        let (inside, after) = rest.split_once(']')?;
        let port = match after.strip_prefix(':') {
            Some(p) => Some(p.parse().ok()?),
            None if after.is_empty() => None,
            None => return None,
        };
        (
            Cow::Owned(format!("[{}]", inside.to_ascii_lowercase())),
            port,
        )
    } else {
        let (name, port) = match raw.rsplit_once(':') {
            Some((n, p)) => (n, Some(p.parse().ok()?)),
            None => (raw, None),
        };
        let name = name.trim_end_matches('.');
        let name = if name.bytes().any(|b| b.is_ascii_uppercase()) {
            Cow::Owned(name.to_ascii_lowercase())
        } else {
            Cow::Borrowed(name)
        };
        (name, port)
    };
    let ok = !name.is_empty()
        && name
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || b"-._[]:".contains(&b));
    ok.then_some((name, port))
}

impl RouteTable {
    /// Index every route by each of its host patterns.
    pub fn new(config: &Config) -> Self {
        let mut t = RouteTable {
            default: config.default_route.map(|i| config.routes[i].clone()),
            ..Default::default()
        };
        for r in &config.routes {
            for h in &r.hosts {
                let map = if h.wildcard {
                    &mut t.wildcard
                } else {
                    &mut t.exact
                };
                map.entry(h.name.clone()).or_default().push(Entry {
                    port: h.port,
                    prefix: r.path_prefix.clone(),
                    route: r.clone(),
                });
            }
        }
        // Most specific first: a pattern with a port beats one without, then the
        // longest path prefix wins.
        for list in t.exact.values_mut().chain(t.wildcard.values_mut()) {
            list.sort_by(|a, b| {
                b.port
                    .is_some()
                    .cmp(&a.port.is_some())
                    .then(b.prefix.len().cmp(&a.prefix.len()))
            });
        }
        t
    }

    /// The route for a Host value (with or without port) and a path.
    pub fn lookup(&self, host: &str, path: &str) -> Option<&Arc<Route>> {
        match normalize_host(host) {
            Some((name, port)) => self.lookup_normalized(&name, port, path),
            None => self.default.as_ref(),
        }
    }

    /// [`lookup`](Self::lookup) for a host already split by
    /// [`normalize_host`] (the proxy has done that to check the Host).
    pub fn lookup_normalized(
        &self,
        name: &str,
        port: Option<u16>,
        path: &str,
    ) -> Option<&Arc<Route>> {
        if let Some(r) = self.exact.get(name).and_then(|l| pick(l, port, path)) {
            return Some(r);
        }
        // Each suffix after a label boundary: a.b.example.com → b.example.com, example.com, com.
        let mut rest = name;
        while let Some((_, suffix)) = rest.split_once('.') {
            if let Some(r) = self.wildcard.get(suffix).and_then(|l| pick(l, port, path)) {
                return Some(r);
            }
            rest = suffix;
        }
        self.default.as_ref()
    }
}

fn pick<'a>(list: &'a [Entry], port: Option<u16>, path: &str) -> Option<&'a Arc<Route>> {
    list.iter()
        .find(|e| (e.port.is_none() || e.port == port) && path_has_prefix(path, &e.prefix))
        .map(|e| &e.route)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::config::from_toml_str;

    fn table() -> RouteTable {
        let cfg = from_toml_str(
            r#"
            [[routes]]
            name = "exact"
            hosts = ["example.com"]
            upstream = "http://127.0.0.1:1"
            [[routes]]
            name = "app"
            hosts = ["example.com"]
            path_prefix = "/app"
            upstream = "http://127.0.0.1:2"
            [[routes]]
            name = "wild"
            hosts = ["*.example.com"]
            upstream = "http://127.0.0.1:3"
            [[routes]]
            name = "port"
            hosts = ["example.com:8443"]
            upstream = "http://127.0.0.1:4"
            "#,
        )
        .unwrap();
        RouteTable::new(&cfg)
    }

    fn name(t: &RouteTable, host: &str, path: &str) -> Option<String> {
        t.lookup(host, path).map(|r| r.name.clone())
    }

    #[test]
    fn exact_wildcard_prefix_and_port() {
        let t = table();
        assert_eq!(name(&t, "example.com", "/").as_deref(), Some("exact"));
        assert_eq!(name(&t, "EXAMPLE.com.", "/").as_deref(), Some("exact"));
        assert_eq!(name(&t, "example.com", "/app/x").as_deref(), Some("app"));
        assert_eq!(name(&t, "example.com", "/app2").as_deref(), Some("exact"));
        assert_eq!(name(&t, "a.b.example.com", "/").as_deref(), Some("wild"));
        assert_eq!(name(&t, "example.com:8443", "/").as_deref(), Some("port"));
        assert_eq!(name(&t, "example.com:80", "/").as_deref(), Some("exact"));
        assert_eq!(name(&t, "other.org", "/"), None);
        assert_eq!(name(&t, "exa mple.com", "/"), None);
    }

    #[test]
    fn host_normalisation() {
        assert_eq!(normalize_host("A.B:80"), Some(("a.b".into(), Some(80))));
        assert_eq!(
            normalize_host("[::1]:8080"),
            Some(("[::1]".into(), Some(8080)))
        );
        assert_eq!(normalize_host("a.b:x"), None);
        assert_eq!(normalize_host(""), None);
    }
}
