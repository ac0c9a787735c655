//! Logging, time, ticks, properties and the effective context.

use wasmtime::{Linker, Result, bail};

use super::{named, tally};
use crate::abi::{LogLevel, Status};
use crate::memory::{Ctx, read, read_string, return_bytes, write_u32, write_u64};
use crate::state::{LogLine, VmState};

pub(super) fn add(l: &mut Linker<VmState>) -> Result<()> {
    l.func_wrap("env", "proxy_log", |mut c: Ctx<'_>, level: u32, ptr: u32, len: u32| {
        named("proxy_log", log(&mut c, level, ptr, len))
    })?;
    l.func_wrap("env", "proxy_get_log_level", |mut c: Ctx<'_>, out: u32| {
        let level = c.data().log_level as u32;
        named("proxy_get_log_level", write_u32(&mut c, out, level).map(|()| Status::Ok))
    })?;
    l.func_wrap("env", "proxy_get_current_time_nanoseconds", |mut c: Ctx<'_>, out: u32| {
        let now = c.data().host.lock().now_nanos;
        named("proxy_get_current_time_nanoseconds", write_u64(&mut c, out, now).map(|()| Status::Ok))
    })?;
    l.func_wrap("env", "proxy_set_tick_period_milliseconds", |mut c: Ctx<'_>, ms: u32| {
        tally("proxy_set_tick_period_milliseconds");
        c.data_mut().tick_period_ms = ms;
        Ok(Status::Ok.code())
    })?;
    l.func_wrap("env", "proxy_set_effective_context", |mut c: Ctx<'_>, id: u32| {
        tally("proxy_set_effective_context");
        let s = c.data_mut();
        if id != s.root_context_id && !s.streams.contains_key(&id) {
            return Ok(Status::BadArgument.code());
        }
        s.effective_context = id;
        Ok(Status::Ok.code())
    })?;
    l.func_wrap("env", "proxy_done", |_c: Ctx<'_>| {
        tally("proxy_done");
        Ok(Status::Ok.code())
    })?;
    l.func_wrap("env", "proxy_get_property", |mut c: Ctx<'_>, ptr: u32, len: u32, out_ptr: u32, out_len: u32| {
        named("proxy_get_property", get_property(&mut c, ptr, len, out_ptr, out_len))
    })?;
    l.func_wrap("env", "proxy_set_property", |mut c: Ctx<'_>, ptr: u32, len: u32, vptr: u32, vlen: u32| {
        named("proxy_set_property", set_property(&mut c, ptr, len, vptr, vlen))
    })?;
    Ok(())
}

fn log(c: &mut Ctx<'_>, level: u32, ptr: u32, len: u32) -> Result<Status> {
    let Some(level) = LogLevel::from_raw(level) else {
        bail!("unknown log level {level}");
    };
    let message = String::from_utf8_lossy(&read(c, ptr, len)?).into_owned();
    if let Some(name) = message.strip_prefix("MARK ") {
        // The fuel counter is refilled at each call into the VM: a stretch that
        // would span two calls is dropped (`saturating_sub` below).
        let left = c.get_fuel().unwrap_or(0);
        super::MARKS.with(|m| {
            let mut m = m.borrow_mut();
            let last = m.0;
            m.0 = left;
            if last != 0 {
                *m.1.entry(name.to_owned()).or_insert(0) += last.saturating_sub(left);
            }
        });
        return Ok(Status::Ok);
    }
    let s = c.data_mut();
    let context_id = s.effective_context;
    if std::env::var_os("MESHGATE_TEST_LOG").is_some() {
        eprintln!("[vm{} {level:?} ctx={context_id}] {message}", s.vm_number);
    }
    s.logs.push(LogLine { level, context_id, message });
    Ok(Status::Ok)
}

/// A property path arrives as NUL-separated segments; it is looked up joined with `.`.
fn property_key(raw: &str) -> String {
    raw.split('\0').collect::<Vec<_>>().join(".")
}

fn get_property(c: &mut Ctx<'_>, ptr: u32, len: u32, out_ptr: u32, out_len: u32) -> Result<Status> {
    let key = property_key(&read_string(c, ptr, len)?);
    let value = lookup_property(c.data(), &key);
    match value {
        Some(v) => {
            return_bytes(c, &v, out_ptr, out_len)?;
            Ok(Status::Ok)
        }
        None => Ok(Status::NotFound),
    }
}

/// Request-scoped properties first, then those derived from the live request headers (as
/// Envoy derives `request.*` from them), then the VM's.
fn lookup_property(s: &VmState, key: &str) -> Option<Vec<u8>> {
    if let Some(stream) = s.stream() {
        if let Some(v) = stream.properties.get(key) {
            return Some(v.clone());
        }
        let header = match key {
            "request.path" => Some(":path"),
            "request.method" => Some(":method"),
            "request.host" => Some(":authority"),
            "request.scheme" => Some(":scheme"),
            "request.id" => Some("x-request-id"),
            "request.useragent" => Some("user-agent"),
            "response.code" => {
                let status = stream.response_headers.get(":status")?;
                let code: i64 = status.parse().ok()?;
                return Some(code.to_le_bytes().to_vec());
            }
            _ => None,
        };
        if let Some(h) = header {
            return stream.request_headers.get_bytes(h).map(<[u8]>::to_vec);
        }
        if let Some(name) = key.strip_prefix("request.headers.") {
            return stream.request_headers.get_bytes(name).map(<[u8]>::to_vec);
        }
    }
    s.properties.get(key).cloned()
}

fn set_property(c: &mut Ctx<'_>, ptr: u32, len: u32, vptr: u32, vlen: u32) -> Result<Status> {
    let key = property_key(&read_string(c, ptr, len)?);
    let value = read(c, vptr, vlen)?;
    let s = c.data_mut();
    match s.stream_mut() {
        Some(stream) => stream.properties.insert(key, value),
        None => s.properties.insert(key, value),
    };
    Ok(Status::Ok)
}
