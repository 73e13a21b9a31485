//! The proxy's error type. Each variant knows its HTTP status, and one function
//! turns any of them into a small synthetic response that names no internals.

use crate::body::{self, Body};
use http::{HeaderValue, Response, StatusCode, header};

/// Why a request could not be proxied.
#[derive(Debug, thiserror::Error)]
pub enum ProxyError {
    #[error("request has no Host")]
    MissingHost,
    #[error("request has more than one Host")]
    DuplicateHost,
    #[error("Host is not a valid authority")]
    BadHost,
    #[error("request head too large")]
    HeadTooLarge,
    #[error("no route for this host")]
    NoRoute,
    #[error("method not allowed")]
    MethodNotAllowed,
    #[error("could not connect to the upstream")]
    UpstreamConnect(#[source] crate::body::BoxError),
    #[error("upstream request failed")]
    Upstream(#[source] crate::body::BoxError),
    #[error("upstream did not answer in time")]
    UpstreamTimeout,
    #[error("bad request body")]
    BadRequestBody,
}

impl ProxyError {
    /// The status the client sees.
    pub fn status(&self) -> StatusCode {
        match self {
            ProxyError::MissingHost
            | ProxyError::DuplicateHost
            | ProxyError::BadHost
            | ProxyError::BadRequestBody => StatusCode::BAD_REQUEST,
            ProxyError::HeadTooLarge => StatusCode::REQUEST_HEADER_FIELDS_TOO_LARGE,
            ProxyError::NoRoute => StatusCode::MISDIRECTED_REQUEST,
            ProxyError::MethodNotAllowed => StatusCode::METHOD_NOT_ALLOWED,
            ProxyError::UpstreamConnect(_) | ProxyError::Upstream(_) => StatusCode::BAD_GATEWAY,
            ProxyError::UpstreamTimeout => StatusCode::GATEWAY_TIMEOUT,
        }
    }

    /// A stable name for logs and metrics.
    pub fn kind(&self) -> &'static str {
        match self {
            ProxyError::MissingHost => "missing_host",
            ProxyError::DuplicateHost => "duplicate_host",
            ProxyError::BadHost => "bad_host",
            ProxyError::HeadTooLarge => "head_too_large",
            ProxyError::NoRoute => "no_route",
            ProxyError::MethodNotAllowed => "method_not_allowed",
            ProxyError::UpstreamConnect(_) => "upstream_connect",
            ProxyError::Upstream(_) => "upstream",
            ProxyError::UpstreamTimeout => "upstream_timeout",
            ProxyError::BadRequestBody => "bad_request_body",
        }
    }

    /// The synthetic response: status, one short line of text, never cached.
    pub fn into_response(&self) -> Response<Body> {
        let status = self.status();
        let text = match self {
            ProxyError::NoRoute => "misdirected request: this proxy does not serve that host\n",
            ProxyError::UpstreamConnect(_) | ProxyError::Upstream(_) => "bad gateway\n",
            ProxyError::UpstreamTimeout => "gateway timeout\n",
            ProxyError::HeadTooLarge => "request header fields too large\n",
            ProxyError::MethodNotAllowed => "method not allowed\n",
            _ => "bad request\n",
        };
        let mut resp = Response::new(body::full(text));
        *resp.status_mut() = status;
        let h = resp.headers_mut();
        h.insert(
            header::CONTENT_TYPE,
            HeaderValue::from_static("text/plain; charset=utf-8"),
        );
        h.insert(header::CACHE_CONTROL, HeaderValue::from_static("no-store"));
        resp
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn each_error_maps_to_its_status() {
        assert_eq!(ProxyError::MissingHost.status(), 400);
        assert_eq!(ProxyError::DuplicateHost.status(), 400);
        assert_eq!(ProxyError::BadHost.status(), 400);
        assert_eq!(ProxyError::BadRequestBody.status(), 400);
        assert_eq!(ProxyError::HeadTooLarge.status(), 431);
        assert_eq!(ProxyError::NoRoute.status(), 421);
        assert_eq!(ProxyError::MethodNotAllowed.status(), 405);
        assert_eq!(ProxyError::UpstreamTimeout.status(), 504);
        let r = ProxyError::UpstreamTimeout.into_response();
        assert_eq!(r.status(), 504);
        assert_eq!(r.headers()[header::CACHE_CONTROL], "no-store");
    }
}
