//! Content codings: what the proxy may ask the upstream for, decoding compressed
//! HTML for the rewriter (bounded against decompression bombs), and re-encoding
//! in a coding the client accepts, flushed whenever the input pauses.
//!
//! Negotiation lives here; [`decode()`] and [`encode()`] are the streaming halves
//! (files `decode.rs` and `encode.rs`).

mod decode;
mod encode;
pub mod splice;
#[cfg(test)]
mod testing;

pub use decode::{
    DecodeError, DecodeLimits, RATIO_GRACE_BYTES, Refusal, Refused, decode, decode_checked,
};
pub use encode::encode;

use http::{HeaderMap, HeaderValue, header::ACCEPT_ENCODING, header::CONTENT_ENCODING};

/// A single content coding the proxy can decode and encode.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Coding {
    /// No coding.
    Identity,
    /// `gzip` (also received as `x-gzip`); concatenated members are accepted.
    Gzip,
    /// `deflate`: zlib-wrapped per RFC 9110; raw deflate is accepted on input.
    Deflate,
    /// `br` (Brotli).
    Br,
    /// `zstd` (Zstandard); concatenated frames are accepted.
    Zstd,
}

/// Order used to break ties between equally preferred codings: the cheapest to
/// produce with a good ratio first, since the proxy compresses on the fly.
const PREFERENCE: [Coding; 4] = [Coding::Zstd, Coding::Gzip, Coding::Br, Coding::Deflate];

impl Coding {
    /// The `Content-Encoding` token; `None` for identity.
    pub fn as_header(self) -> Option<&'static str> {
        match self {
            Coding::Identity => None,
            Coding::Gzip => Some("gzip"),
            Coding::Deflate => Some("deflate"),
            Coding::Br => Some("br"),
            Coding::Zstd => Some("zstd"),
        }
    }

    /// The coding a `Content-Encoding` / `Accept-Encoding` token names, if the
    /// proxy supports it. Case-insensitive; `x-gzip` is gzip.
    pub fn from_token(token: &str) -> Option<Coding> {
        let t = token.trim();
        [
            ("identity", Coding::Identity),
            ("gzip", Coding::Gzip),
            ("x-gzip", Coding::Gzip),
            ("deflate", Coding::Deflate),
            ("br", Coding::Br),
            ("zstd", Coding::Zstd),
        ]
        .into_iter()
        .find(|(name, _)| t.eq_ignore_ascii_case(name))
        .map(|(_, c)| c)
    }
}

/// Why a response's `Content-Encoding` cannot be decoded.
#[derive(Clone, Copy, Debug, PartialEq, Eq, thiserror::Error)]
pub enum CodingError {
    /// A coding the proxy does not implement (`compress`, `exi`, anything unknown).
    #[error("unknown content coding")]
    Unknown,
    /// More than one coding applied in sequence (`gzip, br`).
    #[error("stacked content codings")]
    Stacked,
}

/// The response's coding, or why it cannot be decoded. Every `Content-Encoding`
/// field line counts; `identity` tokens and empty list elements are ignored.
pub fn response_coding(headers: &HeaderMap) -> Result<Coding, CodingError> {
    let mut found = None;
    for value in headers.get_all(CONTENT_ENCODING) {
        let text = value.to_str().map_err(|_| CodingError::Unknown)?;
        for token in text.split(',').map(str::trim).filter(|t| !t.is_empty()) {
            match Coding::from_token(token) {
                Some(Coding::Identity) => {}
                Some(c) if found.is_none() => found = Some(c),
                Some(_) => return Err(CodingError::Stacked),
                // An unknown coding anywhere in the list makes the body opaque,
                // even if it is also stacked.
                None => return Err(CodingError::Unknown),
            }
        }
    }
    Ok(found.unwrap_or(Coding::Identity))
}

/// A q-value in thousandths (RFC 9110 §12.4.2 allows at most three decimals).
type Q = u16;

/// A client's `Accept-Encoding` (every field line), as what negotiation reads
/// of it: the highest q-value given each coding the proxy knows, and the
/// first `*`. Unknown tokens are never asked about, so they are not kept.
/// Read once per request, before the upstream's copy is narrowed, and used
/// both to narrow it and to choose the output coding.
#[derive(Clone, Copy, Debug, Default)]
pub struct Accept {
    /// Indexed by `Coding as usize`.
    explicit: [Option<Q>; 5],
    star: Option<Q>,
}

impl Accept {
    /// The `Accept-Encoding` lines of a request (none: identity only).
    pub fn of(headers: &HeaderMap) -> Accept {
        Accept::parse(headers.get_all(ACCEPT_ENCODING))
    }

    fn parse<'a>(values: impl IntoIterator<Item = &'a HeaderValue>) -> Accept {
        let mut accept = Accept::default();
        for value in values {
            // A non-ASCII field is not a list we can read; ignoring it means
            // "no codings" for that line, the safe direction.
            let Ok(text) = value.to_str() else { continue };
            for element in text.split(',') {
                let mut parts = element.split(';');
                let token = parts.next().unwrap_or("").trim();
                if token.is_empty() {
                    continue;
                }
                let mut q = Some(1000);
                for param in parts {
                    if let Some((name, value)) = param.split_once('=')
                        && name.trim().eq_ignore_ascii_case("q")
                    {
                        q = parse_q(value.trim());
                    }
                }
                // An element with a malformed q-value is dropped, not guessed.
                let Some(q) = q else { continue };
                if token == "*" {
                    accept.star.get_or_insert(q);
                } else if let Some(c) = Coding::from_token(token) {
                    let slot = &mut accept.explicit[c as usize];
                    *slot = Some(slot.map_or(q, |had| had.max(q)));
                }
            }
        }
        accept
    }

    /// The client's q-value for `coding`: its own entry, else `*`, else the
    /// RFC default (identity acceptable, everything else not).
    fn q(&self, coding: Coding) -> Q {
        self.explicit[coding as usize]
            .or(self.star)
            .unwrap_or(if coding == Coding::Identity { 1000 } else { 0 })
    }

    /// The supported non-identity coding with the highest q-value above zero.
    fn best(&self) -> Option<Coding> {
        let mut best: Option<(Coding, Q)> = None;
        for c in PREFERENCE {
            let q = self.q(c);
            if q > 0 && best.is_none_or(|(_, bq)| q > bq) {
                best = Some((c, q));
            }
        }
        best.map(|(c, _)| c)
    }
}

/// `1`, `1.0`, `0.5`, `0.125`, `0` → thousandths; anything else → `None`.
fn parse_q(s: &str) -> Option<Q> {
    let (int, frac) = s.split_once('.').unwrap_or((s, ""));
    if frac.len() > 3 || !frac.bytes().all(|b| b.is_ascii_digit()) {
        return None;
    }
    let thousandths = frac
        .bytes()
        .chain(std::iter::repeat(b'0'))
        .take(3)
        .fold(0u16, |acc, b| acc * 10 + u16::from(b - b'0'));
    match int {
        "0" => Some(thousandths),
        "1" if thousandths == 0 => Some(1000),
        _ => None,
    }
}

/// `;q=0.xyz` without trailing zeros, or nothing for q=1, appended to `out`.
fn push_q(out: &mut String, q: Q) {
    if q >= 1000 {
        return;
    }
    out.push_str(";q=0.");
    let digits = [q / 100, q / 10 % 10, q % 10];
    let used = digits.iter().rposition(|&d| d != 0).map_or(1, |i| i + 1);
    for d in &digits[..used] {
        out.push(char::from(b'0' + *d as u8));
    }
}

/// Restrict the client's `Accept-Encoding` to codings the proxy can decode,
/// keeping the client's q-values (a coding it refuses with `q=0`, explicitly or
/// through `*;q=0`, is never asked for). A client that names none of them gets
/// an explicit `identity`, so the upstream cannot pick a coding on its own.
pub fn limit_accept_encoding(headers: &mut HeaderMap, accept: &Accept) {
    let mut value = String::with_capacity(64);
    for c in [Coding::Gzip, Coding::Deflate, Coding::Br, Coding::Zstd] {
        let q = accept.q(c);
        let Some(name) = c.as_header() else { continue };
        if q > 0 {
            if !value.is_empty() {
                value.push_str(", ");
            }
            value.push_str(name);
            push_q(&mut value, q);
        }
    }
    if value.is_empty() {
        value.push_str("identity");
    }
    // Built only from the fixed tokens and digits above, so always a valid value.
    let value = HeaderValue::from_str(&value).unwrap_or(HeaderValue::from_static("identity"));
    headers.insert(ACCEPT_ENCODING, value);
}

/// The coding the rewritten page goes out in: the upstream's coding if the
/// client accepts it, else the client's most preferred supported coding, else
/// identity. A request without `Accept-Encoding` gets identity: RFC 9110 lets
/// the proxy pick anything then, but identity is the choice no client breaks on.
pub fn choose_output(accept: &Accept, upstream: Coding) -> Coding {
    if accept.q(upstream) > 0 {
        return upstream;
    }
    accept.best().unwrap_or(Coding::Identity)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn h(pairs: &[(&'static str, &'static str)]) -> HeaderMap {
        let mut m = HeaderMap::new();
        for (k, v) in pairs {
            m.append(*k, HeaderValue::from_static(v));
        }
        m
    }

    #[test]
    fn response_coding_known_tokens() {
        for (v, c) in [
            ("gzip", Coding::Gzip),
            ("x-gzip", Coding::Gzip),
            ("GZIP", Coding::Gzip),
            ("deflate", Coding::Deflate),
            ("br", Coding::Br),
            ("zstd", Coding::Zstd),
            ("identity", Coding::Identity),
            (" gzip , identity", Coding::Gzip),
            ("", Coding::Identity),
        ] {
            assert_eq!(
                response_coding(&h(&[("content-encoding", v)])),
                Ok(c),
                "{v}"
            );
        }
        assert_eq!(response_coding(&HeaderMap::new()), Ok(Coding::Identity));
    }

    #[test]
    fn response_coding_refuses_unknown_and_stacked() {
        assert_eq!(
            response_coding(&h(&[("content-encoding", "compress")])),
            Err(CodingError::Unknown)
        );
        assert_eq!(
            response_coding(&h(&[("content-encoding", "gzip, compress")])),
            Err(CodingError::Unknown)
        );
        assert_eq!(
            response_coding(&h(&[("content-encoding", "gzip, br")])),
            Err(CodingError::Stacked)
        );
        // Two field lines are one list.
        assert_eq!(
            response_coding(&h(&[
                ("content-encoding", "gzip"),
                ("content-encoding", "gzip")
            ])),
            Err(CodingError::Stacked)
        );
    }

    #[test]
    fn q_values_parse_strictly() {
        assert_eq!(parse_q("1"), Some(1000));
        assert_eq!(parse_q("1.000"), Some(1000));
        assert_eq!(parse_q("0"), Some(0));
        assert_eq!(parse_q("0.5"), Some(500));
        assert_eq!(parse_q("0.125"), Some(125));
        assert_eq!(parse_q("0.001"), Some(1));
        for bad in ["", "2", "1.5", "0.1234", "-0", "0.x", "abc"] {
            assert_eq!(parse_q(bad), None, "{bad}");
        }
        let q = |q| {
            let mut s = String::new();
            push_q(&mut s, q);
            s
        };
        assert_eq!(q(1000), "");
        assert_eq!(q(500), ";q=0.5");
        assert_eq!(q(125), ";q=0.125");
        assert_eq!(q(10), ";q=0.01");
        assert_eq!(q(1), ";q=0.001");
        assert_eq!(q(120), ";q=0.12");
        // Every q-value the proxy writes reads back as itself.
        for v in 1..1000 {
            assert_eq!(parse_q(&q(v)[3..]), Some(v), "{v}");
        }
    }

    fn limited(accept: Option<&'static str>) -> String {
        let mut m = HeaderMap::new();
        if let Some(a) = accept {
            m.insert(ACCEPT_ENCODING, HeaderValue::from_static(a));
        }
        let accept = Accept::of(&m);
        limit_accept_encoding(&mut m, &accept);
        m.get(ACCEPT_ENCODING)
            .and_then(|v| v.to_str().ok())
            .unwrap_or("<none>")
            .to_string()
    }

    #[test]
    fn limit_accept_encoding_keeps_only_decodable_codings() {
        assert_eq!(
            limited(Some("gzip, deflate, br, zstd")),
            "gzip, deflate, br, zstd"
        );
        assert_eq!(limited(Some("gzip, compress, sdch")), "gzip");
        assert_eq!(limited(Some("x-gzip")), "gzip");
        assert_eq!(
            limited(Some("br;q=0.5, gzip;q=0.8")),
            "gzip;q=0.8, br;q=0.5"
        );
        assert_eq!(limited(Some("BR")), "br");
    }

    #[test]
    fn limit_accept_encoding_honours_q_zero_and_star() {
        assert_eq!(limited(Some("gzip;q=0, br")), "br");
        assert_eq!(limited(Some("*")), "gzip, deflate, br, zstd");
        assert_eq!(
            limited(Some("*;q=0.5, br;q=0")),
            "gzip;q=0.5, deflate;q=0.5, zstd;q=0.5"
        );
        assert_eq!(limited(Some("*;q=0")), "identity");
        assert_eq!(limited(Some("gzip;q=bogus")), "identity");
    }

    #[test]
    fn limit_accept_encoding_without_client_list_asks_for_identity() {
        assert_eq!(limited(None), "identity");
        assert_eq!(limited(Some("identity")), "identity");
        assert_eq!(limited(Some("compress")), "identity");
        assert_eq!(limited(Some("")), "identity");
    }

    #[test]
    fn limit_accept_encoding_merges_field_lines() {
        let mut m = h(&[("accept-encoding", "gzip"), ("accept-encoding", "br")]);
        let accept = Accept::of(&m);
        limit_accept_encoding(&mut m, &accept);
        assert_eq!(m.get_all(ACCEPT_ENCODING).iter().count(), 1);
        assert_eq!(
            m.get(ACCEPT_ENCODING).map(|v| v.as_bytes()),
            Some(&b"gzip, br"[..])
        );
    }

    fn choose_for(accept: Option<&'static str>, upstream: Coding) -> Coding {
        let mut m = HeaderMap::new();
        if let Some(a) = accept {
            m.insert(ACCEPT_ENCODING, HeaderValue::from_static(a));
        }
        choose_output(&Accept::of(&m), upstream)
    }

    #[test]
    fn choose_output_keeps_the_upstream_coding_when_accepted() {
        assert_eq!(choose_for(Some("gzip, br"), Coding::Br), Coding::Br);
        assert_eq!(choose_for(Some("gzip, br"), Coding::Gzip), Coding::Gzip);
        assert_eq!(
            choose_for(Some("gzip, br"), Coding::Identity),
            Coding::Identity
        );
        assert_eq!(choose_for(Some("*"), Coding::Zstd), Coding::Zstd);
    }

    #[test]
    fn choose_output_falls_back_to_the_clients_best() {
        assert_eq!(choose_for(Some("gzip"), Coding::Br), Coding::Gzip);
        assert_eq!(
            choose_for(Some("gzip;q=0.5, br;q=0.9"), Coding::Zstd),
            Coding::Br
        );
        // Ties go to the cheaper coding to produce.
        assert_eq!(
            choose_for(Some("gzip, br, zstd"), Coding::Deflate),
            Coding::Zstd
        );
        assert_eq!(choose_for(Some("br, gzip"), Coding::Deflate), Coding::Gzip);
        // Client refuses identity and upstream sent identity: compress.
        assert_eq!(
            choose_for(Some("identity;q=0, gzip"), Coding::Identity),
            Coding::Gzip
        );
    }

    #[test]
    fn choose_output_falls_back_to_identity() {
        assert_eq!(choose_for(None, Coding::Gzip), Coding::Identity);
        assert_eq!(choose_for(Some("compress"), Coding::Gzip), Coding::Identity);
        assert_eq!(choose_for(Some("gzip;q=0"), Coding::Gzip), Coding::Identity);
        assert_eq!(choose_for(Some("*;q=0"), Coding::Br), Coding::Identity);
    }

    #[test]
    fn choose_output_reads_every_line() {
        let req = h(&[("accept-encoding", "compress"), ("accept-encoding", "br")]);
        assert_eq!(choose_output(&Accept::of(&req), Coding::Gzip), Coding::Br);
        assert_eq!(
            choose_output(&Accept::of(&HeaderMap::new()), Coding::Gzip),
            Coding::Identity
        );
    }
}
