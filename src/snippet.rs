//! The HTML the proxy inserts into a page: the widget tag and, when the config
//! asks for them, the fallback contact block and the same-origin helper script
//! that reveals it when the widget fails to load and refreshes the token on
//! pages left open for hours. Built once per config; a page only pastes in its
//! token, nonce and expiry. No inline script anywhere, so a CSP that allows
//! the widget allows all of it.

use crate::body::{self, Body};
use crate::config::InjectConfig;
use crate::tag::TagTemplate;
use http::header::{self, HeaderValue};
use http::{Method, Response, StatusCode};
use time::OffsetDateTime;
use time::format_description::well_known::Rfc3339;

/// The helper script the proxy serves at `inject.helper_path`.
pub const HELPER_JS: &str = include_str!("assets/chathub-helper.js");

/// `id` of the inserted `<template>` holding `inject.fallback_html`.
pub const FALLBACK_TEMPLATE_ID: &str = "chathub-fallback";

/// `id` of the inserted helper `<script>`.
pub const HELPER_ID: &str = "chathub-proxy-helper";

/// The inserted HTML, pre-rendered from the `[inject]` config.
#[derive(Clone, Debug)]
pub struct Snippet {
    tag: TagTemplate,
    /// `None` when neither a fallback nor the refresh helper is configured.
    helper: Option<Helper>,
}

#[derive(Clone, Debug)]
struct Helper {
    /// `<template …>…</template>` when `inject.fallback_html` is set.
    template: Option<String>,
    /// `<script defer src="…" id="…" data-…="…"` up to the per-page attributes.
    head: String,
    /// ` data-token-path="…"` (escaped), when `inject.refresh_helper` is on.
    token_path: Option<String>,
}

/// What differs from page to page. No `Debug`: it holds the token.
#[derive(Clone, Copy)]
pub struct PageParts<'a> {
    /// The operator token for this session.
    pub token: &'a str,
    /// The page's script nonce, carried by every inserted `<script>`.
    pub nonce: Option<&'a str>,
    /// When the token expires; the helper refreshes it before then.
    pub expires_at: Option<OffsetDateTime>,
    /// The page's policies let a same-origin script run (else no helper, no fallback).
    pub helper_allowed: bool,
    /// The page's policies let that script fetch the token path.
    pub refresh_allowed: bool,
}

impl Snippet {
    /// Build from the `[inject]` config.
    pub fn new(cfg: &InjectConfig) -> Self {
        let tag = TagTemplate::new(cfg);
        let wanted = cfg.fallback_html.is_some() || cfg.refresh_helper;
        let helper = wanted.then(|| {
            let template = cfg.fallback_html.as_ref().map(|html| {
                // Config text, trusted as HTML; inert inside <template> until the helper clones it.
                format!(r#"<template id="{FALLBACK_TEMPLATE_ID}">{html}</template>"#)
            });
            let mut head = String::from("<script defer src=\"");
            push_escaped(&mut head, &cfg.helper_path);
            head.push_str("\" id=\"");
            head.push_str(HELPER_ID);
            // Not `data-…-id="…"`: the page should hold the widget's id in
            // `id="…"` exactly once, for tools that look for it by text.
            head.push_str("\" data-widget=\"");
            push_escaped(&mut head, &cfg.script_id);
            head.push_str("\" data-token-attribute=\"");
            push_escaped(&mut head, &cfg.token_attribute);
            head.push('"');
            if template.is_some() {
                head.push_str(" data-fallback=\"");
                head.push_str(FALLBACK_TEMPLATE_ID);
                head.push('"');
            }
            let token_path = cfg.refresh_helper.then(|| {
                let mut s = String::from(" data-token-path=\"");
                push_escaped(&mut s, &cfg.token_path);
                s.push('"');
                s
            });
            Helper {
                template,
                head,
                token_path,
            }
        });
        Snippet { tag, helper }
    }

    /// Whether the proxy must serve the helper script at `inject.helper_path`.
    pub fn helper_enabled(&self) -> bool {
        self.helper.is_some()
    }

    /// The widget tag alone, as [`TagTemplate::render`] makes it.
    pub fn tag(&self) -> &TagTemplate {
        &self.tag
    }

    /// The HTML for one page: fallback template, helper (deferred, so it runs
    /// after parsing and before the widget module, and sees its `error` event),
    /// then the widget tag.
    pub fn render(&self, page: PageParts<'_>) -> String {
        let tag = self.tag.render(page.token, page.nonce);
        let Some(helper) = self.helper.as_ref().filter(|_| page.helper_allowed) else {
            return tag;
        };
        let mut out = String::with_capacity(tag.len() + helper.head.len() + 256);
        if let Some(t) = &helper.template {
            out.push_str(t);
        }
        out.push_str(&helper.head);
        if page.refresh_allowed
            && let Some(tp) = &helper.token_path
        {
            out.push_str(tp);
            if let Some(at) = page.expires_at.and_then(|t| t.format(&Rfc3339).ok()) {
                out.push_str(" data-expires-at=\"");
                push_escaped(&mut out, &at);
                out.push('"');
            }
        }
        if let Some(nonce) = page.nonce {
            out.push_str(" nonce=\"");
            push_escaped(&mut out, nonce);
            out.push('"');
        }
        out.push_str("></script>");
        out.push_str(&tag);
        out
    }
}

/// The answer at `inject.helper_path`: the helper script for GET and HEAD,
/// 405 otherwise. Cacheable (it is the same for everyone), same-origin only.
pub fn helper_response(method: &Method) -> Response<Body> {
    let mut r = Response::new(body::empty());
    let h = r.headers_mut();
    if method != Method::GET && method != Method::HEAD {
        *r.status_mut() = StatusCode::METHOD_NOT_ALLOWED;
        r.headers_mut()
            .insert(header::ALLOW, HeaderValue::from_static("GET, HEAD"));
        return r;
    }
    h.insert(
        header::CONTENT_TYPE,
        HeaderValue::from_static("text/javascript; charset=utf-8"),
    );
    h.insert(
        header::CACHE_CONTROL,
        HeaderValue::from_static("public, max-age=3600"),
    );
    h.insert(
        header::X_CONTENT_TYPE_OPTIONS,
        HeaderValue::from_static("nosniff"),
    );
    h.insert(
        "cross-origin-resource-policy",
        HeaderValue::from_static("same-origin"),
    );
    h.insert(header::CONTENT_LENGTH, HeaderValue::from(HELPER_JS.len()));
    if method == Method::GET {
        *r.body_mut() = body::full(HELPER_JS);
    }
    r
}

/// Escape for a double-quoted attribute value (same rules as [`crate::tag`]).
fn push_escaped(out: &mut String, value: &str) {
    for c in value.chars() {
        match c {
            '&' => out.push_str("&amp;"),
            '"' => out.push_str("&quot;"),
            '\'' => out.push_str("&#39;"),
            '<' => out.push_str("&lt;"),
            '>' => out.push_str("&gt;"),
            c => out.push(c),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::config::from_toml_str;
    use http_body_util::BodyExt;

    fn snippet(inject: &str) -> Snippet {
        let cfg = from_toml_str(&format!(
            "[inject]\nwidget_url = \"https://w.example/w.js\"\n{inject}"
        ))
        .unwrap();
        Snippet::new(&cfg.inject)
    }

    fn page<'a>(nonce: Option<&'a str>) -> PageParts<'a> {
        PageParts {
            token: "tok",
            nonce,
            expires_at: Some(time::macros::datetime!(2030-01-02 03:04:05 UTC)),
            helper_allowed: true,
            refresh_allowed: true,
        }
    }

    #[test]
    fn without_helper_config_only_the_tag_is_inserted() {
        let s = snippet("");
        assert!(!s.helper_enabled());
        assert_eq!(s.render(page(Some("n"))), s.tag().render("tok", Some("n")));
    }

    #[test]
    fn helper_comes_before_the_tag_and_carries_the_nonce_and_expiry() {
        let s = snippet(
            "fallback_html = '<p class=\"c\">Call us</p>'\nrefresh_helper = true\nhelper_path = \"/__h.js\"",
        );
        assert!(s.helper_enabled());
        let html = s.render(page(Some("abc")));
        assert!(
            html.starts_with(r#"<template id="chathub-fallback"><p class="c">Call us</p></template><script defer src="/__h.js" id="chathub-proxy-helper" data-widget="operator-chat-panel-script" data-token-attribute="token" data-fallback="chathub-fallback" data-token-path="/api/chathub/token" data-expires-at="2030-01-02T03:04:05Z" nonce="abc"></script><script type="module""#),
            "{html}"
        );
        assert!(
            html.ends_with(r#" token="tok" nonce="abc"></script>"#),
            "{html}"
        );
        assert_eq!(html.matches("<script").count(), 2);
        assert_eq!(
            html.matches(r#"id="operator-chat-panel-script""#).count(),
            1
        );
    }

    #[test]
    fn refresh_needs_config_and_permission() {
        let fallback_only = snippet("fallback_html = 'x'");
        let html = fallback_only.render(page(None));
        assert!(!html.contains("data-token-path"), "{html}");
        assert!(html.contains("data-fallback"), "{html}");

        let both = snippet("fallback_html = 'x'\nrefresh_helper = true");
        let html = both.render(PageParts {
            refresh_allowed: false,
            ..page(None)
        });
        assert!(!html.contains("data-token-path"), "{html}");
        assert!(!html.contains("nonce"), "{html}");

        let html = both.render(PageParts {
            helper_allowed: false,
            ..page(None)
        });
        assert_eq!(html, both.tag().render("tok", None));
    }

    #[test]
    fn refresh_only_has_no_template() {
        let s = snippet("refresh_helper = true");
        let html = s.render(page(None));
        assert!(!html.contains("<template"), "{html}");
        assert!(!html.contains("data-fallback"), "{html}");
        assert!(html.contains("data-expires-at"), "{html}");
    }

    #[test]
    fn hostile_nonce_is_escaped() {
        let s = snippet("refresh_helper = true");
        let html = s.render(page(Some(r#""><img src=x>"#)));
        assert!(!html.contains("<img"), "{html}");
        assert_eq!(html.matches("<script").count(), 2);
    }

    #[tokio::test]
    async fn helper_response_serves_the_script() {
        let r = helper_response(&Method::GET);
        assert_eq!(r.status(), StatusCode::OK);
        assert_eq!(
            r.headers()["content-type"],
            "text/javascript; charset=utf-8"
        );
        assert_eq!(r.headers()["x-content-type-options"], "nosniff");
        let body = r.into_body().collect().await.unwrap().to_bytes();
        assert_eq!(body, HELPER_JS.as_bytes());

        let head = helper_response(&Method::HEAD);
        assert_eq!(head.status(), StatusCode::OK);
        assert_eq!(
            head.headers()["content-length"],
            HELPER_JS.len().to_string().as_str()
        );
        assert!(
            head.into_body()
                .collect()
                .await
                .unwrap()
                .to_bytes()
                .is_empty()
        );

        let post = helper_response(&Method::POST);
        assert_eq!(post.status(), StatusCode::METHOD_NOT_ALLOWED);
        assert_eq!(post.headers()["allow"], "GET, HEAD");
    }

    #[test]
    fn helper_script_has_no_eval_or_markup_sinks() {
        for bad in [
            "eval(",
            "new Function",
            "innerHTML",
            "outerHTML",
            "document.write",
            "insertAdjacentHTML",
        ] {
            assert!(!HELPER_JS.contains(bad), "{bad}");
        }
    }
}
