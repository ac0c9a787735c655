//! Sync feed decoding: up to four response bodies (separated by `0xff`)
//! through `Publisher::apply_bytes` into one shared store, as the polling
//! VM does; then `engine_for` on what is published, as every VM does.
//!
//! Properties: no panic; the published version never goes backwards; a
//! refused body leaves the published meta unchanged; the engine decides
//! requests (whose key and revocation lookups read the store) cleanly.
#![no_main]

use libfuzzer_sys::fuzz_target;
use meshgate_core::engine::Request;
use meshgate_core::ratelimit::table::MemoryStore;
use meshgate_core::sync::layout::Meta;
use meshgate_core::sync::{Publisher, engine_for};
use meshgate_fuzz::*;

fuzz_target!(|data: &[u8]| {
    let store = MemoryStore::default();
    let mut publisher = Publisher::new(1);
    let now_ms = NOW * 1000;
    for body in data.split(|&b| b == 0xff).take(4) {
        let Ok((before, _)) = Meta::read(&store) else { return };
        let applied = publisher.apply_bytes(&store, body, now_ms);
        let Ok((after, _)) = Meta::read(&store) else { return };
        assert!(after.version >= before.version, "version went from {} to {}", before.version, after.version);
        if applied.is_err() {
            assert_eq!(after, before, "a refused response changed the published meta");
        }
    }
    let Ok((meta, _)) = Meta::read(&store) else { return };
    let Ok(engine) = engine_for(config(false), &meta, None) else { return };
    let key = format!("Bearer {}", api_key()).into_bytes();
    let headers = [("authorization", key.as_slice())];
    for peer in ["10.0.0.1", "2001:db8::1"] {
        let req = Request { method: "GET", path: b"/api/x", authority: "a", headers: &headers, peer: Some(peer) };
        decide_checked_in(&engine, &req, &store);
    }
});
