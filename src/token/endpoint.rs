//! `GET inject.token_path`: the caller's current token as JSON, for pages that
//! refresh the widget themselves (the integration guide's `WidgetTokenManager`
//! reads `data.token` and `new Date(data.expiresAt)`).
//!
//! The answer is for the session in the caller's cookie and the route the
//! request came in on. `?org=` picks another organization, but only one that a
//! route of the same ChatHub account serves (by id or name, names compared
//! case-insensitively); the operator rule and identity source are that route's.
//! No CORS headers: only the site's own pages may read it.

use super::{TokenSkip, Tokens};
use crate::body::{self, Body};
use crate::config::{OrgRef, Route};
use crate::operator::{self, NoOperator};
use crate::session;
use http::header::{self, HeaderValue};
use http::{Method, Response, StatusCode, request::Parts};
use std::sync::Arc;
use time::format_description::well_known::Rfc3339;
use tracing::debug;

impl Tokens {
    /// Answer a request for `inject.token_path` on `route`.
    ///
    /// `peer_trusted`: the client address is a configured trusted proxy (only
    /// then is an identity header believed). `https`: the client side is HTTPS
    /// (decides the cookie name).
    pub async fn endpoint(
        &self,
        route: &Arc<Route>,
        req: &Parts,
        peer_trusted: bool,
        https: bool,
    ) -> Response<Body> {
        if req.method != Method::GET && req.method != Method::HEAD {
            let mut r = json(
                StatusCode::METHOD_NOT_ALLOWED,
                &serde_json::json!({ "error": "method_not_allowed" }),
            );
            r.headers_mut()
                .insert(header::ALLOW, HeaderValue::from_static("GET, HEAD"));
            return r;
        }
        let name = session::cookie_name(&self.inner.session, https);
        let Some(session) = session::from_headers(&req.headers, &name) else {
            return json(
                StatusCode::UNAUTHORIZED,
                &serde_json::json!({ "error": "no_session" }),
            );
        };
        let org = req.uri.query().and_then(|q| {
            url::form_urlencoded::parse(q.as_bytes())
                .find(|(k, _)| k == "org")
                .map(|(_, v)| v.into_owned())
        });
        let target = match org.as_deref().map(str::trim) {
            None | Some("") => route.clone(),
            Some(org) => match self.route_for_org(route, org).await {
                Some(r) => r,
                None => {
                    return json(
                        StatusCode::NOT_FOUND,
                        &serde_json::json!({ "error": "unknown_organization" }),
                    );
                }
            },
        };
        let identity = operator::identity_for(&target, &req.headers, peer_trusted);
        self.inner.metrics.token_event("endpoint");
        let mut resp = match self.token_for(&target, &session, identity).await {
            Ok(t) => {
                let at = t.expires_at.replace_nanosecond(0).unwrap_or(t.expires_at);
                let at = at.format(&Rfc3339).unwrap_or_default();
                json(
                    StatusCode::OK,
                    &serde_json::json!({ "token": t.token.expose(), "expiresAt": at }),
                )
            }
            Err(skip) => {
                debug!(route = %target.name, reason = skip.reason(), "token endpoint: no token");
                let mut r = json(
                    status_of(&skip),
                    &serde_json::json!({ "error": skip.reason() }),
                );
                if status_of(&skip) == StatusCode::SERVICE_UNAVAILABLE {
                    let secs = self.inner.cfg.breaker_open_for.as_secs().max(1);
                    if let Ok(v) = HeaderValue::from_str(&secs.to_string()) {
                        r.headers_mut().insert(header::RETRY_AFTER, v);
                    }
                }
                r
            }
        };
        if req.method == Method::HEAD {
            *resp.body_mut() = body::empty();
        }
        resp
    }

    /// The route of the same account that serves organization `org` (an id or
    /// a name); the request's own route first.
    async fn route_for_org(&self, route: &Arc<Route>, org: &str) -> Option<Arc<Route>> {
        let account = &route.chat.as_ref()?.account.name;
        let candidates = std::iter::once(route)
            .chain(self.inner.routes.iter().filter(|r| !Arc::ptr_eq(r, route)));
        let wanted_id = org.parse::<i64>().ok();
        for r in candidates {
            let Some(chat) = &r.chat else { continue };
            if &chat.account.name != account {
                continue;
            }
            let matches = match &chat.organization {
                OrgRef::Id(id) => Some(*id) == wanted_id,
                OrgRef::Name(name) => {
                    name.eq_ignore_ascii_case(org)
                        || (wanted_id.is_some()
                            && self.resolved_id(&chat.account.name, name).await == wanted_id)
                }
            };
            if matches {
                return Some(r.clone());
            }
        }
        None
    }

    async fn resolved_id(&self, account: &str, name: &str) -> Option<i64> {
        let api = self.inner.apis.get(account)?;
        self.inner.directory.organization_id(api, name).await.ok()
    }
}

/// The endpoint's status for each skip: missing identity is 401 like a missing
/// session, operators the caller may not have are 403, ChatHub trouble is 503.
fn status_of(skip: &TokenSkip) -> StatusCode {
    match skip {
        TokenSkip::Operator(NoOperator::NoIdentity) => StatusCode::UNAUTHORIZED,
        TokenSkip::Operator(
            NoOperator::BadIdentity | NoOperator::UnknownOperator | NoOperator::InactiveOperator,
        ) => StatusCode::FORBIDDEN,
        TokenSkip::NoToken | TokenSkip::UnknownOrganization(_) => StatusCode::NOT_FOUND,
        TokenSkip::Operator(NoOperator::NoActiveOperator)
        | TokenSkip::BreakerOpen
        | TokenSkip::ChatHub(_)
        | TokenSkip::ProvisionFailed
        | TokenSkip::UnknownAccount => StatusCode::SERVICE_UNAVAILABLE,
    }
}

fn json(status: StatusCode, value: &serde_json::Value) -> Response<Body> {
    let mut r = Response::new(body::full(value.to_string()));
    *r.status_mut() = status;
    let h = r.headers_mut();
    h.insert(
        header::CONTENT_TYPE,
        HeaderValue::from_static("application/json"),
    );
    // A token is per session: no cache, shared or private, may keep it.
    h.insert(header::CACHE_CONTROL, HeaderValue::from_static("no-store"));
    h.insert(
        header::X_CONTENT_TYPE_OPTIONS,
        HeaderValue::from_static("nosniff"),
    );
    r
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn statuses_per_skip() {
        assert_eq!(
            status_of(&TokenSkip::Operator(NoOperator::NoIdentity)),
            StatusCode::UNAUTHORIZED
        );
        assert_eq!(
            status_of(&TokenSkip::Operator(NoOperator::UnknownOperator)),
            StatusCode::FORBIDDEN
        );
        assert_eq!(status_of(&TokenSkip::NoToken), StatusCode::NOT_FOUND);
        assert_eq!(
            status_of(&TokenSkip::BreakerOpen),
            StatusCode::SERVICE_UNAVAILABLE
        );
        assert_eq!(
            status_of(&TokenSkip::ChatHub("timeout")),
            StatusCode::SERVICE_UNAVAILABLE
        );
    }
}
