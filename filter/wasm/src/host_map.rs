//! The request header map as the host serializes it, in one host call.
//!
//! The SDK's `hostcalls::get_map_bytes` makes the same call, then copies
//! every header into its own `String` and `Vec`: two allocations per header,
//! per request. Here the host's buffer is kept whole and
//! `meshgate_core::header_map::parse` lends the headers out of it. The SDK
//! does not expose the raw call, so it is declared here, the one place in
//! the crate with `unsafe` (the workspace denies it; this module allows it).
//!
//! Unlike the SDK wrapper, an unexpected status is an `Err`, not a panic.

#![allow(unsafe_code)]

use proxy_wasm::types::MapType;

#[link(wasm_import_module = "env")]
unsafe extern "C" {
    // The status is read as a `u32`, not as the SDK's `Status` enum: a value
    // outside the enum would be undefined behaviour in Rust.
    fn proxy_get_header_map_pairs(map_type: u32, return_map_data: *mut *mut u8, return_map_size: *mut usize) -> u32;
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
