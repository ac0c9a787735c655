//! Stream control (local responses, continue, close) and HTTP callouts.
//!
//! A dispatched call is only recorded; the test decides when and how it is answered (see
//! [`crate::Vm::respond_http_call`]), the way Envoy delivers a response some time later.

use wasmtime::{Linker, Result, bail};

use super::named;
use crate::abi::{Status, StreamType, deserialize_map};
use crate::memory::{Ctx, read, read_string, write_u32};
use crate::state::{Flow, Headers, HttpCall, LocalResponse, VmState};

pub(super) fn add(l: &mut Linker<VmState>) -> Result<()> {
    l.func_wrap(
        "env",
        "proxy_send_local_response",
        |mut c: Ctx<'_>, status: u32, dp: u32, dn: u32, bp: u32, bn: u32, hp: u32, hn: u32, grpc: i32| {
            let r = local_response(&mut c, status, (dp, dn), (bp, bn), (hp, hn), grpc);
            named("proxy_send_local_response", r)
        },
    )?;
    l.func_wrap("env", "proxy_continue_stream", |mut c: Ctx<'_>, stream: u32| {
        named("proxy_continue_stream", set_flow(&mut c, stream, Flow::Continued))
    })?;
    l.func_wrap("env", "proxy_close_stream", |mut c: Ctx<'_>, stream: u32| {
        named("proxy_close_stream", set_flow(&mut c, stream, Flow::Closed))
    })?;
    l.func_wrap(
        "env",
        "proxy_http_call",
        |mut c: Ctx<'_>,
         up: u32,
         un: u32,
         hp: u32,
         hn: u32,
         bp: u32,
         bn: u32,
         tp: u32,
         tn: u32,
         timeout: u32,
         otoken: u32| {
            let r = http_call(&mut c, (up, un), (hp, hn), (bp, bn), (tp, tn), timeout, otoken);
            named("proxy_http_call", r)
        },
    )?;
    Ok(())
}

fn read_map(c: &mut Ctx<'_>, (p, n): (u32, u32)) -> Result<Headers> {
    let raw = read(c, p, n)?;
    match deserialize_map(&raw) {
        Some(pairs) => Ok(Headers(pairs.into_iter().map(|(k, v)| (k.to_ascii_lowercase(), v)).collect())),
        None => bail!("malformed serialized map ({n} bytes)"),
    }
}

fn local_response(
    c: &mut Ctx<'_>,
    status: u32,
    details: (u32, u32),
    body: (u32, u32),
    headers: (u32, u32),
    grpc_status: i32,
) -> Result<Status> {
    let details = read_string(c, details.0, details.1)?;
    let body = read(c, body.0, body.1)?;
    let headers = read_map(c, headers)?;
    let Some(stream) = c.data_mut().stream_mut() else {
        return Ok(Status::NotFound);
    };
    // Envoy ignores a second local reply on the same stream; the first one is what the
    // client saw.
    if stream.local_response.is_none() {
        stream.local_response = Some(LocalResponse { status, details, headers, body, grpc_status });
    }
    Ok(Status::Ok)
}

fn set_flow(c: &mut Ctx<'_>, raw: u32, flow: Flow) -> Result<Status> {
    let Some(direction) = StreamType::from_raw(raw) else {
        bail!("stream type {raw} (TCP?) is not supported by this host");
    };
    let Some(stream) = c.data_mut().stream_mut() else {
        return Ok(Status::NotFound);
    };
    let slot = match direction {
        StreamType::Request => &mut stream.request_flow,
        StreamType::Response => &mut stream.response_flow,
    };
    if *slot != Flow::Closed {
        *slot = flow;
    }
    Ok(Status::Ok)
}

fn http_call(
    c: &mut Ctx<'_>,
    upstream: (u32, u32),
    headers: (u32, u32),
    body: (u32, u32),
    trailers: (u32, u32),
    timeout_ms: u32,
    otoken: u32,
) -> Result<Status> {
    let upstream = read_string(c, upstream.0, upstream.1)?;
    let headers = read_map(c, headers)?;
    let body = read(c, body.0, body.1)?;
    let trailers = read_map(c, trailers)?;
    // Envoy refuses a call without the three pseudo-headers it needs to build the request.
    if [":method", ":path", ":authority"].iter().any(|h| !headers.contains(h)) {
        return Ok(Status::BadArgument);
    }
    let s = c.data_mut();
    let token = s.next_token;
    s.next_token += 1;
    s.pending_calls.push(HttpCall {
        token,
        context_id: s.effective_context,
        upstream,
        headers,
        body,
        trailers,
        timeout_ms,
    });
    write_u32(c, otoken, token)?;
    Ok(Status::Ok)
}
