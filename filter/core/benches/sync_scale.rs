//! Cost of receiving a big paged snapshot, natively: N API keys and N token
//! revocations, in pages of 20 000 records as the control plane sends them
//! (keys by digest, then revocations), applied by the core's `Publisher`
//! into an in-memory store with Envoy's shared-data semantics (every get
//! copies the value out, every set copies it in).
//!
//! Two revocation orders side by side in one run: by (kind, id) — the
//! control plane's order before it paged by `revocation_hash` — and by
//! `revocation_hash`, the order it sends now. The filter in V8 is slower
//! than this native build by a constant factor; the ratio and the store
//! operations are what carry over.
//!
//! `cargo bench -p meshgate-core --bench sync_scale -- 1000000` (N; default 100 000).

use meshgate_core::ratelimit::table::{CounterStore, MemoryStore, StoreError};
use meshgate_core::sync::layout::{self, Meta};
use meshgate_core::sync::{Applied, Publisher};
use meshgate_wire::sync::{RevocationKind, revocation_hash};
use serde_json::json;
use std::cell::Cell;
use std::time::Instant;

const PAGE: usize = 20_000;
const NOW_MS: u64 = 1_800_000_000_000;

/// Counts shard writes and the bytes copied in and out.
struct Counting {
    inner: MemoryStore,
    sets: Cell<u64>,
    copied: Cell<u64>,
}

impl CounterStore for Counting {
    fn get(&self, key: &str) -> Result<(Option<Vec<u8>>, u32), StoreError> {
        let got = self.inner.get(key)?;
        self.copied.set(self.copied.get() + got.0.as_ref().map_or(0, |v| v.len() as u64));
        Ok(got)
    }
    fn set(&self, key: &str, value: &[u8], cas: u32) -> Result<(), StoreError> {
        self.sets.set(self.sets.get() + 1);
        self.copied.set(self.copied.get() + value.len() as u64);
        self.inner.set(key, value, cas)
    }
}

fn digest_hex(i: usize) -> String {
    meshgate_core::apikey::digest(&format!("mg_scale_key_{i}")).to_hex()
}

fn jti(i: usize) -> String {
    format!("{:08x}-{:04x}-4{:03x}-a{:03x}-{:012x}", i * 2_654_435_761 % (1 << 32), i % 65_536, i % 4096, i % 4093, i)
}

/// The snapshot's pages as JSON bodies.
fn pages(n: usize, by_hash: bool) -> Vec<Vec<u8>> {
    let mut keys: Vec<String> = (0..n).map(digest_hex).collect();
    keys.sort();
    let mut revs: Vec<String> = (0..n).map(jti).collect();
    if by_hash {
        revs.sort_by_key(|id| (revocation_hash(RevocationKind::Token.code(), id), id.clone()));
    } else {
        revs.sort();
    }
    let mut records: Vec<(bool, String)> = keys.into_iter().map(|k| (true, k)).collect();
    records.extend(revs.into_iter().map(|r| (false, r)));
    let chunks: Vec<_> = records.chunks(PAGE).collect();
    let count = chunks.len();
    chunks
        .into_iter()
        .enumerate()
        .map(|(i, chunk)| {
            let api_keys: Vec<_> = chunk
                .iter()
                .filter(|(k, _)| *k)
                .enumerate()
                .map(|(j, (_, d))| json!({"id": format!("key_{i}_{j}"), "digest": d, "subject": format!("user-{j}"), "app_id": "app-1", "roles": ["reader"]}))
                .collect();
            let revocations: Vec<_> = chunk
                .iter()
                .filter(|(k, _)| !*k)
                .map(|(_, id)| json!({"kind": "token", "id": id, "until": NOW_MS / 1000 + 900}))
                .collect();
            let mut body = json!({"version": 7, "kind": "snapshot", "api_keys": api_keys, "revocations": revocations});
            if i == 0 {
                body["total_keys"] = json!(n);
                body["total_revocations"] = json!(n);
            }
            if i + 1 < count {
                body["next"] = json!(format!("cursor-{i}"));
            }
            serde_json::to_vec(&body).unwrap_or_default()
        })
        .collect()
}

fn run(n: usize, by_hash: bool) -> Result<f64, String> {
    let bodies = pages(n, by_hash);
    let bytes: usize = bodies.iter().map(Vec::len).sum();
    let store = Counting { inner: MemoryStore::default(), sets: Cell::new(0), copied: Cell::new(0) };
    let mut publisher = Publisher::new(1);
    let started = Instant::now();
    for (i, body) in bodies.iter().enumerate() {
        match publisher.apply_bytes(&store, body, NOW_MS) {
            Ok(Applied::Page) if i + 1 < bodies.len() => {}
            Ok(Applied::Published(7)) if i + 1 == bodies.len() => {}
            other => return Err(format!("page {i}: {other:?}")),
        }
    }
    let secs = started.elapsed().as_secs_f64();
    let (meta, _) = Meta::read(&store).map_err(|e| e.to_string())?;
    let view = meta.view();
    // Spot check: every tenth revocation is found.
    for i in (0..n).step_by(10) {
        let found = view.revocation(&store, RevocationKind::Token.code(), &jti(i)).map_err(|e| e.to_string())?;
        if found.is_none() {
            return Err(format!("revocation {i} missing"));
        }
    }
    println!(
        "{n:>9} keys + {n:>9} revocations | revocations by {:<10} | {:>3} pages {:>6.1} MB | apply {:>6.2} s | shard writes {:>9} | copied {:>7.1} MB | shards {}+{}",
        if by_hash { "hash" } else { "(kind,id)" },
        bodies.len(),
        bytes as f64 / 1e6,
        secs,
        store.sets.get(),
        store.copied.get() as f64 / 1e6,
        meta.key_shards,
        meta.rev_shards,
    );
    let _ = layout::MIN_SHARDS;
    Ok(secs)
}

fn main() {
    let n = std::env::args().skip(1).find_map(|a| a.parse::<usize>().ok()).unwrap_or(100_000);
    let old = run(n, false);
    let new = run(n, true);
    match (old, new) {
        (Ok(old), Ok(new)) => println!("apply time, hash order / (kind,id) order: {:.2}×", new / old),
        (old, new) => {
            eprintln!("sync_scale failed: {old:?} {new:?}");
            std::process::exit(1);
        }
    }
}
