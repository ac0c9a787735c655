//! The root context: compiles the plugin configuration at `on_configure`
//! and hands the result to every HTTP context by `Rc`.

use crate::http::Http;
use crate::metrics::Metrics;
use crate::store::SharedData;
use meshgate_core::{Engine, compile};
use proxy_wasm::hostcalls;
use proxy_wasm::traits::{Context, HttpContext, RootContext};
use proxy_wasm::types::{BufferType, ContextType, LogLevel};
use std::rc::Rc;

/// Per-VM state shared by HTTP contexts.
#[derive(Default)]
pub struct Root {
    engine: Option<Rc<Engine>>,
    metrics: Rc<Metrics>,
}

fn log(level: LogLevel, message: &str) {
    let _ = hostcalls::log(level, message);
}

impl Context for Root {}

impl RootContext for Root {
    fn on_configure(&mut self, _size: usize) -> bool {
        let bytes = match hostcalls::get_buffer(BufferType::PluginConfiguration, 0, usize::MAX) {
            Ok(Some(bytes)) => bytes,
            Ok(None) => Vec::from(&b"{}"[..]),
            Err(status) => {
                log(LogLevel::Error, &format!("meshgate: cannot read plugin configuration: {status:?}"));
                return false;
            }
        };
        match compile(&bytes) {
            Ok(config) => {
                if let Err(err) = config.rate_limits.init(&SharedData) {
                    log(LogLevel::Error, &format!("meshgate: cannot create rate-limit counters: {err}"));
                    return false;
                }
                log(
                    LogLevel::Info,
                    &format!(
                        "meshgate: configured {} routes, {} issuers, {} signing keys",
                        config.routes.len(),
                        config.keyring.issuers.len(),
                        config.keyring.keys.len()
                    ),
                );
                self.metrics = Rc::new(Metrics::define(&config));
                self.engine = Some(Rc::new(Engine::new(config)));
                true
            }
            Err(err) => {
                log(LogLevel::Error, &format!("meshgate: {err}"));
                false
            }
        }
    }

    fn create_http_context(&self, _context_id: u32) -> Option<Box<dyn HttpContext>> {
        Some(Box::new(Http::new(self.engine.clone(), Rc::clone(&self.metrics))))
    }

    fn get_type(&self) -> Option<ContextType> {
        Some(ContextType::HttpContext)
    }
}
