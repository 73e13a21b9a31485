//! Operator tokens per session: a moka cache keyed by (account, organization,
//! operator, session), refreshed ahead of expiry, coalesced, optionally shared
//! across replicas through Redis, with a circuit breaker in front of ChatHub.
//!
//! The proxy starts [`Tokens::start_token_for`] next to the upstream request
//! and waits for it at most `token.budget`; a warm cache answers at once, and a
//! cold mint that takes longer keeps running on its own task and fills the
//! cache for the next page.

mod breaker;
mod cache;
mod directory;
mod endpoint;

use crate::chathub::{self, ChatHubError};
use crate::config::{Config, OrgRef, Route, SessionConfig, TokenConfig};
use crate::metrics::SharedMetrics;
use crate::operator::{self, Decision, NoOperator};
use crate::secret::Secret;
use crate::session::SessionId;
use crate::shared::{Shared, SharedError};
use breaker::{Admission, Breaker, Transition};
use cache::{CachedToken, TokenExpiry, TokenKey};
use directory::Directory;
use moka::future::Cache;
use std::collections::{HashMap, HashSet};
use std::future::Future;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::task::{Context, Poll, Waker};
use std::time::{Duration, Instant};
use time::OffsetDateTime;
use tracing::{debug, info, warn};

/// How often a replica that lost the Redis lock looks for the winner's token.
const LOCK_POLL: Duration = Duration::from_millis(25);

/// A token ready for a page.
#[derive(Clone, Debug)]
pub struct IssuedToken {
    /// The operator token (never printed).
    pub token: Secret,
    /// When ChatHub stops accepting it.
    pub expires_at: OffsetDateTime,
}

/// A page's token lookup, from [`Tokens::start_token_for`].
pub enum PendingToken {
    /// It finished on the spot.
    Ready(Result<IssuedToken, TokenSkip>),
    /// It waits for something and carries on on its own task.
    Running(tokio::task::JoinHandle<Result<IssuedToken, TokenSkip>>),
}

/// Why a page goes out without a token. Never an error page: the proxy serves
/// the page as it is and counts the reason.
#[derive(Debug, Clone, thiserror::Error)]
pub enum TokenSkip {
    #[error("the route has no ChatHub target and no development token")]
    NoToken,
    #[error("no operator for this session: {}", .0.reason())]
    Operator(NoOperator),
    #[error("no organization named `{0}`")]
    UnknownOrganization(String),
    #[error("the ChatHub circuit breaker is open")]
    BreakerOpen,
    #[error("ChatHub call failed ({0})")]
    ChatHub(&'static str),
    #[error("provisioning the operator failed")]
    ProvisionFailed,
    #[error("the route's account has no client")]
    UnknownAccount,
}

impl TokenSkip {
    /// A short stable name for metrics (`inject_skipped{reason=...}`) and logs.
    pub fn reason(&self) -> &'static str {
        match self {
            TokenSkip::NoToken => "no_token",
            TokenSkip::Operator(r) => r.reason(),
            TokenSkip::UnknownOrganization(_) => "unknown_organization",
            TokenSkip::BreakerOpen => "breaker_open",
            TokenSkip::ChatHub(_) => "chathub_error",
            TokenSkip::ProvisionFailed => "provision_failed",
            TokenSkip::UnknownAccount => "unknown_account",
        }
    }
}

/// Errors building or starting the token layer.
#[derive(Debug, thiserror::Error)]
pub enum TokenError {
    #[error("ChatHub client for account `{account}`: {source}")]
    Client {
        account: String,
        #[source]
        source: ChatHubError,
    },
    #[error("redis: {0}")]
    Redis(#[source] SharedError),
    #[error("{}", .0.join("; "))]
    Resolve(Vec<String>),
}

/// One ChatHub account: its client and the breaker in front of it.
pub(crate) struct Api {
    pub name: Arc<str>,
    pub client: chathub::Client,
    breaker: Breaker,
    pub metrics: SharedMetrics,
    open_breakers: Arc<AtomicUsize>,
}

impl Api {
    /// Run one ChatHub call through the breaker.
    pub async fn call<T>(
        &self,
        call: impl Future<Output = Result<T, ChatHubError>>,
    ) -> Result<T, TokenSkip> {
        let admission = self.breaker.admit(Instant::now());
        if admission == Admission::Refused {
            self.metrics.token_event("breaker_open");
            return Err(TokenSkip::BreakerOpen);
        }
        let mut guard = TrialGuard {
            breaker: &self.breaker,
            admission,
            done: false,
        };
        let result = call.await;
        guard.done = true;
        let healthy = match &result {
            Ok(_) => true,
            Err(e) => !is_outage(e),
        };
        match self.breaker.record(admission, healthy, Instant::now()) {
            Some(Transition::Opened) => {
                let n = self.open_breakers.fetch_add(1, Ordering::SeqCst) + 1;
                self.metrics.set_breaker_open(n > 0);
                self.metrics.token_event("breaker_opened");
                warn!(account = %self.name, "ChatHub failing; circuit breaker open, pages go out without the widget");
            }
            Some(Transition::Closed) => {
                let n = self
                    .open_breakers
                    .fetch_sub(1, Ordering::SeqCst)
                    .saturating_sub(1);
                self.metrics.set_breaker_open(n > 0);
                self.metrics.token_event("breaker_closed");
                info!(account = %self.name, "ChatHub answering again; circuit breaker closed");
            }
            None => {}
        }
        result.map_err(|e| match e {
            ChatHubError::UnknownOrganization(name) => TokenSkip::UnknownOrganization(name),
            e => {
                warn!(account = %self.name, kind = e.kind(), error = %e, "ChatHub call failed");
                TokenSkip::ChatHub(e.kind())
            }
        })
    }
}

/// Frees the half-open trial slot if the call is dropped before it answers.
struct TrialGuard<'a> {
    breaker: &'a Breaker,
    admission: Admission,
    done: bool,
}

impl Drop for TrialGuard<'_> {
    fn drop(&mut self) {
        if !self.done {
            self.breaker.abandon(self.admission, Instant::now());
        }
    }
}

/// Failures that say ChatHub (or the way to it) is unwell. A 4xx other than
/// 401/429 is an answer about one request, not an outage.
fn is_outage(e: &ChatHubError) -> bool {
    match e {
        ChatHubError::Http { status, .. } => *status >= 500,
        ChatHubError::UnknownOrganization(_) => false,
        ChatHubError::Network { .. }
        | ChatHubError::Timeout { .. }
        | ChatHubError::Auth { .. }
        | ChatHubError::RateLimited { .. }
        | ChatHubError::Decode { .. } => true,
    }
}

/// The token layer. Cheap to clone (one `Arc`); clones share everything.
#[derive(Clone)]
pub struct Tokens {
    inner: Arc<Inner>,
}

struct Inner {
    cfg: TokenConfig,
    session: SessionConfig,
    dev_token: Option<Secret>,
    routes: Vec<Arc<Route>>,
    apis: HashMap<String, Arc<Api>>,
    directory: Directory,
    cache: Cache<TokenKey, Arc<CachedToken>>,
    refreshing: Mutex<HashSet<TokenKey>>,
    shared: Option<Shared>,
    metrics: SharedMetrics,
}

impl std::fmt::Debug for Tokens {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Tokens")
            .field("accounts", &self.inner.apis.keys().collect::<Vec<_>>())
            .field("shared", &self.inner.shared)
            .finish_non_exhaustive()
    }
}

impl Tokens {
    /// One ChatHub client per account, the caches, and the Redis store if
    /// configured. No network I/O: Redis and ChatHub being down at start-up
    /// does not stop the proxy.
    pub fn new(cfg: &Config, metrics: SharedMetrics) -> Result<Tokens, TokenError> {
        let open_breakers = Arc::new(AtomicUsize::new(0));
        let mut apis = HashMap::new();
        for account in &cfg.accounts {
            let options = chathub::ClientOptions {
                skew_margin: cfg.token.skew_margin,
                ..Default::default()
            };
            let client =
                chathub::Client::with_options(account.clone(), options).map_err(|source| {
                    TokenError::Client {
                        account: account.name.clone(),
                        source,
                    }
                })?;
            let api = Api {
                name: account.name.as_str().into(),
                client,
                breaker: Breaker::new(cfg.token.breaker_failures, cfg.token.breaker_open_for),
                metrics: metrics.clone(),
                open_breakers: open_breakers.clone(),
            };
            apis.insert(account.name.clone(), Arc::new(api));
        }
        let shared = match &cfg.redis {
            Some(r) => Some(Shared::new(r, metrics.clone()).map_err(TokenError::Redis)?),
            None => None,
        };
        let cache = Cache::builder()
            .max_capacity(cfg.token.capacity)
            .expire_after(TokenExpiry {
                safety_margin: cfg.token.safety_margin,
            })
            .build();
        Ok(Tokens {
            inner: Arc::new(Inner {
                cfg: cfg.token.clone(),
                session: cfg.session.clone(),
                dev_token: cfg.inject.dev_token.clone().map(Secret::new),
                routes: cfg.routes.clone(),
                apis,
                directory: Directory::new(cfg.token.operators_ttl),
                cache,
                refreshing: Mutex::new(HashSet::new()),
                shared,
                metrics,
            }),
        })
    }

    /// Start-up checks: resolve every organization given by name (each
    /// route's name is looked up once) and try Redis. An unknown name is an
    /// error naming the route; ChatHub or Redis being unreachable is logged and
    /// is not (names are then resolved on first use).
    pub async fn resolve(&self) -> Result<(), TokenError> {
        if let Some(shared) = &self.inner.shared
            && !shared.ping().await
        {
            warn!(
                "redis unreachable at start-up; serving tokens from the local cache until it answers"
            );
        }
        let mut problems = Vec::new();
        for route in &self.inner.routes {
            let Some(chat) = &route.chat else { continue };
            let OrgRef::Name(name) = &chat.organization else {
                continue;
            };
            let Some(api) = self.inner.apis.get(&chat.account.name) else {
                continue;
            };
            match self.inner.directory.organization_id(api, name).await {
                Ok(id) => {
                    info!(route = %route.name, organization = %name, organization_id = id, "organization resolved")
                }
                Err(TokenSkip::UnknownOrganization(_)) => {
                    warn!(route = %route.name, organization = %name, account = %chat.account.name, "ChatHub has no organization of this name");
                    problems.push(format!(
                        "route `{}`: account `{}` has no organization named `{name}`",
                        route.name, chat.account.name
                    ));
                }
                Err(e) => {
                    warn!(route = %route.name, organization = %name, reason = e.reason(), "cannot resolve the organization now; will retry on first use")
                }
            }
        }
        if problems.is_empty() {
            Ok(())
        } else {
            Err(TokenError::Resolve(problems))
        }
    }

    /// Start the lookup of a page's token. It is polled once, here: a warm
    /// cache (or the development token) answers on that poll, and the page
    /// then costs no task, no wake-up and no join. A lookup that has to wait (a
    /// mint, Redis, someone else's mint of the same key) moves, as the same
    /// future, onto a task of its own, so that the proxy can stop waiting after
    /// its budget while the mint carries on and fills the cache.
    pub fn start_token_for(
        &self,
        route: Arc<Route>,
        session: SessionId,
        identity: Option<String>,
    ) -> PendingToken {
        let this = self.clone();
        let mut lookup = Box::pin(async move { this.token_for(&route, &session, identity).await });
        // The no-op waker is never needed: a spawned task is always polled
        // once, and that poll registers the task's own waker wherever the
        // lookup waits.
        match lookup
            .as_mut()
            .poll(&mut Context::from_waker(Waker::noop()))
        {
            Poll::Ready(result) => PendingToken::Ready(result),
            Poll::Pending => PendingToken::Running(tokio::spawn(lookup)),
        }
    }

    /// The token a page of `route` carries for `session`. `identity` is what
    /// [`operator::identity_for`] read from the request (only `identity` rules
    /// use it).
    pub async fn token_for(
        &self,
        route: &Arc<Route>,
        session: &SessionId,
        identity: Option<String>,
    ) -> Result<IssuedToken, TokenSkip> {
        let Some(chat) = &route.chat else {
            return match &self.inner.dev_token {
                Some(t) => Ok(IssuedToken {
                    token: t.clone(),
                    expires_at: OffsetDateTime::now_utc() + self.inner.cfg.lifetime,
                }),
                None => Err(TokenSkip::NoToken),
            };
        };
        let api = self
            .inner
            .apis
            .get(&chat.account.name)
            .ok_or(TokenSkip::UnknownAccount)?;
        let organization = match &chat.organization {
            OrgRef::Id(id) => *id,
            OrgRef::Name(name) => self.inner.directory.organization_id(api, name).await?,
        };
        let operator = self
            .operator_for(
                api,
                organization,
                &chat.operator,
                identity.as_deref(),
                session,
            )
            .await?;
        let key = TokenKey {
            account: api.name.clone(),
            organization,
            operator,
            session: *session,
        };
        self.token(api, key).await
    }

    async fn operator_for(
        &self,
        api: &Arc<Api>,
        organization: i64,
        rule: &crate::config::OperatorRule,
        identity: Option<&str>,
        session: &SessionId,
    ) -> Result<i64, TokenSkip> {
        let mut decision = operator::decide(rule, identity, session, None);
        if decision == Decision::NeedList {
            let list = self.inner.directory.operators(api, organization).await?;
            decision = operator::decide(rule, identity, session, Some(&list));
        }
        match decision {
            Decision::Operator(id) => Ok(id),
            Decision::Provision(name) => {
                self.inner
                    .directory
                    .provision(api, organization, &name)
                    .await
            }
            Decision::Skip(reason) => Err(TokenSkip::Operator(reason)),
            Decision::NeedList => Err(TokenSkip::Operator(NoOperator::NoActiveOperator)),
        }
    }

    async fn token(&self, api: &Arc<Api>, key: TokenKey) -> Result<IssuedToken, TokenSkip> {
        let cfg = &self.inner.cfg;
        let now = OffsetDateTime::now_utc();
        if let Some(t) = self.inner.cache.get(&key).await {
            if t.usable(now, cfg.safety_margin) {
                self.inner.metrics.token_event("hit");
                if t.refresh_due(now, cfg.refresh_ahead) {
                    self.spawn_refresh(api.clone(), key, t.clone());
                }
                return Ok(IssuedToken {
                    token: t.token.clone(),
                    expires_at: t.expires_at,
                });
            }
            // moka drops entries at the margin; this covers the instant between.
            self.inner.cache.invalidate(&key).await;
        }
        let this = self.clone();
        let (a, k) = (api.clone(), key.clone());
        let t = self
            .inner
            .cache
            .try_get_with(key, async move { this.obtain(&a, &k, false).await })
            .await
            .map_err(|e| (*e).clone())?;
        if !t.usable(OffsetDateTime::now_utc(), cfg.safety_margin) {
            // Only when ChatHub grants less life than the margin.
            return Err(TokenSkip::ChatHub("short_lived_token"));
        }
        Ok(IssuedToken {
            token: t.token.clone(),
            expires_at: t.expires_at,
        })
    }

    /// Replace a token that is due for refresh, in the background, once per key.
    fn spawn_refresh(&self, api: Arc<Api>, key: TokenKey, current: Arc<CachedToken>) {
        {
            let mut r = self
                .inner
                .refreshing
                .lock()
                .unwrap_or_else(|p| p.into_inner());
            if !r.insert(key.clone()) {
                return;
            }
        }
        let this = self.clone();
        tokio::spawn(async move {
            match this.obtain(&api, &key, true).await {
                Ok(fresh) if fresh.expires_at > current.expires_at => {
                    this.inner.metrics.token_event("refresh");
                    this.inner.cache.insert(key.clone(), fresh).await;
                }
                Ok(_) => {}
                Err(e) => {
                    this.inner.metrics.token_event("refresh_failed");
                    debug!(account = %key.account, organization = key.organization, reason = e.reason(), "token refresh failed; the current token serves until its margin");
                }
            }
            this.inner
                .refreshing
                .lock()
                .unwrap_or_else(|p| p.into_inner())
                .remove(&key);
        });
    }

    /// A token for `key` from Redis or from ChatHub. With `refreshing`, a
    /// shared token that is itself due for refresh does not count.
    async fn obtain(
        &self,
        api: &Arc<Api>,
        key: &TokenKey,
        refreshing: bool,
    ) -> Result<Arc<CachedToken>, TokenSkip> {
        let Some(shared) = &self.inner.shared else {
            return self.mint(api, key).await;
        };
        let cfg = &self.inner.cfg;
        let name = key.shared_name(shared.prefix(), "token");
        let acceptable = |t: &CachedToken| {
            let now = OffsetDateTime::now_utc();
            t.usable(now, cfg.safety_margin)
                && !(refreshing && t.refresh_due(now, cfg.refresh_ahead))
        };
        let lookup = |name: String| async move {
            match shared.get(&name).await {
                Ok(Some(v)) => Ok(CachedToken::decode(&v)),
                Ok(None) => Ok(None),
                Err(e) => Err(e),
            }
        };
        match lookup(name.clone()).await {
            Ok(Some(t)) if acceptable(&t) => {
                self.inner.metrics.token_event("shared_hit");
                return Ok(Arc::new(t));
            }
            Ok(_) => {}
            // Redis down: mint locally (the store logged and counted it).
            Err(_) => return self.mint(api, key).await,
        }
        let lock = key.shared_name(shared.prefix(), "lock");
        let deadline = Instant::now() + shared.lock_ttl();
        loop {
            match shared.try_lock(&lock, shared.lock_ttl()).await {
                Ok(Some(nonce)) => {
                    // The previous holder may have stored its token and let go
                    // between our lookup and our lock.
                    if let Ok(Some(t)) = lookup(name.clone()).await
                        && acceptable(&t)
                    {
                        let _ = shared.unlock(&lock, &nonce).await;
                        self.inner.metrics.token_event("shared_hit");
                        return Ok(Arc::new(t));
                    }
                    let minted = self.mint(api, key).await;
                    if let Ok(t) = &minted {
                        let ttl = t.remaining(OffsetDateTime::now_utc());
                        let _ = shared.put(&name, &t.encode(), ttl).await;
                    }
                    // On failure too, so that a waiting replica may try at once.
                    let _ = shared.unlock(&lock, &nonce).await;
                    return minted;
                }
                Ok(None) => {}
                Err(_) => return self.mint(api, key).await,
            }
            // Someone else is minting this very token: wait for it, briefly.
            if Instant::now() >= deadline {
                self.inner.metrics.token_event("shared_lock_timeout");
                return self.mint(api, key).await;
            }
            tokio::time::sleep(LOCK_POLL).await;
            match lookup(name.clone()).await {
                Ok(Some(t)) if acceptable(&t) => {
                    self.inner.metrics.token_event("shared_hit");
                    return Ok(Arc::new(t));
                }
                Ok(_) => {}
                Err(_) => return self.mint(api, key).await,
            }
        }
    }

    /// One get-token call.
    async fn mint(&self, api: &Arc<Api>, key: &TokenKey) -> Result<Arc<CachedToken>, TokenSkip> {
        match api
            .call(
                api.client
                    .operator_token(key.operator, self.inner.cfg.lifetime),
            )
            .await
        {
            Ok(t) => {
                self.inner.metrics.token_event("mint");
                debug!(account = %key.account, organization = key.organization, operator_id = key.operator, "minted an operator token");
                Ok(Arc::new(CachedToken {
                    token: t.token,
                    expires_at: t.expires_at,
                }))
            }
            Err(TokenSkip::BreakerOpen) => Err(TokenSkip::BreakerOpen),
            Err(e) => {
                self.inner.metrics.token_event("mint_failed");
                debug!(account = %key.account, organization = key.organization, operator_id = key.operator, reason = e.reason(), "could not mint an operator token");
                Err(e)
            }
        }
    }

    /// Entries in the local cache (eventually consistent; for tests and stats).
    pub async fn cached_tokens(&self) -> u64 {
        self.inner.cache.run_pending_tasks().await;
        self.inner.cache.entry_count()
    }
}
