//! A no-op HTTP filter for the benchmark: reads `authorization` and sets
//! `x-bench-noop` (`1` when the header was present, `0` otherwise). No
//! configuration, no logging, no shared data: only the cost of crossing into
//! the VM and two header-map host calls.

use proxy_wasm::traits::{Context, HttpContext, RootContext};
use proxy_wasm::types::{Action, ContextType, LogLevel};

proxy_wasm::main! {{
    proxy_wasm::set_log_level(LogLevel::Warn);
    proxy_wasm::set_root_context(|_| -> Box<dyn RootContext> { Box::new(NoopRoot) });
}}

struct NoopRoot;

impl Context for NoopRoot {}

impl RootContext for NoopRoot {
    fn get_type(&self) -> Option<ContextType> {
        Some(ContextType::HttpContext)
    }

    fn create_http_context(&self, _context_id: u32) -> Option<Box<dyn HttpContext>> {
        Some(Box::new(Noop))
    }
}

struct Noop;

impl Context for Noop {}

impl HttpContext for Noop {
    fn on_http_request_headers(&mut self, _num_headers: usize, _end_of_stream: bool) -> Action {
        // Raw hostcalls: the Context helpers unwrap internally.
        let seen = matches!(
            proxy_wasm::hostcalls::get_map_value(proxy_wasm::types::MapType::HttpRequestHeaders, "authorization"),
            Ok(Some(_))
        );
        let _ = proxy_wasm::hostcalls::set_map_value(
            proxy_wasm::types::MapType::HttpRequestHeaders,
            "x-bench-noop",
            Some(if seen { "1" } else { "0" }),
        );
        Action::Continue
    }
}
