//! Credits through the compiled filter, against a scripted control plane
//! that behaves like the real one: balances pushed by the feed (long-poll:
//! a feed call is held until something is newer), usage reports applied
//! once per report id and acknowledged with the change version.
//!
//! Proves: exact accounting across two VMs (workers) through an outage, a
//! lost acknowledgement and a control-plane restart (no usage lost, none
//! counted twice); remaining-uses keys stop at exactly N; refill; the cost
//! header is charged and stripped; the measured overspend bounds.

use meshgate_tests::{Headers, Host, HttpCall, HttpResponse, Outcome, Request, Vm, VmOptions, tokens};
use serde_json::{Value, json};
use std::collections::{BTreeMap, HashMap};
use std::time::Duration;

use crate::common::*;

fn feed_key() -> String {
    tokens::api_key("mg", &[42u8; 32])
}

fn metered_config(credits: Value) -> Value {
    let mut cfg = config();
    cfg["sync"] = json!({"cluster": "control_plane", "api_key": feed_key(), "wait_secs": 30});
    let mut c = json!({"routes": {"api": 1}, "flush_interval_ms": 200});
    if let (Some(c), Some(extra)) = (c.as_object_mut(), credits.as_object()) {
        c.extend(extra.clone());
    }
    cfg["credits"] = c;
    cfg
}

/// An Envoy process: one host (shared data) and two workers.
fn process(credits: Value) -> (Host, Vm, Vm) {
    process_at(credits, NOW)
}

fn process_at(credits: Value, now: u64) -> (Host, Vm, Vm) {
    let host = Host::new();
    host.set_now(now);
    let options = VmOptions::with_config(metered_config(credits).to_string());
    let a = Vm::filter(&host, options.clone()).unwrap();
    let b = Vm::filter(&host, options).unwrap();
    (host, a, b)
}

/// The scripted control plane (its state survives "restarts": it is the
/// database).
#[derive(Default)]
struct Cp {
    version: u64,
    accounts: BTreeMap<(String, String), (i64, u64)>,
    reports: HashMap<String, u64>,
    /// Usage applied, per account.
    applied: BTreeMap<(String, String), i64>,
    /// Every call fails (connection refused).
    down: bool,
    /// Reports are applied but the answer never arrives (timeout).
    lose_answers: bool,
    reports_received: u32,
}

impl Cp {
    fn set(&mut self, kind: &str, id: &str, balance: i64) {
        self.version += 1;
        self.accounts.insert((kind.into(), id.into()), (balance, self.version));
    }

    fn balance(&self, kind: &str, id: &str) -> i64 {
        self.accounts.get(&(kind.into(), id.into())).map_or(0, |a| a.0)
    }

    fn applied(&self, kind: &str, id: &str) -> i64 {
        self.applied.get(&(kind.into(), id.into())).copied().unwrap_or(0)
    }

    fn feed(&self, since: u64) -> Option<Value> {
        if since >= self.version && since != 0 {
            return None;
        }
        let credits: Vec<Value> = self
            .accounts
            .iter()
            .filter(|(_, (_, v))| *v > since)
            .map(|((k, id), (b, _))| json!({"kind": k, "id": id, "balance": b}))
            .collect();
        Some(if since == 0 {
            json!({"version": self.version, "kind": "snapshot", "credits": credits})
        } else {
            json!({"version": self.version, "kind": "delta", "since": since, "credits": credits})
        })
    }

    fn report(&mut self, body: &[u8]) -> Value {
        self.reports_received += 1;
        let report: Value = serde_json::from_slice(body).unwrap();
        let id = report["id"].as_str().unwrap().to_string();
        if let Some(v) = self.reports.get(&id) {
            return json!({"id": id, "version": v, "duplicate": true});
        }
        self.version += 1;
        for item in report["usage"].as_array().unwrap() {
            let key = (item["kind"].as_str().unwrap().to_string(), item["id"].as_str().unwrap().to_string());
            let amount = item["amount"].as_i64().unwrap();
            let account = self.accounts.entry(key.clone()).or_insert((0, 0));
            *account = (account.0 - amount, self.version);
            *self.applied.entry(key).or_default() += amount;
        }
        self.reports.insert(id.clone(), self.version);
        json!({"id": id, "version": self.version, "duplicate": false})
    }

    fn answer(&mut self, call: &HttpCall) -> Option<HttpResponse> {
        if self.down {
            return Some(HttpResponse::default());
        }
        let path = call.headers.get(":path").unwrap_or_default();
        if path.starts_with("/api/v1/credits/report") {
            assert_eq!(call.headers.get("authorization"), Some(format!("Bearer {}", feed_key())));
            let ack = self.report(&call.body);
            return Some(if self.lose_answers { HttpResponse::default() } else { HttpResponse::json(200, &ack) });
        }
        let since = path.split("since=").nth(1).and_then(|s| s.split('&').next()).and_then(|s| s.parse().ok());
        self.feed(since.unwrap_or(0)).map(|v| HttpResponse::json(200, &v))
    }
}

/// One step of time (a tick period) for every worker of every process,
/// answering whatever the control plane can answer.
fn pump(cp: &mut Cp, vms: &mut [&mut Vm]) {
    // Every process here has two workers: each moves its own host's clock
    // by half a step, so every process advances one step (250 ms).
    for vm in vms.iter() {
        vm.host().advance(Duration::from_millis(125));
    }
    for vm in vms.iter_mut() {
        vm.tick().unwrap();
    }
    loop {
        let mut answered = 0;
        for vm in vms.iter_mut() {
            answered += vm.answer_http_calls(|call| cp.answer(call)).unwrap();
        }
        if answered == 0 {
            break;
        }
    }
}

fn pumps(cp: &mut Cp, vms: &mut [&mut Vm], n: usize) {
    for _ in 0..n {
        pump(cp, vms);
    }
}

/// Sends a request through `vm`; the upstream answers with `headers`.
/// Returns the status (200: forwarded) and the response headers the client got.
fn call(vm: &mut Vm, request: &Request, upstream: &[(&str, &str)]) -> (u32, Headers) {
    let exchange = vm.send(request).unwrap();
    let status = match exchange.outcome {
        Outcome::Continued => {
            let headers = Headers(upstream.iter().map(|(n, v)| (n.to_string(), v.as_bytes().to_vec())).collect());
            vm.response_headers(exchange.id, headers, true).unwrap();
            200
        }
        Outcome::Responded(r) => r.status,
        other => panic!("{other:?}"),
    };
    let stream = vm.close(exchange.id).unwrap();
    let headers = match &stream.local_response {
        Some(r) => r.headers.clone(),
        None => stream.response_headers.clone(),
    };
    (status, headers)
}

fn user_request() -> Request {
    Request::get("/api/generate").bearer(&token())
}

fn status(vm: &mut Vm, request: &Request) -> u32 {
    call(vm, request, &[]).0
}

#[test]
fn exact_accounting_across_two_workers_an_outage_a_lost_answer_and_a_restart() {
    let mut cp = Cp::default();
    cp.set("user", "user-42", 100);
    let (_host, mut a, mut b) = process(json!({}));
    pumps(&mut cp, &mut [&mut a, &mut b], 2);
    let mut admitted = 0;
    let mut send = |a: &mut Vm, b: &mut Vm, n: usize| {
        for i in 0..n {
            let vm = if i % 2 == 0 { &mut *a } else { &mut *b };
            assert_eq!(status(vm, &user_request()), 200);
            admitted += 1;
        }
    };
    // 1. Normal flushing while requests flow on both workers.
    send(&mut a, &mut b, 30);
    pumps(&mut cp, &mut [&mut a, &mut b], 3);
    assert_eq!(cp.applied("user", "user-42"), 30);
    // 2. The control plane is unreachable: requests still pass on the local
    //    budget, usage waits.
    cp.down = true;
    send(&mut a, &mut b, 25);
    pumps(&mut cp, &mut [&mut a, &mut b], 10);
    assert_eq!(cp.applied("user", "user-42"), 30);
    // 3. Back, but every answer is lost: the report is applied once however
    //    often it is resent; usage meanwhile waits for the next report.
    cp.down = false;
    cp.lose_answers = true;
    pumps(&mut cp, &mut [&mut a, &mut b], 60);
    send(&mut a, &mut b, 10);
    pumps(&mut cp, &mut [&mut a, &mut b], 20);
    assert!(cp.reports_received > 3, "the report was resent");
    assert_eq!(cp.applied("user", "user-42"), 55, "a resent report is not applied again");
    // 4. The control plane restarts (its database keeps the report ids) and
    //    answers again: everything arrives, once.
    cp.lose_answers = false;
    cp.down = true;
    pumps(&mut cp, &mut [&mut a, &mut b], 4);
    cp.down = false;
    pumps(&mut cp, &mut [&mut a, &mut b], 200);
    assert_eq!(cp.applied("user", "user-42"), admitted);
    assert_eq!(cp.balance("user", "user-42"), 100 - admitted);
    // 5. The local budget now equals the control plane's balance exactly:
    //    double-subtracted usage would stop early, lost usage would overrun.
    let mut more = 0;
    while status(if more % 2 == 0 { &mut a } else { &mut b }, &user_request()) == 200 {
        more += 1;
        assert!(more <= 100, "no end");
    }
    assert_eq!(admitted + more, 100, "exactly the balance, no overspend within a process");
    pumps(&mut cp, &mut [&mut a, &mut b], 20);
    assert_eq!((cp.applied("user", "user-42"), cp.balance("user", "user-42")), (100, 0));
    // Refused with the problem type and the configured status.
    let (s, headers) = call(&mut a, &user_request(), &[]);
    assert_eq!(s, 402);
    assert_eq!(headers.get("content-type").as_deref(), Some("application/problem+json"));
    let refused = a.roundtrip(&user_request()).unwrap().0;
    let Outcome::Responded(r) = refused else { panic!("{refused:?}") };
    assert_eq!(r.body_json()["type"], "urn:meshgate:problem:credits-exhausted");
    // 6. Refill: a grant reaches the filter through the feed.
    cp.set("user", "user-42", 3);
    pumps(&mut cp, &mut [&mut a, &mut b], 2);
    let passed = (0..5).filter(|i| status(if i % 2 == 0 { &mut a } else { &mut b }, &user_request()) == 200).count();
    assert_eq!(passed, 3);
}

#[test]
fn remaining_uses_keys_stop_at_exactly_n_on_every_route() {
    let mut cp = Cp::default();
    cp.set("uses", "key-1", 5);
    let (host, mut a, mut b) = process(json!({"exhausted_status": 429}));
    pumps(&mut cp, &mut [&mut a, &mut b], 2);
    host.contend(6);
    let key = api_key();
    let statuses: Vec<u32> = (0..8)
        .map(|i| {
            let vm = if i % 2 == 0 { &mut a } else { &mut b };
            // An unmetered route: uses are counted everywhere.
            status(vm, &Request::get("/reports/q").header("x-api-key", &key))
        })
        .collect();
    assert_eq!(statuses, vec![200, 200, 200, 200, 200, 429, 429, 429]);
    let refused = b.roundtrip(&Request::get("/reports/q").header("x-api-key", &key)).unwrap().0;
    let Outcome::Responded(r) = refused else { panic!("{refused:?}") };
    assert_eq!(
        (r.body_json()["type"].as_str(), r.body_json()["status"].as_u64()),
        (Some("urn:meshgate:problem:key-uses-exhausted"), Some(429))
    );
    pumps(&mut cp, &mut [&mut a, &mut b], 5);
    assert_eq!((cp.applied("uses", "key-1"), cp.balance("uses", "key-1")), (5, 0));
}

#[test]
fn the_cost_header_is_charged_and_never_reaches_the_client() {
    let mut cp = Cp::default();
    cp.set("user", "user-42", 100);
    let (_host, mut a, mut b) = process(json!({"cost_header": "X-Credits-Used"}));
    pumps(&mut cp, &mut [&mut a, &mut b], 2);
    let (s, headers) = call(&mut a, &user_request(), &[("x-credits-used", "40"), ("x-other", "1")]);
    assert_eq!(s, 200);
    assert_eq!((headers.get("x-credits-used"), headers.get("x-other").as_deref()), (None, Some("1")));
    // Stripped on unmetered routes too.
    let (_, headers) = call(&mut a, &Request::get("/health"), &[("x-credits-used", "5")]);
    assert_eq!(headers.get("x-credits-used"), None);
    pumps(&mut cp, &mut [&mut a, &mut b], 3);
    assert_eq!(cp.applied("user", "user-42"), 40);
}

/// Measures overspend beyond zero. Printed for the README's table.
#[test]
fn overspend_is_measured_and_bounded() {
    // (a) One process, two workers, static cost: zero (see the first test).
    // (b) Response cost above the reservation, with requests in flight when
    //     the budget runs out: each in-flight request may overshoot by
    //     (reported - reserved).
    let mut cp = Cp::default();
    cp.set("user", "user-42", 10);
    let (_host, mut a, mut b) = process(json!({}));
    pumps(&mut cp, &mut [&mut a, &mut b], 2);
    let mut open = Vec::new();
    for i in 0..20 {
        let vm = if i % 2 == 0 { &mut a } else { &mut b };
        let ex = vm.send(&user_request()).unwrap();
        if ex.outcome == Outcome::Continued {
            open.push((i % 2, ex.id));
        } else {
            vm.close(ex.id).unwrap();
        }
    }
    assert_eq!(open.len(), 10, "admission reserves the static cost: 10 in flight");
    for (w, id) in open {
        let vm = if w == 0 { &mut a } else { &mut b };
        vm.response_headers(id, Headers(vec![("x-credits-used".into(), b"3".to_vec())]), true).unwrap();
        vm.close(id).unwrap();
    }
    pumps(&mut cp, &mut [&mut a, &mut b], 5);
    let response_overspend = -cp.balance("user", "user-42");
    assert_eq!(response_overspend, 20, "10 in flight × (3 reported − 1 reserved)");

    // (c) Two Envoy processes sharing one balance: between pushes each
    //     spends at most the last pushed balance.
    let mut cp = Cp::default();
    cp.set("user", "user-42", 20);
    let (_h1, mut p1a, mut p1b) = process(json!({}));
    // Another Envoy process, started a little later (the host's randomness
    // is deterministic per VM number; the clock tells the processes apart).
    let (h2, mut p2a, mut p2b) = process_at(json!({}), NOW + 7);
    assert_ne!(h2.now(), NOW);
    pumps(&mut cp, &mut [&mut p1a, &mut p1b, &mut p2a, &mut p2b], 2);
    let mut admitted = 0;
    for round in 0..40 {
        for vm in [&mut p1a, &mut p2a, &mut p1b, &mut p2b] {
            if status(vm, &user_request()) == 200 {
                admitted += 1;
            }
        }
        if round % 2 == 1 {
            // A flush and a push every 2 rounds (8 requests offered).
            pumps(&mut cp, &mut [&mut p1a, &mut p1b, &mut p2a, &mut p2b], 2);
        }
    }
    pumps(&mut cp, &mut [&mut p1a, &mut p1b, &mut p2a, &mut p2b], 5);
    let cross_process = admitted - 20;
    assert_eq!(cp.applied("user", "user-42"), admitted, "every admitted request reported once");
    assert!(cross_process <= 20, "at most the pushed balance per extra process: {cross_process}");
    eprintln!(
        "credits overspend: static cost, 1 process x 2 workers: 0; response cost (3 vs 1 reserved), 10 in flight: \
         {response_overspend}; 2 processes, balance 20, push every 8 requests: {cross_process} beyond zero"
    );
}
