//! The widget `<script>` tag, built once per config with its attribute values
//! escaped, so that a request only pastes in the escaped token (and nonce).

use crate::config::InjectConfig;

/// A pre-rendered widget tag with a hole for the token and an optional nonce.
///
/// Everything that comes from the config is escaped once, here; `render` only
/// escapes the per-request values. The output is pure ASCII whenever the
/// inputs are, which keeps it valid in every ASCII-compatible page encoding.
#[derive(Clone, Debug)]
pub struct TagTemplate {
    /// `<script type="module" id="…" src="…" token="` (escaped, ready to append to).
    head: String,
    /// The id the tag carries, unescaped: the rewriter looks for it in pages.
    script_id: String,
}

impl TagTemplate {
    /// Build the template from the `[inject]` config.
    pub fn new(cfg: &InjectConfig) -> Self {
        Self::from_parts(&cfg.widget_url, &cfg.script_id, &cfg.token_attribute)
    }

    /// Build the template from its three parts (tests, benches and the demo).
    pub fn from_parts(widget_url: &str, script_id: &str, token_attribute: &str) -> Self {
        let name = attribute_name(token_attribute);
        let mut head = String::with_capacity(64 + widget_url.len() + script_id.len() + name.len());
        head.push_str(r#"<script type="module" id=""#);
        push_escaped(&mut head, script_id);
        head.push_str(r#"" src=""#);
        push_escaped(&mut head, widget_url);
        head.push_str("\" ");
        head.push_str(&name);
        head.push_str("=\"");
        TagTemplate {
            head,
            script_id: script_id.to_owned(),
        }
    }

    /// The `id` the rendered tag carries (unescaped).
    pub fn script_id(&self) -> &str {
        &self.script_id
    }

    /// The tag for one response: the token, and the page's CSP nonce if it has one.
    pub fn render(&self, token: &str, nonce: Option<&str>) -> String {
        let extra = nonce.map_or(0, |n| n.len() + 9);
        let mut out = String::with_capacity(self.head.len() + token.len() + extra + 12);
        out.push_str(&self.head);
        push_escaped(&mut out, token);
        out.push('"');
        if let Some(nonce) = nonce {
            out.push_str(" nonce=\"");
            push_escaped(&mut out, nonce);
            out.push('"');
        }
        out.push_str("></script>");
        out
    }
}

/// An attribute name cannot be escaped, only restricted. Config validation
/// already allows just `[A-Za-z0-9_:-]`; this keeps the tag well-formed even if
/// a caller skipped validation, by dropping anything else.
fn attribute_name(raw: &str) -> String {
    let name: String = raw
        .chars()
        .filter(|c| c.is_ascii_alphanumeric() || matches!(c, '-' | '_' | ':' | '.'))
        .collect();
    if name.is_empty() {
        tracing::warn!(
            attribute = raw,
            "unusable token attribute name; using `token`"
        );
        return "token".to_owned();
    }
    name
}

/// Escape for a double-quoted attribute value. `"` and `&` are the only
/// characters that can end or alter such a value; `<`, `>` and `'` are escaped
/// too so the tag survives naive filters and single-quote re-quoting.
///
/// Runs between those bytes are copied whole: a token is a JWT of several
/// hundred bytes with nothing to escape, rendered into every page, and a
/// push per `char` cost about 8,000 instructions a page (bench/README.md).
fn push_escaped(out: &mut String, value: &str) {
    let mut rest = value;
    // All five are ASCII, so every cut falls on a char boundary.
    while let Some(at) = first_special(rest.as_bytes()) {
        out.push_str(&rest[..at]);
        out.push_str(match rest.as_bytes()[at] {
            b'&' => "&amp;",
            b'"' => "&quot;",
            b'\'' => "&#39;",
            b'<' => "&lt;",
            _ => "&gt;",
        });
        rest = &rest[at + 1..];
    }
    out.push_str(rest);
}

/// Where the first byte to escape is, by memchr's vector search (a byte
/// loop, or a block test left to the compiler, cost about four
/// instructions a byte of a several-hundred-byte token).
fn first_special(s: &[u8]) -> Option<usize> {
    let first = memchr::memchr3(b'&', b'"', b'<', s);
    let before = first.unwrap_or(s.len());
    memchr::memchr2(b'\'', b'>', &s[..before]).or(first)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn template() -> TagTemplate {
        TagTemplate::from_parts(
            "https://widget.example/w.js?a=1&b=2",
            "operator-chat-panel-script",
            "token",
        )
    }

    #[test]
    fn renders_the_documented_tag() {
        let tag = template().render("abc123", None);
        assert_eq!(
            tag,
            r#"<script type="module" id="operator-chat-panel-script" src="https://widget.example/w.js?a=1&amp;b=2" token="abc123"></script>"#
        );
    }

    #[test]
    fn nonce_is_added_as_an_attribute() {
        let tag = template().render("t", Some("r4nd0m"));
        assert!(
            tag.ends_with(r#" token="t" nonce="r4nd0m"></script>"#),
            "{tag}"
        );
    }

    #[test]
    fn hostile_token_and_nonce_cannot_break_out_of_their_attributes() {
        let evil = r#""><img src=x onerror=alert(1)>&'<"#;
        let tag = template().render(evil, Some(evil));
        // Escaped form appears; no raw quote, angle bracket or ampersand from the input survives.
        let esc = "&quot;&gt;&lt;img src=x onerror=alert(1)&gt;&amp;&#39;&lt;";
        assert!(tag.contains(&format!(r#" token="{esc}""#)), "{tag}");
        assert!(tag.contains(&format!(r#" nonce="{esc}""#)), "{tag}");
        // The tag as a whole still has exactly one `<script ...>` start and one end tag,
        // and its only `"` characters are the ones the template put there.
        assert_eq!(tag.matches('<').count(), 2, "{tag}");
        assert_eq!(tag.matches('>').count(), 2, "{tag}");
        assert_eq!(tag.matches('"').count(), 10, "{tag}");
        assert!(!tag.contains("<img"));
    }

    #[test]
    fn escaping_matches_a_char_by_char_reference() {
        let reference = |v: &str| -> String {
            v.chars()
                .map(|c| match c {
                    '&' => "&amp;".to_owned(),
                    '"' => "&quot;".to_owned(),
                    '\'' => "&#39;".to_owned(),
                    '<' => "&lt;".to_owned(),
                    '>' => "&gt;".to_owned(),
                    c => c.to_string(),
                })
                .collect()
        };
        let mut cases: Vec<String> = [
            "",
            "eyJhbGciOi.J9-_x",
            "&&",
            ">",
            "é\"ü<>'&ß",
            "a&b\"c'd<e>f",
            "日本語&",
        ]
        .map(String::from)
        .into();
        // Long values, with the byte to escape at the edges of the vector
        // search's 16- and 32-byte blocks, and none at all.
        let jwt = "eyJhbGciOiJIUzI1NiJ9.".repeat(8);
        cases.push(jwt.clone());
        for at in [0, 30, 31, 32, 33, 63, 64, 100, jwt.len() - 1] {
            for special in ['&', '"', '\'', '<', '>'] {
                let mut v = jwt.clone();
                v.replace_range(at..at + 1, &special.to_string());
                cases.push(v);
            }
        }
        for v in &cases {
            let mut out = String::from("x");
            push_escaped(&mut out, v);
            assert_eq!(out, format!("x{}", reference(v)), "{v:?}");
        }
    }

    #[test]
    fn hostile_config_values_are_escaped_too() {
        let t = TagTemplate::from_parts(r#"https://x/"><script>"#, r#"id"x"#, r#"tok" onload="x"#);
        let tag = t.render("v", None);
        assert!(tag.contains(r#"id="id&quot;x""#), "{tag}");
        assert!(
            tag.contains(r#"src="https://x/&quot;&gt;&lt;script&gt;""#),
            "{tag}"
        );
        // The attribute name loses the characters that could end it.
        assert!(tag.contains(r#" tokonloadx="v""#), "{tag}");
        assert_eq!(t.script_id(), r#"id"x"#);
    }

    #[test]
    fn unusable_attribute_name_falls_back_to_token() {
        for bad in ["", "\"=<>", " / "] {
            let tag = TagTemplate::from_parts("/w.js", "i", bad).render("v", None);
            assert!(tag.contains(r#" token="v""#), "{bad:?}: {tag}");
        }
    }

    #[test]
    fn new_reads_the_inject_config() {
        let mut cfg = crate::config::from_toml_str("").map(|c| c.inject);
        if let Ok(cfg) = cfg.as_mut() {
            cfg.widget_url = "https://w.example/s.js".into();
            cfg.script_id = "my-id".into();
            cfg.token_attribute = "data-token".into();
            let tag = TagTemplate::new(cfg).render("x", None);
            assert_eq!(
                tag,
                r#"<script type="module" id="my-id" src="https://w.example/s.js" data-token="x"></script>"#
            );
        } else {
            panic!("default config does not load: {cfg:?}");
        }
    }
}
