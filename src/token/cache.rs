//! The local token cache: keys, values, their expiry, and the encoding of a
//! token in the shared (Redis) store.

use crate::secret::Secret;
use crate::session::SessionId;
use moka::Expiry;
use std::fmt;
use std::sync::Arc;
use std::time::{Duration, Instant};
use time::OffsetDateTime;

/// One cached token's identity: whose token it is, for which organization and
/// operator. A session that moves to another organization gets another key,
/// hence that organization's token.
#[derive(Clone, PartialEq, Eq, Hash)]
pub(crate) struct TokenKey {
    pub account: Arc<str>,
    pub organization: i64,
    pub operator: i64,
    pub session: SessionId,
}

impl fmt::Debug for TokenKey {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        // SessionId's Debug is redacted already; spelled out for clarity.
        write!(
            f,
            "TokenKey({}/{}/{}/<session>)",
            self.account, self.organization, self.operator
        )
    }
}

impl TokenKey {
    /// The key's name in the shared store: the session appears only as a
    /// SHA-256 digest.
    pub fn shared_name(&self, prefix: &str, kind: &str) -> String {
        format!(
            "{prefix}{kind}:{}:{}:{}:{}",
            self.account,
            self.organization,
            self.operator,
            self.session.digest_hex()
        )
    }
}

/// A token and when it stops working.
#[derive(Clone, Debug)]
pub(crate) struct CachedToken {
    pub token: Secret,
    pub expires_at: OffsetDateTime,
}

impl CachedToken {
    /// Time left at `now`; zero once expired.
    pub fn remaining(&self, now: OffsetDateTime) -> Duration {
        (self.expires_at - now).try_into().unwrap_or(Duration::ZERO)
    }

    /// Whether the token may still be handed out: more than the safety margin left.
    pub fn usable(&self, now: OffsetDateTime, safety_margin: Duration) -> bool {
        self.remaining(now) > safety_margin
    }

    /// Whether a fresh token should be fetched in the background.
    pub fn refresh_due(&self, now: OffsetDateTime, refresh_ahead: Duration) -> bool {
        self.remaining(now) <= refresh_ahead
    }

    /// The shared-store value: `v1:<expiry unix ms>:<token>`.
    pub fn encode(&self) -> String {
        let ms = self.expires_at.unix_timestamp_nanos() / 1_000_000;
        format!("v1:{ms}:{}", self.token.expose())
    }

    /// Parse [`CachedToken::encode`]'s output; anything else is ignored.
    pub fn decode(value: &str) -> Option<CachedToken> {
        let rest = value.strip_prefix("v1:")?;
        let (ms, token) = rest.split_once(':')?;
        let ms: i128 = ms.parse().ok()?;
        let expires_at =
            OffsetDateTime::from_unix_timestamp_nanos(ms.checked_mul(1_000_000)?).ok()?;
        if token.is_empty() || token.chars().any(|c| c.is_whitespace() || c.is_control()) {
            return None;
        }
        Some(CachedToken {
            token: Secret::new(token),
            expires_at,
        })
    }
}

/// Entries leave the cache when less than the safety margin is left, so a
/// `get` never returns a token that may not be handed out any more.
pub(crate) struct TokenExpiry {
    pub safety_margin: Duration,
}

impl TokenExpiry {
    fn ttl(&self, v: &CachedToken) -> Option<Duration> {
        Some(
            v.remaining(OffsetDateTime::now_utc())
                .saturating_sub(self.safety_margin),
        )
    }
}

impl Expiry<TokenKey, Arc<CachedToken>> for TokenExpiry {
    fn expire_after_create(
        &self,
        _: &TokenKey,
        v: &Arc<CachedToken>,
        _: Instant,
    ) -> Option<Duration> {
        self.ttl(v)
    }

    // moka keeps the old deadline on update by default; a refreshed token
    // brings its own.
    fn expire_after_update(
        &self,
        _: &TokenKey,
        v: &Arc<CachedToken>,
        _: Instant,
        _: Option<Duration>,
    ) -> Option<Duration> {
        self.ttl(v)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn tok(secs: i64) -> CachedToken {
        CachedToken {
            token: Secret::new("t.o.k"),
            expires_at: OffsetDateTime::now_utc() + time::Duration::seconds(secs),
        }
    }

    #[test]
    fn safety_margin_and_refresh_ahead() {
        let now = OffsetDateTime::now_utc();
        let t = tok(100);
        assert!(t.usable(now, Duration::from_secs(30)));
        assert!(!t.refresh_due(now, Duration::from_secs(30)));
        assert!(t.refresh_due(now, Duration::from_secs(200)));
        assert!(!t.usable(now + time::Duration::seconds(71), Duration::from_secs(30)));
        assert!(!tok(-5).usable(now, Duration::ZERO));
        assert_eq!(tok(-5).remaining(now), Duration::ZERO);
    }

    #[test]
    fn shared_encoding_round_trips_and_rejects_junk() {
        let t = tok(3600);
        let back = CachedToken::decode(&t.encode()).unwrap();
        assert_eq!(back.token.expose(), "t.o.k");
        assert_eq!(
            back.expires_at.unix_timestamp(),
            t.expires_at.unix_timestamp()
        );
        for junk in ["", "v1:", "v1:abc:tok", "v2:1:tok", "v1:1:", "v1:1:a b"] {
            assert!(CachedToken::decode(junk).is_none(), "{junk:?}");
        }
    }

    #[test]
    fn shared_names_hide_the_session() {
        let session = crate::session::new_id();
        let key = TokenKey {
            account: "main".into(),
            organization: 6,
            operator: 21,
            session,
        };
        let name = key.shared_name("p:", "token");
        assert!(name.starts_with("p:token:main:6:21:"));
        assert!(!name.contains(&session.expose()));
        assert!(!format!("{key:?}").contains(&session.expose()));
    }

    #[tokio::test]
    async fn cache_drops_entries_inside_the_safety_margin() {
        let cache: moka::future::Cache<TokenKey, Arc<CachedToken>> = moka::future::Cache::builder()
            .expire_after(TokenExpiry {
                safety_margin: Duration::from_millis(1500),
            })
            .build();
        let key = TokenKey {
            account: "a".into(),
            organization: 1,
            operator: 2,
            session: crate::session::new_id(),
        };
        cache.insert(key.clone(), Arc::new(tok(2))).await;
        assert!(cache.get(&key).await.is_some());
        // 2 s of life minus a 1.5 s margin: gone within a second.
        tokio::time::sleep(Duration::from_millis(1200)).await;
        assert!(cache.get(&key).await.is_none());
    }
}
