//! Reading and writing the module's linear memory from inside a host call.
//!
//! Out-of-bounds pointers trap with the call's name rather than returning
//! `INVALID_MEMORY_ACCESS`: a filter that passes a bad pointer has a bug a test must see.

use wasmtime::error::Context as _;
use wasmtime::{Caller, Result, bail, format_err};

use crate::state::{Exports, VmState};

/// Shorthand for the caller type every host call receives.
pub(crate) type Ctx<'a> = Caller<'a, VmState>;

fn exports(caller: &Ctx<'_>) -> Result<Exports> {
    caller.data().exports.clone().ok_or_else(|| format_err!("host call before the module's exports were bound"))
}

/// Copies `len` bytes at `ptr` out of the module.
pub(crate) fn read(caller: &mut Ctx<'_>, ptr: u32, len: u32) -> Result<Vec<u8>> {
    if len == 0 {
        return Ok(Vec::new());
    }
    let memory = exports(caller)?.memory;
    let mut buf = vec![0u8; len as usize];
    memory
        .read(&*caller, ptr as usize, &mut buf)
        .map_err(|_| format_err!("invalid memory access: {len} bytes at {ptr:#x}"))?;
    Ok(buf)
}

/// Reads a UTF-8 string (lossy: a key with invalid UTF-8 simply will not match).
pub(crate) fn read_string(caller: &mut Ctx<'_>, ptr: u32, len: u32) -> Result<String> {
    Ok(String::from_utf8_lossy(&read(caller, ptr, len)?).into_owned())
}

/// Writes raw bytes at `ptr`.
pub(crate) fn write(caller: &mut Ctx<'_>, ptr: u32, bytes: &[u8]) -> Result<()> {
    let memory = exports(caller)?.memory;
    memory
        .write(&mut *caller, ptr as usize, bytes)
        .map_err(|_| format_err!("invalid memory access: writing {} bytes at {ptr:#x}", bytes.len()))
}

/// Writes a little-endian `u32` at `ptr`.
pub(crate) fn write_u32(caller: &mut Ctx<'_>, ptr: u32, value: u32) -> Result<()> {
    write(caller, ptr, &value.to_le_bytes())
}

/// Writes a little-endian `u64` at `ptr`.
pub(crate) fn write_u64(caller: &mut Ctx<'_>, ptr: u32, value: u64) -> Result<()> {
    write(caller, ptr, &value.to_le_bytes())
}

/// Allocates `data.len()` bytes with the module's `proxy_on_memory_allocate` and copies `data`
/// there; returns the pointer. The module owns (and frees) the allocation.
pub(crate) fn copy_in(caller: &mut Ctx<'_>, data: &[u8]) -> Result<u32> {
    let alloc = exports(caller)?.alloc;
    let ptr = alloc.call(&mut *caller, data.len() as u32).context("proxy_on_memory_allocate failed")?;
    if ptr == 0 {
        bail!("proxy_on_memory_allocate({}) returned null", data.len());
    }
    write(caller, ptr, data)?;
    Ok(ptr)
}

/// Returns `data` through the ABI's out-parameters: allocates a copy in the module and writes
/// its pointer to `ptr_out` and its size to `size_out`. Empty data is returned as a null
/// pointer with size 0 (the SDK reads that as an empty value).
pub(crate) fn return_bytes(caller: &mut Ctx<'_>, data: &[u8], ptr_out: u32, size_out: u32) -> Result<()> {
    let ptr = if data.is_empty() { 0 } else { copy_in(caller, data)? };
    write_u32(caller, ptr_out, ptr)?;
    write_u32(caller, size_out, data.len() as u32)
}
