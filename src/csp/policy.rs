//! Policy text and source expressions: parsing a policy into directives, and
//! whether a source expression lets the widget's URLs through (CSP3 §6.7.2.8).

use super::Blocked;

/// A URL the widget needs, split the way source expressions match it.
#[derive(Clone, Debug, PartialEq, Eq)]
pub(super) struct Target {
    pub(super) scheme: String,
    pub(super) host: String,
    pub(super) port: u16,
    /// `None`: any path on the origin (connections).
    pub(super) path: Option<String>,
    /// `https://host[:port]`, as added to a policy.
    pub(super) origin: String,
}

impl Target {
    pub(super) fn parse(url: &str, with_path: bool) -> Option<Target> {
        let u = url::Url::parse(url).ok()?;
        let host = u.host_str()?.to_ascii_lowercase();
        let port = u.port_or_known_default()?;
        Some(Target {
            scheme: u.scheme().to_ascii_lowercase(),
            host,
            port,
            path: with_path.then(|| u.path().to_owned()),
            origin: u.origin().ascii_serialization(),
        })
    }

    /// The same origin under another scheme (`https` → `wss`), keeping an explicit port.
    pub(super) fn with_scheme(&self, scheme: &str) -> Target {
        let default = default_port(&self.scheme);
        let origin = if Some(self.port) == default {
            format!("{scheme}://{}", self.host)
        } else {
            format!("{scheme}://{}:{}", self.host, self.port)
        };
        let port = if Some(self.port) == default {
            default_port(scheme).unwrap_or(self.port)
        } else {
            self.port
        };
        Target {
            scheme: scheme.to_owned(),
            host: self.host.clone(),
            port,
            path: None,
            origin,
        }
    }
}

pub(super) fn default_port(scheme: &str) -> Option<u16> {
    match scheme {
        "http" | "ws" => Some(80),
        "https" | "wss" => Some(443),
        _ => None,
    }
}

/// One policy: its directives in order. Names are lower-cased; a repeated
/// name is kept in the text but ignored, as browsers do.
pub(super) struct Policy<'a> {
    pub(super) text: &'a str,
    pub(super) directives: Vec<Directive<'a>>,
}

pub(super) struct Directive<'a> {
    pub(super) name: String,
    pub(super) raw: &'a str,
    pub(super) sources: Vec<&'a str>,
    pub(super) duplicate: bool,
}

impl<'a> Policy<'a> {
    pub(super) fn parse(text: &'a str) -> Policy<'a> {
        let mut directives: Vec<Directive<'a>> = Vec::new();
        for raw in text.split(';') {
            let mut tokens = raw.split_ascii_whitespace();
            let Some(name) = tokens.next() else { continue };
            let name = name.to_ascii_lowercase();
            let duplicate = directives.iter().any(|d| d.name == name);
            directives.push(Directive {
                name,
                raw,
                sources: tokens.collect(),
                duplicate,
            });
        }
        Policy { text, directives }
    }

    pub(super) fn get(&self, name: &str) -> Option<&Directive<'a>> {
        self.directives
            .iter()
            .find(|d| !d.duplicate && d.name == name)
    }

    /// The directive that governs `<script src>` elements.
    pub(super) fn script(&self) -> Option<&Directive<'a>> {
        self.get("script-src-elem")
            .or_else(|| self.get("script-src"))
            .or_else(|| self.get("default-src"))
    }

    /// The directive that governs `fetch` and WebSocket.
    pub(super) fn connect(&self) -> Option<&Directive<'a>> {
        self.get("connect-src").or_else(|| self.get("default-src"))
    }

    pub(super) fn allows_same_origin_script(&self, nonce: Option<&str>) -> bool {
        self.script()
            .is_none_or(|d| d.allows_nonce(nonce) || (!d.strict_dynamic() && d.has_self_or_star()))
    }

    pub(super) fn allows_same_origin_connect(&self) -> bool {
        self.connect().is_none_or(|d| d.has_self_or_star())
    }
}

impl Directive<'_> {
    pub(super) fn keyword(&self, kw: &str) -> bool {
        self.sources.iter().any(|s| s.eq_ignore_ascii_case(kw))
    }

    pub(super) fn strict_dynamic(&self) -> bool {
        self.keyword("'strict-dynamic'")
    }

    pub(super) fn has_self_or_star(&self) -> bool {
        self.keyword("'self'") || self.keyword("*")
    }

    /// The values of `'nonce-…'` sources (the prefix is case-insensitive, the value not).
    pub(super) fn nonces(&self) -> impl Iterator<Item = &str> {
        self.sources.iter().filter_map(|s| {
            let inner = s.strip_prefix('\'')?.strip_suffix('\'')?;
            let (prefix, value) = inner.split_at_checked(6)?;
            (prefix.eq_ignore_ascii_case("nonce-") && !value.is_empty()).then_some(value)
        })
    }

    pub(super) fn allows_nonce(&self, nonce: Option<&str>) -> bool {
        nonce.is_some_and(|n| self.nonces().any(|v| v == n))
    }

    pub(super) fn hashes(&self) -> bool {
        self.sources.iter().any(|s| {
            let l = s.to_ascii_lowercase();
            l.starts_with("'sha256-") || l.starts_with("'sha384-") || l.starts_with("'sha512-")
        })
    }

    /// Host sources, scheme sources, `*` and `'self'`: the lists an origin can join.
    pub(super) fn has_allowlist(&self) -> bool {
        self.sources.iter().any(|s| !s.starts_with('\'')) || self.keyword("'self'")
    }

    /// An empty list, or `'none'` alone.
    pub(super) fn allows_nothing(&self) -> bool {
        self.sources
            .iter()
            .all(|s| s.eq_ignore_ascii_case("'none'"))
    }

    pub(super) fn can_amend(&self) -> bool {
        !self.allows_nothing() && !self.strict_dynamic() && self.has_allowlist()
    }

    pub(super) fn why_blocked(&self, nonce: Option<&str>) -> Blocked {
        if self.allows_nothing() {
            Blocked::NoScripts
        } else if self.strict_dynamic() {
            if nonce.is_some() {
                Blocked::NoNonce
            } else {
                Blocked::StrictDynamic
            }
        } else if self.hashes() && !self.has_allowlist() && self.nonces().next().is_none() {
            Blocked::HashOnly
        } else if !self.has_allowlist() {
            Blocked::NoAllowlist
        } else {
            Blocked::NoNonce
        }
    }

    /// Whether a parser-inserted `<script src=widget nonce=…>` may run.
    pub(super) fn allows_script(&self, widget: Option<&Target>, nonce: Option<&str>) -> bool {
        if self.allows_nonce(nonce) {
            return true;
        }
        // 'strict-dynamic' makes host sources, 'self' and '*' ignored for parser-inserted scripts.
        if self.strict_dynamic() {
            return false;
        }
        match widget {
            Some(t) => self.matches(t),
            None => self.has_self_or_star(),
        }
    }

    /// Whether any source expression (host, scheme or `*`) matches `t`.
    /// `'self'` never does: the widget and ChatHub are other origins.
    pub(super) fn matches(&self, t: &Target) -> bool {
        self.sources.iter().any(|s| source_matches(s, t))
    }
}

/// CSP3 §6.7.2.8 "Does url match expression", for the parts a proxy can know
/// (not the page's own origin, so not `'self'`). Unknown syntax matches nothing.
pub(super) fn source_matches(source: &str, t: &Target) -> bool {
    if source.starts_with('\'') {
        return false;
    }
    if source == "*" {
        return matches!(t.scheme.as_str(), "http" | "https");
    }
    let lower = source.to_ascii_lowercase();
    if let Some(scheme) = lower.strip_suffix(':')
        && !scheme.is_empty()
        && scheme
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || b"+-.".contains(&b))
    {
        return scheme_matches(scheme, &t.scheme);
    }
    let (scheme, rest) = match lower.split_once("://") {
        Some((s, r)) => (Some(s), r),
        None => (None, lower.as_str()),
    };
    let scheme_ok = match scheme {
        Some(s) => scheme_matches(s, &t.scheme),
        // No scheme: the page's own, which is http or https.
        None => matches!(t.scheme.as_str(), "http" | "https"),
    };
    if !scheme_ok {
        return false;
    }
    let host_end = rest.find([':', '/']).unwrap_or(rest.len());
    let (host, rest) = rest.split_at(host_end);
    let (port, path) = match rest.strip_prefix(':') {
        Some(p) => {
            let end = p.find('/').unwrap_or(p.len());
            (Some(&p[..end]), &p[end..])
        }
        None => (None, rest),
    };
    let host_ok = if host == "*" {
        true
    } else if let Some(suffix) = host.strip_prefix("*.") {
        t.host.len() > suffix.len() + 1
            && t.host.ends_with(suffix)
            && t.host[..t.host.len() - suffix.len()].ends_with('.')
    } else {
        !host.is_empty() && !host.contains('*') && host == t.host
    };
    if !host_ok {
        return false;
    }
    let port_ok = match port {
        Some("*") => true,
        Some(p) => match p.parse::<u16>() {
            Ok(p) => {
                p == t.port
                    || (p == 80 && t.port == 443 && matches!(t.scheme.as_str(), "https" | "wss"))
            }
            Err(_) => false,
        },
        None => Some(t.port) == default_port(&t.scheme),
    };
    if !port_ok {
        return false;
    }
    match (&t.path, path) {
        (_, "" | "/") => true,
        // A connection may go to any path: a path-limited source may not cover it.
        (None, _) => false,
        (Some(tp), sp) if sp.ends_with('/') => tp.starts_with(sp),
        (Some(tp), sp) => tp == sp,
    }
}

/// CSP3 scheme-part matching, with its secure upgrades.
pub(super) fn scheme_matches(source: &str, url: &str) -> bool {
    source == url
        || (source == "http" && url == "https")
        || (source == "ws" && matches!(url, "wss" | "http" | "https"))
        || (source == "wss" && url == "https")
}
