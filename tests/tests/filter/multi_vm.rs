//! Two VMs on one host, like two Envoy workers: same config, shared metrics and data.

use meshgate_tests::{Host, Outcome, Request, Vm, VmOptions};

use crate::common::*;

fn two_workers() -> (Host, Vm, Vm) {
    let host = Host::new();
    host.set_now(NOW);
    let options = VmOptions::with_config(config().to_string());
    let a = Vm::filter(&host, options.clone()).unwrap();
    let b = Vm::filter(&host, options).unwrap();
    (host, a, b)
}

#[test]
fn alternating_requests_get_the_same_decisions() {
    let (_host, mut a, mut b) = two_workers();
    for i in 0..20 {
        let vm = if i % 2 == 0 { &mut a } else { &mut b };
        let (ok, s) = vm.roundtrip(&Request::get("/api/x").bearer(&token())).unwrap();
        assert_eq!(ok, Outcome::Continued);
        assert_eq!(s.request_headers.get("x-user-id").as_deref(), Some("user-42"));
        let (denied, _) = vm.roundtrip(&Request::get("/api/x")).unwrap();
        assert!(matches!(denied, Outcome::Responded(ref r) if r.status == 401), "{denied:?}");
    }
}

#[test]
fn metrics_aggregate_across_workers() {
    let (host, mut a, mut b) = two_workers();
    a.roundtrip(&Request::get("/api/x").bearer(&token())).unwrap();
    b.roundtrip(&Request::get("/api/x").bearer(&token())).unwrap();
    b.roundtrip(&Request::get("/internal/x")).unwrap();
    // Each VM hands its request counts to Envoy on its tick.
    assert_eq!(host.metric("meshgate.allowed").map(|m| m.value), Some(0));
    a.tick().unwrap();
    b.tick().unwrap();
    assert_eq!(host.metric("meshgate.allowed").map(|m| m.value), Some(2));
    assert_eq!(host.metric("meshgate.allowed.jwt").map(|m| m.value), Some(2));
    assert_eq!(host.metric("meshgate.denied.route-denied").map(|m| m.value), Some(1));
}

#[test]
fn clock_moves_for_both_workers() {
    let (host, mut a, mut b) = two_workers();
    let t = token_with(serde_json::json!({"exp": NOW + 60}));
    assert_eq!(a.roundtrip(&Request::get("/api/x").bearer(&t)).unwrap().0, Outcome::Continued);
    host.advance(std::time::Duration::from_secs(120));
    for vm in [&mut a, &mut b] {
        let (o, _) = vm.roundtrip(&Request::get("/api/x").bearer(&t)).unwrap();
        let Outcome::Responded(r) = o else { panic!("{o:?}") };
        assert_eq!(r.body_json()["type"], "urn:meshgate:problem:token-expired");
    }
}

#[test]
fn one_worker_reconfigured_does_not_change_the_other() {
    let (_host, mut a, mut b) = two_workers();
    a.reconfigure(serde_json::json!({}).to_string()).unwrap();
    let (oa, _) = a.roundtrip(&Request::get("/api/x").bearer(&token())).unwrap();
    assert!(matches!(oa, Outcome::Responded(ref r) if r.status == 403), "{oa:?}");
    let (ob, _) = b.roundtrip(&Request::get("/api/x").bearer(&token())).unwrap();
    assert_eq!(ob, Outcome::Continued);
}

#[test]
fn many_streams_interleaved_on_one_worker() {
    let (_host, mut a, _b) = two_workers();
    let ids: Vec<u32> = (0..10).map(|_| a.open_stream(&Request::get("/api/x").bearer(&token())).unwrap()).collect();
    for id in ids.iter().rev() {
        a.request_headers(*id, true).unwrap();
    }
    for id in ids {
        assert_eq!(a.outcome(id).unwrap(), Outcome::Continued);
        a.close(id).unwrap();
    }
}

#[test]
fn every_import_the_filter_can_reach_is_implemented() {
    // The SDK's dispatcher keeps its gRPC and foreign-function imports even when a plugin
    // never uses them; this host links those to trapping stubs ("unimplemented host call …").
    // Anything else unimplemented means a code path of the filter would trap here.
    let unused_by_meshgate = [
        "env::proxy_grpc_call",
        "env::proxy_grpc_stream",
        "env::proxy_grpc_send",
        "env::proxy_grpc_cancel",
        "env::proxy_grpc_close",
        "env::proxy_get_status",
        "env::proxy_call_foreign_function",
    ];
    let missing: Vec<&String> = meshgate_tests::Program::filter()
        .unimplemented_imports()
        .iter()
        .filter(|name| !unused_by_meshgate.contains(&name.as_str()))
        .collect();
    assert!(missing.is_empty(), "host calls the filter imports but the host lacks: {missing:?}");
}
