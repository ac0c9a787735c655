//! HTTP streams, HTTP callouts and queue notifications on a [`Vm`].

use crate::error::HostError;
use crate::request::{Outcome, Request};
use crate::state::{Flow, Headers, HttpCall, HttpResponse, Stream};
use crate::vm::{ROOT_CONTEXT_ID, Vm};

/// What a stream callback returned.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Action {
    /// `Continue`.
    Continue,
    /// `Pause` (Envoy's `StopIteration`).
    Pause,
}

/// A request sent through [`Vm::send`]: its context id and where it stands.
#[derive(Clone, Debug)]
pub struct Exchange {
    /// The HTTP context id (use it to continue the stream).
    pub id: u32,
    /// The filter's decision so far.
    pub outcome: Outcome,
}

impl Vm {
    /// Creates an HTTP context for `request` (`proxy_on_context_create`) without sending
    /// anything yet; returns its id.
    pub fn open_stream(&mut self, request: &Request) -> Result<u32, HostError> {
        let id = self.next_context;
        self.next_context += 1;
        let stream = Stream::new(request.header_map(), request.properties());
        self.store.data_mut().streams.insert(id, stream);
        self.call::<(u32, u32), ()>("proxy_on_context_create", id, (id, ROOT_CONTEXT_ID))?;
        Ok(id)
    }

    /// The host-side state of a stream.
    pub fn stream(&self, id: u32) -> Result<&Stream, HostError> {
        self.store.data().streams.get(&id).ok_or_else(|| HostError::Usage(format!("no stream {id}")))
    }

    fn stream_mut(&mut self, id: u32) -> Result<&mut Stream, HostError> {
        self.store.data_mut().streams.get_mut(&id).ok_or_else(|| HostError::Usage(format!("no stream {id}")))
    }

    /// The filter's decision on a stream so far.
    pub fn outcome(&self, id: u32) -> Result<Outcome, HostError> {
        Ok(Outcome::of(self.stream(id)?))
    }

    /// Runs a stream callback and records its verdict for the direction it addresses.
    fn stream_callback<P: wasmtime::WasmParams>(
        &mut self,
        name: &str,
        id: u32,
        params: P,
        response: bool,
    ) -> Result<Action, HostError> {
        let returned = self.call::<P, u32>(name, id, params)?;
        let action = match returned {
            Some(1) => Action::Pause,
            _ => Action::Continue,
        };
        let stream = self.stream_mut(id)?;
        let flow = if response { &mut stream.response_flow } else { &mut stream.request_flow };
        if *flow != Flow::Closed {
            *flow = match action {
                Action::Continue => Flow::Continued,
                Action::Pause => Flow::Paused,
            };
        }
        Ok(action)
    }

    /// `proxy_on_request_headers` with the stream's current request headers.
    pub fn request_headers(&mut self, id: u32, end_of_stream: bool) -> Result<Action, HostError> {
        let count = self.stream(id)?.request_headers.len() as u32;
        self.stream_callback("proxy_on_request_headers", id, (id, count, end_of_stream as u32), false)
    }

    /// Appends `chunk` to the request body and calls `proxy_on_request_body`.
    pub fn request_body(&mut self, id: u32, chunk: &[u8], end_of_stream: bool) -> Result<Action, HostError> {
        let stream = self.stream_mut(id)?;
        stream.request_body.extend_from_slice(chunk);
        let size = stream.request_body.len() as u32;
        self.stream_callback("proxy_on_request_body", id, (id, size, end_of_stream as u32), false)
    }

    /// Sets request trailers and calls `proxy_on_request_trailers`.
    pub fn request_trailers(&mut self, id: u32, trailers: Headers) -> Result<Action, HostError> {
        let count = trailers.len() as u32;
        self.stream_mut(id)?.request_trailers = trailers;
        self.stream_callback("proxy_on_request_trailers", id, (id, count), false)
    }

    /// Sets the upstream's response headers and calls `proxy_on_response_headers`.
    pub fn response_headers(&mut self, id: u32, headers: Headers, end_of_stream: bool) -> Result<Action, HostError> {
        let count = headers.len() as u32;
        self.stream_mut(id)?.response_headers = headers;
        self.stream_callback("proxy_on_response_headers", id, (id, count, end_of_stream as u32), true)
    }

    /// Appends to the response body and calls `proxy_on_response_body`.
    pub fn response_body(&mut self, id: u32, chunk: &[u8], end_of_stream: bool) -> Result<Action, HostError> {
        let stream = self.stream_mut(id)?;
        stream.response_body.extend_from_slice(chunk);
        let size = stream.response_body.len() as u32;
        self.stream_callback("proxy_on_response_body", id, (id, size, end_of_stream as u32), true)
    }

    /// Sets response trailers and calls `proxy_on_response_trailers`.
    pub fn response_trailers(&mut self, id: u32, trailers: Headers) -> Result<Action, HostError> {
        let count = trailers.len() as u32;
        self.stream_mut(id)?.response_trailers = trailers;
        self.stream_callback("proxy_on_response_trailers", id, (id, count), true)
    }

    /// Ends a stream as Envoy does: `proxy_on_done`, `proxy_on_log`, `proxy_on_delete`.
    /// Pending HTTP calls of the stream are cancelled. Returns the stream's final state.
    pub fn close(&mut self, id: u32) -> Result<Stream, HostError> {
        self.stream(id)?;
        self.call::<u32, u32>("proxy_on_done", id, id)?;
        self.call::<u32, ()>("proxy_on_log", id, id)?;
        self.call::<u32, ()>("proxy_on_delete", id, id)?;
        let s = self.store.data_mut();
        s.pending_calls.retain(|c| c.context_id != id);
        s.streams.remove(&id).ok_or_else(|| HostError::Usage(format!("no stream {id}")))
    }

    /// Sends a whole request: opens a stream, delivers the headers (with end-of-stream when
    /// there is no body) and, when the headers were let through, the body. The stream stays
    /// open so a paused request can be resumed; close it with [`Vm::close`].
    pub fn send(&mut self, request: &Request) -> Result<Exchange, HostError> {
        let id = self.open_stream(request)?;
        let body = request.request_body();
        self.request_headers(id, body.is_none())?;
        if let Some(body) = body {
            // Envoy buffers the body while headers are paused and delivers it afterwards;
            // the filter sees it either way, unless it has already answered.
            if self.stream(id)?.local_response.is_none() && self.stream(id)?.request_flow != Flow::Closed {
                self.request_body(id, body, true)?;
            }
        }
        Ok(Exchange { id, outcome: self.outcome(id)? })
    }

    /// Sends a request and closes its stream at once; returns the outcome and final state.
    pub fn roundtrip(&mut self, request: &Request) -> Result<(Outcome, Stream), HostError> {
        let exchange = self.send(request)?;
        let stream = self.close(exchange.id)?;
        Ok((exchange.outcome, stream))
    }

    /// HTTP calls dispatched and not answered yet.
    pub fn pending_http_calls(&self) -> &[HttpCall] {
        &self.store.data().pending_calls
    }

    /// Delivers `response` to the call with `token` (`proxy_on_http_call_response`).
    pub fn respond_http_call(&mut self, token: u32, mut response: HttpResponse) -> Result<(), HostError> {
        if !response.headers.contains(":status") {
            response.headers.0.insert(0, (":status".into(), b"200".to_vec()));
        }
        self.deliver(token, response)
    }

    /// Fails the call with `token` as Envoy reports a timeout or reset: no headers, no body.
    pub fn fail_http_call(&mut self, token: u32) -> Result<(), HostError> {
        self.deliver(token, HttpResponse::default())
    }

    fn deliver(&mut self, token: u32, response: HttpResponse) -> Result<(), HostError> {
        let s = self.store.data_mut();
        let Some(at) = s.pending_calls.iter().position(|c| c.token == token) else {
            return Err(HostError::Usage(format!("no pending HTTP call with token {token}")));
        };
        let call = s.pending_calls.remove(at);
        let counts = (response.headers.len() as u32, response.body.len() as u32, response.trailers.len() as u32);
        // A failed call (no headers at all) has no response maps in Envoy.
        s.call_response = (counts.0 > 0).then_some(response);
        let ctx = call.context_id;
        let result = self.call::<(u32, u32, u32, u32, u32), ()>(
            "proxy_on_http_call_response",
            ctx,
            (ctx, token, counts.0, counts.1, counts.2),
        );
        self.store.data_mut().call_response = None;
        result.map(|_| ())
    }

    /// Delivers `proxy_on_queue_ready` for every enqueue on a queue this VM registered since
    /// the last delivery; returns how many were delivered.
    pub fn deliver_queue_ready(&mut self) -> Result<usize, HostError> {
        let me = self.store.data().vm_number;
        let mine: Vec<(u64, u32, u32)> = {
            let mut shared = self.host().lock();
            let (mine, others) = shared.queue_ready.drain(..).partition(|(vm, _, _)| *vm == me);
            shared.queue_ready = others;
            mine
        };
        for (_, ctx, queue) in &mine {
            self.call::<(u32, u32), ()>("proxy_on_queue_ready", *ctx, (*ctx, *queue))?;
        }
        Ok(mine.len())
    }
}
