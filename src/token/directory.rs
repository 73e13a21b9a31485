//! What the operator rules decide over: organization ids by name and operator
//! lists, cached for `token.operators_ttl` and refreshed in the background
//! (a stale list keeps serving while ChatHub is slow or down), and operator
//! provisioning through synchronize, deduplicated by name and never retried
//! blindly.

use super::{Api, TokenSkip};
use crate::chathub::{Operator, OperatorStatus};
use crate::operator::{NoOperator, by_name_in};
use moka::future::Cache;
use std::collections::HashSet;
use std::hash::Hash;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};
use tracing::{debug, info, warn};

/// Operator lists and organization names held at most (one per organization).
const DIRECTORY_CAPACITY: u64 = 10_000;

/// A cache that serves what it has and refreshes entries older than `ttl` in
/// the background, one refresh per key at a time. Misses are coalesced.
struct Swr<K, V> {
    cache: Cache<K, (V, Instant)>,
    refreshing: Arc<Mutex<HashSet<K>>>,
    ttl: Duration,
}

impl<K, V> Clone for Swr<K, V> {
    fn clone(&self) -> Self {
        Swr {
            cache: self.cache.clone(),
            refreshing: self.refreshing.clone(),
            ttl: self.ttl,
        }
    }
}

impl<K, V> Swr<K, V>
where
    K: Hash + Eq + Clone + Send + Sync + 'static,
    V: Clone + Send + Sync + 'static,
{
    fn new(ttl: Duration) -> Self {
        Swr {
            cache: Cache::builder().max_capacity(DIRECTORY_CAPACITY).build(),
            refreshing: Arc::new(Mutex::new(HashSet::new())),
            ttl,
        }
    }

    async fn get<F, Fut>(&self, key: K, fetch: F) -> Result<V, TokenSkip>
    where
        F: FnOnce() -> Fut + Send + 'static,
        Fut: Future<Output = Result<V, TokenSkip>> + Send + 'static,
    {
        if let Some((value, fetched)) = self.cache.get(&key).await {
            if fetched.elapsed() >= self.ttl && self.claim(&key) {
                let this = self.clone();
                tokio::spawn(async move {
                    let outcome = fetch().await;
                    if let Ok(v) = outcome {
                        this.cache.insert(key.clone(), (v, Instant::now())).await;
                    } else {
                        debug!("background directory refresh failed; keeping the cached copy");
                    }
                    this.release(&key);
                });
            }
            return Ok(value);
        }
        self.cache
            .try_get_with(
                key,
                async move { fetch().await.map(|v| (v, Instant::now())) },
            )
            .await
            .map(|(v, _)| v)
            .map_err(|e| (*e).clone())
    }

    async fn put(&self, key: K, value: V) {
        self.cache.insert(key, (value, Instant::now())).await;
    }

    fn claim(&self, key: &K) -> bool {
        self.refreshing
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .insert(key.clone())
    }

    fn release(&self, key: &K) {
        self.refreshing
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .remove(key);
    }
}

type ProvisionKey = (Arc<str>, i64, String);

/// Organization ids, operator lists and provisioning outcomes per account.
#[derive(Clone)]
pub(crate) struct Directory {
    orgs: Swr<(Arc<str>, String), Option<i64>>,
    lists: Swr<(Arc<str>, i64), Arc<Vec<Operator>>>,
    /// Outcomes of provisioning, kept for the TTL so that neither a success
    /// nor a failure leads to a second synchronize for the same name.
    provisioned: Cache<ProvisionKey, Result<i64, TokenSkip>>,
}

impl Directory {
    pub fn new(ttl: Duration) -> Self {
        Directory {
            orgs: Swr::new(ttl),
            lists: Swr::new(ttl),
            provisioned: Cache::builder()
                .max_capacity(DIRECTORY_CAPACITY)
                .time_to_live(ttl)
                .build(),
        }
    }

    /// The id of the organization called `name` (exact, then case-insensitive,
    /// as the client resolves it).
    pub async fn organization_id(&self, api: &Arc<Api>, name: &str) -> Result<i64, TokenSkip> {
        let key = (api.name.clone(), name.to_owned());
        let (a, n) = (api.clone(), name.to_owned());
        let found = self
            .orgs
            .get(key, move || async move {
                match a.call(a.client.organization_id(&n)).await {
                    Ok(id) => Ok(Some(id)),
                    // An unknown name is an answer, cached like one.
                    Err(TokenSkip::UnknownOrganization(_)) => Ok(None),
                    Err(e) => Err(e),
                }
            })
            .await?;
        found.ok_or_else(|| TokenSkip::UnknownOrganization(name.to_owned()))
    }

    /// The organization's operators (all statuses).
    pub async fn operators(
        &self,
        api: &Arc<Api>,
        organization: i64,
    ) -> Result<Arc<Vec<Operator>>, TokenSkip> {
        let a = api.clone();
        self.lists
            .get((api.name.clone(), organization), move || async move {
                a.call(a.client.operators(organization)).await.map(Arc::new)
            })
            .await
    }

    /// The id of operator `name`, created through synchronize if it does not
    /// exist. Concurrent callers for one name share one attempt, and its
    /// outcome (success or failure) stands for the TTL.
    pub async fn provision(
        &self,
        api: &Arc<Api>,
        organization: i64,
        name: &str,
    ) -> Result<i64, TokenSkip> {
        let key = (api.name.clone(), organization, name.to_owned());
        let this = self.clone();
        let (a, n) = (api.clone(), name.to_owned());
        let outcome = self
            .provisioned
            .try_get_with(key, async move {
                this.provision_once(&a, organization, &n).await
            })
            .await;
        match outcome {
            Ok(result) => result,
            // Failures before synchronize was called are safe to try again.
            Err(e) => Err((*e).clone()),
        }
    }

    /// `Err` when synchronize was not called (nothing can have been created);
    /// `Ok(Err)` when it was called and failed, which is cached.
    async fn provision_once(
        &self,
        api: &Arc<Api>,
        organization: i64,
        name: &str,
    ) -> Result<Result<i64, TokenSkip>, TokenSkip> {
        // Dedupe against a fresh list first: another replica, or an earlier
        // synchronize whose answer was lost, may have created it already.
        let fresh = api.call(api.client.operators(organization)).await?;
        let existing = by_name_in(&fresh, name).map(|o| (o.id, o.status));
        self.lists
            .put((api.name.clone(), organization), Arc::new(fresh))
            .await;
        if let Some((id, status)) = existing {
            return Ok(if status == OperatorStatus::Active {
                Ok(id)
            } else {
                Err(TokenSkip::Operator(NoOperator::InactiveOperator))
            });
        }
        let names = [name.to_owned()];
        let created = match api.call(api.client.synchronize(organization, &names)).await {
            Ok(ops) => ops,
            Err(e) => {
                api.metrics.token_event("provision_failed");
                warn!(account = %api.name, organization, reason = e.reason(), "synchronize failed; not retried until the operator list is refreshed");
                return Ok(Err(TokenSkip::ProvisionFailed));
            }
        };
        let mut id = by_name_in(&created, name).map(|o| o.id);
        // The answer's body is not documented; when it does not name the new
        // operator, the list says what exists now.
        if let Ok(list) = api.call(api.client.operators(organization)).await {
            id = id.or_else(|| by_name_in(&list, name).map(|o| o.id));
            self.lists
                .put((api.name.clone(), organization), Arc::new(list))
                .await;
        }
        match id {
            Some(id) => {
                api.metrics.token_event("provision");
                info!(account = %api.name, organization, operator_id = id, "provisioned an operator");
                Ok(Ok(id))
            }
            None => {
                api.metrics.token_event("provision_failed");
                warn!(account = %api.name, organization, "synchronize answered but the new operator is not listed");
                Ok(Err(TokenSkip::ProvisionFailed))
            }
        }
    }
}
