//! Finding, checking and compiling the filter's `.wasm`, and linking it to this host.
//!
//! Compiling a release filter with cranelift takes seconds, so the filter is compiled once per
//! test process ([`Program::filter`]) and every VM is a cheap instantiation of the same
//! pre-linked module.

use std::path::{Path, PathBuf};
use std::sync::OnceLock;
use std::time::SystemTime;

use wasmtime::{Config, Engine, ExternType, InstancePre, Linker, Module, Result, bail};

use crate::state::VmState;
use crate::{hostcalls, wasi};

/// Fuel for one host→module call: far more than any request needs, small enough that an
/// endless loop in the filter ends as a trap within seconds instead of hanging the suite.
pub(crate) const FUEL_PER_CALL: u64 = 2_000_000_000;

/// A compiled, linked module every [`crate::Vm`] is instantiated from.
pub struct Program {
    pub(crate) engine: Engine,
    pub(crate) module: Module,
    pub(crate) pre: InstancePre<VmState>,
    unimplemented: Vec<String>,
}

impl std::fmt::Debug for Program {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Program").field("module", &self.module.name()).finish_non_exhaustive()
    }
}

/// `MESHGATE_PERFMAP=1` makes compiled Wasm functions visible to `perf` (wasmtime writes
/// `/tmp/perf-<pid>.map`): build the filter with symbols and run `hot_path::profile_loop`
/// under `perf record` to see where a request's instructions go (README, "Profiling").
fn engine() -> Result<Engine> {
    let mut config = Config::new();
    config.consume_fuel(true);
    if std::env::var_os("MESHGATE_PERFMAP").is_some() {
        config.profiler(wasmtime::ProfilingStrategy::PerfMap);
    }
    Engine::new(&config)
}

impl Program {
    /// Compiles and links a module from `.wasm` bytes or WAT text (for host self-tests).
    pub fn from_bytes(bytes: &[u8]) -> Result<Program> {
        let engine = engine()?;
        let module = Module::new(&engine, bytes)?;
        Program::link(engine, module)
    }

    /// The filter built by `make build`, compiled once per process. Panics with an
    /// actionable message when the file is missing, stale or does not compile.
    pub fn filter() -> &'static Program {
        static FILTER: OnceLock<std::result::Result<Program, String>> = OnceLock::new();
        let loaded = FILTER.get_or_init(|| {
            let path = check_filter_wasm()?;
            let bytes = std::fs::read(&path).map_err(|e| format!("{}: {e}", path.display()))?;
            Program::from_bytes(&bytes).map_err(|e| format!("{}: {e:?}", path.display()))
        });
        match loaded {
            Ok(program) => program,
            Err(message) => panic!("{message}"),
        }
    }

    fn link(engine: Engine, module: Module) -> Result<Program> {
        let mut linker = Linker::new(&engine);
        hostcalls::add_to_linker(&mut linker)?;
        wasi::add_to_linker(&mut linker)?;
        let unimplemented = stub_unknown_imports(&mut linker, &module)?;
        let pre = linker.instantiate_pre(&module)?;
        Ok(Program { engine, module, pre, unimplemented })
    }

    /// Imports this host does not implement (linked to trapping stubs), as `module::name`.
    pub fn unimplemented_imports(&self) -> &[String] {
        &self.unimplemented
    }
}

/// Links every function import the host does not implement to a stub that traps naming the
/// call, so a test that reaches it fails saying which call is missing — never a silent success.
fn stub_unknown_imports(linker: &mut Linker<VmState>, module: &Module) -> Result<Vec<String>> {
    let mut stubbed = Vec::new();
    for import in module.imports() {
        let ExternType::Func(ty) = import.ty() else {
            bail!("import {}::{} is not a function", import.module(), import.name());
        };
        let call = format!("{}::{}", import.module(), import.name());
        let name = call.clone();
        let defined = linker.func_new(import.module(), import.name(), ty, move |mut caller, _, _| {
            caller.data_mut().unimplemented = Some(name.clone());
            bail!("unimplemented host call {name}")
        });
        // An error means the name is already defined: the host implements it.
        if defined.is_ok() {
            stubbed.push(call);
        }
    }
    Ok(stubbed)
}

/// Root of the cargo workspace (the parent of this crate).
pub fn workspace_root() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).parent().map(Path::to_path_buf).unwrap_or_else(|| PathBuf::from(".."))
}

/// Path of the release filter: `MESHGATE_FILTER_WASM` when set, else the workspace's
/// `target/wasm32-wasip1/release/meshgate_filter.wasm`.
pub fn filter_wasm_path() -> PathBuf {
    match std::env::var_os("MESHGATE_FILTER_WASM") {
        Some(p) => PathBuf::from(p),
        None => workspace_root().join("target/wasm32-wasip1/release/meshgate_filter.wasm"),
    }
}

/// Fails when the `.wasm` is missing or older than any source file under `filter/`.
fn check_filter_wasm() -> std::result::Result<PathBuf, String> {
    let path = filter_wasm_path();
    let hint = "run `make build`";
    let built = std::fs::metadata(&path)
        .and_then(|m| m.modified())
        .map_err(|_| format!("meshgate_filter.wasm is missing ({}): {hint}", path.display()))?;
    if std::env::var_os("MESHGATE_FILTER_WASM").is_none() {
        let sources = workspace_root().join("filter");
        if let Some((newest, when)) = newest_file(&sources)
            && when > built
        {
            return Err(format!(
                "meshgate_filter.wasm is stale ({} is newer than {}): {hint}",
                newest.display(),
                path.display()
            ));
        }
    }
    Ok(path)
}

/// Newest Rust source file under `dir`, skipping build output and test, bench and example
/// directories (they do not go into the `.wasm`). Manifests are not compared: cargo does not
/// relink when a `Cargo.toml` edit changes nothing, so its mtime would flag a fresh build.
fn newest_file(dir: &Path) -> Option<(PathBuf, SystemTime)> {
    let mut newest: Option<(PathBuf, SystemTime)> = None;
    let mut stack = vec![dir.to_path_buf()];
    while let Some(d) = stack.pop() {
        let Ok(entries) = std::fs::read_dir(&d) else {
            continue;
        };
        for entry in entries.flatten() {
            let p = entry.path();
            let Ok(meta) = entry.metadata() else { continue };
            if meta.is_dir() {
                let skip = ["target", "tests", "benches", "examples"];
                if p.file_name().is_some_and(|n| !skip.iter().any(|s| n == *s)) {
                    stack.push(p);
                }
            } else if p.extension().is_some_and(|e| e == "rs")
                && let Ok(m) = meta.modified()
                && newest.as_ref().is_none_or(|(_, t)| m > *t)
            {
                newest = Some((p, m));
            }
        }
    }
    newest
}
