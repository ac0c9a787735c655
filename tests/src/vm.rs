//! One VM: an instance of the module in its own `Store`, driven through the proxy-wasm
//! lifecycle the way an Envoy worker drives its copy of the plugin.
//!
//! Stream and callout operations are in [`crate::vm_stream`].

use std::collections::HashMap;
use std::time::Duration;

use wasmtime::{Instance, Store, TypedFunc, WasmParams, WasmResults};

use crate::abi::LogLevel;
use crate::error::HostError;
use crate::module::{FUEL_PER_CALL, Program};
use crate::shared::Host;
use crate::state::{Exports, LogLine, VmState};
use crate::wasi::ProcExit;

/// Context id of the root context (Envoy numbers contexts from 1 per VM).
pub const ROOT_CONTEXT_ID: u32 = 1;

/// How a VM is set up: the two configurations and the plugin's identity.
#[derive(Clone, Debug)]
pub struct VmOptions {
    /// Plugin configuration (Envoy `configuration`), usually JSON.
    pub plugin_config: Vec<u8>,
    /// VM configuration (Envoy `vm_config.configuration`).
    pub vm_config: Vec<u8>,
    /// `plugin_name` property.
    pub plugin_name: String,
    /// `plugin_root_id` property.
    pub root_id: String,
    /// VM id: shared queues are scoped by it.
    pub vm_id: String,
    /// Level `proxy_get_log_level` reports.
    pub log_level: LogLevel,
}

impl Default for VmOptions {
    fn default() -> Self {
        VmOptions {
            plugin_config: Vec::new(),
            vm_config: Vec::new(),
            plugin_name: "meshgate".into(),
            root_id: "meshgate".into(),
            vm_id: "meshgate".into(),
            log_level: LogLevel::Trace,
        }
    }
}

impl VmOptions {
    /// Default options with this plugin configuration.
    pub fn with_config(config: impl Into<Vec<u8>>) -> VmOptions {
        VmOptions { plugin_config: config.into(), ..VmOptions::default() }
    }
}

/// A running instance of the module.
pub struct Vm {
    pub(crate) store: Store<VmState>,
    instance: Instance,
    /// Set after a trap: the instance's state is undefined, like a crashed Envoy VM.
    crashed: Option<String>,
    pub(crate) next_context: u32,
    /// Wasm fuel (about one unit per instruction) the guest's callbacks used (see
    /// [`Vm::take_fuel`]).
    fuel: u64,
}

impl std::fmt::Debug for Vm {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Vm")
            .field("vm_number", &self.store.data().vm_number)
            .field("crashed", &self.crashed)
            .finish_non_exhaustive()
    }
}

impl Vm {
    /// Instantiates `program`, runs its start function, creates the root context and calls
    /// `proxy_on_vm_start`. The plugin is not configured yet: see [`Vm::configure`].
    pub fn new(host: &Host, program: &Program, options: VmOptions) -> Result<Vm, HostError> {
        let vm_number = {
            let mut shared = host.lock();
            shared.next_vm += 1;
            shared.next_vm - 1
        };
        let mut state = VmState::new(host.clone(), vm_number);
        state.plugin_config = options.plugin_config;
        state.vm_config = options.vm_config;
        state.log_level = options.log_level;
        state.vm_id = options.vm_id.clone();
        state.root_context_id = ROOT_CONTEXT_ID;
        state.effective_context = ROOT_CONTEXT_ID;
        let props: HashMap<String, Vec<u8>> = [
            ("plugin_name", options.plugin_name),
            ("plugin_root_id", options.root_id),
            ("plugin_vm_id", options.vm_id),
        ]
        .into_iter()
        .map(|(k, v)| (k.to_string(), v.into_bytes()))
        .collect();
        state.properties = props;
        let mut store = Store::new(&program.engine, state);
        store.set_fuel(FUEL_PER_CALL).map_err(|e| HostError::Usage(format!("{e:?}")))?;
        let instance = program
            .pre
            .instantiate(&mut store)
            .map_err(|e| HostError::Usage(format!("instantiation failed: {e:?}")))?;
        let memory = instance
            .get_memory(&mut store, "memory")
            .ok_or_else(|| HostError::Usage("module exports no memory".into()))?;
        let alloc = instance
            .get_typed_func::<u32, u32>(&mut store, "proxy_on_memory_allocate")
            .or_else(|_| instance.get_typed_func::<u32, u32>(&mut store, "malloc"))
            .map_err(|_| HostError::Usage("module exports no proxy_on_memory_allocate".into()))?;
        store.data_mut().exports = Some(Exports { memory, alloc });
        let mut vm = Vm { store, instance, crashed: None, next_context: ROOT_CONTEXT_ID + 1, fuel: 0 };
        vm.run_start()?;
        vm.call::<(u32, u32), ()>("proxy_on_context_create", ROOT_CONTEXT_ID, (ROOT_CONTEXT_ID, 0))?;
        let size = vm.store.data().vm_config.len() as u32;
        let started = vm.call::<(u32, u32), u32>("proxy_on_vm_start", ROOT_CONTEXT_ID, (ROOT_CONTEXT_ID, size))?;
        if started == Some(0) {
            return Err(HostError::VmStartFailed { logs: vm.logs().to_vec() });
        }
        Ok(vm)
    }

    /// A VM of the filter built by `make build` ([`Program::filter`]), started and configured.
    pub fn filter(host: &Host, options: VmOptions) -> Result<Vm, HostError> {
        let mut vm = Vm::new(host, Program::filter(), options)?;
        vm.configure()?;
        Ok(vm)
    }

    /// Reactor modules export `_initialize`, command modules `_start` (which may `proc_exit(0)`).
    fn run_start(&mut self) -> Result<(), HostError> {
        for name in ["_initialize", "_start"] {
            if self.instance.get_func(&mut self.store, name).is_some() {
                return match self.call::<(), ()>(name, ROOT_CONTEXT_ID, ()) {
                    Err(HostError::Trap { .. }) if self.store.data().exit_code == Some(0) => {
                        self.crashed = None;
                        Ok(())
                    }
                    other => other.map(|_| ()),
                };
            }
        }
        Ok(())
    }

    /// Calls `proxy_on_configure` with the plugin configuration; `Err(ConfigureRejected)`
    /// with the module's logs when it returns false.
    pub fn configure(&mut self) -> Result<(), HostError> {
        let size = self.store.data().plugin_config.len() as u32;
        let ok = self.call::<(u32, u32), u32>("proxy_on_configure", ROOT_CONTEXT_ID, (ROOT_CONTEXT_ID, size))?;
        if ok == Some(0) {
            return Err(HostError::ConfigureRejected { logs: self.logs().to_vec() });
        }
        Ok(())
    }

    /// Replaces the plugin configuration and configures again (an Envoy config update).
    pub fn reconfigure(&mut self, config: impl Into<Vec<u8>>) -> Result<(), HostError> {
        self.store.data_mut().plugin_config = config.into();
        self.configure()
    }

    /// Calls an exported callback with the effective context set to `context`. A missing
    /// (optional) callback returns `Ok(None)`. A trap marks the VM crashed.
    pub(crate) fn call<P: WasmParams, R: WasmResults>(
        &mut self,
        name: &str,
        context: u32,
        params: P,
    ) -> Result<Option<R>, HostError> {
        if let Some(previous) = &self.crashed {
            return Err(HostError::Usage(format!("{name} on a VM that crashed earlier: {previous}")));
        }
        let Ok(func): Result<TypedFunc<P, R>, _> = self.instance.get_typed_func(&mut self.store, name) else {
            return Ok(None);
        };
        self.store.data_mut().effective_context = context;
        self.store.set_fuel(FUEL_PER_CALL).map_err(|e| HostError::Usage(format!("{e:?}")))?;
        let result = func.call(&mut self.store, params);
        self.fuel += FUEL_PER_CALL.saturating_sub(self.store.get_fuel().unwrap_or(FUEL_PER_CALL));
        self.store.data_mut().effective_context = ROOT_CONTEXT_ID;
        match result {
            Ok(r) => Ok(Some(r)),
            Err(e) => {
                let clean_exit = e.downcast_ref::<ProcExit>().is_some_and(|p| p.0 == 0);
                let message = format!("{e:?}");
                self.crashed = Some(format!("trap in {name}"));
                let s = self.store.data_mut();
                let error = HostError::Trap {
                    callback: name.to_string(),
                    message: if clean_exit { "proc_exit(0)".into() } else { message },
                    unimplemented: s.unimplemented.take(),
                    stderr: String::from_utf8_lossy(&s.stderr).into_owned(),
                    logs: s.logs.clone(),
                };
                Err(error)
            }
        }
    }

    /// Wasm fuel the guest used since the last call (callbacks, and the allocations the host
    /// asked of it meanwhile), and resets the count. Wasmtime charges about one unit per Wasm
    /// instruction: a deterministic measure of the work a request costs inside the module,
    /// independent of the machine's load.
    pub fn take_fuel(&mut self) -> u64 {
        std::mem::take(&mut self.fuel)
    }

    /// Whether the VM trapped earlier (it refuses further calls, like a dead Envoy VM).
    pub fn crashed(&self) -> bool {
        self.crashed.is_some()
    }

    /// The module's log lines so far.
    pub fn logs(&self) -> &[LogLine] {
        &self.store.data().logs
    }

    /// Drains the log lines (to look only at what the next step logs).
    pub fn take_logs(&mut self) -> Vec<LogLine> {
        std::mem::take(&mut self.store.data_mut().logs)
    }

    /// What the module wrote to stdout.
    pub fn stdout(&self) -> String {
        String::from_utf8_lossy(&self.store.data().stdout).into_owned()
    }

    /// What the module wrote to stderr.
    pub fn stderr(&self) -> String {
        String::from_utf8_lossy(&self.store.data().stderr).into_owned()
    }

    /// The host this VM belongs to.
    pub fn host(&self) -> &Host {
        &self.store.data().host
    }

    /// The tick period the module asked for, if any.
    pub fn tick_period(&self) -> Option<Duration> {
        match self.store.data().tick_period_ms {
            0 => None,
            ms => Some(Duration::from_millis(ms.into())),
        }
    }

    /// Calls `proxy_on_tick` on the root context (whether or not a period was set: the test
    /// decides when time passes).
    pub fn tick(&mut self) -> Result<(), HostError> {
        self.call::<u32, ()>("proxy_on_tick", ROOT_CONTEXT_ID, ROOT_CONTEXT_ID)?;
        Ok(())
    }

    /// Advances the host clock by the tick period (1 s when none is set) and ticks.
    pub fn advance_and_tick(&mut self) -> Result<(), HostError> {
        let period = self.tick_period().unwrap_or(Duration::from_secs(1));
        self.host().advance(period);
        self.tick()
    }

    /// Current size of the module's linear memory, in bytes (watch it for leaks).
    pub fn memory_size(&self) -> usize {
        let data = self.store.data();
        data.exports.as_ref().map_or(0, |e| e.memory.data_size(&self.store))
    }

    /// A VM-scoped property as the module would read it.
    pub fn property(&self, key: &str) -> Option<Vec<u8>> {
        self.store.data().properties.get(key).cloned()
    }
}
