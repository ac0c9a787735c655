//! Plugin configuration: parsed and validated once, into the compiled form
//! the per-request path only looks things up in.
//!
//! Every error names the offending field (`routes[2].policy.roles_any[0]`)
//! so the log line Envoy prints at `on_configure` says what to fix.

use crate::identity::Headers;
use crate::jwk::{self, Algorithm};
use crate::jwt::{Issuer, KeyRing, VerifyKey};
use crate::keystore::{KeyEntry, KeyKindTag, KeyStore};
use crate::path::PathLimits;
use crate::policy::CompiledPolicy;
use crate::ratelimit::RateLimits;
use crate::route::Route;
use meshgate_wire::config::{FailureMode, IssuerConfig, KeyRecord, PluginConfig, ProblemDetails};
use std::collections::HashSet;

/// Largest configuration accepted, in bytes.
pub const MAX_CONFIG_BYTES: usize = 4 * 1024 * 1024;
const DEFAULT_SKEW_SECS: u64 = 30;
const DEFAULT_MAX_TOKEN_BYTES: usize = 8192;
const KNOWN_CLAIMS: [&str; 8] = ["sub", "jti", "iat", "nbf", "sid", "app_id", "roles", "scope"];

/// A configuration problem, naming the field.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("invalid plugin configuration at `{field}`: {message}")]
pub struct ConfigError {
    /// Path of the offending field, e.g. `issuers[0].keys[1]`.
    pub field: String,
    /// What is wrong.
    pub message: String,
}

impl ConfigError {
    /// Builds an error for `field`.
    pub fn new(field: impl Into<String>, message: impl Into<String>) -> Self {
        Self { field: field.into(), message: message.into() }
    }
}

/// The configuration in the form the request path uses.
#[derive(Debug, Clone)]
pub struct CompiledConfig {
    /// Route rules in order.
    pub routes: Vec<Route>,
    /// Policy when no rule matches.
    pub default_policy: CompiledPolicy,
    /// JWT issuers and keys.
    pub keyring: KeyRing,
    /// Static API/service/admin keys.
    pub keys: KeyStore,
    /// Header names.
    pub headers: Headers,
    /// Prefixes marking a bearer token as an API key.
    pub api_key_prefixes: Vec<String>,
    /// Remove key headers before forwarding.
    pub hide_credentials: bool,
    /// Behaviour when no decision can be made.
    pub failure_mode: FailureMode,
    /// Problem body verbosity.
    pub problem_details: ProblemDetails,
    /// `WWW-Authenticate` realm.
    pub realm: String,
    /// Headers added to every response.
    pub security_headers: Vec<(String, String)>,
    /// Path normalization limits.
    pub path_limits: PathLimits,
    /// Whether path matching ignores ASCII case.
    pub case_insensitive: bool,
    /// Rate limits and abuse controls.
    pub rate_limits: RateLimits,
    /// The sync feed, when configured.
    pub sync: Option<CompiledSync>,
    /// Credits and usage metering, when configured.
    pub credits: Option<crate::credits::CompiledCredits>,
}

/// The sync feed settings, validated.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CompiledSync {
    /// Envoy cluster of the control plane.
    pub cluster: String,
    /// `:authority` of feed requests.
    pub authority: String,
    /// Feed path (no query).
    pub path: String,
    /// `Authorization` value sent with feed requests.
    pub authorization: String,
    /// Long-poll wait, seconds.
    pub wait_secs: u32,
    /// Staleness limit, seconds.
    pub max_staleness_secs: u32,
    /// Behaviour when stale.
    pub on_stale: meshgate_wire::config::StalePolicy,
    /// Largest response body accepted.
    pub max_body_bytes: usize,
}

fn compile_sync(cfg: &meshgate_wire::config::SyncConfig) -> Result<CompiledSync, ConfigError> {
    if cfg.cluster.is_empty() || !crate::identity::is_header_safe_token(&cfg.cluster) {
        return Err(ConfigError::new("sync.cluster", "must be an Envoy cluster name"));
    }
    if crate::apikey::parse(&cfg.api_key).is_err() {
        return Err(ConfigError::new("sync.api_key", "must be a meshgate API key (prefix_…, valid checksum)"));
    }
    let path = cfg.path.clone().unwrap_or_else(|| "/api/v1/sync".to_owned());
    if !path.starts_with('/') || path.contains('?') || !crate::identity::is_header_safe_token(&path) {
        return Err(ConfigError::new("sync.path", "must be an absolute path without a query"));
    }
    let authority = cfg.authority.clone().unwrap_or_else(|| "meshgate-control-plane".to_owned());
    if !crate::identity::is_header_safe_token(&authority) {
        return Err(ConfigError::new("sync.authority", "must be a host name"));
    }
    let wait_secs = cfg.wait_secs.unwrap_or(30);
    if wait_secs > 300 {
        return Err(ConfigError::new("sync.wait_secs", "must be at most 300"));
    }
    Ok(CompiledSync {
        cluster: cfg.cluster.clone(),
        authority,
        path,
        authorization: format!("Bearer {}", cfg.api_key),
        wait_secs,
        max_staleness_secs: cfg.max_staleness_secs.unwrap_or(300).max(1),
        on_stale: cfg.on_stale,
        max_body_bytes: cfg.max_body_bytes.unwrap_or(meshgate_wire::sync::DEFAULT_MAX_BODY_BYTES).max(1024),
    })
}

fn compile_issuer(cfg: &IssuerConfig, index: usize, ring: &mut KeyRing, synced: bool) -> Result<(), ConfigError> {
    let field = format!("issuers[{index}]");
    if cfg.issuer.is_empty() {
        return Err(ConfigError::new(format!("{field}.issuer"), "must not be empty"));
    }
    if cfg.audiences.is_empty() || cfg.audiences.iter().any(String::is_empty) {
        return Err(ConfigError::new(format!("{field}.audiences"), "needs at least one non-empty audience"));
    }
    if cfg.keys.is_empty() && !synced {
        return Err(ConfigError::new(format!("{field}.keys"), "needs at least one key (or a sync feed)"));
    }
    let mut own_algs = Vec::new();
    for (k, jwk) in cfg.keys.iter().enumerate() {
        let kfield = format!("{field}.keys[{k}]");
        let material = jwk::compile(jwk, &kfield)?;
        own_algs.push(material.algorithm());
        let kid = match &jwk.kid {
            Some(kid) if !kid.is_empty() => kid.clone(),
            _ => return Err(ConfigError::new(format!("{kfield}.kid"), "every key needs a kid")),
        };
        if ring.keys.insert(kid.clone(), VerifyKey { issuer: index, material }).is_some() {
            return Err(ConfigError::new(format!("{kfield}.kid"), format!("kid '{kid}' is used twice")));
        }
    }
    let algorithms = match &cfg.algorithms {
        // Keys from the feed may use any supported algorithm (each key is
        // still pinned to its own).
        None if synced => vec![Algorithm::EdDsa, Algorithm::Es256, Algorithm::Hs256, Algorithm::Rs256],
        None => own_algs,
        Some(list) => list
            .iter()
            .enumerate()
            .map(|(i, name)| {
                Algorithm::from_jose(name).ok_or_else(|| {
                    ConfigError::new(format!("{field}.algorithms[{i}]"), "must be HS256, EdDSA, ES256 or RS256")
                })
            })
            .collect::<Result<_, _>>()?,
    };
    let required = cfg.required_claims.clone().unwrap_or_else(|| vec!["sub".to_owned()]);
    if let Some(bad) = required.iter().find(|c| !KNOWN_CLAIMS.contains(&c.as_str()) && c.as_str() != "exp") {
        return Err(ConfigError::new(format!("{field}.required_claims"), format!("unknown claim '{bad}'")));
    }
    let max_token_bytes = cfg.max_token_bytes.unwrap_or(DEFAULT_MAX_TOKEN_BYTES);
    if !(64..=65536).contains(&max_token_bytes) {
        return Err(ConfigError::new(format!("{field}.max_token_bytes"), "must be between 64 and 65536"));
    }
    ring.max_token_bytes = ring.max_token_bytes.max(max_token_bytes);
    ring.issuers.push(Issuer::new(
        cfg.issuer.clone(),
        cfg.audiences.iter().cloned().collect::<HashSet<_>>(),
        algorithms,
        cfg.clock_skew_secs.unwrap_or(DEFAULT_SKEW_SECS).min(3600),
        max_token_bytes,
        cfg.typ.clone(),
        required,
    ));
    Ok(())
}

fn compile_keys(store: &mut KeyStore, kind: KeyKindTag, records: &[KeyRecord], field: &str) -> Result<(), ConfigError> {
    for (i, record) in records.iter().enumerate() {
        store.insert(kind, KeyEntry::compile(record, &format!("keys.{field}[{i}]"))?);
    }
    Ok(())
}

fn security_headers(cfg: &PluginConfig) -> Result<Vec<(String, String)>, ConfigError> {
    let sh = &cfg.security_headers;
    let mut out = Vec::new();
    let mut push = |name: &str, value: &Option<String>, field: &str| {
        if let Some(v) = value {
            if !crate::identity::is_header_safe_value(v) {
                return Err(ConfigError::new(format!("security_headers.{field}"), "must be printable ASCII"));
            }
            out.push((name.to_owned(), v.clone()));
        }
        Ok(())
    };
    push("strict-transport-security", &sh.hsts, "hsts")?;
    push("x-frame-options", &sh.frame_options, "frame_options")?;
    push("content-security-policy", &sh.csp, "csp")?;
    if sh.content_type_options {
        out.push(("x-content-type-options".to_owned(), "nosniff".to_owned()));
    }
    Ok(out)
}

/// Parses and compiles the plugin configuration JSON.
pub fn compile(json: &[u8]) -> Result<CompiledConfig, ConfigError> {
    if json.len() > MAX_CONFIG_BYTES {
        return Err(ConfigError::new("$", "configuration is larger than 4 MiB"));
    }
    // Derived struct deserializers also accept a JSON array (fields by
    // position); a configuration must be an object.
    if json.iter().find(|b| !b.is_ascii_whitespace()) != Some(&b'{') {
        return Err(ConfigError::new("$", "the plugin configuration must be a JSON object"));
    }
    let de = &mut serde_json::Deserializer::from_slice(json);
    let cfg: PluginConfig = serde_path_to_error::deserialize(de).map_err(|e| {
        let path = e.path().to_string();
        ConfigError::new(if path.is_empty() || path == "." { "$".to_owned() } else { path }, e.into_inner().to_string())
    })?;
    compile_parsed(&cfg)
}

/// Compiles an already-parsed configuration.
pub fn compile_parsed(cfg: &PluginConfig) -> Result<CompiledConfig, ConfigError> {
    let case_insensitive = cfg.paths.case_insensitive;
    let routes = cfg
        .routes
        .iter()
        .enumerate()
        .map(|(i, r)| Route::compile(r, i, case_insensitive))
        .collect::<Result<Vec<_>, _>>()?;
    let default_policy = match &cfg.default_policy {
        Some(p) => CompiledPolicy::compile(p, "default_policy")?,
        None => CompiledPolicy::deny(),
    };
    let mut keyring = KeyRing::default();
    for (i, issuer) in cfg.issuers.iter().enumerate() {
        compile_issuer(issuer, i, &mut keyring, cfg.sync.is_some())?;
    }
    let mut keys = KeyStore::default();
    compile_keys(&mut keys, KeyKindTag::Api, &cfg.keys.api_keys, "api_keys")?;
    compile_keys(&mut keys, KeyKindTag::Service, &cfg.keys.service_keys, "service_keys")?;
    compile_keys(&mut keys, KeyKindTag::Admin, &cfg.keys.admin_keys, "admin_keys")?;
    let api_key_prefixes = cfg.keys.api_key_prefixes.clone().unwrap_or_else(|| vec!["mg".to_owned()]);
    if let Some(i) = api_key_prefixes.iter().position(|p| !crate::apikey::is_valid_prefix(p)) {
        return Err(ConfigError::new(format!("keys.api_key_prefixes[{i}]"), "must be 2-16 chars of [a-z0-9]"));
    }
    let realm = cfg.realm.clone().unwrap_or_else(|| "meshgate".to_owned());
    if !crate::identity::is_header_safe_value(&realm) || realm.contains('"') {
        return Err(ConfigError::new("realm", "must be printable ASCII without quotes"));
    }
    let max_path = cfg.paths.max_path_bytes.unwrap_or(8192);
    if !(16..=65536).contains(&max_path) {
        return Err(ConfigError::new("paths.max_path_bytes", "must be between 16 and 65536"));
    }
    let names: Vec<&str> = routes.iter().map(|r| r.name.as_str()).collect();
    let credits = cfg.credits.as_ref().map(|c| crate::credits::compile(c, &names, cfg.sync.is_some())).transpose()?;
    Ok(CompiledConfig {
        routes,
        default_policy,
        keyring,
        keys,
        headers: Headers::compile(&cfg.headers)?,
        api_key_prefixes,
        hide_credentials: cfg.keys.hide_credentials.unwrap_or(true),
        failure_mode: cfg.failure_mode,
        problem_details: cfg.problem_details,
        realm,
        security_headers: security_headers(cfg)?,
        path_limits: PathLimits { max_bytes: max_path, allow_parameters: cfg.paths.allow_path_parameters },
        case_insensitive,
        rate_limits: RateLimits::compile(&cfg.rate_limits)?,
        sync: cfg.sync.as_ref().map(compile_sync).transpose()?,
        credits,
    })
}
