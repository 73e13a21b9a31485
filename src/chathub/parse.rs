//! Reading ChatHub's bodies by their content, never by `Content-Type`: token
//! bodies in every shape of §8.1, lenient JSON for lists and validation, dates
//! with or without offsets, and short, secret-free summaries of error bodies.
//! Pure functions; no I/O.

use super::{Operator, OperatorStatus, Organization, Validation};
use base64::Engine;
use serde_json::Value;
use std::time::{Duration, SystemTime};
use time::format_description::well_known::Rfc3339;
use time::macros::format_description;
use time::{OffsetDateTime, PrimitiveDateTime, UtcOffset};

/// The most an error summary keeps, in bytes.
pub(crate) const MAX_SUMMARY: usize = 256;

/// A token read from an E1/E6 body.
#[derive(Debug)]
pub(crate) struct ParsedToken {
    pub token: String,
    /// The `expiration` of the object shape, when present and readable.
    pub expiration: Option<OffsetDateTime>,
}

/// Why a token body was refused. The messages never quote the body: it may be
/// a token.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum TokenError {
    Empty,
    BadJsonString,
    BadJsonObject,
    NoTokenField,
    Forbidden,
}

impl TokenError {
    pub(crate) fn message(self) -> &'static str {
        match self {
            TokenError::Empty => "empty token",
            TokenError::BadJsonString => "token body starts with a quote but is not a JSON string",
            TokenError::BadJsonObject => "token body starts with `{` but is not a JSON object",
            TokenError::NoTokenField => "token object has no string `token` field",
            TokenError::Forbidden => "token contains whitespace, quotes or control characters",
        }
    }
}

/// The body as text: lossy UTF-8, without a BOM and surrounding whitespace.
pub(crate) fn text(body: &[u8]) -> String {
    let body = body.strip_prefix(b"\xEF\xBB\xBF").unwrap_or(body);
    String::from_utf8_lossy(body)
        .trim_matches(|c: char| c.is_ascii_whitespace())
        .to_string()
}

/// The body as JSON, whatever `Content-Type` claimed.
pub(crate) fn json(body: &[u8]) -> Option<Value> {
    let t = text(body);
    if t.is_empty() {
        return None;
    }
    serde_json::from_str(&t).ok()
}

/// Strip surrounding whitespace and a leading `Bearer ` (any case) from a key
/// or token someone pasted with its scheme.
pub(crate) fn strip_bearer(s: &str) -> &str {
    let s = s.trim();
    match s.get(..7) {
        Some(p) if p.eq_ignore_ascii_case("bearer ") => s[7..].trim_start(),
        _ => s,
    }
}

/// Whether a value can travel as a token: non-empty, no whitespace, quotes or
/// control characters (it ends up in a header and an HTML attribute).
pub(crate) fn check_token(s: &str) -> Result<(), TokenError> {
    if s.is_empty() {
        return Err(TokenError::Empty);
    }
    if s.chars()
        .any(|c| c.is_whitespace() || c.is_control() || c == '"' || c == '\'')
    {
        return Err(TokenError::Forbidden);
    }
    Ok(())
}

/// §8.1: a JSON string literal, raw text, or an object with `token` (and an
/// optional `expiration`).
pub(crate) fn token(body: &[u8]) -> Result<ParsedToken, TokenError> {
    let t = text(body);
    let (raw, expiration) = if t.starts_with('"') {
        let s: String = serde_json::from_str(&t).map_err(|_| TokenError::BadJsonString)?;
        (s, None)
    } else if t.starts_with('{') {
        let v: Value = serde_json::from_str(&t).map_err(|_| TokenError::BadJsonObject)?;
        let field = ["token", "accessToken", "access_token"]
            .iter()
            .find_map(|k| v.get(k).and_then(Value::as_str))
            .ok_or(TokenError::NoTokenField)?;
        let exp = ["expiration", "expiresAt"]
            .iter()
            .find_map(|k| v.get(k).and_then(Value::as_str))
            .and_then(datetime);
        (field.to_string(), exp)
    } else if t == "null" {
        // A JSON null (a missing token), not a token spelled `null`.
        return Err(TokenError::Empty);
    } else {
        (t, None)
    };
    let token = strip_bearer(&raw).to_string();
    check_token(&token)?;
    Ok(ParsedToken { token, expiration })
}

/// Whether the token looks like a JWT (three base64url parts). Only for a
/// warning: dashboard keys and future tokens need not be JWTs.
pub(crate) fn looks_like_jwt(token: &str) -> bool {
    let parts: Vec<&str> = token.split('.').collect();
    parts.len() == 3
        && parts[..2].iter().all(|p| {
            !p.is_empty()
                && p.bytes()
                    .all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'_')
        })
}

/// The `exp` claim of a JWT, read without verifying anything (no key is
/// published). `None` for anything that is not a decodable JWT with `exp`.
pub(crate) fn jwt_exp(token: &str) -> Option<OffsetDateTime> {
    let mut parts = token.split('.');
    let (_, payload, _) = (parts.next()?, parts.next()?, parts.next()?);
    if parts.next().is_some() || payload.len() > 16 * 1024 {
        return None;
    }
    let bytes = base64::engine::general_purpose::URL_SAFE_NO_PAD
        .decode(payload.trim_end_matches('='))
        .ok()?;
    let claims: Value = serde_json::from_slice(&bytes).ok()?;
    let exp = claims.get("exp")?;
    let secs = exp
        .as_i64()
        .or_else(|| exp.as_f64().filter(|f| f.is_finite()).map(|f| f as i64))?;
    OffsetDateTime::from_unix_timestamp(secs).ok()
}

/// A date-time as ChatHub may write it: RFC 3339 with `Z` or an offset, with or
/// without fractions, or a .NET `DateTime` without an offset (taken as UTC).
pub(crate) fn datetime(s: &str) -> Option<OffsetDateTime> {
    let s = s.trim();
    if let Ok(t) = OffsetDateTime::parse(s, &Rfc3339) {
        return Some(t);
    }
    let with_t = format_description!(
        "[year]-[month]-[day]T[hour]:[minute]:[second][optional [.[subsecond]]]"
    );
    let with_space = format_description!(
        "[year]-[month]-[day] [hour]:[minute]:[second][optional [.[subsecond]]]"
    );
    PrimitiveDateTime::parse(s, with_t)
        .or_else(|_| PrimitiveDateTime::parse(s, with_space))
        .ok()
        .map(|t| t.assume_offset(UtcOffset::UTC))
}

/// `expiresAt` as E6 wants it: UTC, whole seconds, `Z`.
pub(crate) fn format_utc(t: OffsetDateTime) -> String {
    let t = t.to_offset(UtcOffset::UTC);
    let fmt = format_description!("[year]-[month]-[day]T[hour]:[minute]:[second]Z");
    // Formatting a valid date with a fixed numeric description cannot fail;
    // the fallback keeps this total anyway.
    t.format(fmt)
        .unwrap_or_else(|_| t.unix_timestamp().to_string())
}

/// An id: a JSON integer, or an integer in a string.
fn id(v: &Value) -> Option<i64> {
    match v {
        Value::Number(n) => n.as_i64(),
        Value::String(s) => s.trim().parse().ok(),
        _ => None,
    }
}

fn string(v: Option<&Value>) -> Option<String> {
    v.and_then(Value::as_str).map(str::to_string)
}

/// The array of a list response; tolerates a `{"items": [...]}` or
/// `{"data": [...]}` envelope in case the API grows one.
fn list(body: &[u8]) -> Result<Vec<Value>, String> {
    match json(body) {
        Some(Value::Array(a)) => Ok(a),
        Some(Value::Object(mut o)) => match o.remove("items").or_else(|| o.remove("data")) {
            Some(Value::Array(a)) => Ok(a),
            _ => Err("expected a JSON array, got an object".into()),
        },
        Some(_) => Err("expected a JSON array".into()),
        None => Err("body is not JSON".into()),
    }
}

/// E2. Entries without an id are skipped (and counted in the second value).
pub(crate) fn organizations(body: &[u8]) -> Result<(Vec<Organization>, usize), String> {
    let items = list(body)?;
    let total = items.len();
    let orgs: Vec<Organization> = items
        .iter()
        .filter_map(|v| {
            Some(Organization {
                id: id(v.get("id")?)?,
                name: string(v.get("name")).unwrap_or_default(),
            })
        })
        .collect();
    let skipped = total - orgs.len();
    Ok((orgs, skipped))
}

/// An operator status: an integer, an integer in a string, or a name.
fn status(v: Option<&Value>) -> OperatorStatus {
    match v {
        // E4's documented body and every E3 example carry a status; an entry
        // without one is taken as usable rather than dropped.
        None | Some(Value::Null) => OperatorStatus::Active,
        Some(Value::Number(n)) => n
            .as_i64()
            .map_or(OperatorStatus::Other(-1), OperatorStatus::from_code),
        Some(Value::String(s)) => {
            let s = s.trim();
            if let Ok(n) = s.parse() {
                return OperatorStatus::from_code(n);
            }
            match s.to_ascii_lowercase().as_str() {
                "active" => OperatorStatus::Active,
                "inactive" => OperatorStatus::Inactive,
                "deleted" => OperatorStatus::Deleted,
                _ => OperatorStatus::Other(-1),
            }
        }
        Some(_) => OperatorStatus::Other(-1),
    }
}

/// E3/E4. `organization_id` fills in entries that do not name their
/// organization (E4's body has none). Entries without an id are skipped.
pub(crate) fn operators(
    body: &[u8],
    organization_id: Option<i64>,
) -> Result<(Vec<Operator>, usize), String> {
    let items = list(body)?;
    let total = items.len();
    let ops: Vec<Operator> = items
        .iter()
        .filter_map(|v| {
            let org = v
                .get("organization")
                .and_then(|o| o.get("id"))
                .and_then(id)
                .or_else(|| v.get("organizationId").and_then(id))
                .or(organization_id);
            Some(Operator {
                id: id(v.get("id")?)?,
                name: string(v.get("name")).unwrap_or_default(),
                status: status(v.get("status")),
                organization_id: org,
            })
        })
        .collect();
    let skipped = total - ops.len();
    Ok((ops, skipped))
}

fn flag(v: &Value) -> Option<bool> {
    match v {
        Value::Bool(b) => Some(*b),
        Value::String(s) => match s.trim().to_ascii_lowercase().as_str() {
            "true" => Some(true),
            "false" => Some(false),
            _ => None,
        },
        Value::Number(n) => n.as_i64().map(|n| n != 0),
        _ => None,
    }
}

/// E7: `isValid`, falling back to `valid`; a missing flag means invalid.
/// `None` when the body is not a JSON object.
pub(crate) fn validation(body: &[u8]) -> Option<Validation> {
    let v = json(body)?;
    let o = v.as_object()?;
    let valid = o
        .get("isValid")
        .and_then(flag)
        .or_else(|| o.get("valid").and_then(flag))
        .unwrap_or(false);
    Some(Validation {
        valid,
        // Invalid answers may carry `operatorId: 0`; no operator has id 0.
        operator_id: o.get("operatorId").and_then(id).filter(|&i| i != 0),
        expires_at: o
            .get("expiresAt")
            .and_then(Value::as_str)
            .and_then(datetime),
        error: ["error", "message", "title"]
            .iter()
            .find_map(|k| string(o.get(*k))),
    })
}

/// Replace every occurrence of each secret with `<redacted>`.
pub(crate) fn redact(text: &str, secrets: &[&str]) -> String {
    let mut out = text.to_string();
    // Very short values would redact ordinary words and protect nothing.
    for s in secrets.iter().filter(|s| s.len() >= 4) {
        if out.contains(*s) {
            out = out.replace(*s, "<redacted>");
        }
    }
    out
}

/// Cut to at most `max` bytes on a character boundary, marking the cut.
pub(crate) fn truncate(mut s: String, max: usize) -> String {
    if s.len() <= max {
        return s;
    }
    let mut end = max.saturating_sub('…'.len_utf8());
    while !s.is_char_boundary(end) {
        end -= 1;
    }
    s.truncate(end);
    s.push('…');
    s
}

/// A short, printable, secret-free summary of an error body: a problem+json
/// `title` and `errors` when parsable, else the text itself.
pub(crate) fn summary(body: &[u8], secrets: &[&str]) -> String {
    let raw = text(body);
    let readable = match serde_json::from_str::<Value>(&raw) {
        Ok(Value::Object(o)) => {
            if let Some(title) = o.get("title").and_then(Value::as_str) {
                let mut s = title.to_string();
                if let Some(Value::Object(errors)) = o.get("errors") {
                    for (field, msgs) in errors {
                        let msgs = match msgs {
                            Value::Array(a) => a
                                .iter()
                                .filter_map(Value::as_str)
                                .collect::<Vec<_>>()
                                .join(", "),
                            Value::String(m) => m.clone(),
                            _ => continue,
                        };
                        s.push_str(&format!("; {field}: {msgs}"));
                    }
                }
                s
            } else if let Some(m) = ["error", "message"]
                .iter()
                .find_map(|k| o.get(*k).and_then(Value::as_str))
            {
                m.to_string()
            } else {
                raw
            }
        }
        _ => raw,
    };
    let printable: String = readable
        .chars()
        .map(|c| if c.is_control() { ' ' } else { c })
        .collect();
    // Redact before cutting, so that a secret across the cut cannot survive in part.
    truncate(redact(&printable, secrets), MAX_SUMMARY)
}

/// `Retry-After`: delta-seconds or an HTTP date.
pub(crate) fn retry_after(value: &str, now: SystemTime) -> Option<Duration> {
    let value = value.trim();
    if let Ok(secs) = value.parse::<u64>() {
        return Some(Duration::from_secs(secs));
    }
    let at = httpdate::parse_http_date(value).ok()?;
    Some(at.duration_since(now).unwrap_or(Duration::ZERO))
}

#[cfg(test)]
mod tests {
    use super::*;
    use time::macros::datetime;

    #[test]
    fn token_shapes() {
        let cases: &[&[u8]] = &[
            b"\"abc.def.ghi\"",
            b"\"abc.def.ghi\"\n",
            b"abc.def.ghi",
            b"abc.def.ghi\r\n",
            b"\xEF\xBB\xBF\"abc.def.ghi\"",
            b"  {\"token\":\"abc.def.ghi\",\"extra\":1} ",
            b"\"Bearer abc.def.ghi\"",
            b"bearer abc.def.ghi",
        ];
        for c in cases {
            assert_eq!(
                token(c).map(|t| t.token),
                Ok("abc.def.ghi".to_string()),
                "{}",
                String::from_utf8_lossy(c)
            );
        }
        let t = token(br#"{"token":"x.y.z","expiration":"2025-01-24T12:00:00Z"}"#).unwrap();
        assert_eq!(t.expiration, Some(datetime!(2025-01-24 12:00:00 UTC)));
    }

    #[test]
    fn token_rejects() {
        assert_eq!(token(b"").unwrap_err(), TokenError::Empty);
        assert_eq!(token(b" \r\n").unwrap_err(), TokenError::Empty);
        assert_eq!(token(b"\"\"").unwrap_err(), TokenError::Empty);
        assert_eq!(token(b"null\n").unwrap_err(), TokenError::Empty);
        assert_eq!(token(b"\"abc").unwrap_err(), TokenError::BadJsonString);
        assert_eq!(
            token(b"{\"token\":").unwrap_err(),
            TokenError::BadJsonObject
        );
        assert_eq!(
            token(b"{\"jwt\":\"a\"}").unwrap_err(),
            TokenError::NoTokenField
        );
        assert_eq!(
            token(b"{\"token\":null}").unwrap_err(),
            TokenError::NoTokenField
        );
        assert_eq!(token(b"ab cd").unwrap_err(), TokenError::Forbidden);
        assert_eq!(token(b"ab\"cd").unwrap_err(), TokenError::Forbidden);
        assert_eq!(
            token(b"\"ab\\u0000cd\"").unwrap_err(),
            TokenError::Forbidden
        );
        assert_eq!(token(b"\"ab\\tcd\"").unwrap_err(), TokenError::Forbidden);
        assert_eq!(
            token(b"<html>oops</html> page").unwrap_err(),
            TokenError::Forbidden
        );
    }

    #[test]
    fn dates() {
        let want = datetime!(2025-01-20 14:33:34 UTC);
        assert_eq!(datetime("2025-01-20T14:33:34Z"), Some(want));
        assert_eq!(
            datetime("2025-01-20T14:33:34.147Z"),
            Some(want + time::Duration::milliseconds(147))
        );
        assert_eq!(
            datetime("2025-01-20T14:33:34.1470000Z"),
            Some(want + time::Duration::milliseconds(147))
        );
        assert_eq!(datetime("2025-01-20T16:33:34+02:00"), Some(want));
        assert_eq!(datetime("2025-01-20T14:33:34"), Some(want));
        assert_eq!(
            datetime("2025-01-20T14:33:34.5"),
            Some(want + time::Duration::milliseconds(500))
        );
        assert_eq!(datetime("2025-01-20 14:33:34"), Some(want));
        assert_eq!(datetime("yesterday"), None);
        assert_eq!(
            format_utc(datetime!(2025-01-20 16:33:34.9 +2)),
            "2025-01-20T14:33:34Z"
        );
    }

    #[test]
    fn jwt_exp_is_opportunistic() {
        let payload = base64::engine::general_purpose::URL_SAFE_NO_PAD
            .encode(br#"{"operator_id":123,"exp":1737412799}"#);
        let tok = format!("eyJhbGciOiJIUzI1NiJ9.{payload}.example_signature");
        assert_eq!(
            jwt_exp(&tok),
            OffsetDateTime::from_unix_timestamp(1737412799).ok()
        );
        assert!(looks_like_jwt(&tok));
        assert_eq!(jwt_exp("not-a-jwt"), None);
        assert_eq!(jwt_exp("a.!!!.c"), None);
        assert_eq!(jwt_exp("a.e30.c"), None); // `{}`: no exp
        assert!(!looks_like_jwt("dashboard-key"));
    }

    #[test]
    fn lists_are_forward_compatible() {
        let body = br#"[{"id":21,"name":"Jane","status":1,"organization":{"id":24,"name":"x"},"photo":null},
                        {"id":"22","name":"Bob","status":7},{"name":"no id"},{"id":23,"status":"Deleted"},
                        {"id":9007199254740993,"name":"big"}]"#;
        let (ops, skipped) = operators(body, Some(5)).unwrap();
        assert_eq!(skipped, 1);
        assert_eq!(
            ops[0],
            Operator {
                id: 21,
                name: "Jane".into(),
                status: OperatorStatus::Inactive,
                organization_id: Some(24)
            }
        );
        assert_eq!(ops[1].id, 22);
        assert_eq!(ops[1].status, OperatorStatus::Other(7));
        assert_eq!(ops[1].organization_id, Some(5));
        assert_eq!(ops[2].status, OperatorStatus::Deleted);
        assert_eq!(ops[3].id, 9007199254740993);
        assert!(operators(b"", None).is_err());
        assert!(operators(b"{\"a\":1}", None).is_err());
        let (orgs, _) =
            organizations(b"\xEF\xBB\xBF{\"items\":[{\"id\":6,\"name\":\"Support\",\"x\":[]}]}")
                .unwrap();
        assert_eq!(
            orgs,
            vec![Organization {
                id: 6,
                name: "Support".into()
            }]
        );
    }

    #[test]
    fn validation_leniency() {
        let v = validation(br#"{"isValid":true,"operatorId":123,"clientId":0,"expiresAt":"2025-12-31T23:59:59Z","error":null}"#).unwrap();
        assert!(v.valid);
        assert_eq!(v.operator_id, Some(123));
        assert_eq!(v.expires_at, Some(datetime!(2025-12-31 23:59:59 UTC)));
        assert_eq!(v.error, None);
        let v = validation(br#"{"valid":false,"error":"Token expired","operatorId":0}"#).unwrap();
        assert!(!v.valid);
        assert_eq!(v.operator_id, None);
        assert_eq!(v.error.as_deref(), Some("Token expired"));
        assert!(!validation(b"{}").unwrap().valid);
        assert!(validation(br#"{"valid":"true"}"#).unwrap().valid);
        assert!(validation(b"OK").is_none());
        assert!(validation(b"[true]").is_none());
    }

    #[test]
    fn summaries_are_short_printable_and_secret_free() {
        let pj = br#"{"type":"x","title":"One or more validation errors occurred.","status":400,"errors":{"Id":["The Id field is required."]},"traceId":"00-1"}"#;
        assert_eq!(
            summary(pj, &[]),
            "One or more validation errors occurred.; Id: The Id field is required."
        );
        assert_eq!(summary(b"bad\r\nthing", &[]), "bad  thing");
        let long = "é".repeat(400);
        let s = summary(long.as_bytes(), &[]);
        assert!(s.len() <= MAX_SUMMARY && s.ends_with('…'));
        let leak = format!("{}token=SECRETVALUE tail", "x".repeat(240));
        let s = summary(leak.as_bytes(), &["SECRETVALUE"]);
        assert!(!s.contains("SECRET"), "{s}");
    }

    #[test]
    fn retry_after_forms() {
        let now = SystemTime::UNIX_EPOCH + Duration::from_secs(1_000_000);
        assert_eq!(retry_after(" 3 ", now), Some(Duration::from_secs(3)));
        let later = httpdate::fmt_http_date(now + Duration::from_secs(10));
        assert_eq!(retry_after(&later, now), Some(Duration::from_secs(10)));
        assert_eq!(retry_after("soon", now), None);
    }

    #[test]
    fn bearer_prefix() {
        assert_eq!(strip_bearer(" Bearer abc "), "abc");
        assert_eq!(strip_bearer("BEARER  abc"), "abc");
        assert_eq!(strip_bearer("Bearerabc"), "Bearerabc");
        assert_eq!(strip_bearer("abc"), "abc");
    }
}
