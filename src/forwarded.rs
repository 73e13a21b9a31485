//! Header hygiene at the proxy boundary: hop-by-hop headers go (including every
//! header a `Connection` header names), and `X-Forwarded-*` / `Forwarded` are set.
//! A client's own forwarded values are believed only from trusted proxies.
//!
//! This runs twice on every request (request and response heads), so it finds
//! what is present in one pass over the names and touches the map (a hash per
//! `remove`/`insert`) only for that: most heads carry none of these names or
//! only `Connection` (bench/README.md, "What profiling found").

use http::header::{self, HeaderMap, HeaderName, HeaderValue};
use std::net::IpAddr;

/// Headers that describe one hop and must never be forwarded (RFC 9110 §7.6.1).
/// Names, not strings: a `&str` is parsed and checked on every use.
const HOP_BY_HOP: [HeaderName; 9] = [
    header::CONNECTION,
    HeaderName::from_static("keep-alive"),
    HeaderName::from_static("proxy-connection"),
    header::PROXY_AUTHENTICATE,
    header::PROXY_AUTHORIZATION,
    header::TE,
    header::TRAILER,
    header::TRANSFER_ENCODING,
    header::UPGRADE,
];

const X_FORWARDED_FOR: HeaderName = HeaderName::from_static("x-forwarded-for");
const X_FORWARDED_PROTO: HeaderName = HeaderName::from_static("x-forwarded-proto");
const X_FORWARDED_HOST: HeaderName = HeaderName::from_static("x-forwarded-host");
const X_REAL_IP: HeaderName = HeaderName::from_static("x-real-ip");
/// What a client may send and the proxy replaces (or, from a trusted proxy,
/// extends): indices 0–3 are set again by [`set_forwarded`].
const FORWARDED_NAMES: [HeaderName; 5] = [
    X_FORWARDED_FOR,
    X_FORWARDED_PROTO,
    X_FORWARDED_HOST,
    header::FORWARDED,
    X_REAL_IP,
];

/// A bit per name of `list` that `headers` holds: one pass over the map's
/// names, comparing (no hashing, no allocation).
pub(crate) fn present(headers: &HeaderMap, list: &[HeaderName]) -> u32 {
    let mut found = 0;
    for name in headers.keys() {
        if let Some(i) = list.iter().position(|n| n == name) {
            found |= 1 << i;
        }
    }
    found
}

/// Remove the names of `list` whose bits `found` (from [`present`]) has set.
pub(crate) fn remove_found(headers: &mut HeaderMap, list: &[HeaderName], found: u32) {
    for (i, n) in list.iter().enumerate() {
        if found & (1 << i) != 0 {
            headers.remove(n);
        }
    }
}

/// Remove hop-by-hop headers, first those named in `Connection` (so a client
/// cannot use `Connection: X-Forwarded-For` to delete what we add later: we add
/// after stripping).
pub fn strip_hop_by_hop(headers: &mut HeaderMap) {
    let found = present(headers, &HOP_BY_HOP);
    if found == 0 {
        return;
    }
    if found & 1 != 0 {
        remove_connection_options(headers);
    }
    remove_found(headers, &HOP_BY_HOP, found);
}

/// Whether a `Connection` value lists `close` (any case): the own HTTP/1.1
/// paths read it on both sides to know the connection ends after this message.
pub fn connection_closes(value: &[u8]) -> bool {
    value
        .split(|&b| b == b',')
        .any(|t| t.trim_ascii().eq_ignore_ascii_case(b"close"))
}

/// Remove every header a `Connection` field names. `close` and `keep-alive`
/// (nearly every `Connection` value) name nothing to look for; the rest are
/// matched against the names present rather than parsed into a `HeaderName`.
fn remove_connection_options(headers: &mut HeaderMap) {
    let mut named: Vec<HeaderName> = Vec::new();
    for value in headers.get_all(header::CONNECTION) {
        let Ok(value) = value.to_str() else { continue };
        for option in value.split(',').map(str::trim) {
            if option.eq_ignore_ascii_case("close") || option.eq_ignore_ascii_case("keep-alive") {
                continue;
            }
            if let Some(name) = headers
                .keys()
                .find(|n| n.as_str().eq_ignore_ascii_case(option))
            {
                named.push(name.clone());
            }
        }
    }
    for n in named {
        headers.remove(n);
    }
}

/// Set `X-Forwarded-For`, `-Proto`, `-Host` and `Forwarded` for the upstream,
/// and return the scheme the client used as far as the proxy believes
/// (`proto` for this hop, or a trusted proxy's `X-Forwarded-Proto`).
pub fn set_forwarded(
    headers: &mut HeaderMap,
    peer: IpAddr,
    trusted: bool,
    proto: &'static str,
    host: &str,
) -> &'static str {
    let found = present(headers, &FORWARDED_NAMES);
    let prior = if trusted && found != 0 {
        Prior::read(headers)
    } else {
        Prior::default()
    };
    remove_found(headers, &FORWARDED_NAMES, found);

    let client_proto = match prior.proto.as_deref() {
        Some("https") => "https",
        Some("http") => "http",
        _ => proto,
    };
    let host = prior.host.as_deref().unwrap_or(host);
    let peer = IpText::new(peer);
    let peer = peer.as_bytes();

    let xff = match &prior.xff {
        Some(p) => value(&[p.as_bytes(), b", ", peer]),
        None => value(&[peer]),
    };
    // `for=` quotes an IPv6 node and brackets it (RFC 7239 §6); `host=` is a
    // quoted-string, so a quote in a (trusted) host cannot end it early.
    let (open, close): (&[u8], &[u8]) = if peer.contains(&b':') {
        (b"\"[", b"]\"")
    } else {
        (b"", b"")
    };
    let unquoted;
    let quoted_host = if host.contains('"') {
        unquoted = host.replace('"', "");
        unquoted.as_str()
    } else {
        host
    };
    let this_hop: [&[u8]; 8] = [
        b"for=",
        open,
        peer,
        close,
        b";host=\"",
        quoted_host.as_bytes(),
        b"\";proto=",
        proto.as_bytes(),
    ];
    let fwd = match &prior.forwarded {
        Some(p) => {
            let mut parts: Vec<&[u8]> = vec![p.as_bytes(), b", "];
            parts.extend_from_slice(&this_hop);
            value(&parts)
        }
        None => value(&this_hop),
    };

    let values = [
        (X_FORWARDED_FOR, xff),
        (
            X_FORWARDED_PROTO,
            Some(HeaderValue::from_static(client_proto)),
        ),
        (X_FORWARDED_HOST, value(&[host.as_bytes()])),
        (header::FORWARDED, fwd),
    ];
    for (name, v) in values {
        if let Some(v) = v {
            headers.insert(name, v);
        }
    }
    client_proto
}

/// What a trusted proxy in front said about the client.
#[derive(Default)]
struct Prior {
    /// Every `X-Forwarded-For` line, joined.
    xff: Option<String>,
    /// The first `X-Forwarded-Proto` value, lower-case.
    proto: Option<String>,
    /// The first `X-Forwarded-Host` value, lower-case.
    host: Option<String>,
    /// Every `Forwarded` line, joined.
    forwarded: Option<String>,
}

impl Prior {
    fn read(headers: &HeaderMap) -> Prior {
        Prior {
            xff: joined(headers, &X_FORWARDED_FOR),
            proto: first(headers, &X_FORWARDED_PROTO),
            host: first(headers, &X_FORWARDED_HOST),
            forwarded: joined(headers, &header::FORWARDED),
        }
    }
}

fn joined(headers: &HeaderMap, name: &HeaderName) -> Option<String> {
    let parts: Vec<&str> = headers
        .get_all(name)
        .iter()
        .filter_map(|v| v.to_str().ok())
        .collect();
    (!parts.is_empty()).then(|| parts.join(", "))
}

fn first(headers: &HeaderMap, name: &HeaderName) -> Option<String> {
    headers.get(name).and_then(|v| v.to_str().ok()).map(|v| {
        v.split(',')
            .next()
            .unwrap_or("")
            .trim()
            .to_ascii_lowercase()
    })
}

/// A header value from the concatenation of `parts`, or `None` if that is not
/// a valid field value. One allocation: the buffer becomes the value's `Bytes`.
fn value(parts: &[&[u8]]) -> Option<HeaderValue> {
    let mut buf = Vec::with_capacity(parts.iter().map(|p| p.len()).sum());
    for p in parts {
        buf.extend_from_slice(p);
    }
    HeaderValue::from_maybe_shared(bytes::Bytes::from(buf)).ok()
}

/// An address as text, without the formatting machinery or an allocation
/// (an IPv4-mapped IPv6 peer, as a dual-stack listener reports IPv4
/// clients, is written as the IPv4 address).
struct IpText {
    buf: [u8; 48],
    len: usize,
}

impl IpText {
    fn new(ip: IpAddr) -> IpText {
        let mut t = IpText {
            buf: [0; 48],
            len: 0,
        };
        let v4 = match ip {
            IpAddr::V4(v4) => v4,
            IpAddr::V6(v6) => match v6.to_ipv4_mapped() {
                Some(v4) => v4,
                None => {
                    use std::io::Write;
                    let mut w = &mut t.buf[..];
                    // 45 bytes at most (RFC 4291 §2.2 with an embedded IPv4).
                    let _ = write!(w, "{v6}");
                    t.len = 48 - w.len();
                    return t;
                }
            },
        };
        for (i, octet) in v4.octets().into_iter().enumerate() {
            if i > 0 {
                t.push(b'.');
            }
            if octet >= 100 {
                t.push(b'0' + octet / 100);
            }
            if octet >= 10 {
                t.push(b'0' + octet / 10 % 10);
            }
            t.push(b'0' + octet % 10);
        }
        t
    }

    fn push(&mut self, b: u8) {
        self.buf[self.len] = b;
        self.len += 1;
    }

    fn as_bytes(&self) -> &[u8] {
        &self.buf[..self.len]
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::net::{Ipv4Addr, Ipv6Addr};

    #[test]
    fn close_is_found_among_connection_options() {
        for closes in [
            "close",
            "Close",
            "keep-alive, close",
            " CLOSE ,x",
            "a,close",
        ] {
            assert!(connection_closes(closes.as_bytes()), "{closes}");
        }
        for stays in [
            "",
            "keep-alive",
            "closed",
            "x-close",
            "close-ish, keep-alive",
        ] {
            assert!(!connection_closes(stays.as_bytes()), "{stays}");
        }
    }

    #[test]
    fn headers_named_in_connection_are_stripped() {
        let mut h = HeaderMap::new();
        h.insert(
            "connection",
            HeaderValue::from_static("keep-alive, X-Secret"),
        );
        h.append("connection", HeaderValue::from_static("close,x-other"));
        h.insert("x-secret", HeaderValue::from_static("1"));
        h.insert("x-other", HeaderValue::from_static("1"));
        h.insert("keep-alive", HeaderValue::from_static("timeout=5"));
        h.insert("te", HeaderValue::from_static("trailers"));
        h.insert("x-keep", HeaderValue::from_static("1"));
        strip_hop_by_hop(&mut h);
        for gone in ["x-secret", "x-other", "keep-alive", "te", "connection"] {
            assert!(h.get(gone).is_none(), "{gone} was kept");
        }
        assert!(h.get("x-keep").is_some());
    }

    #[test]
    fn each_hop_by_hop_header_goes_on_its_own() {
        for name in &HOP_BY_HOP {
            let mut h = HeaderMap::new();
            h.insert(name.clone(), HeaderValue::from_static("x"));
            h.insert("x-keep", HeaderValue::from_static("1"));
            strip_hop_by_hop(&mut h);
            assert_eq!(h.len(), 1, "{name} was kept");
        }
    }

    #[test]
    fn untrusted_values_are_replaced() {
        let mut h = HeaderMap::new();
        h.insert("x-forwarded-for", HeaderValue::from_static("6.6.6.6"));
        h.insert("x-forwarded-host", HeaderValue::from_static("evil"));
        h.insert("x-forwarded-proto", HeaderValue::from_static("https"));
        h.insert("forwarded", HeaderValue::from_static("for=6.6.6.6"));
        h.insert("x-real-ip", HeaderValue::from_static("6.6.6.6"));
        let proto = set_forwarded(
            &mut h,
            "127.0.0.3".parse().unwrap(),
            false,
            "http",
            "site.test",
        );
        assert_eq!(proto, "http");
        assert_eq!(h["x-forwarded-for"], "127.0.0.3");
        assert_eq!(h["x-forwarded-host"], "site.test");
        assert_eq!(h["x-forwarded-proto"], "http");
        assert_eq!(
            h["forwarded"],
            "for=127.0.0.3;host=\"site.test\";proto=http"
        );
        assert!(h.get("x-real-ip").is_none());
        assert_eq!(h.len(), 4);
    }

    #[test]
    fn trusted_values_are_kept_and_appended() {
        let mut h = HeaderMap::new();
        h.insert("x-forwarded-for", HeaderValue::from_static("1.2.3.4"));
        h.append("x-forwarded-for", HeaderValue::from_static("10.0.0.1"));
        h.insert("x-forwarded-proto", HeaderValue::from_static("HTTPS"));
        h.insert("x-forwarded-host", HeaderValue::from_static("Shop.\"Test"));
        h.insert("forwarded", HeaderValue::from_static("for=1.2.3.4"));
        let proto = set_forwarded(
            &mut h,
            "127.0.0.2".parse().unwrap(),
            true,
            "http",
            "site.test",
        );
        assert_eq!(proto, "https");
        assert_eq!(h["x-forwarded-for"], "1.2.3.4, 10.0.0.1, 127.0.0.2");
        assert_eq!(h["x-forwarded-proto"], "https");
        assert_eq!(h["x-forwarded-host"], "shop.\"test");
        assert_eq!(
            h["forwarded"],
            "for=1.2.3.4, for=127.0.0.2;host=\"shop.test\";proto=http"
        );
    }

    #[test]
    fn a_trusted_proxy_cannot_claim_an_odd_scheme() {
        let mut h = HeaderMap::new();
        h.insert("x-forwarded-proto", HeaderValue::from_static("gopher"));
        let proto = set_forwarded(&mut h, "10.0.0.1".parse().unwrap(), true, "http", "a.test");
        assert_eq!(proto, "http");
        assert_eq!(h["x-forwarded-proto"], "http");
    }

    #[test]
    fn ipv6_peers_are_bracketed_and_mapped_ipv4_is_plain() {
        let mut h = HeaderMap::new();
        set_forwarded(
            &mut h,
            "2001:db8::1".parse().unwrap(),
            false,
            "http",
            "a.test",
        );
        assert_eq!(h["x-forwarded-for"], "2001:db8::1");
        assert_eq!(
            h["forwarded"],
            "for=\"[2001:db8::1]\";host=\"a.test\";proto=http"
        );
        let mut h = HeaderMap::new();
        set_forwarded(
            &mut h,
            "::ffff:192.0.2.7".parse().unwrap(),
            false,
            "http",
            "a.test",
        );
        assert_eq!(h["x-forwarded-for"], "192.0.2.7");
    }

    #[test]
    fn addresses_are_written_as_std_writes_them() {
        for a in 0..=255u8 {
            for b in [0, 1, 9, 10, 99, 100, 199, 200, 255] {
                let v4 = Ipv4Addr::new(a, b, 255 - a, b.wrapping_mul(7));
                assert_eq!(IpText::new(v4.into()).as_bytes(), v4.to_string().as_bytes());
            }
        }
        let longest = Ipv6Addr::new(
            0x1111, 0x2222, 0x3333, 0x4444, 0x5555, 0x6666, 0x7777, 0x8888,
        );
        assert_eq!(
            IpText::new(longest.into()).as_bytes(),
            longest.to_string().as_bytes()
        );
    }

    #[test]
    fn long_values_are_assembled_on_the_heap() {
        let host = "h".repeat(300);
        let mut h = HeaderMap::new();
        set_forwarded(&mut h, "10.1.2.3".parse().unwrap(), false, "http", &host);
        assert_eq!(h["x-forwarded-host"], host.as_str());
        assert_eq!(
            h["forwarded"],
            format!("for=10.1.2.3;host=\"{host}\";proto=http").as_str()
        );
    }
}
