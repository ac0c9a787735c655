//! Plugin configuration parsing (`meshgate_core::compile`, what
//! `on_configure` runs on the operator's JSON).
//!
//! Properties: no panic on any bytes; a configuration that compiles gives
//! an engine that decides a few requests without panicking and renders
//! sendable denials; a refusal names a field.
#![no_main]

use libfuzzer_sys::fuzz_target;
use meshgate_core::engine::{Engine, Request};
use meshgate_fuzz::*;

fuzz_target!(|data: &[u8]| {
    let compiled = match meshgate_core::compile(data) {
        Ok(c) => c,
        Err(e) => {
            assert!(!e.field.is_empty(), "error without a field: {e}");
            return;
        }
    };
    let engine = Engine::new(compiled);
    let bearer = format!("Bearer {}", api_key()).into_bytes();
    let headers: [&[(&str, &[u8])]; 3] =
        [&[], &[("authorization", &bearer)], &[("x-guest-id", b"g-1"), ("x-forwarded-for", b"1.2.3.4, 5.6.7.8")]];
    for (method, path) in [("GET", "/"), ("POST", "/api/x"), ("GET", "/admin/../public/a?b=c")] {
        for h in &headers {
            let req = Request {
                method,
                path: path.as_bytes(),
                authority: "api.example.com",
                headers: h,
                peer: Some("10.0.0.1:5"),
            };
            decide_checked(&engine, &req);
        }
    }
});
