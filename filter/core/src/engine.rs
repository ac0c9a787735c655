//! The per-request pipeline: normalize, match, extract, verify, authorize,
//! and say what to do with the headers. Pure: the host's view of the
//! request and the current time come in; a [`Decision`] goes out.

use crate::apikey::ApiKeyDigest;
use crate::config::CompiledConfig;
use crate::credential::{self, Credential, HeaderPair};
use crate::denial::{Denial, Reason};
use crate::header_map::Value;
use crate::identity::{Headers, Identity};
use crate::jwt::KeyRing;
use crate::keystore::{KeyEntry, KeyKindTag, KeyStore};
use crate::path;
use crate::policy::CompiledPolicy;
use crate::ratelimit::table::{CounterStore, StoreError};
use crate::ratelimit::{LimitInput, LimitOutcome, LimitReport, Refusal};
use crate::revocation::{RevocationSource, Revocations};
use crate::route::host_of;
use crate::sync::layout::View;
use crate::sync::records::revocation_byte;
use crate::token_cache::{CachedToken, DEFAULT_CAPACITY, TokenCache, VerifiedCache};
use meshgate_wire::config::{Access, CredentialKind, FailureMode};
use meshgate_wire::sync::{RevocationKind, SigningKey};
use std::cell::RefCell;
use std::collections::HashMap;
use std::sync::Arc;

/// What the filter sees of a request.
#[derive(Debug, Clone, Copy)]
pub struct Request<'a> {
    /// `:method`.
    pub method: &'a str,
    /// Raw `:path`.
    pub path: &'a [u8],
    /// `:authority` (or `host`).
    pub authority: &'a str,
    /// All request headers, as the host lists them.
    pub headers: &'a [HeaderPair<'a>],
    /// The TCP peer address (`source.address`), when limits need it.
    pub peer: Option<&'a str>,
}

/// The request may go upstream, with these header changes.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Allow<'c> {
    /// Matched route name (`default` when none matched).
    pub route: &'c str,
    /// Verified identity, if any.
    pub identity: Option<Arc<Identity>>,
    /// Headers to remove (present in the request, owned or hidden).
    pub remove: Vec<&'c str>,
    /// Where the identity headers go (see [`Allow::set`]).
    names: &'c Headers,
    /// New `:path` when normalization changed it.
    pub rewrite_path: Option<String>,
    /// Headers for the upstream's response (`RateLimit`… when configured).
    pub response_headers: Vec<(String, String)>,
    /// What each rate-limit rule did (for metrics).
    pub limits: LimitReport,
}

impl<'c> Allow<'c> {
    /// Every identity header the filter owns, with the value to set it to
    /// (`None`: not set; if the request had it, it is in `remove`).
    /// Borrowed from the identity: the warm path allocates nothing for them.
    pub fn identity_headers(&self) -> [(&'c str, Option<Value<'_>>); 8] {
        self.names.owned_values(self.identity.as_deref())
    }

    /// Headers to set, replacing any existing value: the identity's, under
    /// the configured names.
    pub fn set(&self) -> impl Iterator<Item = (&'c str, Value<'_>)> {
        self.identity_headers().into_iter().filter_map(|(name, value)| Some((name, value?)))
    }
}

/// The outcome for one request. A denial may carry a limit report too. `Allow` is the common case and is returned
/// by value once per request, so it is not boxed.
#[derive(Debug, Clone, PartialEq, Eq)]
#[allow(clippy::large_enum_variant)]
pub enum Decision<'c> {
    /// Forward, with header edits.
    Allow(Allow<'c>),
    /// Answer locally.
    Deny(Denial),
}

/// Compiled config plus the dynamic state a decision reads.
#[derive(Debug, Clone)]
pub struct Engine {
    /// Static, compiled configuration.
    pub config: Arc<CompiledConfig>,
    /// JWT issuers and keys: configured plus synced.
    pub keyring: KeyRing,
    /// API, service and admin keys: configured plus synced.
    pub keys: KeyStore,
    /// Client IPs (or IPv6 /64s) banned until a time (unix seconds).
    pub bans: HashMap<String, u64>,
    /// Version of the synced state this engine was built from (0: none).
    pub sync_version: u64,
    /// Where the synced keys and revocations are in the process-wide store
    /// (empty: nothing synced).
    pub synced: View,
    /// The synced signing keys this engine's key ring was built with.
    pub signing_keys: Vec<SigningKey>,
    /// Revocations held in memory (tests, tools); the synced ones are
    /// looked up through [`Engine::synced`].
    pub revocations: Revocations,
    /// Verified JWTs, re-checked for expiry and revocation on every hit.
    pub token_cache: TokenCache,
    /// Digests of keys that verified, so a known key skips base58 and two
    /// SHA-256s (lookup, revocation and expiry still run every time).
    pub key_digests: VerifiedCache<ApiKeyDigest>,
    /// Keys found (in config or the synced shards) and not revoked by the
    /// synced set at this engine's version: a known key costs no shared
    /// data read. Per engine, so a new version starts it empty.
    key_entries: RefCell<HashMap<(KeyKindTag, ApiKeyDigest), Arc<KeyEntry>>>,
}

/// The synced revocations, in the process-wide store. A store failure
/// counts as revoked: when in doubt, refuse.
struct Synced<'a> {
    view: &'a View,
    store: &'a dyn CounterStore,
}

impl Synced<'_> {
    fn find(&self, kind: RevocationKind, id: &str) -> Result<Option<(u64, u64)>, ()> {
        self.view.revocation(self.store, revocation_byte(kind), id).map_err(|_| ())
    }
}

impl RevocationSource for Synced<'_> {
    fn token_revoked(&self, jti: Option<&str>, sid: Option<&str>, sub: Option<&str>, iat: Option<u64>) -> bool {
        let listed = |kind, id: Option<&str>| id.is_some_and(|id| self.find(kind, id).map_or(true, |r| r.is_some()));
        listed(RevocationKind::Token, jti)
            || listed(RevocationKind::Session, sid)
            || sub.is_some_and(|s| match self.find(RevocationKind::User, s) {
                Err(()) => true,
                Ok(None) => false,
                Ok(Some((_, not_before))) => iat.is_none_or(|iat| iat < not_before),
            })
    }

    fn key_revoked(&self, key_id: &str) -> bool {
        self.find(RevocationKind::Key, key_id).map_or(true, |r| r.is_some())
    }
}

/// The in-memory revocations plus the synced ones.
struct AllRevocations<'a> {
    memory: &'a Revocations,
    synced: Option<Synced<'a>>,
}

impl RevocationSource for AllRevocations<'_> {
    fn token_revoked(&self, jti: Option<&str>, sid: Option<&str>, sub: Option<&str>, iat: Option<u64>) -> bool {
        self.memory.token_revoked(jti, sid, sub, iat)
            || self.synced.as_ref().is_some_and(|s| s.token_revoked(jti, sid, sub, iat))
    }

    fn key_revoked(&self, key_id: &str) -> bool {
        self.memory.key_revoked(key_id) || self.synced.as_ref().is_some_and(|s| s.key_revoked(key_id))
    }
}

fn refusal_reason(refusal: Refusal) -> Reason {
    match refusal {
        Refusal::Limited => Reason::RateLimited,
        Refusal::LockedOut => Reason::LockedOut,
        Refusal::Banned => Reason::Banned,
    }
}

fn has_header(headers: &[HeaderPair<'_>], name: &str) -> bool {
    headers.iter().any(|(n, _)| n.eq_ignore_ascii_case(name))
}

impl Engine {
    /// An engine over a configuration, with no synced state.
    pub fn new(config: CompiledConfig) -> Self {
        Self::from_shared(Arc::new(config))
    }

    /// The same, sharing a configuration (one per synced version).
    pub fn from_shared(config: Arc<CompiledConfig>) -> Self {
        Self {
            keyring: config.keyring.clone(),
            keys: config.keys.clone(),
            bans: HashMap::new(),
            sync_version: 0,
            synced: View::default(),
            signing_keys: Vec::new(),
            revocations: Revocations::default(),
            token_cache: TokenCache::new(DEFAULT_CAPACITY),
            key_digests: VerifiedCache::new(DEFAULT_CAPACITY),
            key_entries: RefCell::new(HashMap::new()),
            config,
        }
    }

    fn banned(&self, ip: Option<&str>, now: u64) -> Option<u64> {
        if self.bans.is_empty() {
            return None;
        }
        let ip = ip?;
        let bucket = crate::ratelimit::ip_bucket(ip);
        [ip, bucket.as_str()].iter().find_map(|k| self.bans.get(*k)).copied().filter(|until| *until > now)
    }

    fn route<'c>(&'c self, host: &str, path: &str, method: &str) -> (&'c str, &'c CompiledPolicy) {
        self.config
            .routes
            .iter()
            .find(|r| r.matches(host, path, method))
            .map_or(("default", &self.config.default_policy), |r| (r.name.as_str(), &r.policy))
    }

    fn verify(&self, credential: Credential<'_>, now: u64, store: &dyn CounterStore) -> Result<Arc<Identity>, Reason> {
        match credential {
            Credential::Jwt(token) => self.verify_jwt(token, now, store),
            Credential::ApiKey { key, .. } => self.verify_key(KeyKindTag::Api, key, now, store),
            Credential::Service(key) => self.verify_key(KeyKindTag::Service, key, now, store),
            Credential::Admin(key) => self.verify_key(KeyKindTag::Admin, key, now, store),
            Credential::Guest(id) => Ok(Arc::new(Identity {
                method: CredentialKind::Guest,
                subject: String::new(),
                roles: Vec::new(),
                scopes: Vec::new(),
                app_id: None,
                key_id: None,
                session_id: None,
                guest_id: Some(id.to_owned()),
                key_limit: None,
            })),
        }
    }

    /// Whether a sync feed is configured but nothing has arrived from it yet.
    pub fn awaiting_first_sync(&self) -> bool {
        self.config.sync.is_some() && self.sync_version == 0
    }

    /// Whether decisions need the peer address (to skip the host call).
    pub fn needs_peer(&self) -> bool {
        self.config.rate_limits.needs_ip() || !self.bans.is_empty()
    }

    fn synced<'a>(&'a self, store: &'a dyn CounterStore) -> Option<Synced<'a>> {
        (!self.synced.is_empty()).then_some(Synced { view: &self.synced, store })
    }

    /// A key by digest: from this engine's cache, else from the config or
    /// the synced shards, checked against the synced revocations once.
    fn key_entry(
        &self,
        kind: KeyKindTag,
        digest: ApiKeyDigest,
        store: &dyn CounterStore,
    ) -> Result<Arc<KeyEntry>, Reason> {
        if let Some(entry) = self.key_entries.borrow().get(&(kind, digest)) {
            return Ok(Arc::clone(entry));
        }
        let entry = match self.keys.get(kind, &digest) {
            Some(entry) => Arc::new(entry.clone()),
            None if self.synced.is_empty() => return Err(Reason::UnknownApiKey),
            None => match self.synced.key(store, kind, &digest) {
                Ok(Some(entry)) => Arc::new(entry.with_identity(kind)),
                Ok(None) => return Err(Reason::UnknownApiKey),
                Err(_) => return Err(Reason::Unavailable),
            },
        };
        if self.synced(store).is_some_and(|s| s.key_revoked(&entry.id)) {
            return Err(Reason::Revoked);
        }
        let mut entries = self.key_entries.borrow_mut();
        if entries.len() >= DEFAULT_CAPACITY {
            entries.clear();
        }
        entries.insert((kind, digest), Arc::clone(&entry));
        Ok(entry)
    }

    fn verify_key(
        &self,
        kind: KeyKindTag,
        presented: &str,
        now: u64,
        store: &dyn CounterStore,
    ) -> Result<Arc<Identity>, Reason> {
        let cache_key = self.key_digests.key(presented);
        let (digest, known) = match self.key_digests.lookup(&cache_key) {
            Some(digest) => (digest, true),
            None => {
                crate::apikey::parse(presented).map_err(|_| Reason::MalformedApiKey)?;
                (crate::apikey::digest(presented), false)
            }
        };
        let identity = self.key_entry(kind, digest, store)?.check(&self.revocations, now)?;
        if !known {
            // Only keys that verified are remembered: garbage cannot churn it.
            self.key_digests.put(cache_key, digest);
        }
        Ok(identity)
    }

    fn verify_jwt(&self, token: &str, now: u64, store: &dyn CounterStore) -> Result<Arc<Identity>, Reason> {
        if token.len() > self.keyring.max_token_bytes {
            return Err(Reason::TokenTooLarge);
        }
        let key = self.token_cache.key(token);
        let version = self.synced.version;
        let synced = self.synced(store);
        let hit = self.token_cache.get(&key, now, |v, checked| {
            let id = &v.identity;
            let subject = Some(id.subject.as_str()).filter(|s| !s.is_empty());
            let claims = (v.jti.as_deref(), id.session_id.as_deref(), subject, v.iat);
            let revoked = |r: &dyn RevocationSource| r.token_revoked(claims.0, claims.1, claims.2, claims.3);
            // The synced set is read only when its version moved since the
            // last check: a warm token costs no shared-data read.
            if revoked(&self.revocations) || (checked != version && synced.as_ref().is_some_and(|s| revoked(s))) {
                Err(Reason::Revoked)
            } else {
                Ok(version)
            }
        });
        if let Some(hit) = hit {
            return hit;
        }
        let all = AllRevocations { memory: &self.revocations, synced };
        let verified = self.keyring.verify(token, &all, now)?;
        let identity = Arc::clone(&verified.identity);
        self.token_cache.put(key, CachedToken { verified, checked: version });
        Ok(identity)
    }

    /// Decides one request at `now_us` (microseconds since the epoch), with
    /// rate-limit counters in `store`.
    pub fn decide<'c>(&'c self, req: &Request<'c>, now_us: u64, store: &dyn CounterStore) -> Decision<'c> {
        let now = now_us / 1_000_000;
        if !crate::route::is_single_authority(req.authority) {
            // Two Host headers joined with a comma, or other junk: no host
            // rule could match it safely, so answer 400 rather than guess.
            return Decision::Deny(Denial::new(Reason::InvalidPath));
        }
        let normalized = match path::normalize(req.path, self.config.path_limits) {
            Ok(n) => n,
            Err(_) => return Decision::Deny(Denial::new(Reason::InvalidPath)),
        };
        let host = host_of(req.authority);
        let folded;
        let match_path = if self.config.case_insensitive {
            folded = normalized.path.to_ascii_lowercase();
            &folded
        } else {
            &*normalized.path
        };
        let (route, policy) = self.route(&host, match_path, req.method);
        let denial = |reason: Reason| Denial {
            reason,
            route: Some(route.to_owned()),
            required_scopes: policy.scopes.clone(),
            headers: Vec::new(),
            limit_events: Vec::new(),
        };
        let deny_with =
            |reason: Reason, headers: Vec<(String, String)>| Decision::Deny(Denial { headers, ..denial(reason) });
        let deny = |reason: Reason| deny_with(reason, Vec::new());
        if policy.access == Access::Deny {
            return deny(Reason::RouteDenied);
        }
        let limits = &self.config.rate_limits;
        let ip = if self.needs_peer() { limits.client_ip(req.peer, req.headers) } else { None };
        if let Some(until) = self.banned(ip, now) {
            let retry = until.saturating_sub(now).max(1).to_string();
            return deny_with(Reason::Banned, vec![("retry-after".to_owned(), retry)]);
        }
        match limits.blocked(store, route, ip, now_us) {
            Ok(None) => {}
            Ok(Some((refusal, headers))) => return deny_with(refusal_reason(refusal), headers),
            Err(e) => {
                if let Some(d) = self.store_failure(e, route) {
                    return d;
                }
            }
        }
        let public = policy.access == Access::Public;
        let names = &self.config.headers;
        let extracted = credential::extract(req.headers, names, &self.config.api_key_prefixes, policy.allows_guests());
        let credential = match extracted {
            Ok(c) => c,
            Err(_) if public => None,
            Err(reason) => return deny(reason),
        };
        let identity = match credential.map(|c| self.verify(c, now, store)) {
            None => None,
            Some(Ok(id)) => Some(id),
            Some(Err(_)) if public => None,
            // Before the feed has delivered anything, "unknown key" only
            // means "not synced yet": say so with 503 + Retry-After rather
            // than a 401 that tells clients to log in again.
            Some(Err(Reason::UnknownKey | Reason::UnknownApiKey)) if self.awaiting_first_sync() => {
                return deny_with(Reason::Unavailable, vec![("retry-after".to_owned(), "1".to_owned())]);
            }
            Some(Err(reason)) => return deny(reason),
        };
        let permit = match policy.authorize(identity.as_deref(), req.method) {
            Ok(p) => p,
            Err(reason) => return deny(reason),
        };
        let input = LimitInput { route, ip, identity: permit.identity, headers: req.headers };
        let report = match limits.check(&input, store, now_us) {
            Ok(LimitOutcome::Pass(report)) => report,
            Ok(LimitOutcome::Refused(refusal, report)) => {
                let reason = refusal_reason(refusal);
                return Decision::Deny(Denial {
                    headers: report.headers,
                    limit_events: report.events,
                    ..denial(reason)
                });
            }
            Err(e) => match self.store_failure(e, route) {
                Some(d) => return d,
                None => LimitReport::default(),
            },
        };
        // The identity the policy lets through is the one verified (public
        // routes pass it on too), so `Allow::set` injects from `identity`.
        debug_assert_eq!(permit.identity.map(std::ptr::from_ref), identity.as_deref().map(std::ptr::from_ref));
        let mut remove: Vec<&str> = names
            .owned_values(permit.identity)
            .into_iter()
            .filter(|(n, value)| value.is_none() && has_header(req.headers, n))
            .map(|(n, _)| n)
            .collect();
        // `X_User_ID` is `X-User-ID` to CGI, WSGI and PHP upstreams: strip
        // underscore spellings of every owned name too.
        remove.extend(
            req.headers.iter().map(|&(n, _)| n).filter(|n| {
                n.contains('_') && names.owned().iter().any(|o| crate::identity::same_but_underscores(n, o))
            }),
        );
        if self.config.hide_credentials {
            remove.extend(names.key_headers().into_iter().filter(|n| has_header(req.headers, n)));
            if matches!(credential, Some(Credential::ApiKey { in_authorization: true, .. })) {
                remove.push("authorization");
            }
        }
        Decision::Allow(Allow {
            route,
            rewrite_path: normalized.changed.then(|| normalized.target()),
            identity,
            remove,
            names,
            response_headers: report.headers.clone(),
            limits: report,
        })
    }

    /// A counter store failure: deny with 503 when failing closed, else
    /// `None` (limits are skipped for this request).
    fn store_failure<'c>(&self, _error: StoreError, route: &str) -> Option<Decision<'c>> {
        (self.config.failure_mode == FailureMode::Closed).then(|| {
            let mut denial = Denial::new(Reason::Unavailable);
            denial.route = Some(route.to_owned());
            Decision::Deny(denial)
        })
    }
}
