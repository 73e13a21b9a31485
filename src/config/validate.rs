//! Phase two of configuration: turn a [`RawConfig`] into a typed [`Config`],
//! collecting every problem instead of stopping at the first.

use super::raw::{IdOrName, RawAccount, RawConfig, RawOperatorRule, RawRoute, Str};
use super::*;
use std::collections::HashSet;

mod routes;
use routes::{check_host_clashes, route};

/// Collects issues; each getter returns a placeholder on error so that
/// validation carries on and finds the next problem too.
struct Checker<'a> {
    issues: Vec<ConfigIssue>,
    source: &'a dyn Fn(&str) -> Option<String>,
}

impl Checker<'_> {
    fn err(&mut self, key: impl Into<String>, message: impl Into<String>) {
        let key = key.into();
        let source = (self.source)(&key);
        self.issues.push(ConfigIssue {
            key,
            message: message.into(),
            source,
        });
    }

    fn duration(&mut self, key: &str, v: &Str) -> Duration {
        match humantime::parse_duration(v.as_str().trim()) {
            Ok(d) => d,
            Err(e) => {
                self.err(
                    key,
                    format!(
                        "`{}` is not a duration like \"500ms\", \"10s\" or \"2h\" ({e})",
                        v.as_str()
                    ),
                );
                Duration::ZERO
            }
        }
    }

    fn positive_duration(&mut self, key: &str, v: &Str) -> Duration {
        let d = self.duration(key, v);
        if d.is_zero() && humantime::parse_duration(v.as_str().trim()).is_ok() {
            self.err(key, "must be greater than zero");
        }
        d
    }

    fn addr(&mut self, key: &str, v: &str) -> Option<SocketAddr> {
        match v.trim().parse::<SocketAddr>() {
            Ok(a) => Some(a),
            Err(_) => {
                self.err(
                    key,
                    format!("`{v}` is not an address like 127.0.0.1:8080 or [::1]:8080"),
                );
                None
            }
        }
    }

    fn nonzero(&mut self, key: &str, v: u64) -> u64 {
        if v == 0 {
            self.err(key, "must be greater than zero");
        }
        v
    }
}

/// Validate a raw config; `source` names where a key's value came from.
pub fn validate(
    raw: &RawConfig,
    source: &dyn Fn(&str) -> Option<String>,
) -> Result<Config, ConfigError> {
    let mut c = Checker {
        issues: Vec::new(),
        source,
    };

    let server = server(&mut c, raw);
    let admin_listen = match raw.admin.listen.as_str().trim() {
        "" | "off" | "none" => None,
        a => c.addr("admin.listen", a),
    };
    let log = LogConfig {
        format: match raw.log.format.as_str().to_ascii_lowercase().as_str() {
            "text" => LogFormat::Text,
            "json" => LogFormat::Json,
            other => {
                c.err(
                    "log.format",
                    format!("`{other}` is not one of \"text\", \"json\""),
                );
                LogFormat::Text
            }
        },
        filter: {
            let f = raw.log.filter.as_str().to_owned();
            if let Err(e) = tracing_subscriber::EnvFilter::try_new(&f) {
                c.err("log.filter", format!("`{f}` is not a valid filter ({e})"));
            }
            f
        },
    };
    let upstream = UpstreamConfig {
        connect_timeout: c
            .positive_duration("upstream.connect_timeout", &raw.upstream.connect_timeout),
        response_timeout: c
            .positive_duration("upstream.response_timeout", &raw.upstream.response_timeout),
        pool_idle_timeout: c.positive_duration(
            "upstream.pool_idle_timeout",
            &raw.upstream.pool_idle_timeout,
        ),
        pool_max_idle_per_host: raw.upstream.pool_max_idle_per_host as usize,
        extra_roots: raw
            .upstream
            .ca_file
            .as_ref()
            .map(|path| ca_certificates(&mut c, "upstream.ca_file", path.as_str()))
            .unwrap_or_default(),
    };
    let inject = inject(&mut c, raw);
    let session = SessionConfig {
        cookie_name: {
            let n = raw.session.cookie_name.as_str().to_owned();
            if n.is_empty()
                || !n
                    .bytes()
                    .all(|b| b.is_ascii_alphanumeric() || b"-_.".contains(&b))
            {
                c.err(
                    "session.cookie_name",
                    format!("`{n}` must be non-empty letters, digits, '-', '_' or '.'"),
                );
            }
            n
        },
        max_age: c.positive_duration("session.max_age", &raw.session.max_age),
    };
    let token = token(&mut c, raw);
    let redis = redis(&mut c, raw);

    let mut accounts = Vec::new();
    for (name, acc) in &raw.accounts {
        if let Some(a) = account(&mut c, name, acc) {
            accounts.push(Arc::new(a));
        }
    }

    let mut routes = Vec::new();
    let mut names = HashSet::new();
    for (i, r) in raw.routes.iter().enumerate() {
        if let Some(route) = route(&mut c, i, r, &accounts, raw) {
            if !names.insert(route.name.clone()) {
                c.err(
                    format!("routes[{i}].name"),
                    format!("route name `{}` is used twice", route.name),
                );
            }
            routes.push(Arc::new(route));
        }
    }
    check_host_clashes(&mut c, &routes);

    let default_route = raw.default_route.as_ref().and_then(|name| {
        let pos = routes.iter().position(|r| r.name == name.as_str());
        if pos.is_none() && c.issues.iter().all(|i| !i.key.starts_with("routes")) {
            c.err(
                "default_route",
                format!("no route is named `{}`", name.as_str()),
            );
        }
        pos
    });

    if c.issues.is_empty() {
        Ok(Config {
            server,
            admin_listen,
            log,
            upstream,
            inject,
            session,
            token,
            redis,
            accounts,
            routes,
            default_route,
        })
    } else {
        Err(ConfigError { issues: c.issues })
    }
}

fn server(c: &mut Checker, raw: &RawConfig) -> ServerConfig {
    let s = &raw.server;
    let listen: Vec<SocketAddr> = s
        .listen
        .to_vec()
        .iter()
        .filter_map(|a| c.addr("server.listen", a))
        .collect();
    if s.listen.to_vec().is_empty() {
        c.err("server.listen", "at least one listen address is needed");
    }
    let mut trusted = Vec::new();
    for t in s.trusted_proxies.to_vec() {
        let parsed = t
            .parse::<IpNet>()
            .or_else(|_| t.parse::<IpAddr>().map(IpNet::from));
        match parsed {
            Ok(n) => trusted.push(n),
            Err(_) => c.err(
                "server.trusted_proxies",
                format!("`{t}` is not a CIDR like 10.0.0.0/8 or an IP address"),
            ),
        }
    }
    ServerConfig {
        listen,
        max_connections: c.nonzero("server.max_connections", s.max_connections) as usize,
        header_read_timeout: c
            .positive_duration("server.header_read_timeout", &s.header_read_timeout),
        idle_timeout: c.positive_duration("server.idle_timeout", &s.idle_timeout),
        max_header_bytes: {
            let v = c.nonzero("server.max_header_bytes", s.max_header_bytes);
            if v > 0 && v < 1024 {
                c.err("server.max_header_bytes", "must be at least 1024");
            }
            v as usize
        },
        max_headers: c.nonzero("server.max_headers", s.max_headers) as usize,
        grace_period: c.duration("server.grace_period", &s.grace_period),
        trusted_proxies: trusted,
        h2_max_concurrent_streams: c.nonzero(
            "server.h2_max_concurrent_streams",
            s.h2_max_concurrent_streams,
        ) as u32,
        worker_threads: match s.worker_threads {
            0 => None,
            n if n > 1024 => {
                c.err("server.worker_threads", "at most 1024");
                None
            }
            n => Some(n as usize),
        },
    }
}

fn inject(c: &mut Checker, raw: &RawConfig) -> InjectConfig {
    let i = &raw.inject;
    let widget_url = i.widget_url.as_str().to_owned();
    match url::Url::parse(&widget_url) {
        Ok(u) if u.scheme() == "http" || u.scheme() == "https" => {}
        Ok(_) | Err(_) if widget_url.starts_with('/') => {}
        _ => c.err(
            "inject.widget_url",
            format!("`{widget_url}` is not an http(s) URL or an absolute path"),
        ),
    }
    let attr_ok = |s: &str| {
        !s.is_empty()
            && s.bytes()
                .all(|b| b.is_ascii_alphanumeric() || b"-_:".contains(&b))
    };
    if !attr_ok(i.script_id.as_str()) {
        c.err(
            "inject.script_id",
            "must be non-empty letters, digits, '-', '_' or ':'",
        );
    }
    if !attr_ok(i.token_attribute.as_str()) {
        c.err(
            "inject.token_attribute",
            "must be non-empty letters, digits, '-', '_' or ':'",
        );
    }
    let content_types: Vec<String> = i
        .content_types
        .iter()
        .map(|t| t.as_str().trim().to_ascii_lowercase())
        .collect();
    for t in &content_types {
        if !t.contains('/') || t.contains(';') {
            c.err(
                "inject.content_types",
                format!("`{t}` is not a media type like text/html"),
            );
        }
    }
    let mut statuses = Vec::new();
    for s in &i.statuses {
        let s = s.as_str().trim();
        let parsed = match s.split_once('-') {
            Some((a, b)) => a
                .trim()
                .parse::<u16>()
                .ok()
                .zip(b.trim().parse::<u16>().ok()),
            None => s.parse::<u16>().ok().map(|v| (v, v)),
        };
        match parsed {
            Some((a, b)) if (100..=599).contains(&a) && (100..=599).contains(&b) && a <= b => {
                statuses.push(StatusRange(a, b))
            }
            _ => c.err(
                "inject.statuses",
                format!("`{s}` is not a status or range like \"200-299\""),
            ),
        }
    }
    for p in [
        ("inject.token_path", &i.token_path),
        ("inject.helper_path", &i.helper_path),
    ] {
        if !p.1.as_str().starts_with('/') {
            c.err(
                p.0,
                format!(
                    "`{}` must be an absolute path starting with '/'",
                    p.1.as_str()
                ),
            );
        }
    }
    InjectConfig {
        widget_url,
        script_id: i.script_id.0.clone(),
        token_attribute: i.token_attribute.0.clone(),
        content_types,
        statuses,
        exclude_statuses: i.exclude_statuses.clone(),
        iframes: i.iframes,
        debug_header: i.debug_header,
        dev_token: i
            .dev_token
            .as_ref()
            .map(|t| t.0.clone())
            .filter(|t| !t.is_empty()),
        max_rewriter_memory: {
            let v = c.nonzero("inject.max_rewriter_memory", i.max_rewriter_memory);
            if v > 0 && v < 64 * 1024 {
                c.err("inject.max_rewriter_memory", "must be at least 65536 bytes");
            }
            v as usize
        },
        max_decompressed_bytes: c
            .nonzero("inject.max_decompressed_bytes", i.max_decompressed_bytes),
        max_decompression_ratio: c
            .nonzero("inject.max_decompression_ratio", i.max_decompression_ratio),
        fallback_html: i
            .fallback_html
            .as_ref()
            .map(|f| f.0.clone())
            .filter(|f| !f.is_empty()),
        token_path: i.token_path.0.clone(),
        helper_path: i.helper_path.0.clone(),
        refresh_helper: i.refresh_helper,
        connect_origins: connect_origins(c, &i.connect_origins),
    }
}

/// `inject.connect_origins`: http(s) or ws(s) origins, without path, query or credentials.
fn connect_origins(c: &mut Checker, raw: &[Str]) -> Vec<String> {
    let mut out = Vec::new();
    for s in raw {
        let s = s.as_str().trim();
        match url::Url::parse(s) {
            Ok(u)
                if matches!(u.scheme(), "http" | "https" | "ws" | "wss")
                    && u.host_str().is_some()
                    && u.path() == "/"
                    && u.query().is_none()
                    && u.username().is_empty()
                    && u.password().is_none() =>
            {
                out.push(u.origin().ascii_serialization())
            }
            _ => c.err(
                "inject.connect_origins",
                format!("`{s}` is not an origin like \"https://chatapi.example.com\""),
            ),
        }
    }
    out
}

fn token(c: &mut Checker, raw: &RawConfig) -> TokenConfig {
    let t = &raw.token;
    let lifetime = c.positive_duration("token.lifetime", &t.lifetime);
    if lifetime > Duration::from_secs(24 * 3600) {
        c.err(
            "token.lifetime",
            "ChatHub issues operator tokens for at most 24h",
        );
    }
    let refresh_ahead = c.duration("token.refresh_ahead", &t.refresh_ahead);
    let safety_margin = c.duration("token.safety_margin", &t.safety_margin);
    if !lifetime.is_zero() && safety_margin >= lifetime {
        c.err("token.safety_margin", "must be shorter than token.lifetime");
    }
    TokenConfig {
        lifetime,
        refresh_ahead,
        safety_margin,
        skew_margin: c.duration("token.skew_margin", &t.skew_margin),
        capacity: c.nonzero("token.capacity", t.capacity),
        budget: c.duration("token.budget", &t.budget),
        operators_ttl: c.positive_duration("token.operators_ttl", &t.operators_ttl),
        breaker_failures: c.nonzero("token.breaker_failures", t.breaker_failures) as u32,
        breaker_open_for: c.positive_duration("token.breaker_open_for", &t.breaker_open_for),
    }
}

fn redis(c: &mut Checker, raw: &RawConfig) -> Option<RedisConfig> {
    let r = &raw.redis;
    let url = r
        .url
        .as_ref()
        .map(|u| u.0.trim().to_owned())
        .filter(|u| !u.is_empty())?;
    if !(url.starts_with("redis://") || url.starts_with("rediss://") || url.starts_with("unix://"))
    {
        c.err("redis.url", format!("`{url}` is not a redis:// URL"));
    }
    Some(RedisConfig {
        url,
        key_prefix: r
            .key_prefix
            .as_ref()
            .map(|p| p.0.clone())
            .unwrap_or_else(|| "chathub-proxy:".into()),
        lock_ttl: r
            .lock_ttl
            .as_ref()
            .map(|d| c.positive_duration("redis.lock_ttl", d))
            .unwrap_or(Duration::from_secs(10)),
        timeout: r
            .timeout
            .as_ref()
            .map(|d| c.positive_duration("redis.timeout", d))
            .unwrap_or(Duration::from_millis(250)),
    })
}

/// The certificates of a PEM file: read now, so that a missing or empty file
/// is a start-up error naming its key, not a 502 on the first https request.
fn ca_certificates(
    c: &mut Checker<'_>,
    key: &str,
    path: &str,
) -> Vec<rustls::pki_types::CertificateDer<'static>> {
    use rustls::pki_types::{CertificateDer, pem::PemObject};
    let pem = match std::fs::read(path) {
        Ok(pem) => pem,
        Err(e) => {
            c.err(key, format!("cannot read `{path}`: {e}"));
            return Vec::new();
        }
    };
    match CertificateDer::pem_slice_iter(&pem).collect::<Result<Vec<_>, _>>() {
        Ok(certs) if certs.is_empty() => {
            c.err(key, format!("`{path}` holds no PEM certificate"));
            Vec::new()
        }
        Ok(certs) => certs,
        Err(e) => {
            c.err(key, format!("`{path}` is not valid PEM: {e}"));
            Vec::new()
        }
    }
}

/// Read a secret from the environment variable or file that config names.
fn read_secret(
    c: &mut Checker<'_>,
    key_env: &str,
    env: &Option<Str>,
    key_file: &str,
    file: &Option<Str>,
) -> Option<Secret> {
    if let Some(var) = env {
        return match std::env::var(var.as_str()) {
            Ok(v) if !v.trim().is_empty() => Some(Secret::new(v.trim().to_owned())),
            _ => {
                c.err(
                    key_env,
                    format!(
                        "environment variable `{}` is not set or empty",
                        var.as_str()
                    ),
                );
                None
            }
        };
    }
    if let Some(path) = file {
        return match std::fs::read_to_string(path.as_str()) {
            Ok(v) if !v.trim().is_empty() => Some(Secret::new(v.trim().to_owned())),
            Ok(_) => {
                c.err(key_file, format!("file `{}` is empty", path.as_str()));
                None
            }
            Err(e) => {
                c.err(key_file, format!("cannot read `{}`: {e}", path.as_str()));
                None
            }
        };
    }
    None
}

fn account(c: &mut Checker, name: &str, a: &RawAccount) -> Option<Account> {
    let k = |f: &str| format!("accounts.{name}.{f}");
    if a.password.is_some() {
        c.err(
            k("password"),
            "secrets are never inline: use password_env or password_file",
        );
    }
    if a.api_key.is_some() {
        c.err(
            k("api_key"),
            "secrets are never inline: use api_key_env or api_key_file",
        );
    }
    let base = a
        .base_url
        .as_ref()
        .map(|s| s.as_str())
        .unwrap_or("https://chatapi.smsbat.com");
    let base_url = match url::Url::parse(base) {
        Ok(u) if u.scheme() == "http" || u.scheme() == "https" => Some(u),
        _ => {
            c.err(k("base_url"), format!("`{base}` is not an http(s) URL"));
            None
        }
    };
    let login = match (&a.login, &a.login_env) {
        (Some(l), _) => Some(l.0.clone()),
        (None, Some(var)) => match std::env::var(var.as_str()) {
            Ok(v) if !v.trim().is_empty() => Some(v.trim().to_owned()),
            _ => {
                c.err(
                    k("login_env"),
                    format!(
                        "environment variable `{}` is not set or empty",
                        var.as_str()
                    ),
                );
                None
            }
        },
        (None, None) => None,
    };
    let has_password = a.password_env.is_some() || a.password_file.is_some();
    let has_key = a.api_key_env.is_some() || a.api_key_file.is_some();
    let credentials = if has_key && (has_password || login.is_some()) {
        c.err(
            k("api_key_env"),
            "give either login + password or an API key, not both",
        );
        None
    } else if has_key {
        read_secret(
            c,
            &k("api_key_env"),
            &a.api_key_env,
            &k("api_key_file"),
            &a.api_key_file,
        )
        .map(Credentials::ApiKey)
    } else if has_password {
        let password = read_secret(
            c,
            &k("password_env"),
            &a.password_env,
            &k("password_file"),
            &a.password_file,
        );
        if login.is_none() && a.login_env.is_none() {
            c.err(k("login"), "a password needs a login (login or login_env)");
        }
        login
            .zip(password)
            .map(|(login, password)| Credentials::Login { login, password })
    } else {
        c.err(
            k("password_env"),
            "no credentials: set login + password_env/password_file, or api_key_env/api_key_file",
        );
        None
    };
    let connect_timeout = a
        .connect_timeout
        .as_ref()
        .map(|d| c.positive_duration(&k("connect_timeout"), d))
        .unwrap_or(Duration::from_secs(3));
    let request_timeout = a
        .request_timeout
        .as_ref()
        .map(|d| c.positive_duration(&k("request_timeout"), d))
        .unwrap_or(Duration::from_secs(10));
    Some(Account {
        name: name.to_owned(),
        base_url: base_url?,
        credentials: credentials?,
        connect_timeout,
        request_timeout,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn issues(toml: &str) -> Vec<ConfigIssue> {
        from_toml_str(toml)
            .err()
            .map(|e| e.issues)
            .unwrap_or_default()
    }

    #[test]
    fn every_problem_is_reported_at_once_with_its_key() {
        let got = issues(
            r#"
            server.listen = ["nope"]
            server.header_read_timeout = "soon"
            log.format = "xml"
            [[routes]]
            hosts = ["bad host!"]
            upstream = "ftp://x"
            "#,
        );
        let keys: Vec<&str> = got.iter().map(|i| i.key.as_str()).collect();
        assert!(keys.contains(&"server.listen"), "{keys:?}");
        assert!(keys.contains(&"server.header_read_timeout"), "{keys:?}");
        assert!(keys.contains(&"log.format"), "{keys:?}");
        assert!(keys.contains(&"routes[0].hosts"), "{keys:?}");
        assert!(keys.contains(&"routes[0].upstream"), "{keys:?}");
    }

    #[test]
    fn inline_secrets_are_refused() {
        let got = issues(
            r#"
            [accounts.main]
            login = "acme"
            password = "hunter2"
            "#,
        );
        assert!(
            got.iter()
                .any(|i| i.key == "accounts.main.password" && i.message.contains("never inline")),
            "{got:?}"
        );
        assert!(got.iter().all(|i| !i.to_string().contains("hunter2")));
    }

    #[test]
    fn host_patterns() {
        assert_eq!(
            routes::host_pattern("Example.COM").unwrap(),
            HostPattern {
                name: "example.com".into(),
                wildcard: false,
                port: None
            }
        );
        assert_eq!(
            routes::host_pattern("*.a.b:8080").unwrap(),
            HostPattern {
                name: "a.b".into(),
                wildcard: true,
                port: Some(8080)
            }
        );
        assert!(routes::host_pattern("a b").is_err());
        assert!(routes::host_pattern("a.b:x").is_err());
    }

    #[test]
    fn prefix_matches_on_segment_boundaries() {
        assert!(path_has_prefix("/app", "/app"));
        assert!(path_has_prefix("/app/x", "/app/"));
        assert!(!path_has_prefix("/app2", "/app"));
        assert!(path_has_prefix("/anything", ""));
    }

    #[test]
    fn a_minimal_route_validates() {
        let cfg = from_toml_str(
            r#"
            [[routes]]
            name = "site"
            hosts = "example.com, *.example.com"
            upstream = "http://127.0.0.1:8081"
            "#,
        )
        .unwrap();
        assert_eq!(cfg.routes.len(), 1);
        assert_eq!(cfg.routes[0].hosts.len(), 2);
        assert!(cfg.routes[0].chat.is_none());
    }
}
