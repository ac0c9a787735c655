//! The host's serialized header map (`proxy_get_header_map_pairs`), any
//! bytes: `header_map::parse`, then the engine over what it accepted.
//!
//! Properties: no panic; an accepted map serializes back to bytes that
//! parse to the same headers; the engine decides a request carrying those
//! headers cleanly.
#![no_main]

use libfuzzer_sys::fuzz_target;
use meshgate_core::header_map::{Value, parse, serialize};
use meshgate_fuzz::*;

fuzz_target!(|data: &[u8]| {
    let Ok(headers) = parse(data) else { return };
    let again = serialize(&headers.iter().map(|&(n, v)| (n, Value::Bytes(v))).collect::<Vec<_>>())
        .expect("a parsed map fits the format");
    assert_eq!(parse(&again).as_deref(), Ok(headers.as_slice()), "round trip changed the map");
    let engine = engine(false);
    decide_checked(&engine, &api_request(&headers));
});
