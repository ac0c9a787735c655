//! The `env` module: proxy-wasm host calls, one file per domain.
//!
//! Every call returns a [`Status`] code. A host-side failure (bad pointer, malformed map,
//! an argument this host does not model) traps with the call's name instead of returning a
//! status the SDK would turn into a panic far from the cause.

use std::cell::RefCell;
use std::collections::BTreeMap;

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

thread_local! {
    /// Host calls made on this thread, by name (see [`host_calls`]).
    static TALLY: RefCell<BTreeMap<&'static str, u64>> = const { RefCell::new(BTreeMap::new()) };
}

thread_local! {
    /// Host calls that answer a status on this thread instead of doing their work (see
    /// [`refuse_host_calls`]).
    static REFUSED: RefCell<BTreeMap<&'static str, Status>> = const { RefCell::new(BTreeMap::new()) };
}

/// Makes the named header-map calls (`proxy_get_header_map_pairs`, and the edits:
/// `proxy_replace_header_map_value`, `proxy_set_header_map_pairs`, …) answer `status` on this
/// thread without doing anything, as a failing host would; an empty list restores them. For
/// the paths a real host failure takes.
pub fn refuse_host_calls(names: &[&'static str], status: Status) {
    REFUSED.with(|r| *r.borrow_mut() = names.iter().map(|&n| (n, status)).collect());
}

/// [`named`], unless `name` is refused on this thread (see [`refuse_host_calls`]): then
/// `work` does not run and the call answers the refusal's status.
pub(crate) fn named_unless_refused(name: &'static str, work: impl FnOnce() -> Result<Status>) -> Result<u32> {
    let refused = REFUSED.with(|r| r.borrow().get(name).copied());
    named(name, refused.map_or_else(work, Ok))
}

/// Counts one call of `name` on this thread.
pub(crate) fn tally(name: &'static str) {
    TALLY.with(|t| *t.borrow_mut().entry(name).or_default() += 1);
}

/// The host calls the guest made on this thread since the last call, by name, and resets
/// the count. Each crossing of the Wasm boundary costs far more in V8 than the work
/// behind most calls, so tests pin how many a request makes.
pub fn host_calls() -> BTreeMap<&'static str, u64> {
    TALLY.with(|t| std::mem::take(&mut *t.borrow_mut()))
}

thread_local! {
    /// Fuel left at the last `MARK` log line, and the fuel spent between marks so far,
    /// by the name of the mark that ends each stretch (see [`take_marks`]).
    pub(crate) static MARKS: RefCell<(u64, BTreeMap<String, u64>)> = const { RefCell::new((0, BTreeMap::new())) };
}

/// Wasm instructions (fuel) spent between log lines `MARK <name>` on this thread, summed
/// by the name ending each stretch, and resets them. A profiling aid: put
/// `hostcalls::log(LogLevel::Critical, "MARK parse")` lines into a filter build by hand
/// and run `hot_path::profile_loop` (README, "Profiling the filter"). Marked lines are
/// not kept as log lines. A stretch spans one call into the VM only.
pub fn take_marks() -> BTreeMap<String, u64> {
    MARKS.with(|m| std::mem::take(&mut m.borrow_mut().1))
}

/// Names the host call in an error, and turns a status into the returned code.
pub(crate) fn named(name: &'static str, result: Result<Status>) -> Result<u32> {
    tally(name);
    result.map(Status::code).context(name)
}
