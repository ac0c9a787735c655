//! The one error type of the host API: what went wrong, with the module's logs and stderr so a
//! failing test shows why without a rerun.

use std::fmt;

use crate::state::LogLine;

/// Why a call into the VM did not complete normally.
#[derive(Debug)]
pub enum HostError {
    /// The module trapped: a panic (the filter builds with `panic = "abort"`), `unreachable`,
    /// an out-of-bounds access, running out of fuel, or an unimplemented host call.
    Trap {
        /// The callback that was running (e.g. `proxy_on_request_headers`).
        callback: String,
        /// The trap with its wasm backtrace.
        message: String,
        /// Set when the trap came from a host call this host does not implement.
        unimplemented: Option<String>,
        /// What the module wrote to stderr (a Rust panic message lands here).
        stderr: String,
        /// The module's log lines.
        logs: Vec<LogLine>,
    },
    /// `proxy_on_vm_start` returned false.
    VmStartFailed {
        /// The module's log lines.
        logs: Vec<LogLine>,
    },
    /// `proxy_on_configure` returned false: the plugin configuration was rejected.
    ConfigureRejected {
        /// The module's log lines (the rejection reason should be among them).
        logs: Vec<LogLine>,
    },
    /// The test misused the host (unknown stream, VM already crashed, bad module).
    Usage(String),
}

impl HostError {
    /// Whether this is a trap in the module.
    pub fn is_trap(&self) -> bool {
        matches!(self, HostError::Trap { .. })
    }

    /// The unimplemented host call the module reached, if that was the cause.
    pub fn unimplemented_call(&self) -> Option<&str> {
        match self {
            HostError::Trap { unimplemented, .. } => unimplemented.as_deref(),
            _ => None,
        }
    }

    /// The module's log lines captured with the error.
    pub fn logs(&self) -> &[LogLine] {
        match self {
            HostError::Trap { logs, .. }
            | HostError::VmStartFailed { logs }
            | HostError::ConfigureRejected { logs } => logs,
            HostError::Usage(_) => &[],
        }
    }

    /// All log messages joined by newlines, for `contains` assertions.
    pub fn log_text(&self) -> String {
        self.logs().iter().map(|l| l.message.as_str()).collect::<Vec<_>>().join("\n")
    }
}

fn write_logs(f: &mut fmt::Formatter<'_>, logs: &[LogLine]) -> fmt::Result {
    // The tail is what explains a failure; a long run would drown the message.
    let skip = logs.len().saturating_sub(30);
    if skip > 0 {
        writeln!(f, "  … {skip} earlier log lines")?;
    }
    for line in &logs[skip..] {
        writeln!(f, "  {line}")?;
    }
    Ok(())
}

impl fmt::Display for HostError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            HostError::Trap { callback, message, unimplemented, stderr, logs } => {
                match unimplemented {
                    Some(call) => writeln!(f, "unimplemented host call {call} (during {callback})")?,
                    None => writeln!(f, "trap in {callback}: {message}")?,
                }
                if !stderr.is_empty() {
                    writeln!(f, "module stderr:\n{stderr}")?;
                }
                writeln!(f, "module logs:")?;
                write_logs(f, logs)
            }
            HostError::VmStartFailed { logs } => {
                writeln!(f, "proxy_on_vm_start returned false; module logs:")?;
                write_logs(f, logs)
            }
            HostError::ConfigureRejected { logs } => {
                writeln!(f, "proxy_on_configure returned false (configuration rejected); module logs:")?;
                write_logs(f, logs)
            }
            HostError::Usage(message) => write!(f, "host misuse: {message}"),
        }
    }
}

impl std::error::Error for HostError {}
