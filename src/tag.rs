//! The widget `<script>` tag, built once per config with its attribute values
//! escaped, so that a request only pastes in the escaped token.
//!
//! OWNER: rewrite helper. STUB.

use crate::config::InjectConfig;

/// A pre-rendered tag with a hole for the token (and an optional nonce).
#[derive(Clone, Debug)]
pub struct TagTemplate {
    widget_url: String,
    script_id: String,
    token_attribute: String,
}

impl TagTemplate {
    pub fn new(cfg: &InjectConfig) -> Self {
        TagTemplate { widget_url: cfg.widget_url.clone(), script_id: cfg.script_id.clone(), token_attribute: cfg.token_attribute.clone() }
    }

    /// The tag for one response.
    pub fn render(&self, token: &str, nonce: Option<&str>) -> String {
        let _ = nonce;
        format!(
            r#"<script type="module" id="{}" src="{}" {}="{}"></script>"#,
            self.script_id, self.widget_url, self.token_attribute, token
        )
    }
}
