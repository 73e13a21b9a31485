//! Which operator a session's token is for: the per-route rules `fixed`,
//! `first-active`, `identity` and `spread`, decided over an organization's
//! operator list, plus reading the signed-in user's identity from a request.
//!
//! Everything here is pure; the cached operator lists and provisioning that feed
//! it live in `token::directory`. A rule that needs an identity and finds none
//! is a skip: a page never carries someone else's operator token.

use crate::chathub::{Operator, OperatorStatus};
use crate::config::{IdentitySource, OperatorRule, Route};
use crate::session::SessionId;
use base64::Engine;
use base64::engine::general_purpose::{STANDARD, STANDARD_NO_PAD};
use http::header::{AUTHORIZATION, HeaderMap};

/// Longest identity read from a request, in bytes; longer values are ignored
/// rather than carried around.
const MAX_IDENTITY_BYTES: usize = 512;

/// Longest identity used as an operator name (the API docs' sample validation
/// uses 100 characters; nothing longer is matched or provisioned).
pub const MAX_OPERATOR_NAME_CHARS: usize = 100;

/// The outcome of applying a rule.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Decision {
    /// Mint for this operator id.
    Operator(i64),
    /// The rule needs the organization's operator list; call again with it.
    NeedList,
    /// No operator has this name yet and the rule may create one.
    Provision(String),
    /// No token for this page.
    Skip(NoOperator),
}

/// Why a rule chose no operator.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum NoOperator {
    /// The rule reads an identity and the request carries none.
    NoIdentity,
    /// The identity cannot be an operator name (too long, control characters).
    BadIdentity,
    /// No operator matches the identity and provisioning is off.
    UnknownOperator,
    /// The matching operator is inactive or deleted.
    InactiveOperator,
    /// The organization has no active operator.
    NoActiveOperator,
}

impl NoOperator {
    /// A short stable name for metrics and logs.
    pub fn reason(self) -> &'static str {
        match self {
            NoOperator::NoIdentity => "no_identity",
            NoOperator::BadIdentity => "bad_identity",
            NoOperator::UnknownOperator => "unknown_operator",
            NoOperator::InactiveOperator => "inactive_operator",
            NoOperator::NoActiveOperator => "no_active_operator",
        }
    }
}

/// Apply `rule`. Call with `operators: None` first: `fixed` and mapped
/// identities decide without a list; otherwise the answer is
/// [`Decision::NeedList`] and the caller repeats with the organization's list.
pub fn decide(
    rule: &OperatorRule,
    identity: Option<&str>,
    session: &SessionId,
    operators: Option<&[Operator]>,
) -> Decision {
    match rule {
        OperatorRule::Fixed(id) => Decision::Operator(*id),
        OperatorRule::FirstActive => match operators {
            None => Decision::NeedList,
            Some(list) => match active(list).map(|o| o.id).min() {
                Some(id) => Decision::Operator(id),
                None => Decision::Skip(NoOperator::NoActiveOperator),
            },
        },
        OperatorRule::Spread => match operators {
            None => Decision::NeedList,
            Some(list) => {
                let mut ids: Vec<i64> = active(list).map(|o| o.id).collect();
                ids.sort_unstable();
                ids.dedup();
                match spread(session, &ids) {
                    Some(id) => Decision::Operator(id),
                    None => Decision::Skip(NoOperator::NoActiveOperator),
                }
            }
        },
        OperatorRule::Identity {
            map,
            by_name,
            provision,
            ..
        } => {
            let Some(identity) = identity else {
                return Decision::Skip(NoOperator::NoIdentity);
            };
            if let Some((_, id)) = map.iter().find(|(k, _)| k == identity) {
                return Decision::Operator(*id);
            }
            if !by_name && !provision {
                return Decision::Skip(NoOperator::UnknownOperator);
            }
            if !usable_name(identity) {
                return Decision::Skip(NoOperator::BadIdentity);
            }
            let Some(list) = operators else {
                return Decision::NeedList;
            };
            match by_name_in(list, identity) {
                Some(op) if op.status == OperatorStatus::Active => Decision::Operator(op.id),
                // Never provision a second operator of the same name: the
                // existing one was switched off on purpose.
                Some(_) => Decision::Skip(NoOperator::InactiveOperator),
                None if *provision => Decision::Provision(identity.to_owned()),
                None => Decision::Skip(NoOperator::UnknownOperator),
            }
        }
    }
}

/// The operator called exactly `name`, preferring an active one, then the
/// lowest id (synchronize is not idempotent, so duplicates can exist).
pub fn by_name_in<'a>(list: &'a [Operator], name: &str) -> Option<&'a Operator> {
    list.iter()
        .filter(|o| o.name == name)
        .min_by_key(|o| (o.status != OperatorStatus::Active, o.id))
}

fn active(list: &[Operator]) -> impl Iterator<Item = &Operator> {
    list.iter().filter(|o| o.status == OperatorStatus::Active)
}

/// Whether an identity may be used as an operator name.
pub fn usable_name(name: &str) -> bool {
    !name.is_empty()
        && name.chars().count() <= MAX_OPERATOR_NAME_CHARS
        && !name.chars().any(char::is_control)
}

/// Rendezvous (highest-random-weight) hashing of the session over operator
/// ids: the same session always lands on the same operator on every replica,
/// and when an operator joins or leaves only the sessions that must move do.
pub fn spread(session: &SessionId, ids: &[i64]) -> Option<i64> {
    let s = session.as_bytes();
    let lo = u64::from_le_bytes([s[0], s[1], s[2], s[3], s[4], s[5], s[6], s[7]]);
    let hi = u64::from_le_bytes([s[8], s[9], s[10], s[11], s[12], s[13], s[14], s[15]]);
    // Mixed, not XORed, so that equal halves do not cancel out.
    let seed = mix(lo ^ mix(hi));
    // Ties (astronomically unlikely) go to the lower id, so the result does
    // not depend on list order.
    ids.iter()
        .copied()
        .max_by_key(|&id| (mix(seed ^ mix(id as u64)), std::cmp::Reverse(id)))
}

/// splitmix64's finaliser: a fixed, well-mixing function, identical on every
/// replica (unlike `std`'s randomly keyed hasher).
fn mix(mut z: u64) -> u64 {
    z = z.wrapping_add(0x9e37_79b9_7f4a_7c15);
    z = (z ^ (z >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
    z = (z ^ (z >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
    z ^ (z >> 31)
}

/// The identity a route's rule reads from this request, if the rule reads one.
pub fn identity_for(route: &Route, headers: &HeaderMap, peer_trusted: bool) -> Option<String> {
    match &route.chat.as_ref()?.operator {
        OperatorRule::Identity { source, .. } => identity(headers, source, peer_trusted),
        _ => None,
    }
}

/// The signed-in user, from the first configured source that has one: a header
/// set by an auth layer in front (believed only when the peer is a trusted
/// proxy), the user of HTTP basic auth, or a named cookie.
///
/// Basic auth and cookies are claims the proxy cannot check; they are only as
/// good as the upstream's refusal to serve a page to the wrong credentials.
pub fn identity(
    headers: &HeaderMap,
    source: &IdentitySource,
    peer_trusted: bool,
) -> Option<String> {
    let from_header = || {
        let name = source.header.as_ref()?;
        if !peer_trusted {
            return None;
        }
        let mut values = headers.get_all(name).iter();
        let value = values.next()?;
        if values.next().is_some() {
            // Two values: someone appended to the auth layer's header. Trust neither.
            return None;
        }
        clean(std::str::from_utf8(value.as_bytes()).ok()?)
    };
    let from_basic = || {
        if !source.basic_auth {
            return None;
        }
        basic_auth_user(headers)
    };
    let from_cookie = || {
        let name = source.cookie.as_deref()?;
        crate::session::cookie_values(headers, name).find_map(|raw| {
            let raw = raw
                .strip_prefix(b"\"")
                .and_then(|r| r.strip_suffix(b"\""))
                .unwrap_or(raw);
            clean(&percent_decode(raw)?)
        })
    };
    from_header().or_else(from_basic).or_else(from_cookie)
}

/// The user name of `Authorization: Basic ...`, if well-formed.
fn basic_auth_user(headers: &HeaderMap) -> Option<String> {
    let value = headers.get(AUTHORIZATION)?.to_str().ok()?.trim();
    let (scheme, creds) = value.split_once(' ')?;
    if !scheme.eq_ignore_ascii_case("basic") || creds.len() > MAX_IDENTITY_BYTES * 2 {
        return None;
    }
    let creds = creds.trim();
    let decoded = STANDARD
        .decode(creds)
        .or_else(|_| STANDARD_NO_PAD.decode(creds))
        .ok()?;
    let decoded = String::from_utf8(decoded).ok()?;
    let (user, _password) = decoded.split_once(':')?;
    clean(user)
}

fn clean(value: &str) -> Option<String> {
    let v = value.trim();
    (!v.is_empty() && v.len() <= MAX_IDENTITY_BYTES).then(|| v.to_owned())
}

/// `%XX` decoding for cookie values (frameworks URL-encode them); `None` when
/// the result is not UTF-8 or an escape is broken.
fn percent_decode(raw: &[u8]) -> Option<String> {
    if raw.len() > MAX_IDENTITY_BYTES * 3 {
        return None;
    }
    let mut out = Vec::with_capacity(raw.len());
    let mut i = 0;
    while i < raw.len() {
        if raw[i] == b'%' {
            let hi = (*raw.get(i + 1)? as char).to_digit(16)?;
            let lo = (*raw.get(i + 2)? as char).to_digit(16)?;
            out.push((hi * 16 + lo) as u8);
            i += 3;
        } else {
            out.push(raw[i]);
            i += 1;
        }
    }
    String::from_utf8(out).ok()
}

#[cfg(test)]
mod tests {
    use super::*;
    use http::HeaderValue;
    use http::header::{COOKIE, HeaderName};

    fn op(id: i64, name: &str, status: OperatorStatus) -> Operator {
        Operator {
            id,
            name: name.into(),
            status,
            organization_id: Some(1),
        }
    }

    fn list() -> Vec<Operator> {
        vec![
            op(30, "Carol", OperatorStatus::Active),
            op(10, "Alice", OperatorStatus::Inactive),
            op(20, "Bob", OperatorStatus::Active),
            op(40, "Dave", OperatorStatus::Deleted),
            op(50, "Bob", OperatorStatus::Active),
        ]
    }

    fn identity_rule(map: &[(&str, i64)], by_name: bool, provision: bool) -> OperatorRule {
        OperatorRule::Identity {
            source: IdentitySource {
                header: None,
                basic_auth: true,
                cookie: None,
            },
            map: map.iter().map(|(k, v)| (k.to_string(), *v)).collect(),
            by_name,
            provision,
        }
    }

    fn sid(n: u8) -> SessionId {
        let raw = [n; 16];
        SessionId::parse(
            base64::engine::general_purpose::URL_SAFE_NO_PAD
                .encode(raw)
                .as_bytes(),
        )
        .unwrap()
    }

    #[test]
    fn fixed_needs_no_list() {
        assert_eq!(
            decide(&OperatorRule::Fixed(7), None, &sid(1), None),
            Decision::Operator(7)
        );
    }

    #[test]
    fn first_active_is_the_lowest_active_id() {
        let r = OperatorRule::FirstActive;
        assert_eq!(decide(&r, None, &sid(1), None), Decision::NeedList);
        assert_eq!(
            decide(&r, None, &sid(1), Some(&list())),
            Decision::Operator(20)
        );
        let none = [
            op(1, "x", OperatorStatus::Inactive),
            op(2, "y", OperatorStatus::Other(9)),
        ];
        assert_eq!(
            decide(&r, None, &sid(1), Some(&none)),
            Decision::Skip(NoOperator::NoActiveOperator)
        );
    }

    #[test]
    fn spread_is_stable_and_only_over_active_operators() {
        let l = list();
        let mut seen = std::collections::HashSet::new();
        for n in 0..=255u8 {
            let d = decide(&OperatorRule::Spread, None, &sid(n), Some(&l));
            // Same answer again, and whatever the list order.
            let mut rev = l.clone();
            rev.reverse();
            assert_eq!(d, decide(&OperatorRule::Spread, None, &sid(n), Some(&rev)));
            match d {
                Decision::Operator(id) => {
                    assert!([20, 30, 50].contains(&id), "{id} is not active");
                    seen.insert(id);
                }
                other => panic!("{other:?}"),
            }
        }
        assert_eq!(seen.len(), 3, "256 sessions use every active operator");
        assert_eq!(
            decide(&OperatorRule::Spread, None, &sid(1), Some(&[])),
            Decision::Skip(NoOperator::NoActiveOperator)
        );
    }

    #[test]
    fn spread_moves_only_the_sessions_of_a_removed_operator() {
        let ids = [1, 2, 3, 4, 5];
        let fewer = [1, 2, 4, 5];
        for n in 0..=255u8 {
            let before = spread(&sid(n), &ids).unwrap();
            let after = spread(&sid(n), &fewer).unwrap();
            if before != 3 {
                assert_eq!(before, after);
            }
        }
    }

    #[test]
    fn identity_rule_without_identity_is_a_skip() {
        let r = identity_rule(&[("alice", 1)], true, true);
        assert_eq!(
            decide(&r, None, &sid(1), Some(&list())),
            Decision::Skip(NoOperator::NoIdentity)
        );
    }

    #[test]
    fn identity_rule_map_then_name_then_provision() {
        let l = list();
        let r = identity_rule(&[("boss", 99)], true, false);
        assert_eq!(
            decide(&r, Some("boss"), &sid(1), None),
            Decision::Operator(99)
        );
        assert_eq!(decide(&r, Some("Carol"), &sid(1), None), Decision::NeedList);
        assert_eq!(
            decide(&r, Some("Carol"), &sid(1), Some(&l)),
            Decision::Operator(30)
        );
        // Duplicated name: the lowest active id.
        assert_eq!(
            decide(&r, Some("Bob"), &sid(1), Some(&l)),
            Decision::Operator(20)
        );
        // Names match exactly: `carol` is someone else.
        assert_eq!(
            decide(&r, Some("carol"), &sid(1), Some(&l)),
            Decision::Skip(NoOperator::UnknownOperator)
        );
        assert_eq!(
            decide(&r, Some("Alice"), &sid(1), Some(&l)),
            Decision::Skip(NoOperator::InactiveOperator)
        );
        let p = identity_rule(&[], true, true);
        assert_eq!(
            decide(&p, Some("Erin"), &sid(1), Some(&l)),
            Decision::Provision("Erin".into())
        );
        assert_eq!(
            decide(&p, Some("Alice"), &sid(1), Some(&l)),
            Decision::Skip(NoOperator::InactiveOperator)
        );
        let long = "x".repeat(101);
        assert_eq!(
            decide(&p, Some(&long), &sid(1), Some(&l)),
            Decision::Skip(NoOperator::BadIdentity)
        );
        assert_eq!(
            decide(&p, Some("a\u{7}b"), &sid(1), Some(&l)),
            Decision::Skip(NoOperator::BadIdentity)
        );
        let map_only = identity_rule(&[("boss", 99)], false, false);
        assert_eq!(
            decide(&map_only, Some("Carol"), &sid(1), None),
            Decision::Skip(NoOperator::UnknownOperator)
        );
    }

    fn src(header: Option<&str>, basic: bool, cookie: Option<&str>) -> IdentitySource {
        IdentitySource {
            header: header.map(|h| HeaderName::from_bytes(h.as_bytes()).unwrap()),
            basic_auth: basic,
            cookie: cookie.map(str::to_owned),
        }
    }

    fn hm(pairs: &[(&str, &str)]) -> HeaderMap {
        let mut h = HeaderMap::new();
        for (k, v) in pairs {
            h.append(
                HeaderName::from_bytes(k.as_bytes()).unwrap(),
                HeaderValue::from_str(v).unwrap(),
            );
        }
        h
    }

    #[test]
    fn header_identity_only_from_trusted_peers() {
        let s = src(Some("x-user"), false, None);
        let h = hm(&[("x-user", " alice ")]);
        assert_eq!(identity(&h, &s, true).as_deref(), Some("alice"));
        assert_eq!(identity(&h, &s, false), None);
        let twice = hm(&[("x-user", "alice"), ("x-user", "mallory")]);
        assert_eq!(identity(&twice, &s, true), None);
        assert_eq!(identity(&hm(&[("x-user", "  ")]), &s, true), None);
    }

    #[test]
    fn basic_auth_user() {
        let s = src(None, true, None);
        // alice:secret:with:colons
        let h = hm(&[("authorization", "Basic YWxpY2U6c2VjcmV0OndpdGg6Y29sb25z")]);
        assert_eq!(identity(&h, &s, false).as_deref(), Some("alice"));
        let h = hm(&[("authorization", "basic YWxpY2U6eA")]); // no padding
        assert_eq!(identity(&h, &s, false).as_deref(), Some("alice"));
        for bad in ["Bearer abc", "Basic !!!", "Basic Ym9i", "Basic OnB3"] {
            assert_eq!(
                identity(&hm(&[("authorization", bad)]), &s, false),
                None,
                "{bad}"
            );
        }
        assert_eq!(identity(&HeaderMap::new(), &s, false), None);
    }

    #[test]
    fn cookie_identity_is_unquoted_and_percent_decoded() {
        let s = src(None, false, Some("user"));
        let h = hm(&[(COOKIE.as_str(), "a=1; user=jane%40example.com")]);
        assert_eq!(identity(&h, &s, false).as_deref(), Some("jane@example.com"));
        let h = hm(&[(COOKIE.as_str(), "user=\"Bob\"")]);
        assert_eq!(identity(&h, &s, false).as_deref(), Some("Bob"));
        let h = hm(&[(COOKIE.as_str(), "user=%ZZ")]);
        assert_eq!(identity(&h, &s, false), None);
    }

    #[test]
    fn sources_are_tried_in_order() {
        let s = src(Some("x-user"), true, Some("user"));
        let h = hm(&[
            ("x-user", "hdr"),
            ("authorization", "Basic YWxpY2U6eA=="),
            (COOKIE.as_str(), "user=ck"),
        ]);
        assert_eq!(identity(&h, &s, true).as_deref(), Some("hdr"));
        assert_eq!(identity(&h, &s, false).as_deref(), Some("alice"));
        let h = hm(&[(COOKIE.as_str(), "user=ck")]);
        assert_eq!(identity(&h, &s, true).as_deref(), Some("ck"));
    }
}
