//! Content-Security-Policy for injected pages: the widget tag either carries
//! the page's own script nonce, or the widget's origin is added to the header
//! policy's `script-src` (and the ChatHub origins to `connect-src`), never
//! anything else. A page whose policy would block the widget and cannot be
//! helped that way goes out unchanged ([`Blocked`] → skip reason `csp`).
//! Report-only policies are never touched. Pure functions over headers and
//! policy text; `<meta>` policies are judged by [`PageCsp`] inside the rewriter.

use crate::config::{CspMode, InjectConfig};
use crate::secret::Secret;
use crate::snippet::{PageParts, Snippet};
use http::header::{CONTENT_SECURITY_POLICY, HeaderMap, HeaderValue};
use std::fmt;
use std::sync::Arc;
use time::OffsetDateTime;

mod policy;
use policy::{Policy, Target};

/// Why a page's policy keeps the widget out.
#[derive(Clone, Copy, Debug, PartialEq, Eq, thiserror::Error)]
pub enum Blocked {
    /// A `Content-Security-Policy` header is not visible ASCII.
    #[error("a Content-Security-Policy header is not readable text")]
    Unreadable,
    /// The script directive is `'none'` (or empty).
    #[error("the policy allows no scripts ('none')")]
    NoScripts,
    /// Only hashes allow scripts: the author lists exact scripts.
    #[error("only hashes allow scripts")]
    HashOnly,
    /// `'strict-dynamic'` ignores host sources, and the tag has no nonce.
    #[error("'strict-dynamic' without a nonce for the tag")]
    StrictDynamic,
    /// No host, scheme or `'self'` source to add the widget's origin next to.
    #[error("scripts are allowed by nonce or inline only, and the tag gets no nonce")]
    NoAllowlist,
    /// `csp = "nonce"`, and a policy restricts scripts without a usable nonce.
    #[error("no nonce in the policy for the tag to carry")]
    NoNonce,
    /// `connect-src` (or `default-src`) is `'none'`: the widget could not talk to ChatHub.
    #[error("the policy allows no connections ('none')")]
    NoConnect,
    /// The widget is served from the page's own origin, which the policy does not allow.
    #[error("the widget is same-origin and the policy does not allow 'self'")]
    SameOrigin,
    /// A `<meta http-equiv>` policy blocks the widget and the page has no usable nonce.
    #[error("a <meta> policy blocks the widget")]
    Meta,
}

impl Blocked {
    /// A stable name for debug logs.
    pub fn reason(self) -> &'static str {
        match self {
            Blocked::Unreadable => "unreadable",
            Blocked::NoScripts => "no_scripts",
            Blocked::HashOnly => "hash_only",
            Blocked::StrictDynamic => "strict_dynamic",
            Blocked::NoAllowlist => "no_allowlist",
            Blocked::NoNonce => "no_nonce",
            Blocked::NoConnect => "no_connect",
            Blocked::SameOrigin => "same_origin",
            Blocked::Meta => "meta",
        }
    }
}

/// What the widget needs from a policy, built once per config.
#[derive(Clone, Debug)]
pub struct CspSettings {
    /// The widget script; `None` when `widget_url` is a path on the page's origin.
    widget: Option<Target>,
    /// Origins the widget connects to, each in its http(s) and ws(s) form.
    connect: Vec<Target>,
}

impl CspSettings {
    /// From `inject.widget_url` and `inject.connect_origins`.
    pub fn new(cfg: &InjectConfig) -> Self {
        Self::from_parts(&cfg.widget_url, &cfg.connect_origins)
    }

    /// From the widget URL and extra connect origins (tests, the demo).
    pub fn from_parts(widget_url: &str, connect_origins: &[String]) -> Self {
        let widget = Target::parse(widget_url, true);
        let mut connect: Vec<Target> = Vec::new();
        let origins = widget
            .iter()
            .map(|w| w.origin.clone())
            .chain(connect_origins.iter().cloned());
        for origin in origins {
            let Some(t) = Target::parse(&origin, false) else {
                continue;
            };
            let twin = match t.scheme.as_str() {
                "https" => Some(t.with_scheme("wss")),
                "http" => Some(t.with_scheme("ws")),
                "wss" => Some(t.with_scheme("https")),
                "ws" => Some(t.with_scheme("http")),
                _ => None,
            };
            for t in std::iter::once(t).chain(twin) {
                if !connect.iter().any(|c| c.origin == t.origin) {
                    connect.push(t);
                }
            }
        }
        CspSettings { widget, connect }
    }
}

/// What [`plan`] decided for one response's header policies.
#[derive(Clone, Debug)]
pub struct CspPlan {
    mode: CspMode,
    nonce: Option<String>,
    helper_allowed: bool,
    refresh_allowed: bool,
    /// Replacement `Content-Security-Policy` lines, in order, when a policy changed.
    amended: Option<Vec<HeaderValue>>,
}

impl CspPlan {
    /// The nonce every inserted `<script>` carries, from the header policy.
    pub fn nonce(&self) -> Option<&str> {
        self.nonce.as_deref()
    }

    /// Whether [`CspPlan::apply`] changes the headers.
    pub fn is_amended(&self) -> bool {
        self.amended.is_some()
    }

    /// Whether the header policies let the same-origin helper script run.
    pub fn helper_allowed(&self) -> bool {
        self.helper_allowed
    }

    /// Write the amended policies (if any) into the response headers. Call it
    /// only once the page really gets the widget.
    pub fn apply(&self, headers: &mut HeaderMap) {
        if let Some(lines) = &self.amended {
            headers.remove(CONTENT_SECURITY_POLICY);
            for v in lines {
                headers.append(CONTENT_SECURITY_POLICY, v.clone());
            }
        }
    }
}

/// Decide how the widget gets past the page's header policies. Reads only
/// `Content-Security-Policy` (report-only policies change nothing and are left
/// alone); changes nothing itself — [`CspPlan::apply`] does.
///
/// - `Off`: the policies are not looked at.
/// - `Nonce`: the tag carries a nonce from the policy; a policy that restricts
///   scripts without accepting it blocks the widget.
/// - `Amend`: the widget's origin goes into `script-src-elem`, else
///   `script-src`, else a new `script-src` copied from `default-src`.
/// - `Auto`: the policy's nonce when it has one; any policy the nonce does not
///   satisfy is amended.
///
/// In every mode but `Off`, a policy that restricts connections gets the
/// widget's and `connect_origins`' origins in `connect-src` (or a new
/// `connect-src` copied from `default-src`). Never added: `'unsafe-inline'`,
/// `'unsafe-eval'`, wildcards, or anything to a `'none'`, hash-only or
/// `'strict-dynamic'` list.
pub fn plan(
    headers: &HeaderMap,
    mode: CspMode,
    settings: &CspSettings,
) -> Result<CspPlan, Blocked> {
    let mut out = CspPlan {
        mode,
        nonce: None,
        helper_allowed: true,
        refresh_allowed: true,
        amended: None,
    };
    if mode == CspMode::Off {
        return Ok(out);
    }
    let mut lines = Vec::new();
    for v in headers.get_all(CONTENT_SECURITY_POLICY) {
        lines.push(v.to_str().map_err(|_| Blocked::Unreadable)?);
    }
    if lines.is_empty() {
        return Ok(out);
    }
    // A header line may hold several policies, comma-separated; each is enforced.
    let parsed: Vec<Vec<Policy<'_>>> = lines
        .iter()
        .map(|l| l.split(',').map(Policy::parse).collect())
        .collect();
    out.nonce = match mode {
        CspMode::Auto | CspMode::Nonce => parsed
            .iter()
            .flatten()
            .find_map(|p| p.script().and_then(|d| d.nonces().next()))
            .map(str::to_owned),
        CspMode::Amend | CspMode::Off => None,
    };
    let mut changed = false;
    let mut new_lines = Vec::with_capacity(lines.len());
    for policies in &parsed {
        let mut texts = Vec::with_capacity(policies.len());
        for p in policies {
            let amended = amend(p, mode, out.nonce.as_deref(), settings)?;
            out.helper_allowed &= p.allows_same_origin_script(out.nonce.as_deref());
            out.refresh_allowed &= p.allows_same_origin_connect();
            changed |= amended.is_some();
            texts.push(amended.unwrap_or_else(|| p.text.trim().to_owned()));
        }
        new_lines.push(texts.join(", "));
    }
    if changed {
        let values = new_lines
            .into_iter()
            .map(|l| HeaderValue::from_str(&l).map_err(|_| Blocked::Unreadable))
            .collect::<Result<Vec<_>, _>>()?;
        out.amended = Some(values);
    }
    Ok(out)
}

/// Origins to add to one directive of a policy.
struct Addition<'a> {
    /// The directive's (lower-case) name.
    name: String,
    /// For a directive the policy lacks: the `default-src` sources it starts from.
    copied: Option<Vec<&'a str>>,
    origins: Vec<&'a str>,
}

/// The amended text of one policy, `None` when it already lets the widget in.
fn amend(
    p: &Policy<'_>,
    mode: CspMode,
    nonce: Option<&str>,
    s: &CspSettings,
) -> Result<Option<String>, Blocked> {
    let mut additions: Vec<Addition<'_>> = Vec::new();
    if let Some(script) = p.script()
        && !script.allows_script(s.widget.as_ref(), nonce)
    {
        if mode == CspMode::Nonce {
            return Err(if nonce.is_none() {
                Blocked::NoNonce
            } else {
                script.why_blocked(nonce)
            });
        }
        let Some(widget) = &s.widget else {
            return Err(Blocked::SameOrigin);
        };
        if !script.can_amend() {
            return Err(script.why_blocked(nonce));
        }
        // script-src-elem, else script-src, else a new script-src from default-src.
        let from_default = script.name == "default-src";
        let name = if from_default {
            "script-src".to_owned()
        } else {
            script.name.clone()
        };
        let copied = if from_default {
            Some(script.sources.clone())
        } else {
            None
        };
        additions.push(Addition {
            name,
            copied,
            origins: vec![widget.origin.as_str()],
        });
    }
    if let Some(connect) = p.connect() {
        let missing: Vec<&str> = s
            .connect
            .iter()
            .filter(|t| !connect.matches(t))
            .map(|t| t.origin.as_str())
            .collect();
        if !missing.is_empty() {
            if connect.allows_nothing() {
                return Err(Blocked::NoConnect);
            }
            // A new connect-src keeps what default-src allowed for connections;
            // nonces, hashes and script keywords mean nothing there.
            let copied = (connect.name == "default-src").then(|| {
                connect
                    .sources
                    .iter()
                    .copied()
                    .filter(|s| !s.starts_with('\'') || s.eq_ignore_ascii_case("'self'"))
                    .collect()
            });
            additions.push(Addition {
                name: "connect-src".to_owned(),
                copied,
                origins: missing,
            });
        }
    }
    if additions.is_empty() {
        return Ok(None);
    }
    // Rebuild: every directive as written, the amended ones with the origins
    // appended, then any new directive copied from default-src.
    let mut parts: Vec<String> = Vec::with_capacity(p.directives.len() + 2);
    for d in &p.directives {
        let add = additions
            .iter()
            .find(|a| a.copied.is_none() && !d.duplicate && d.name == a.name);
        match add {
            Some(a) => parts.push(format!("{} {}", d.raw.trim(), a.origins.join(" "))),
            None => parts.push(d.raw.trim().to_owned()),
        }
    }
    for a in &additions {
        if let Some(copied) = &a.copied {
            let sources: Vec<&str> = copied.iter().chain(&a.origins).copied().collect();
            parts.push(format!("{} {}", a.name, sources.join(" ")));
        }
    }
    Ok(Some(parts.join("; ")))
}

/// At most this many `<meta>` policies, each at most this long, are judged;
/// a page with more or longer ones is not injected.
pub const MAX_META_POLICIES: usize = 4;
/// See [`MAX_META_POLICIES`].
pub const MAX_META_LEN: usize = 8 * 1024;
/// At most this many distinct nonces from the page's own scripts are tried.
pub const MAX_PAGE_NONCES: usize = 8;

/// Everything the rewriter needs to finish a page's CSP decision: the header
/// plan, and what to insert once it has seen the page's `<meta>` policies and
/// its scripts' nonces (before the insertion point).
pub struct PageCsp {
    plan: CspPlan,
    settings: Arc<CspSettings>,
    snippet: Arc<Snippet>,
    token: Secret,
    expires_at: Option<OffsetDateTime>,
}

impl fmt::Debug for PageCsp {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("PageCsp")
            .field("plan", &self.plan)
            .field("token", &self.token)
            .finish_non_exhaustive()
    }
}

impl PageCsp {
    /// One page's CSP state, built once its token is known.
    pub fn new(
        plan: CspPlan,
        settings: Arc<CspSettings>,
        snippet: Arc<Snippet>,
        token: Secret,
        expires_at: Option<OffsetDateTime>,
    ) -> Self {
        PageCsp {
            plan,
            settings,
            snippet,
            token,
            expires_at,
        }
    }

    /// Whether the rewriter should look for `<meta>` policies and script nonces
    /// (every mode but `off`).
    pub fn inspects_page(&self) -> bool {
        self.plan.mode != CspMode::Off
    }

    /// The snippet when the page has no `<meta>` policy: the header nonce, if any.
    pub fn header_snippet(&self) -> String {
        self.render(self.plan.nonce(), true, true)
    }

    /// The snippet under the page's `<meta>` policies (attribute values as
    /// written, entities undecoded), with the header nonce or else one of the
    /// page's script nonces they all accept; `Err` when none works.
    pub fn meta_snippet(
        &self,
        metas: &[String],
        page_nonces: &[String],
    ) -> Result<String, Blocked> {
        if metas.len() > MAX_META_POLICIES || metas.iter().any(|m| m.len() > MAX_META_LEN) {
            return Err(Blocked::Meta);
        }
        let texts: Vec<String> = metas.iter().map(|m| decode_entities(m)).collect();
        let nonces: Vec<String> = page_nonces.iter().map(|n| decode_entities(n)).collect();
        // A meta policy is one policy: commas do not split it.
        let policies: Vec<Policy<'_>> = texts.iter().map(|t| Policy::parse(t)).collect();
        let candidates: Vec<Option<&str>> = match self.plan.nonce() {
            Some(n) => vec![Some(n)],
            None => std::iter::once(None)
                .chain(nonces.iter().map(|n| Some(n.as_str())))
                .collect(),
        };
        for nonce in candidates {
            let script_ok = policies.iter().all(|p| {
                p.script()
                    .is_none_or(|d| d.allows_script(self.settings.widget.as_ref(), nonce))
            });
            if !script_ok {
                continue;
            }
            let connect_ok = policies.iter().all(|p| {
                p.connect()
                    .is_none_or(|d| self.settings.connect.iter().all(|t| d.matches(t)))
            });
            if !connect_ok {
                return Err(Blocked::Meta);
            }
            let helper = policies.iter().all(|p| p.allows_same_origin_script(nonce));
            let refresh = policies.iter().all(|p| p.allows_same_origin_connect());
            return Ok(self.render(nonce, helper, refresh));
        }
        Err(Blocked::Meta)
    }

    fn render(&self, nonce: Option<&str>, helper: bool, refresh: bool) -> String {
        self.snippet.render(PageParts {
            token: self.token.expose(),
            nonce,
            expires_at: self.expires_at,
            helper_allowed: helper && self.plan.helper_allowed,
            refresh_allowed: refresh && self.plan.refresh_allowed,
        })
    }
}

/// Decode the character references a CSP or nonce attribute may plausibly
/// hold (`&#39;`, `&apos;`, `&quot;`, `&amp;`, `&lt;`, `&gt;`, numeric);
/// anything else stays as written (and then matches nothing).
pub fn decode_entities(s: &str) -> String {
    if !s.contains('&') {
        return s.to_owned();
    }
    let mut out = String::with_capacity(s.len());
    let mut rest = s;
    while let Some(i) = rest.find('&') {
        out.push_str(&rest[..i]);
        rest = &rest[i..];
        let decoded = rest.find(';').filter(|&end| end <= 10).and_then(|end| {
            let name = &rest[1..end];
            let c = match name {
                "amp" => Some('&'),
                "quot" => Some('"'),
                "apos" => Some('\''),
                "lt" => Some('<'),
                "gt" => Some('>'),
                _ => {
                    let num = name.strip_prefix('#')?;
                    let code = match num.strip_prefix(['x', 'X']) {
                        Some(hex) => u32::from_str_radix(hex, 16).ok()?,
                        None => num.parse().ok()?,
                    };
                    char::from_u32(code)
                }
            }?;
            Some((c, end + 1))
        });
        match decoded {
            Some((c, len)) => {
                out.push(c);
                rest = &rest[len..];
            }
            None => {
                out.push('&');
                rest = &rest[1..];
            }
        }
    }
    out.push_str(rest);
    out
}

#[cfg(test)]
mod tests;
