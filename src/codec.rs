//! Content codings: what the proxy may ask the upstream for, decoding compressed
//! HTML for the rewriter (bounded against decompression bombs), and re-encoding
//! in a coding the client accepts, flushed chunk by chunk.
//!
//! OWNER: inject/codec helper. STUB.

use crate::body::Body;
use http::HeaderMap;

/// A single content coding the proxy can decode and encode.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Coding {
    Identity,
    Gzip,
    Deflate,
    Br,
    Zstd,
}

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
}

/// Bounds on decompression.
#[derive(Clone, Copy, Debug)]
pub struct DecodeLimits {
    pub max_bytes: u64,
    pub max_ratio: u64,
}

/// The response's coding, or `Err(reason)` for unknown or stacked codings.
pub fn response_coding(headers: &HeaderMap) -> Result<Coding, &'static str> {
    match headers.get(http::header::CONTENT_ENCODING) {
        None => Ok(Coding::Identity),
        Some(_) => Err("content_encoding"),
    }
}

/// Restrict the client's `Accept-Encoding` to codings the proxy can decode.
pub fn limit_accept_encoding(headers: &mut HeaderMap) {
    headers.remove(http::header::ACCEPT_ENCODING);
}

/// The coding the rewritten page goes out in.
pub fn choose_output(client_accept: Option<&http::HeaderValue>, upstream: Coding) -> Coding {
    let _ = (client_accept, upstream);
    Coding::Identity
}

/// Decode a body. `Err(original)` hands back the body as received when the
/// prefix already trips the bomb limits.
pub async fn decode(body: Body, coding: Coding, limits: DecodeLimits) -> Result<Body, Body> {
    let _ = limits;
    match coding {
        Coding::Identity => Ok(body),
        _ => Err(body),
    }
}

/// Encode a body, flushing whenever the input pauses.
pub fn encode(body: Body, coding: Coding) -> Body {
    let _ = coding;
    body
}
