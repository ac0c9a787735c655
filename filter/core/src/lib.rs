//! # meshgate-core
//!
//! Every decision the meshgate filter makes, as pure functions of the
//! request, the compiled configuration, the dynamic state and the current
//! time. No proxy-wasm here: the wasm crate only feeds requests in and maps
//! [`engine::Decision`]s to host actions, so everything below is tested
//! natively.
//!
//! | module | what it decides |
//! |---|---|
//! | [`config`] | plugin JSON → validated [`config::CompiledConfig`], errors naming the field |
//! | [`path`] | request-target normalization, ambiguous encodings refused |
//! | [`route`] | first-match route table (host, path exact/prefix/template, methods) |
//! | [`header_map`] | the host's serialized header map, parsed in place |
//! | [`credential`] | which single credential a request carries |
//! | [`jwk`], [`jwt`] | keys pinned to algorithms; JWT verification |
//! | [`apikey`], [`keystore`] | the API key format; digest lookup of keys |
//! | [`token_cache`] | verified JWTs by digest, re-checked for expiry and revocation |
//! | [`revocation`] | revoked tokens, sessions, subjects and keys (O(1)) |
//! | [`policy`] | authorization: 401 vs 403, roles, scopes, apps, guests |
//! | [`identity`] | identity headers: owned names, safe values, injection |
//! | [`ratelimit`] | GCRA limits and abuse lockouts over CAS shared counters |
//! | [`denial`] | status, `WWW-Authenticate` and problem+json per reason |
//! | [`sync`] | applying the control plane's feed: versions, deltas, all-or-nothing |
//! | [`credits`] | metering: which account pays, the local budget, usage reports |
//! | [`engine`] | the pipeline tying these together |

#![cfg_attr(not(test), deny(clippy::unwrap_used, clippy::expect_used, clippy::panic))]

pub mod apikey;
pub mod config;
pub mod credential;
pub mod credits;
pub mod denial;
pub mod ed25519;
pub mod engine;
pub mod es256;
pub mod header_map;
mod hex;
pub mod identity;
pub mod jwk;
pub mod jwt;
pub mod keystore;
pub mod path;
pub mod policy;
pub mod prehashed;
pub mod ratelimit;
pub mod revocation;
pub mod route;
pub mod sync;
pub mod token_cache;

pub use config::{CompiledConfig, ConfigError, compile};
pub use denial::{Denial, LocalResponse, Reason};
pub use engine::{Decision, Engine, Request};
