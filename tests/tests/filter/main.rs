//! Scenario tests of the compiled filter (`make build` → `meshgate_filter.wasm`) on the
//! wasmtime host. One test binary so the 1 MB module is compiled once for all of them.

mod common;

mod allow;
mod config;
mod credits;
mod deny;
mod fuzz;
mod hot_path;
mod multi_vm;
mod paths;
mod ratelimit;
mod spoofing;
mod sync;
