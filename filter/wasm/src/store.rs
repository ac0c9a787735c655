//! Rate-limit counters in Envoy's shared data, visible to every worker of
//! the process, with the host's compare-and-swap versions.

use meshgate_core::ratelimit::table::{CounterStore, StoreError};
use proxy_wasm::hostcalls;
use proxy_wasm::types::{MapType, Status};

/// proxy-wasm shared data as a [`CounterStore`].
#[derive(Debug, Default, Clone, Copy)]
pub struct SharedData;

impl CounterStore for SharedData {
    fn get(&self, key: &str) -> Result<(Option<Vec<u8>>, u32), StoreError> {
        match hostcalls::get_shared_data(key) {
            Ok((value, cas)) => Ok((value, cas.unwrap_or(0))),
            Err(_) => Err(StoreError::Unavailable),
        }
    }

    fn set(&self, key: &str, value: &[u8], cas: u32) -> Result<(), StoreError> {
        match hostcalls::set_shared_data(key, Some(value), (cas != 0).then_some(cas)) {
            Ok(()) => Ok(()),
            Err(Status::CasMismatch) => Err(StoreError::Conflict),
            Err(_) => Err(StoreError::Unavailable),
        }
    }
}

/// The `:status` of a dispatched call's response, or `None` when the call
/// failed without one (reset, timeout, connection cut mid-body). Envoy then
/// reports 0 headers and refuses to read the map, which the SDK's
/// `get_map_value` turns into a panic — so the count is checked first.
pub fn call_status(headers: usize) -> Option<String> {
    if headers == 0 {
        return None;
    }
    hostcalls::get_map_value(MapType::HttpCallResponseHeaders, ":status").ok().flatten()
}
