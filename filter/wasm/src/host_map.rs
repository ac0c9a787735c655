//! The request header map as the host serializes it, read and written in
//! one host call each, and single-header edits.
//!
//! The SDK's `hostcalls::get_map_bytes` makes the same call, then copies
//! every header into its own `String` and `Vec`: two allocations per header,
//! per request. Here the host's buffer is kept whole and
//! `meshgate_core::header_map::parse` lends the headers out of it. Writing,
//! the SDK's `set_map_bytes` wants every value as one byte slice, so the
//! identity's role and scope lists would first be joined into new strings;
//! [`set`] takes the buffer `meshgate_core::header_map::serialize` wrote
//! them into directly. The SDK does not expose the raw calls, so they are
//! declared here, the one place in the crate with `unsafe` (the workspace
//! denies it; this module allows it).
//!
//! [`replace`] and [`remove`] edit one header: the SDK has them too, but
//! panics on a status it does not expect. Here, as for the whole map, an
//! unexpected status is an `Err`, not a panic (a panic would take the VM,
//! and every stream on its worker, down with it).

#![allow(unsafe_code)]

use proxy_wasm::types::MapType;

#[link(wasm_import_module = "env")]
unsafe extern "C" {
    // The status is read as a `u32`, not as the SDK's `Status` enum: a value
    // outside the enum would be undefined behaviour in Rust.
    fn proxy_get_header_map_pairs(map_type: u32, return_map_data: *mut *mut u8, return_map_size: *mut usize) -> u32;
    fn proxy_set_header_map_pairs(map_type: u32, map_data: *const u8, map_size: usize) -> u32;
    fn proxy_replace_header_map_value(
        map_type: u32,
        key_data: *const u8,
        key_size: usize,
        value_data: *const u8,
        value_size: usize,
    ) -> u32;
    fn proxy_remove_header_map_value(map_type: u32, key_data: *const u8, key_size: usize) -> u32;
}

/// A status other than `Ok` returned by a raw host call.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct HostStatus(pub u32);

/// The serialized map `map_type`, owned by the module (freed on drop), or
/// the host's status when it refused. No buffer means an empty map.
pub fn get(map_type: MapType) -> Result<Vec<u8>, HostStatus> {
    let mut data: *mut u8 = std::ptr::null_mut();
    let mut size: usize = 0;
    // SAFETY: the host writes a pointer and a size through the two
    // out-pointers, which are valid for the duration of the call.
    let status = unsafe { proxy_get_header_map_pairs(map_type as u32, &mut data, &mut size) };
    if status != 0 {
        return Err(HostStatus(status));
    }
    if data.is_null() {
        return Ok(Vec::new());
    }
    // SAFETY: the host got `data` from this module's allocator export,
    // `proxy_on_memory_allocate(size)` (the SDK's): a `Vec<u8>` of capacity
    // `size` turned into a leaked `Box<[u8]>` of length `size`, which the
    // host then filled. Taking it back as a `Vec` of length and capacity
    // `size` is what the SDK's own `get_map_bytes` does; dropping it frees it.
    Ok(unsafe { Vec::from_raw_parts(data, size, size) })
}

/// Replaces the map `map_type` with the serialized map `map` (Envoy removes
/// every header, then adds the pairs in order).
pub fn set(map_type: MapType, map: &[u8]) -> Result<(), HostStatus> {
    // SAFETY: the host only reads `map.len()` bytes from `map.as_ptr()`,
    // which stay borrowed for the duration of the call.
    let status = unsafe { proxy_set_header_map_pairs(map_type as u32, map.as_ptr(), map.len()) };
    if status == 0 { Ok(()) } else { Err(HostStatus(status)) }
}

/// Sets header `name` of `map_type` to `value`, replacing any value it had
/// (Envoy's `setCopy`).
pub fn replace(map_type: MapType, name: &str, value: &[u8]) -> Result<(), HostStatus> {
    // SAFETY: the host only reads `name.len()` and `value.len()` bytes from
    // the two pointers, which stay borrowed for the duration of the call.
    let status = unsafe {
        proxy_replace_header_map_value(map_type as u32, name.as_ptr(), name.len(), value.as_ptr(), value.len())
    };
    if status == 0 { Ok(()) } else { Err(HostStatus(status)) }
}

/// Removes every value of header `name` from `map_type`.
pub fn remove(map_type: MapType, name: &str) -> Result<(), HostStatus> {
    // SAFETY: the host only reads `name.len()` bytes from `name.as_ptr()`.
    let status = unsafe { proxy_remove_header_map_value(map_type as u32, name.as_ptr(), name.len()) };
    if status == 0 { Ok(()) } else { Err(HostStatus(status)) }
}
