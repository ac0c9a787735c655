//! # meshgate-filter
//!
//! The proxy-wasm module Envoy loads. Thin by design: the root context
//! compiles the plugin configuration once ([`root`]); each HTTP context
//! hands the request to `meshgate-core` and maps the decision to a host
//! action ([`http`]); [`host_map`] reads the request headers in one
//! buffer; [`metrics`] counts outcomes; [`store`] keeps rate-limit counters
//! in Envoy's shared data; [`sync`] follows the control plane's feed;
//! [`credits`] meters requests and flushes usage. Every host call goes
//! through `proxy_wasm::hostcalls`, whose `Result`s are handled, rather than
//! the `Context` helpers, which `unwrap` internally; the one exception,
//! [`host_map`], declares a raw call the SDK does not expose.
//!
//! Not all panics are ours to prevent: the SDK's hostcall wrappers panic on
//! statuses the ABI does not allow for a call (a misbehaving host). Nothing
//! in this crate unwraps, indexes unchecked or panics (clippy denies it).

#![cfg_attr(not(test), deny(clippy::unwrap_used, clippy::expect_used, clippy::panic, clippy::indexing_slicing))]

pub mod credits;
pub mod host_map;
pub mod http;
pub mod metrics;
pub mod root;
pub mod store;
pub mod sync;

use proxy_wasm::traits::RootContext;
use proxy_wasm::types::LogLevel;

/// The module's entry point (`_initialize`), run once per VM.
mod entry {
    #![allow(missing_docs)]
    use super::*;

    proxy_wasm::main! {{
        proxy_wasm::set_log_level(LogLevel::Info);
        proxy_wasm::set_root_context(|_| -> Box<dyn RootContext> { Box::new(root::Root::default()) });
    }}
}
