//! The `env` module: proxy-wasm host calls, one file per domain.
//!
//! Every call returns a [`Status`] code. A host-side failure (bad pointer, malformed map,
//! an argument this host does not model) traps with the call's name instead of returning a
//! status the SDK would turn into a panic far from the cause.

use wasmtime::error::Context as _;
use wasmtime::{Linker, Result};

use crate::abi::Status;
use crate::state::VmState;

mod headers;
mod http;
mod metrics;
mod misc;
mod shared_data;

/// Adds every implemented `env` host call to `linker`.
pub(crate) fn add_to_linker(linker: &mut Linker<VmState>) -> Result<()> {
    misc::add(linker)?;
    headers::add(linker)?;
    shared_data::add(linker)?;
    http::add(linker)?;
    metrics::add(linker)?;
    Ok(())
}

/// Names the host call in an error, and turns a status into the returned code.
pub(crate) fn named(name: &'static str, result: Result<Status>) -> Result<u32> {
    result.map(Status::code).context(name)
}
