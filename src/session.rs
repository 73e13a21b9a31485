//! The proxy's own session: a random 128-bit id in a cookie, set with the first
//! injected page and removed from requests before they reach the upstream.
//!
//! The cookie is `__Host-` prefixed, `Secure`, `HttpOnly`, `SameSite=Lax`,
//! `Path=/`, without `Domain`, when the client side is HTTPS; over plain HTTP
//! (development, or TLS ended in front without telling us) browsers refuse
//! `__Host-` without `Secure`, so the plain name is used there.

use crate::config::SessionConfig;
use base64::Engine;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use http::header::{COOKIE, HeaderMap, HeaderValue};
use sha2::{Digest, Sha256};
use std::fmt;

/// The prefix that makes browsers insist on `Secure`, `Path=/` and no `Domain`.
const HOST_PREFIX: &str = "__Host-";

/// Length of the cookie value: 16 bytes in unpadded base64url.
const ENCODED_LEN: usize = 22;

/// A session id: 128 random bits. `Debug` never shows it, and there is no
/// `Display`, so that it cannot end up in a log line by accident.
#[derive(Clone, Copy, PartialEq, Eq, Hash)]
pub struct SessionId([u8; 16]);

impl SessionId {
    /// The cookie value (unpadded base64url), for the one place that sends it.
    pub fn expose(&self) -> String {
        URL_SAFE_NO_PAD.encode(self.0)
    }

    /// Parse a cookie value; `None` unless it is exactly what [`new_id`] makes.
    pub fn parse(value: &[u8]) -> Option<SessionId> {
        if value.len() != ENCODED_LEN {
            return None;
        }
        // The decoder rejects non-zero trailing bits, so every id has exactly
        // one accepted spelling.
        let bytes = URL_SAFE_NO_PAD.decode(value).ok()?;
        let bytes: [u8; 16] = bytes.try_into().ok()?;
        Some(SessionId(bytes))
    }

    /// The raw bits, for hashing into cache keys.
    pub fn as_bytes(&self) -> &[u8; 16] {
        &self.0
    }

    /// SHA-256 of the id, hex: how the session appears in shared (Redis) keys.
    pub fn digest_hex(&self) -> String {
        let digest = Sha256::digest(self.0);
        let mut out = String::with_capacity(64);
        for b in digest {
            out.push(char::from(HEX[usize::from(b >> 4)]));
            out.push(char::from(HEX[usize::from(b & 0x0f)]));
        }
        out
    }
}

const HEX: &[u8; 16] = b"0123456789abcdef";

impl fmt::Debug for SessionId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("SessionId(<redacted>)")
    }
}

/// A fresh random session id from the operating system's CSPRNG (through
/// rand's thread-local generator, which is seeded from it and reseeds).
pub fn new_id() -> SessionId {
    SessionId(rand::random())
}

/// The cookie name for a client connection: `__Host-<name>` over HTTPS, the
/// plain name over HTTP.
pub fn cookie_name(cfg: &SessionConfig, https: bool) -> String {
    let base = cookie_base(cfg);
    if https {
        format!("{HOST_PREFIX}{base}")
    } else {
        base.to_owned()
    }
}

/// The configured name without a `__Host-` prefix (added back over HTTPS).
fn cookie_base(cfg: &SessionConfig) -> &str {
    cfg.cookie_name
        .strip_prefix(HOST_PREFIX)
        .unwrap_or(&cfg.cookie_name)
}

/// Both spellings of the cookie name; the proxy strips both from upstream
/// requests, whichever scheme the client used.
pub fn cookie_names(cfg: &SessionConfig) -> [String; 2] {
    [cookie_name(cfg, true), cookie_name(cfg, false)]
}

/// The session id from the request's `Cookie` headers, if a well-formed one is
/// there. A malformed value counts as no session (the proxy then makes a new one).
pub fn from_headers(headers: &HeaderMap, cookie_name: &str) -> Option<SessionId> {
    cookie_values(headers, cookie_name).find_map(SessionId::parse)
}

/// `Set-Cookie` for a session: `HttpOnly; SameSite=Lax; Path=/; Max-Age`, and
/// `Secure` with the `__Host-` name when the client side is HTTPS. No `Domain`,
/// so the cookie stays on the host that set it.
pub fn set_cookie(cfg: &SessionConfig, id: &SessionId, https: bool) -> HeaderValue {
    let base = cookie_base(cfg);
    // Assembled in one buffer: with `format!` and the name and id as strings
    // of their own this took about 1.9 k instructions, paid on the first page
    // of every session.
    let mut v = String::with_capacity(HOST_PREFIX.len() + base.len() + 96);
    if https {
        v.push_str(HOST_PREFIX);
    }
    v.push_str(base);
    v.push('=');
    URL_SAFE_NO_PAD.encode_string(id.0, &mut v);
    v.push_str("; Path=/; Max-Age=");
    v.push_str(itoa::Buffer::new().format(cfg.max_age.as_secs()));
    v.push_str("; HttpOnly; SameSite=Lax");
    if https {
        v.push_str("; Secure");
    }
    // The name is validated to letters, digits and `-_.` and the value is
    // base64url, so the header value is always valid; fall back to a cookie
    // that clears nothing rather than panic.
    HeaderValue::from_str(&v)
        .unwrap_or_else(|_| HeaderValue::from_static("chathub-invalid=; Max-Age=0"))
}

/// Remove every cookie named in `names` from every `Cookie` header, keeping the
/// other cookies byte for byte and in order. A header left empty is dropped.
pub fn strip_from_request<S: AsRef<str>>(headers: &mut HeaderMap, names: &[S]) {
    let values: Vec<HeaderValue> = headers.get_all(COOKIE).iter().cloned().collect();
    if values.is_empty() {
        return;
    }
    headers.remove(COOKIE);
    for value in values {
        if let Some(kept) = strip_value(value.as_bytes(), names) {
            // A subset of a valid header value is a valid header value; if that
            // ever failed, dropping the header is the side that leaks nothing.
            if let Ok(v) = HeaderValue::from_bytes(&kept) {
                headers.append(COOKIE, v);
            }
        }
    }
}

/// One `Cookie` header without the named cookies; `None` when nothing is left.
fn strip_value<S: AsRef<str>>(value: &[u8], names: &[S]) -> Option<Vec<u8>> {
    let mut out: Vec<u8> = Vec::with_capacity(value.len());
    for pair in value.split(|&b| b == b';') {
        let name = match pair.iter().position(|&b| b == b'=') {
            Some(eq) => trim(&pair[..eq]),
            None => trim(pair),
        };
        if names.iter().any(|n| n.as_ref().as_bytes() == name) {
            continue;
        }
        if !out.is_empty() || !trim(pair).is_empty() {
            if !out.is_empty() {
                out.push(b';');
            }
            out.extend_from_slice(pair);
        }
    }
    // Removing the first cookie leaves the space that followed its `;`.
    let start = out
        .iter()
        .position(|b| !b.is_ascii_whitespace())
        .unwrap_or(out.len());
    out.drain(..start);
    (!out.is_empty()).then_some(out)
}

/// Values of the cookie `name` across all `Cookie` headers, in order.
pub(crate) fn cookie_values<'a>(
    headers: &'a HeaderMap,
    name: &'a str,
) -> impl Iterator<Item = &'a [u8]> + 'a {
    headers.get_all(COOKIE).iter().flat_map(move |v| {
        v.as_bytes().split(|&b| b == b';').filter_map(move |pair| {
            let pair = trim(pair);
            let eq = pair.iter().position(|&b| b == b'=')?;
            let (k, rest) = pair.split_at(eq);
            (trim(k) == name.as_bytes()).then(|| trim(&rest[1..]))
        })
    })
}

fn trim(s: &[u8]) -> &[u8] {
    let start = s
        .iter()
        .position(|b| !b.is_ascii_whitespace())
        .unwrap_or(s.len());
    let end = s
        .iter()
        .rposition(|b| !b.is_ascii_whitespace())
        .map_or(start, |e| e + 1);
    &s[start..end.max(start)]
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::time::Duration;

    fn cfg() -> SessionConfig {
        SessionConfig {
            cookie_name: "chathub_sid".into(),
            max_age: Duration::from_secs(86_400),
        }
    }

    fn headers(cookies: &[&str]) -> HeaderMap {
        let mut h = HeaderMap::new();
        for c in cookies {
            h.append(COOKIE, HeaderValue::from_str(c).unwrap());
        }
        h
    }

    #[test]
    fn ids_are_random_128_bit_and_round_trip() {
        let a = new_id();
        let b = new_id();
        assert_ne!(a, b);
        let v = a.expose();
        assert_eq!(v.len(), 22);
        assert!(
            v.bytes()
                .all(|c| c.is_ascii_alphanumeric() || c == b'-' || c == b'_')
        );
        assert_eq!(SessionId::parse(v.as_bytes()), Some(a));
    }

    #[test]
    fn malformed_values_are_no_session() {
        for bad in [
            "",
            "abc",
            "!!!!!!!!!!!!!!!!!!!!!!",
            "AAAAAAAAAAAAAAAAAAAAAAA",
            "AAAAAAAAAAAAAAAAAAAAAB",
        ] {
            assert_eq!(SessionId::parse(bad.as_bytes()), None, "{bad:?}");
        }
        // 22 chars whose last one carries non-zero padding bits: a second
        // spelling of some id, refused so that ids have one form.
        assert_eq!(SessionId::parse(b"AAAAAAAAAAAAAAAAAAAAAB"), None);
        assert!(SessionId::parse(b"AAAAAAAAAAAAAAAAAAAAAA").is_some());
    }

    #[test]
    fn debug_never_shows_the_id() {
        let id = new_id();
        let shown = format!("{id:?} {:?}", Some(id));
        assert!(!shown.contains(&id.expose()));
        assert!(shown.contains("redacted"));
    }

    #[test]
    fn cookie_attributes_over_https() {
        let id = new_id();
        let v = set_cookie(&cfg(), &id, true);
        let v = v.to_str().unwrap();
        assert!(
            v.starts_with(&format!("__Host-chathub_sid={}; ", id.expose())),
            "{v}"
        );
        let attrs: Vec<&str> = v.split("; ").skip(1).collect();
        assert_eq!(
            attrs,
            [
                "Path=/",
                "Max-Age=86400",
                "HttpOnly",
                "SameSite=Lax",
                "Secure"
            ]
        );
        assert!(!v.to_ascii_lowercase().contains("domain"));
    }

    #[test]
    fn cookie_attributes_over_http_have_no_host_prefix_nor_secure() {
        let id = new_id();
        let v = set_cookie(&cfg(), &id, false);
        let v = v.to_str().unwrap();
        assert!(v.starts_with("chathub_sid="), "{v}");
        assert!(!v.contains("Secure"));
        assert!(v.contains("HttpOnly") && v.contains("SameSite=Lax") && v.contains("Path=/"));
        // A configured `__Host-` name is not doubled, and is dropped over HTTP.
        let c = SessionConfig {
            cookie_name: "__Host-x".into(),
            ..cfg()
        };
        assert_eq!(cookie_name(&c, true), "__Host-x");
        assert_eq!(cookie_name(&c, false), "x");
    }

    #[test]
    fn reads_the_session_from_any_cookie_header() {
        let id = new_id();
        let h = headers(&[
            "a=1; b=2",
            &format!("c=3; __Host-chathub_sid={}", id.expose()),
        ]);
        assert_eq!(from_headers(&h, "__Host-chathub_sid"), Some(id));
        assert_eq!(from_headers(&h, "chathub_sid"), None);
        // A malformed first value does not hide a good second one.
        let h = headers(&[&format!("chathub_sid=junk; chathub_sid={}", id.expose())]);
        assert_eq!(from_headers(&h, "chathub_sid"), Some(id));
        assert_eq!(from_headers(&HeaderMap::new(), "chathub_sid"), None);
    }

    #[test]
    fn strips_only_our_cookie_and_keeps_the_rest_byte_exact() {
        let names = cookie_names(&cfg());
        let mut h = headers(&[
            "a=1; chathub_sid=xyz; b=\"q;\"",
            "__Host-chathub_sid=abc",
            "chathub_sid=1;theirs=x y;  c=3",
            "other_chathub_sid=keep",
        ]);
        strip_from_request(&mut h, &names);
        let got: Vec<&str> = h
            .get_all(COOKIE)
            .iter()
            .map(|v| v.to_str().unwrap())
            .collect();
        assert_eq!(
            got,
            [
                "a=1; b=\"q;\"",
                "theirs=x y;  c=3",
                "other_chathub_sid=keep"
            ]
        );
    }

    #[test]
    fn strip_leaves_requests_without_cookies_alone() {
        let mut h = HeaderMap::new();
        h.insert("x", HeaderValue::from_static("1"));
        strip_from_request(&mut h, &["chathub_sid"]);
        assert_eq!(h.len(), 1);
        let mut h = headers(&["a=1;;b=2"]);
        strip_from_request(&mut h, &["chathub_sid"]);
        assert_eq!(h.get(COOKIE).unwrap(), "a=1;;b=2");
    }

    #[test]
    fn digest_is_stable_hex_and_hides_the_id() {
        let id = SessionId::parse(b"AAAAAAAAAAAAAAAAAAAAAA").unwrap();
        let d = id.digest_hex();
        assert_eq!(d.len(), 64);
        // sha256 of 16 zero bytes.
        assert_eq!(
            d,
            "374708fff7719dd5979ec875d56cd2286f6d3cf7ec317a3b25632aab28ec37bb"
        );
    }
}
