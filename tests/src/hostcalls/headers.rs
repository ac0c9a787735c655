//! Header maps (request/response headers and trailers, HTTP call response headers) and
//! buffers (bodies, configurations, HTTP call response body).

use wasmtime::{Linker, Result, bail};

use super::{named, named_unless_refused};
use crate::abi::{BufferType, MapType, Status, deserialize_map, serialize_map};
use crate::memory::{Ctx, read, read_string, return_bytes};
use crate::state::{Headers, VmState};

pub(super) fn add(l: &mut Linker<VmState>) -> Result<()> {
    l.func_wrap("env", "proxy_get_header_map_pairs", |mut c: Ctx<'_>, map: u32, op: u32, os: u32| {
        named_unless_refused("proxy_get_header_map_pairs", || get_pairs(&mut c, map, op, os))
    })?;
    l.func_wrap("env", "proxy_set_header_map_pairs", |mut c: Ctx<'_>, map: u32, p: u32, n: u32| {
        named_unless_refused("proxy_set_header_map_pairs", || set_pairs(&mut c, map, p, n))
    })?;
    l.func_wrap(
        "env",
        "proxy_get_header_map_value",
        |mut c: Ctx<'_>, map: u32, kp: u32, kn: u32, op: u32, os: u32| {
            named("proxy_get_header_map_value", get_value(&mut c, map, kp, kn, op, os))
        },
    )?;
    l.func_wrap(
        "env",
        "proxy_add_header_map_value",
        |mut c: Ctx<'_>, map: u32, kp: u32, kn: u32, vp: u32, vn: u32| {
            named_unless_refused("proxy_add_header_map_value", || edit(&mut c, map, kp, kn, Some((vp, vn)), Edit::Add))
        },
    )?;
    l.func_wrap(
        "env",
        "proxy_replace_header_map_value",
        |mut c: Ctx<'_>, map: u32, kp: u32, kn: u32, vp: u32, vn: u32| {
            named_unless_refused("proxy_replace_header_map_value", || {
                edit(&mut c, map, kp, kn, Some((vp, vn)), Edit::Replace)
            })
        },
    )?;
    l.func_wrap("env", "proxy_remove_header_map_value", |mut c: Ctx<'_>, map: u32, kp: u32, kn: u32| {
        named_unless_refused("proxy_remove_header_map_value", || edit(&mut c, map, kp, kn, None, Edit::Remove))
    })?;
    l.func_wrap(
        "env",
        "proxy_get_buffer_bytes",
        |mut c: Ctx<'_>, buf: u32, start: u32, max: u32, op: u32, os: u32| {
            named("proxy_get_buffer_bytes", get_buffer(&mut c, buf, start, max, op, os))
        },
    )?;
    l.func_wrap("env", "proxy_set_buffer_bytes", |mut c: Ctx<'_>, buf: u32, start: u32, size: u32, p: u32, n: u32| {
        named("proxy_set_buffer_bytes", set_buffer(&mut c, buf, start, size, p, n))
    })?;
    Ok(())
}

fn map_type(raw: u32) -> Result<MapType> {
    match MapType::from_raw(raw) {
        Some(t) => Ok(t),
        None => bail!("map type {raw} (gRPC metadata?) is not supported by this host"),
    }
}

/// The map addressed, or `None` when the current context has no such map (a root context
/// asking for request headers, or HTTP call headers outside a call response).
fn map_mut(s: &mut VmState, t: MapType) -> Option<&mut Headers> {
    match t {
        MapType::HttpCallResponseHeaders => s.call_response.as_mut().map(|r| &mut r.headers),
        MapType::HttpCallResponseTrailers => s.call_response.as_mut().map(|r| &mut r.trailers),
        _ => {
            let stream = s.stream_mut()?;
            Some(match t {
                MapType::RequestHeaders => &mut stream.request_headers,
                MapType::RequestTrailers => &mut stream.request_trailers,
                MapType::ResponseHeaders => &mut stream.response_headers,
                _ => &mut stream.response_trailers,
            })
        }
    }
}

fn get_pairs(c: &mut Ctx<'_>, map: u32, op: u32, os: u32) -> Result<Status> {
    let t = map_type(map)?;
    let Some(headers) = map_mut(c.data_mut(), t) else {
        return Ok(Status::NotFound);
    };
    let bytes = serialize_map(&headers.0);
    return_bytes(c, &bytes, op, os)?;
    Ok(Status::Ok)
}

fn set_pairs(c: &mut Ctx<'_>, map: u32, p: u32, n: u32) -> Result<Status> {
    let t = map_type(map)?;
    let raw = read(c, p, n)?;
    let Some(pairs) = deserialize_map(&raw) else {
        bail!("malformed serialized map ({n} bytes)");
    };
    let Some(headers) = map_mut(c.data_mut(), t) else {
        return Ok(Status::NotFound);
    };
    headers.0.clear();
    for (k, v) in pairs {
        headers.add(&k, &v);
    }
    Ok(Status::Ok)
}

fn get_value(c: &mut Ctx<'_>, map: u32, kp: u32, kn: u32, op: u32, os: u32) -> Result<Status> {
    let t = map_type(map)?;
    let key = read_string(c, kp, kn)?;
    let Some(headers) = map_mut(c.data_mut(), t) else {
        // Envoy has no call-response map when the call failed (reset,
        // timeout): BadArgument, which the Rust SDK turns into a panic.
        if matches!(t, MapType::HttpCallResponseHeaders | MapType::HttpCallResponseTrailers) {
            return Ok(Status::BadArgument);
        }
        return Ok(Status::NotFound);
    };
    let Some(value) = headers.get_bytes(&key).map(<[u8]>::to_vec) else {
        return Ok(Status::NotFound);
    };
    return_bytes(c, &value, op, os)?;
    Ok(Status::Ok)
}

#[derive(Clone, Copy)]
enum Edit {
    Add,
    Replace,
    Remove,
}

fn edit(c: &mut Ctx<'_>, map: u32, kp: u32, kn: u32, value: Option<(u32, u32)>, how: Edit) -> Result<Status> {
    let t = map_type(map)?;
    let key = read_string(c, kp, kn)?;
    let value = match value {
        Some((vp, vn)) => read(c, vp, vn)?,
        None => Vec::new(),
    };
    let Some(headers) = map_mut(c.data_mut(), t) else {
        return Ok(Status::NotFound);
    };
    match how {
        Edit::Add => headers.add(&key, &value),
        Edit::Replace => headers.replace(&key, &value),
        Edit::Remove => headers.remove(&key),
    }
    Ok(Status::Ok)
}

fn buffer_type(raw: u32) -> Result<BufferType> {
    match BufferType::from_raw(raw) {
        Some(t) => Ok(t),
        None => bail!("buffer type {raw} (TCP/gRPC?) is not supported by this host"),
    }
}

fn buffer_mut(s: &mut VmState, t: BufferType) -> Option<&mut Vec<u8>> {
    match t {
        BufferType::PluginConfiguration => Some(&mut s.plugin_config),
        BufferType::VmConfiguration => Some(&mut s.vm_config),
        BufferType::HttpCallResponseBody => s.call_response.as_mut().map(|r| &mut r.body),
        BufferType::RequestBody => s.stream_mut().map(|st| &mut st.request_body),
        BufferType::ResponseBody => s.stream_mut().map(|st| &mut st.response_body),
    }
}

fn get_buffer(c: &mut Ctx<'_>, buf: u32, start: u32, max: u32, op: u32, os: u32) -> Result<Status> {
    let t = buffer_type(buf)?;
    let Some(buffer) = buffer_mut(c.data_mut(), t) else {
        return Ok(Status::NotFound);
    };
    let start = (start as usize).min(buffer.len());
    let end = start.saturating_add(max as usize).min(buffer.len());
    let bytes = buffer[start..end].to_vec();
    return_bytes(c, &bytes, op, os)?;
    Ok(Status::Ok)
}

/// Replaces `size` bytes at `start` by the new data (Envoy: `start == 0, size >= len` replaces
/// the whole buffer, `start == len` appends, `size == 0` inserts).
fn set_buffer(c: &mut Ctx<'_>, buf: u32, start: u32, size: u32, p: u32, n: u32) -> Result<Status> {
    let t = buffer_type(buf)?;
    if !matches!(t, BufferType::RequestBody | BufferType::ResponseBody) {
        return Ok(Status::BadArgument);
    }
    let data = read(c, p, n)?;
    let Some(buffer) = buffer_mut(c.data_mut(), t) else {
        return Ok(Status::NotFound);
    };
    let start = (start as usize).min(buffer.len());
    let end = start.saturating_add(size as usize).min(buffer.len());
    buffer.splice(start..end, data);
    Ok(Status::Ok)
}
