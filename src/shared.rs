//! The optional Redis store behind the local cache: values shared by replicas
//! with a TTL, and a `SET NX PX` lock so that N replicas seeing one new session
//! mint once.
//!
//! Redis is a helper, never a dependency: every call has a deadline, and when
//! Redis is down or slow the store reports [`SharedError`] at once (for a short
//! back-off after each failure) so the caller falls back to its local cache.
//! State changes are logged once each, not per request.

use crate::config::RedisConfig;
use crate::metrics::SharedMetrics;
use redis::aio::{ConnectionManager, ConnectionManagerConfig};
use redis::{AsyncCommands, ExistenceCheck, Script, SetExpiry, SetOptions};
use std::sync::Mutex;
use std::time::{Duration, Instant};
use tokio::sync::OnceCell;
use tracing::{info, warn};

/// After a failure, calls fail fast for this long before Redis is tried again,
/// so an outage costs one timeout per second, not one per request.
const RETRY_AFTER_FAILURE: Duration = Duration::from_secs(1);

/// Compare-and-delete: only the holder of a lock releases it, even if its
/// lock expired and someone else took it meanwhile.
const UNLOCK: &str = "if redis.call('GET', KEYS[1]) == ARGV[1] then return redis.call('DEL', KEYS[1]) else return 0 end";

/// Why a shared-store call gave no answer. The caller carries on locally.
#[derive(Debug, thiserror::Error)]
pub enum SharedError {
    #[error("redis URL is invalid: {0}")]
    Url(String),
    #[error("redis is unavailable (backing off)")]
    Down,
    #[error("redis did not answer in time")]
    Timeout,
    #[error("redis error: {0}")]
    Redis(String),
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Health {
    /// No call finished yet.
    Unknown,
    Up,
    Down {
        retry_at: Instant,
    },
}

/// A Redis-backed key-value store with TTLs and locks. Cheap to share by `Arc`.
pub struct Shared {
    client: redis::Client,
    conn: OnceCell<ConnectionManager>,
    prefix: String,
    timeout: Duration,
    lock_ttl: Duration,
    health: Mutex<Health>,
    unlock: Script,
    metrics: SharedMetrics,
}

impl std::fmt::Debug for Shared {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        // The URL may hold a password; show only the prefix.
        f.debug_struct("Shared")
            .field("prefix", &self.prefix)
            .finish_non_exhaustive()
    }
}

impl Shared {
    /// Parse the URL; no connection is made here, so a Redis that is down at
    /// start-up never stops the proxy from starting.
    pub fn new(cfg: &RedisConfig, metrics: SharedMetrics) -> Result<Shared, SharedError> {
        // redis' own error text may repeat the URL, password included.
        let client = redis::Client::open(cfg.url.as_str())
            .map_err(|e| SharedError::Url(format!("{:?}", e.kind())))?;
        Ok(Shared {
            client,
            conn: OnceCell::new(),
            prefix: cfg.key_prefix.clone(),
            timeout: cfg.timeout,
            lock_ttl: cfg.lock_ttl,
            health: Mutex::new(Health::Unknown),
            unlock: Script::new(UNLOCK),
            metrics,
        })
    }

    /// The configured key prefix (every key this store touches starts with it).
    pub fn prefix(&self) -> &str {
        &self.prefix
    }

    /// How long a lock holder may take before others stop waiting for it.
    pub fn lock_ttl(&self) -> Duration {
        self.lock_ttl
    }

    /// Try Redis once now (start-up): `true` if it answered `PING`.
    pub async fn ping(&self) -> bool {
        self.run(|mut c| async move { redis::cmd("PING").query_async::<String>(&mut c).await })
            .await
            .is_ok()
    }

    /// `GET key`.
    pub async fn get(&self, key: &str) -> Result<Option<String>, SharedError> {
        let key = key.to_owned();
        self.run(|mut c| async move { c.get::<_, Option<String>>(key).await })
            .await
    }

    /// `SET key value PX ttl`.
    pub async fn put(&self, key: &str, value: &str, ttl: Duration) -> Result<(), SharedError> {
        let (key, value) = (key.to_owned(), value.to_owned());
        let ms = ttl.as_millis().clamp(1, u128::from(u64::MAX)) as u64;
        self.run(|mut c| async move { c.pset_ex::<_, _, ()>(key, value, ms).await })
            .await
    }

    /// `SET key nonce NX PX ttl`: `Some(nonce)` when this caller got the lock.
    pub async fn try_lock(&self, key: &str, ttl: Duration) -> Result<Option<String>, SharedError> {
        let nonce = format!("{:032x}", rand::random::<u128>());
        let ms = ttl.as_millis().clamp(1, u128::from(u64::MAX)) as u64;
        let opts = SetOptions::default()
            .conditional_set(ExistenceCheck::NX)
            .with_expiration(SetExpiry::PX(ms));
        let (k, n) = (key.to_owned(), nonce.clone());
        let got: Option<String> = self
            .run(|mut c| async move { c.set_options::<_, _, Option<String>>(k, n, opts).await })
            .await?;
        Ok(got.map(|_| nonce))
    }

    /// Release a lock taken with [`Shared::try_lock`], if it is still ours.
    pub async fn unlock(&self, key: &str, nonce: &str) -> Result<(), SharedError> {
        let inv = {
            let mut i = self.unlock.key(key);
            i.arg(nonce);
            i
        };
        self.run(|mut c| async move { inv.invoke_async::<i64>(&mut c).await.map(|_| ()) })
            .await
    }

    /// Run one command with the deadline and the health bookkeeping.
    async fn run<T, F, Fut>(&self, f: F) -> Result<T, SharedError>
    where
        F: FnOnce(ConnectionManager) -> Fut,
        Fut: Future<Output = redis::RedisResult<T>>,
    {
        if let Health::Down { retry_at } = self.health()
            && Instant::now() < retry_at
        {
            return Err(SharedError::Down);
        }
        let conn = self
            .conn
            .get_or_try_init(|| async {
                let cfg = ConnectionManagerConfig::new()
                    .set_connection_timeout(Some(self.timeout))
                    .set_response_timeout(Some(self.timeout))
                    .set_number_of_retries(1)
                    .set_max_delay(self.timeout);
                // Lazy: connects on the first command and reconnects by itself.
                ConnectionManager::new_lazy_with_config(self.client.clone(), cfg)
            })
            .await
            .map_err(|e| SharedError::Redis(format!("{:?}", e.kind())));
        let result = match conn {
            Ok(conn) => match tokio::time::timeout(self.timeout, f(conn.clone())).await {
                Ok(Ok(v)) => Ok(v),
                Ok(Err(e)) => Err(SharedError::Redis(describe(&e))),
                Err(_) => Err(SharedError::Timeout),
            },
            Err(e) => Err(e),
        };
        self.note(result.as_ref().err());
        result
    }

    fn health(&self) -> Health {
        *self.health.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// Record the outcome; log and count only changes of state.
    fn note(&self, err: Option<&SharedError>) {
        let mut h = self.health.lock().unwrap_or_else(|p| p.into_inner());
        match (err, *h) {
            (None, Health::Up) => {}
            (None, before) => {
                *h = Health::Up;
                drop(h);
                if matches!(before, Health::Down { .. }) {
                    info!(prefix = %self.prefix, "redis is reachable again; tokens are shared again");
                    self.metrics.token_event("redis_up");
                } else {
                    info!(prefix = %self.prefix, "redis connected");
                }
            }
            (Some(e), before) => {
                *h = Health::Down {
                    retry_at: Instant::now() + RETRY_AFTER_FAILURE,
                };
                drop(h);
                self.metrics.token_event("redis_error");
                if !matches!(before, Health::Down { .. }) {
                    warn!(prefix = %self.prefix, error = %e, "redis unavailable; each replica serves tokens from its own cache");
                }
            }
        }
    }
}

/// An error's kind and code, never its full text (which can echo the URL).
fn describe(e: &redis::RedisError) -> String {
    match e.code() {
        Some(code) => format!("{:?} ({code})", e.kind()),
        None => format!("{:?}", e.kind()),
    }
}
