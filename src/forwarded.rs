//! Header hygiene at the proxy boundary: hop-by-hop headers go (including every
//! header a `Connection` header names), and `X-Forwarded-*` / `Forwarded` are set.
//! A client's own forwarded values are believed only from trusted proxies.

use http::header::{self, HeaderMap, HeaderName, HeaderValue};
use std::net::IpAddr;

/// Headers that describe one hop and must never be forwarded (RFC 9110 §7.6.1).
/// Names, not strings: a `&str` is parsed and checked on every use.
const HOP_BY_HOP: [HeaderName; 9] = [
    HeaderName::from_static("connection"),
    HeaderName::from_static("keep-alive"),
    HeaderName::from_static("proxy-connection"),
    HeaderName::from_static("proxy-authenticate"),
    HeaderName::from_static("proxy-authorization"),
    HeaderName::from_static("te"),
    HeaderName::from_static("trailer"),
    HeaderName::from_static("transfer-encoding"),
    HeaderName::from_static("upgrade"),
];

/// Remove hop-by-hop headers, first those named in `Connection` (so a client
/// cannot use `Connection: X-Forwarded-For` to delete what we add later: we add
/// after stripping).
pub fn strip_hop_by_hop(headers: &mut HeaderMap) {
    let named: Vec<HeaderName> = headers
        .get_all(header::CONNECTION)
        .iter()
        .filter_map(|v| v.to_str().ok())
        .flat_map(|v| v.split(','))
        .filter_map(|n| HeaderName::from_bytes(n.trim().as_bytes()).ok())
        .collect();
    for n in named {
        headers.remove(n);
    }
    for n in &HOP_BY_HOP {
        headers.remove(n);
    }
}

/// Who the client is, as far as the proxy believes.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ClientInfo {
    /// The original client address: the peer, or from a trusted proxy's header.
    pub ip: String,
    /// `http` or `https` as the client sees the site.
    pub proto: String,
    /// The Host the client asked for.
    pub host: String,
}

/// Set `X-Forwarded-For`, `-Proto`, `-Host` and `Forwarded` for the upstream,
/// and return what the proxy believes about the client.
pub fn set_forwarded(
    headers: &mut HeaderMap,
    peer: IpAddr,
    trusted: bool,
    proto: &str,
    host: &str,
) -> ClientInfo {
    let peer_s = match peer {
        IpAddr::V6(v6) => v6
            .to_ipv4_mapped()
            .map(|v4| v4.to_string())
            .unwrap_or_else(|| v6.to_string()),
        v4 => v4.to_string(),
    };
    let prior_xff = if trusted {
        joined(headers, "x-forwarded-for")
    } else {
        None
    };
    let prior_proto = if trusted {
        first(headers, "x-forwarded-proto")
    } else {
        None
    };
    let prior_host = if trusted {
        first(headers, "x-forwarded-host")
    } else {
        None
    };
    let prior_fwd = if trusted {
        joined(headers, "forwarded")
    } else {
        None
    };
    for n in [
        "x-forwarded-for",
        "x-forwarded-proto",
        "x-forwarded-host",
        "forwarded",
        "x-real-ip",
    ] {
        headers.remove(n);
    }

    let client_ip = prior_xff
        .as_deref()
        .and_then(|x| x.split(',').next())
        .map(|s| s.trim().to_owned())
        .filter(|s| !s.is_empty())
        .unwrap_or_else(|| peer_s.clone());
    let info = ClientInfo {
        ip: client_ip,
        proto: prior_proto
            .filter(|p| p == "http" || p == "https")
            .unwrap_or_else(|| proto.to_owned()),
        host: prior_host.unwrap_or_else(|| host.to_owned()),
    };

    let xff = match prior_xff {
        Some(p) => format!("{p}, {peer_s}"),
        None => peer_s.clone(),
    };
    let for_node = if peer_s.contains(':') {
        format!("\"[{peer_s}]\"")
    } else {
        peer_s
    };
    let this_hop = format!(
        "for={for_node};host=\"{}\";proto={}",
        info.host.replace('"', ""),
        proto
    );
    let fwd = match prior_fwd {
        Some(p) => format!("{p}, {this_hop}"),
        None => this_hop,
    };
    for (name, value) in [
        ("x-forwarded-for", xff),
        ("x-forwarded-proto", info.proto.clone()),
        ("x-forwarded-host", info.host.clone()),
        ("forwarded", fwd),
    ] {
        if let Ok(v) = HeaderValue::from_str(&value) {
            headers.insert(HeaderName::from_static(name), v);
        }
    }
    info
}

fn joined(headers: &HeaderMap, name: &str) -> Option<String> {
    let parts: Vec<&str> = headers
        .get_all(name)
        .iter()
        .filter_map(|v| v.to_str().ok())
        .collect();
    (!parts.is_empty()).then(|| parts.join(", "))
}

fn first(headers: &HeaderMap, name: &str) -> Option<String> {
    headers.get(name).and_then(|v| v.to_str().ok()).map(|v| {
        v.split(',')
            .next()
            .unwrap_or("")
            .trim()
            .to_ascii_lowercase()
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn headers_named_in_connection_are_stripped() {
        let mut h = HeaderMap::new();
        h.insert(
            "connection",
            HeaderValue::from_static("keep-alive, X-Secret"),
        );
        h.insert("x-secret", HeaderValue::from_static("1"));
        h.insert("te", HeaderValue::from_static("trailers"));
        h.insert("x-keep", HeaderValue::from_static("1"));
        strip_hop_by_hop(&mut h);
        assert!(
            h.get("x-secret").is_none() && h.get("te").is_none() && h.get("connection").is_none()
        );
        assert!(h.get("x-keep").is_some());
    }

    #[test]
    fn untrusted_values_are_replaced() {
        let mut h = HeaderMap::new();
        h.insert("x-forwarded-for", HeaderValue::from_static("6.6.6.6"));
        h.insert("x-forwarded-host", HeaderValue::from_static("evil"));
        let info = set_forwarded(
            &mut h,
            "127.0.0.3".parse().unwrap(),
            false,
            "http",
            "site.test",
        );
        assert_eq!(h["x-forwarded-for"], "127.0.0.3");
        assert_eq!(h["x-forwarded-host"], "site.test");
        assert_eq!(info.ip, "127.0.0.3");
    }

    #[test]
    fn trusted_values_are_kept_and_appended() {
        let mut h = HeaderMap::new();
        h.insert("x-forwarded-for", HeaderValue::from_static("1.2.3.4"));
        h.insert("x-forwarded-proto", HeaderValue::from_static("https"));
        let info = set_forwarded(
            &mut h,
            "127.0.0.2".parse().unwrap(),
            true,
            "http",
            "site.test",
        );
        assert_eq!(h["x-forwarded-for"], "1.2.3.4, 127.0.0.2");
        assert_eq!(info.proto, "https");
        assert_eq!(info.ip, "1.2.3.4");
    }
}
