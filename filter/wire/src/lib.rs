//! # meshgate-wire
//!
//! Serde types exchanged by the meshgate control plane and the filter. No
//! I/O and no validation beyond shape: the filter's core compiles these into
//! checked forms, and the control plane produces them.
//!
//! * [`config`] — the plugin configuration JSON Envoy hands the filter.
//! * [`ratelimit`] — its rate-limit and abuse-control section.
//! * [`sync`] — the feed that pushes keys and revocations to filters.
//! * [`credits`] — metering: config section, pushed balances, usage reports.

pub mod config;
pub mod credits;
pub mod ratelimit;
pub mod sync;

pub use config::PluginConfig;
