//! meshgate test harness: an in-process proxy-wasm host on wasmtime that runs the filter's
//! compiled `.wasm` the way Envoy does, so the binary — not just its Rust source — is tested.
//!
//! The host speaks proxy-wasm ABI 0.2.1 (the Rust SDK 0.2.5's) and the few WASI preview1 calls
//! a `wasm32-wasip1` cdylib imports. All state is per [`Host`] / per [`Vm`] (kept in the
//! wasmtime `Store`), never global, so tests run in parallel. Every import the host does not
//! implement is linked to a stub that traps naming the call.
//!
//! Two levels of API:
//! - [`Scenario`]: one VM, one request — `Scenario::new().config(..).request(|r| ..).run()`.
//! - [`Host`] + [`Vm`]: several VMs (Envoy workers) sharing shared data, queues, metrics and
//!   the clock; streams driven step by step; HTTP callouts answered when the test decides.
//!
//! Running: `make build` (the release `.wasm`), then `cargo test -p meshgate-tests`; `make test`
//! does both. A missing or stale `.wasm` fails every filter test with "run `make build`".
//! Environment knobs: `MESHGATE_FILTER_WASM=<path>` tests another build (no staleness check),
//! `MESHGATE_TEST_LOG=1` echoes the module's logs and stderr live, `FUZZ_SEED` / `FUZZ_CASES`
//! replay or lengthen the fuzz-style test.
//!
//! Module map:
//! - [`abi`]: status codes, enums, map serialization.
//! - [`module`]: locating the built `.wasm` (missing/stale check), compiling once, linking.
//! - `hostcalls/`: the `env` host calls by domain (headers and buffers, shared data and
//!   queues, HTTP and stream control, metrics, logs/time/properties); `wasi`: WASI calls.
//! - [`state`] (per-VM store data, header maps, streams), [`shared`] (the host-wide state).
//! - [`vm`] / [`vm_stream`]: the VM lifecycle and streams; [`request`]: the request builder.
//! - [`upstream`]: answering HTTP callouts from a script or a real loopback server.
//! - [`scenario`]: the builder; [`tokens`]: HS256 JWTs and API-key helpers for tests;
//!   [`rng`]: a small seeded PRNG for fuzz-style tests.

pub mod abi;
pub mod error;
mod hostcalls;
mod memory;
pub mod module;
pub mod request;
pub mod rng;
pub mod scenario;
pub mod shared;
pub mod state;
pub mod tokens;
pub mod upstream;
pub mod vm;
pub mod vm_stream;
mod wasi;

pub use abi::LogLevel;
pub use error::HostError;
pub use hostcalls::{host_calls, refuse_host_calls, take_marks};
pub use module::Program;
pub use request::{Outcome, Request};
pub use scenario::{Scenario, ScenarioResult};
pub use shared::{Host, Metric};
pub use state::{Headers, HttpCall, HttpResponse, LocalResponse, LogLine, Stream};
pub use upstream::RealUpstream;
pub use vm::{Vm, VmOptions};
pub use vm_stream::{Action, Exchange};
