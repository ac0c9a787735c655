//! A no-op HTTP filter for the benchmark: reads `authorization` and sets
//! `x-bench-noop` (`1` when the header was present, `0` otherwise). No
//! logging, no shared data: only the cost of crossing into the VM and two
//! header-map host calls.
//!
//! The plugin configuration may name extra host work, comma-separated, to
//! price each of the calls meshgate makes per request on the host's side
//! (`bench/run.py --noop-variant NAME=MODES`):
//!
//! - `pairs`: read the whole request header map in one call
//!   (`proxy_get_header_map_pairs`, as meshgate does) instead of one header;
//! - `set-pairs`: write the whole map back with `x-bench-noop` added
//!   (`proxy_set_header_map_pairs`) instead of setting one header;
//! - `set3`: set two more request headers one by one
//!   (`proxy_replace_header_map_value`), as meshgate's two identity headers
//!   would be without a whole-map write;
//! - `time`: read the clock (`proxy_get_current_time_nanoseconds`);
//! - `response`: set one response header (meshgate's security header);
//! - `response-add`: add it instead (`proxy_add_header_map_value`, no lookup);
//! - `response2`: set two response headers.
//!
//! Nothing is parsed in the VM: the map read by `pairs` is written back as
//! it came (and `x-bench-noop` only says whether it was read), so the
//! difference to the plain no-op is the host's work and the crossings, not
//! filter logic.

#![allow(unsafe_code)]

use proxy_wasm::traits::{Context, HttpContext, RootContext};
use proxy_wasm::types::{Action, BufferType, ContextType, LogLevel, MapType};

proxy_wasm::main! {{
    proxy_wasm::set_log_level(LogLevel::Warn);
    proxy_wasm::set_root_context(|_| -> Box<dyn RootContext> { Box::new(NoopRoot::default()) });
}}

/// Which extra host calls each request makes.
#[derive(Debug, Default, Clone, Copy)]
struct Modes {
    pairs: bool,
    set_pairs: bool,
    set3: bool,
    time: bool,
    response: bool,
    response_add: bool,
    response2: bool,
}

#[derive(Default)]
struct NoopRoot {
    modes: Modes,
}

impl Context for NoopRoot {}

impl RootContext for NoopRoot {
    fn on_configure(&mut self, _size: usize) -> bool {
        let config = proxy_wasm::hostcalls::get_buffer(BufferType::PluginConfiguration, 0, usize::MAX)
            .ok()
            .flatten()
            .unwrap_or_default();
        let config = String::from_utf8_lossy(&config);
        // A JSON object (`{}`, what a test host passes for "no configuration") names no modes.
        if config.trim_start().starts_with('{') {
            return true;
        }
        for mode in config.split(',').map(str::trim).filter(|m| !m.is_empty()) {
            match mode {
                "pairs" => self.modes.pairs = true,
                "set-pairs" => self.modes.set_pairs = true,
                "set3" => self.modes.set3 = true,
                "time" => self.modes.time = true,
                "response" => self.modes.response = true,
                "response-add" => self.modes.response_add = true,
                "response2" => self.modes.response2 = true,
                _ => return false,
            }
        }
        true
    }

    fn get_type(&self) -> Option<ContextType> {
        Some(ContextType::HttpContext)
    }

    fn create_http_context(&self, _context_id: u32) -> Option<Box<dyn HttpContext>> {
        Some(Box::new(Noop { modes: self.modes }))
    }
}

struct Noop {
    modes: Modes,
}

impl Context for Noop {}

#[link(wasm_import_module = "env")]
unsafe extern "C" {
    fn proxy_get_header_map_pairs(map_type: u32, data: *mut *mut u8, size: *mut usize) -> u32;
    fn proxy_set_header_map_pairs(map_type: u32, data: *const u8, size: usize) -> u32;
}

/// The serialized request header map, in the module's memory.
fn header_pairs() -> Vec<u8> {
    let mut data: *mut u8 = std::ptr::null_mut();
    let mut size = 0usize;
    // SAFETY: the host writes a pointer and a size through valid out-pointers.
    let status = unsafe { proxy_get_header_map_pairs(MapType::HttpRequestHeaders as u32, &mut data, &mut size) };
    if status != 0 || data.is_null() {
        return Vec::new();
    }
    // SAFETY: the buffer was allocated by this module's `proxy_on_memory_allocate`
    // with capacity `size` (as the SDK's own `get_map_bytes` takes it back).
    unsafe { Vec::from_raw_parts(data, size, size) }
}

/// `map` with one more header appended (count bumped, lengths and bytes added).
fn with_header(map: &[u8], name: &str, value: &str) -> Option<Vec<u8>> {
    let (count, rest) = map.split_first_chunk::<4>()?;
    let count = u32::from_le_bytes(*count);
    let table = usize::try_from(count).ok()?.checked_mul(8)?;
    let (lengths, data) = rest.split_at_checked(table)?;
    let mut out = Vec::with_capacity(map.len() + 10 + name.len() + value.len());
    out.extend_from_slice(&(count + 1).to_le_bytes());
    out.extend_from_slice(lengths);
    out.extend_from_slice(&u32::try_from(name.len()).ok()?.to_le_bytes());
    out.extend_from_slice(&u32::try_from(value.len()).ok()?.to_le_bytes());
    out.extend_from_slice(data);
    for field in [name.as_bytes(), value.as_bytes()] {
        out.extend_from_slice(field);
        out.push(0);
    }
    Some(out)
}

impl HttpContext for Noop {
    fn on_http_request_headers(&mut self, _num_headers: usize, _end_of_stream: bool) -> Action {
        if self.modes.time {
            let _ = proxy_wasm::hostcalls::get_current_time();
        }
        let map = if self.modes.pairs { header_pairs() } else { Vec::new() };
        let seen = if self.modes.pairs {
            !map.is_empty()
        } else {
            // Raw hostcalls: the Context helpers unwrap internally.
            matches!(proxy_wasm::hostcalls::get_map_value(MapType::HttpRequestHeaders, "authorization"), Ok(Some(_)))
        };
        let value = if seen { "1" } else { "0" };
        if self.modes.set_pairs
            && let Some(out) = with_header(&map, "x-bench-noop", value)
        {
            // SAFETY: the host reads `out.len()` bytes from `out`, borrowed for the call.
            let _ = unsafe { proxy_set_header_map_pairs(MapType::HttpRequestHeaders as u32, out.as_ptr(), out.len()) };
        } else {
            let _ = proxy_wasm::hostcalls::set_map_value(MapType::HttpRequestHeaders, "x-bench-noop", Some(value));
        }
        if self.modes.set3 {
            let _ = proxy_wasm::hostcalls::set_map_value(MapType::HttpRequestHeaders, "x-user-id", Some("bench-user"));
            let _ = proxy_wasm::hostcalls::set_map_value(MapType::HttpRequestHeaders, "x-user-roles", Some("reader"));
        }
        Action::Continue
    }

    fn on_http_response_headers(&mut self, _num_headers: usize, _end_of_stream: bool) -> Action {
        if self.modes.response || self.modes.response2 {
            let _ = proxy_wasm::hostcalls::set_map_value(
                MapType::HttpResponseHeaders,
                "x-content-type-options",
                Some("nosniff"),
            );
        }
        if self.modes.response2 {
            let _ = proxy_wasm::hostcalls::set_map_value(MapType::HttpResponseHeaders, "x-frame-options", Some("DENY"));
        }
        if self.modes.response_add {
            let _ =
                proxy_wasm::hostcalls::add_map_value(MapType::HttpResponseHeaders, "x-content-type-options", "nosniff");
        }
        Action::Continue
    }
}
