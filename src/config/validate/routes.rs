//! Phase two for `[[routes]]`: host patterns, path prefixes, the upstream, the
//! chat target and operator rule of each route, and hosts claimed twice.

use super::*;

/// Parse one host pattern: `example.com`, `*.example.com`, `Example.com:8080`.
pub(super) fn host_pattern(s: &str) -> Result<HostPattern, String> {
    let s = s.trim().to_ascii_lowercase();
    let (wildcard, rest) = match s.strip_prefix("*.") {
        Some(r) => (true, r),
        None => (false, s.as_str()),
    };
    let (name, port) = match rest.rsplit_once(':') {
        Some((n, p)) if !n.contains(':') => (
            n,
            Some(
                p.parse::<u16>()
                    .map_err(|_| format!("`{s}` has a bad port"))?,
            ),
        ),
        _ => (rest, None),
    };
    let name = name.trim_end_matches('.');
    let valid = !name.is_empty()
        && name.split('.').all(|l| {
            !l.is_empty()
                && l.bytes()
                    .all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'_')
        });
    if !valid {
        return Err(format!(
            "`{s}` is not a host name (use `example.com` or `*.example.com`)"
        ));
    }
    Ok(HostPattern {
        name: name.to_owned(),
        wildcard,
        port,
    })
}

pub(super) fn route(
    c: &mut Checker,
    i: usize,
    r: &RawRoute,
    accounts: &[Arc<Account>],
    raw: &RawConfig,
) -> Option<Route> {
    let k = |f: &str| format!("routes[{i}].{f}");
    let name = r
        .name
        .as_ref()
        .map(|n| n.0.clone())
        .unwrap_or_else(|| format!("route{i}"));
    let mut hosts = Vec::new();
    match &r.hosts {
        None => c.err(k("hosts"), "a route needs at least one host"),
        Some(h) => {
            let list = h.to_vec();
            if list.is_empty() {
                c.err(k("hosts"), "a route needs at least one host");
            }
            for h in list {
                match host_pattern(&h) {
                    Ok(p) => hosts.push(p),
                    Err(e) => c.err(k("hosts"), e),
                }
            }
        }
    }
    let path_prefix = match &r.path_prefix {
        None => String::new(),
        Some(p) if !p.as_str().starts_with('/') => {
            c.err(
                k("path_prefix"),
                format!("`{}` must start with '/'", p.as_str()),
            );
            String::new()
        }
        Some(p) => p.as_str().trim_end_matches('/').to_owned(),
    };
    let upstream = match &r.upstream {
        None => {
            c.err(
                k("upstream"),
                "a route needs an upstream URL such as http://127.0.0.1:8081",
            );
            None
        }
        Some(u) => match u.as_str().parse::<http::Uri>() {
            Ok(uri)
                if matches!(uri.scheme_str(), Some("http") | Some("https"))
                    && uri.authority().is_some() =>
            {
                if uri.path() != "/" && !uri.path().is_empty() {
                    c.err(
                        k("upstream"),
                        format!(
                            "`{}` must not have a path; the client's path is forwarded as is",
                            u.as_str()
                        ),
                    );
                }
                Some(uri)
            }
            _ => {
                c.err(
                    k("upstream"),
                    format!("`{}` is not an http:// or https:// URL", u.as_str()),
                );
                None
            }
        },
    };
    let mut exclude_paths = Vec::new();
    for p in &r.exclude_paths {
        if !p.as_str().starts_with('/') {
            c.err(
                k("exclude_paths"),
                format!("`{}` must start with '/'", p.as_str()),
            );
        }
        exclude_paths.push(p.0.clone());
    }
    let csp = match r.csp.as_ref().map(|s| s.as_str().to_ascii_lowercase()) {
        None => CspMode::Auto,
        Some(s) => match s.as_str() {
            "auto" => CspMode::Auto,
            "nonce" => CspMode::Nonce,
            "amend" => CspMode::Amend,
            "off" => CspMode::Off,
            other => {
                c.err(
                    k("csp"),
                    format!("`{other}` is not one of \"auto\", \"nonce\", \"amend\", \"off\""),
                );
                CspMode::Auto
            }
        },
    };
    let chat = chat_target(c, i, r, accounts, raw);
    Some(Route {
        name,
        hosts,
        path_prefix,
        upstream: upstream?,
        preserve_host: r.preserve_host.unwrap_or(true),
        inject: r.inject.unwrap_or(true),
        exclude_paths,
        chat,
        csp,
    })
}

fn chat_target(
    c: &mut Checker,
    i: usize,
    r: &RawRoute,
    accounts: &[Arc<Account>],
    raw: &RawConfig,
) -> Option<ChatTarget> {
    let k = |f: &str| format!("routes[{i}].{f}");
    let account_name = match &r.account {
        Some(a) => a.0.clone(),
        None => {
            if r.organization.is_some() || r.operator.is_some() {
                // One account is the common case; let routes leave it out then.
                if raw.accounts.len() == 1 {
                    raw.accounts.keys().next().cloned().unwrap_or_default()
                } else {
                    c.err(
                        k("account"),
                        "name the ChatHub account (there is more than one, or none)",
                    );
                    return None;
                }
            } else {
                return None;
            }
        }
    };
    let account = match accounts.iter().find(|a| a.name == account_name) {
        Some(a) => a.clone(),
        None => {
            if !raw.accounts.contains_key(&account_name) {
                c.err(
                    k("account"),
                    format!("no account is named `{account_name}` under [accounts]"),
                );
            }
            return None;
        }
    };
    let organization = match &r.organization {
        Some(IdOrName::Id(id)) => OrgRef::Id(*id),
        Some(IdOrName::Name(n)) if !n.trim().is_empty() => match n.trim().parse::<i64>() {
            Ok(id) => OrgRef::Id(id),
            Err(_) => OrgRef::Name(n.trim().to_owned()),
        },
        _ => {
            c.err(
                k("organization"),
                "a route with an account needs an organization (id or name)",
            );
            return None;
        }
    };
    let operator = operator_rule(c, i, r.operator.as_ref()?)?;
    Some(ChatTarget {
        account,
        organization,
        operator,
    })
}

fn operator_rule(c: &mut Checker, i: usize, o: &RawOperatorRule) -> Option<OperatorRule> {
    let k = |f: &str| format!("routes[{i}].operator.{f}");
    let rule = o
        .rule
        .as_ref()
        .map(|r| r.as_str().to_ascii_lowercase())
        .unwrap_or_else(|| "first-active".into());
    match rule.as_str() {
        "fixed" => match o.id {
            Some(id) => Some(OperatorRule::Fixed(id)),
            None => {
                c.err(k("id"), "rule \"fixed\" needs an operator id");
                None
            }
        },
        "first-active" => Some(OperatorRule::FirstActive),
        "spread" => Some(OperatorRule::Spread),
        "identity" => {
            let header = match &o.header {
                Some(h) => match http::HeaderName::from_bytes(h.as_str().as_bytes()) {
                    Ok(h) => Some(h),
                    Err(_) => {
                        c.err(
                            k("header"),
                            format!("`{}` is not a header name", h.as_str()),
                        );
                        None
                    }
                },
                None => None,
            };
            let source = IdentitySource {
                header,
                basic_auth: o.basic_auth.unwrap_or(false),
                cookie: o.cookie.as_ref().map(|s| s.0.clone()),
            };
            if source.header.is_none()
                && !source.basic_auth
                && source.cookie.is_none()
                && o.header.is_none()
            {
                c.err(k("header"), "rule \"identity\" needs a header, basic_auth = true or a cookie to read the user from");
            }
            Some(OperatorRule::Identity {
                source,
                map: o.map.iter().map(|(k, v)| (k.clone(), *v)).collect(),
                by_name: o.by_name.unwrap_or(o.map.is_empty()),
                provision: o.provision.unwrap_or(false),
            })
        }
        other => {
            c.err(
                k("rule"),
                format!(
                    "`{other}` is not one of \"fixed\", \"first-active\", \"identity\", \"spread\""
                ),
            );
            None
        }
    }
}

/// Two routes claiming the same host and path prefix would make routing depend
/// on file order; refuse that.
pub(super) fn check_host_clashes(c: &mut Checker, routes: &[Arc<Route>]) {
    let mut seen: std::collections::HashMap<(String, bool, Option<u16>, String), &str> =
        Default::default();
    for (i, r) in routes.iter().enumerate() {
        for h in &r.hosts {
            let key = (h.name.clone(), h.wildcard, h.port, r.path_prefix.clone());
            if let Some(other) = seen.insert(key, &r.name) {
                c.err(
                    format!("routes[{i}].hosts"),
                    format!(
                        "`{h}` with path_prefix `{}` is already claimed by route `{other}`",
                        r.path_prefix
                    ),
                );
            }
        }
    }
}
