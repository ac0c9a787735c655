//! Self-tests of the proxy-wasm host against a hand-written WAT module (no filter needed):
//! header edits, local responses, traps, unimplemented calls, HTTP callouts, shared data
//! with CAS across two VMs, properties, ticks and queues.

use std::sync::OnceLock;

use meshgate_tests::{Action, Host, HostError, HttpResponse, Outcome, Program, Request, Vm, VmOptions};

fn probe() -> &'static Program {
    static PROBE: OnceLock<Program> = OnceLock::new();
    PROBE.get_or_init(|| Program::from_bytes(include_bytes!("fixtures/probe.wat")).expect("probe.wat compiles"))
}

fn vm(host: &Host) -> Vm {
    let mut vm = Vm::new(host, probe(), VmOptions::with_config("ok")).expect("vm starts");
    vm.configure().expect("configures");
    vm
}

fn mode(m: &str) -> Request {
    Request::get("/p").header("x-mode", m)
}

#[test]
fn unknown_imports_are_listed_as_unimplemented() {
    assert_eq!(probe().unimplemented_imports(), ["env::proxy_foo"]);
}

#[test]
fn configure_reads_the_plugin_configuration_and_can_reject_it() {
    let host = Host::new();
    let ok = vm(&host);
    assert_eq!(ok.logs()[0].message, "ok");
    let mut bad = Vm::new(&host, probe(), VmOptions::with_config("xbad")).unwrap();
    match bad.configure() {
        Err(e @ HostError::ConfigureRejected { .. }) => assert!(e.log_text().contains("xbad")),
        other => panic!("expected ConfigureRejected, got {other:?}"),
    }
}

#[test]
fn header_edits_reach_upstream() {
    let mut vm = vm(&Host::new());
    let (outcome, stream) =
        vm.roundtrip(&Request::get("/orig").header("x-remove", "1").header("X-Remove", "2")).unwrap();
    assert_eq!(outcome, Outcome::Continued);
    let h = &stream.request_headers;
    assert_eq!(h.get("x-seen").as_deref(), Some("yes"));
    assert_eq!(h.get(":path").as_deref(), Some("/rewritten"));
    assert!(!h.contains("x-remove"));
}

#[test]
fn local_response_is_recorded() {
    let mut vm = vm(&Host::new());
    let (outcome, _) = vm.roundtrip(&mode("d")).unwrap();
    let Outcome::Responded(r) = outcome else { panic!("{outcome:?}") };
    assert_eq!((r.status, r.body_text().as_str(), r.grpc_status), (403, "no", -1));
}

#[test]
fn a_trap_is_an_error_and_the_vm_is_dead_afterwards() {
    let mut vm = vm(&Host::new());
    let err = vm.send(&mode("t")).unwrap_err();
    assert!(err.is_trap(), "{err}");
    assert!(err.to_string().contains("proxy_on_request_headers"), "{err}");
    assert!(vm.crashed());
    assert!(matches!(vm.send(&mode("x")), Err(HostError::Usage(_))));
}

#[test]
fn unimplemented_host_calls_fail_loudly_with_their_name() {
    let mut vm = vm(&Host::new());
    let err = vm.send(&mode("u")).unwrap_err();
    assert_eq!(err.unimplemented_call(), Some("env::proxy_foo"));
    assert!(err.to_string().contains("unimplemented host call env::proxy_foo"), "{err}");
}

#[test]
fn http_calls_wait_for_the_test_to_answer() {
    let mut vm = vm(&Host::new());
    let ex = vm.send(&mode("c")).unwrap();
    assert_eq!(ex.outcome, Outcome::Paused);
    let call = vm.pending_http_calls()[0].clone();
    assert_eq!(call.upstream, "cluster");
    assert_eq!(call.headers.get(":authority").as_deref(), Some("cp"));
    assert_eq!(call.timeout_ms, 500);
    vm.respond_http_call(call.token, HttpResponse::new(204, "")).unwrap();
    assert_eq!(vm.outcome(ex.id).unwrap(), Outcome::Continued);
    let stream = vm.close(ex.id).unwrap();
    assert_eq!(stream.request_headers.get("x-call-status").as_deref(), Some("204"));
    assert!(vm.pending_http_calls().is_empty());
}

#[test]
fn a_failed_http_call_has_no_status() {
    let mut vm = vm(&Host::new());
    let ex = vm.send(&mode("c")).unwrap();
    let token = vm.pending_http_calls()[0].token;
    vm.fail_http_call(token).unwrap();
    assert!(!vm.stream(ex.id).unwrap().request_headers.contains("x-call-status"));
    assert!(vm.respond_http_call(token, HttpResponse::new(200, "")).is_err());
}

#[test]
fn two_vms_share_data_and_a_stale_cas_is_rejected() {
    let host = Host::new();
    let mut a = vm(&host);
    let mut b = vm(&host);
    host.set_shared_data("k", b"v1", 0).unwrap();
    let (_, sa) = a.roundtrip(&mode("s")).unwrap();
    assert_eq!(sa.request_headers.get("x-shared").as_deref(), Some("v1"));
    // The probe writes with a stale CAS: CAS_MISMATCH (8), value unchanged.
    assert_eq!(sa.request_headers.get("x-cas").as_deref(), Some("8"));
    host.set_shared_data("k", b"v2", 0).unwrap();
    let (_, sb) = b.roundtrip(&mode("s")).unwrap();
    assert_eq!(sb.request_headers.get("x-shared").as_deref(), Some("v2"));
    assert_eq!(host.shared_data("k").unwrap().0, b"v2");
}

#[test]
fn properties_come_from_the_request() {
    let mut vm = vm(&Host::new());
    let (_, s) = vm.roundtrip(&mode("p").source("192.0.2.9:1234")).unwrap();
    assert_eq!(s.request_headers.get("x-source").as_deref(), Some("192.0.2.9:1234"));
}

#[test]
fn ticks_and_the_clock() {
    let host = Host::new();
    let mut vm = vm(&host);
    let before = host.now();
    vm.advance_and_tick().unwrap();
    assert_eq!(host.now(), before + 1);
    assert_eq!(vm.logs().last().unwrap().message, "tick");
}

#[test]
fn pause_then_body_is_delivered_after_headers() {
    let mut vm = vm(&Host::new());
    let id = vm.open_stream(&mode("x")).unwrap();
    assert_eq!(vm.request_headers(id, false).unwrap(), Action::Continue);
    assert_eq!(vm.request_body(id, b"abc", true).unwrap(), Action::Continue);
    assert_eq!(vm.close(id).unwrap().request_body, b"abc");
}

#[test]
fn enqueue_notifies_the_registering_vm_only() {
    let host = Host::new();
    let mut a = vm(&host);
    assert_eq!(host.queue_len("meshgate", "queue"), Some(0));
    host.enqueue("meshgate", "queue", b"item").unwrap();
    // A second VM registering the same queue takes over the notifications, as in Envoy.
    let mut b = vm(&host);
    host.enqueue("meshgate", "queue", b"item2").unwrap();
    assert_eq!(a.deliver_queue_ready().unwrap(), 1);
    assert_eq!(b.deliver_queue_ready().unwrap(), 1);
    assert_eq!(a.logs().last().unwrap().message, "queue");
    assert_eq!(host.queue_len("meshgate", "queue"), Some(2));
    assert!(host.enqueue("meshgate", "nope", b"x").is_err());
}

#[test]
fn scripted_responder_answers_pending_calls() {
    let mut vm = vm(&Host::new());
    let ex = vm.send(&mode("c")).unwrap();
    let answered = vm
        .answer_http_calls(|call| (call.upstream == "cluster").then(|| HttpResponse::json(200, &serde_json::json!({}))))
        .unwrap();
    assert_eq!(answered, 1);
    assert_eq!(vm.outcome(ex.id).unwrap(), Outcome::Continued);
}
