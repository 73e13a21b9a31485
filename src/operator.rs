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
        OperatorRule::Identity { map, by_name, provision, .. } => {
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
    let seed = u64::from_le_bytes([s[0], s[1], s[2], s[3], s[4], s[5], s[6], s[7]])
        ^ u64::from_le_bytes([s[8], s[9], s[10], s[11], s[12], s[13], s[14], s[15]]);
    // Ties (astronomically unlikely) go to the lower id, so the result does
    // not depend on list order.
    ids.iter().copied().max_by_key(|&id| (mix(seed ^ mix(id as u64)), std::cmp::Reverse(id)))
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
pub fn identity(headers: &HeaderMap, source: &IdentitySource, peer_trusted: bool) -> Option<String> {
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
            let raw = raw.strip_prefix(b"\"").and_then(|r| r.strip_suffix(b"\"")).unwrap_or(raw);
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
    let decoded = STANDARD.decode(creds).or_else(|_| STANDARD_NO_PAD.decode(creds)).ok()?;
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
