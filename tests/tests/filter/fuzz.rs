//! Fuzz-style: thousands of random and hostile requests through the `.wasm`. Every one must
//! end in continue or a local response (400/401/403/503) — never a trap — and a let-through
//! request must never carry an identity header the filter did not set.

use meshgate_tests::rng::Rng;
use meshgate_tests::{Outcome, Program, Request, Vm, VmOptions, tokens};
use serde_json::json;

use crate::common::*;

/// Default number of requests; `FUZZ_CASES` overrides it for longer runs.
const CASES: usize = 3000;

const SEGMENTS: &[&str] = &[
    "api",
    "admin",
    "internal",
    "catalog",
    "reports",
    "items",
    "42",
    "health",
    "..",
    ".",
    "",
    "%2e%2e",
    "%2F",
    "%2f",
    "%5C",
    "%00",
    "%C0%AF",
    "%",
    "%z",
    "%41",
    ";x=1",
    "..;",
    "a?b=c",
    "#f",
    "\\",
    "~user",
    "%E2%82%AC",
    "%%32%65",
    "%252e",
];

const METHODS: &[&str] = &["GET", "POST", "PUT", "DELETE", "HEAD", "OPTIONS", "get", "", "BREW"];
const HOSTS: &[&str] = &["api.example.com", "a.tenant.test", "tenant.test:80", "", "[::1]:8080", "ÿ"];
const PSEUDO: &[&str] = &[":path", ":method", ":authority"];

const NAMES: &[&str] = &[
    "authorization",
    "x-api-key",
    "x-service-key",
    "x-admin-key",
    "x-guest-id",
    "x-user-id",
    "x-user-roles",
    "x-user-scopes",
    "x-app-id",
    "x-auth-method",
    "x-key-id",
    "x-session-id",
    "host",
    "cookie",
    "content-type",
    "X-API-KEY",
    "Authorization",
    "x-forwarded-for",
];

fn random_bytes(rng: &mut Rng, max: usize) -> Vec<u8> {
    let len = rng.below(max + 1);
    (0..len)
        .map(|_| match rng.below(10) {
            // Envoy never delivers NUL, CR or LF in a value; everything else can arrive.
            0 => [1u8, 9, 0x1f, 0x7f][rng.below(4)],
            1 | 2 => 0x80 + rng.below(0x80) as u8,
            _ => 0x20 + rng.below(0x5f) as u8,
        })
        .collect()
}

fn random_jwt(rng: &mut Rng) -> String {
    let weird = [
        json!(null),
        json!("x"),
        json!(-1),
        json!(1e300),
        json!([1, [2, [3]]]),
        json!({"a": {}}),
        json!(NOW),
        json!(u64::MAX),
        json!(""),
        json!(["admin", "dev"]),
        json!(true),
    ];
    let mut claims = claims();
    for key in ["exp", "nbf", "iat", "sub", "aud", "iss", "roles", "scope", "sid", "app_id", "jti"] {
        if rng.chance(15) {
            claims[key] = rng.pick(&weird).clone();
        }
    }
    let alg = *rng.pick(&["HS256", "none", "RS256", "EdDSA", "HS512", ""]);
    let kid = *rng.pick(&["k1", "k2", "nope", ""]);
    let header = if rng.chance(80) { json!({"alg": alg, "typ": "JWT", "kid": kid}) } else { rng.pick(&weird).clone() };
    let t = tokens::sign_raw(&header, &claims, if rng.chance(50) { SECRET } else { SECRET2 });
    match rng.below(6) {
        0 => tokens::tamper_signature(&t),
        1 => t.replacen('.', "..", 1),
        2 => format!("{t}.{t}"),
        _ => t,
    }
}

fn value(rng: &mut Rng) -> Vec<u8> {
    match rng.below(9) {
        0 => format!("Bearer {}", random_jwt(rng)).into_bytes(),
        1 => format!("Bearer {}", token()).into_bytes(),
        2 => api_key().into_bytes(),
        3 => format!(
            "{}{}",
            *rng.pick(&["Bearer ", "bearer  ", "Basic ", "Bearer\t", ""]),
            String::from_utf8_lossy(&random_bytes(rng, 40))
        )
        .into_bytes(),
        4 => vec![b'a'; rng.below(20_000)],
        5 => format!("mg_{}", String::from_utf8_lossy(&rng.string_from(b"123456789ABCDEFGHJKLMNPQRSTUVWXYZabc", 49)))
            .into_bytes(),
        _ => random_bytes(rng, 64),
    }
}

fn path(rng: &mut Rng) -> Vec<u8> {
    if rng.chance(5) {
        return rng.pick(&[&b"*"[..], b"", b"http://x/api", b"api", b"/\xff\xfe"]).to_vec();
    }
    let mut p = Vec::new();
    for _ in 0..rng.below(7) + 1 {
        p.push(b'/');
        p.extend_from_slice(rng.pick(SEGMENTS).as_bytes());
    }
    if rng.chance(5) {
        p.extend(std::iter::repeat_n(b'x', rng.below(10_000)));
    }
    if rng.chance(10) {
        p.extend(random_bytes(rng, 20).into_iter().filter(|b| *b > 0x20));
    }
    p
}

fn request(rng: &mut Rng) -> Request {
    let (method, host) = (*rng.pick(METHODS), *rng.pick(HOSTS));
    let mut r = Request::new().method(method).path_bytes(&path(rng)).host(host);
    if rng.chance(30) {
        // A legitimate request that hostile headers are then added to.
        r = r.path(&format!("/api/{}", rng.pick(SEGMENTS))).bearer(&token());
    }
    if rng.chance(3) {
        let pseudo = *rng.pick(PSEUDO);
        r = r.without(pseudo);
    }
    for _ in 0..rng.below(10) {
        let name = if rng.chance(90) {
            rng.pick(NAMES).to_string()
        } else {
            let len = 1 + rng.below(30);
            String::from_utf8_lossy(&rng.string_from(b"abcdefghijklmnopqrstuvwxyz-_0123456789", len)).into_owned()
        };
        r = r.header_bytes(&name, &value(rng));
    }
    r
}

/// Identity headers may only appear when the filter set `x-auth-method` (it always does for
/// a verified identity), and each at most once.
fn check_upstream(h: &meshgate_tests::Headers, case: usize) {
    let owned = ["x-user-id", "x-user-roles", "x-user-scopes", "x-app-id", "x-key-id", "x-session-id", "x-guest-id"];
    let method = h.get_all("x-auth-method");
    assert!(method.len() <= 1, "case {case}: {h:?}");
    for name in owned {
        let values = h.get_all(name);
        assert!(values.len() <= 1, "case {case}: {name} repeated: {h:?}");
        if method.is_empty() {
            assert!(values.is_empty(), "case {case}: {name} passed without an identity: {h:?}");
        }
    }
}

#[test]
fn thousands_of_hostile_requests_never_trap() {
    let seed = std::env::var("FUZZ_SEED").ok().and_then(|s| s.parse().ok()).unwrap_or(0x5eed_u64);
    let mut rng = Rng::new(seed);
    let host = meshgate_tests::Host::new();
    host.set_now(NOW);
    let mut vm = Vm::new(&host, Program::filter(), VmOptions::with_config(config().to_string())).unwrap();
    vm.configure().unwrap();
    let cases = std::env::var("FUZZ_CASES").ok().and_then(|s| s.parse().ok()).unwrap_or(CASES);
    let (mut continued, mut answered) = (0, 0);
    for case in 0..cases {
        let req = request(&mut rng);
        let (outcome, stream) = match vm.roundtrip(&req) {
            Ok(r) => r,
            Err(e) => panic!("case {case} (FUZZ_SEED={seed}) trapped on {:?}:\n{e}", req.header_map()),
        };
        match outcome {
            Outcome::Continued => {
                continued += 1;
                check_upstream(&stream.request_headers, case);
            }
            Outcome::Responded(r) => {
                answered += 1;
                assert!(
                    [400, 401, 403].contains(&r.status),
                    "case {case}: status {} for {:?}",
                    r.status,
                    req.header_map()
                );
                assert_eq!(r.header("content-type").as_deref(), Some("application/problem+json"));
            }
            other => panic!("case {case}: {other:?} for {:?}", req.header_map()),
        }
        if case % 500 == 0 {
            vm.take_logs();
        }
    }
    eprintln!("{cases} cases: {continued} continued, {answered} answered; memory {} KiB", vm.memory_size() / 1024);
    assert!(continued >= 50 && answered >= 1000, "{continued} / {answered}: the generator lost its spread");
    // 3000 requests must not grow the heap without bound (a leak per request would show).
    assert!(vm.memory_size() < 64 << 20, "memory grew to {} bytes", vm.memory_size());
}

/// Replaces the value at a random place in `v` by a hostile one (or removes it).
fn mutate(rng: &mut Rng, v: &mut serde_json::Value) {
    let weird = [
        json!(null),
        json!(""),
        json!(-1),
        json!(1e300),
        json!([]),
        json!({}),
        json!("*"),
        json!("/"),
        json!(["GET"]),
        json!({"exact": ""}),
        json!({"template": "/{*}/{x}"}),
        json!({"prefix": "no-slash"}),
        json!("x".repeat(5000)),
        json!(u64::MAX),
        json!(true),
        json!("HS256"),
        json!({"kty": "oct"}),
        json!("public"),
        json!("\u{0}"),
    ];
    match v {
        serde_json::Value::Object(m) if !m.is_empty() && rng.chance(70) => {
            let key = m.keys().nth(rng.below(m.len())).cloned().unwrap_or_default();
            if rng.chance(10) {
                m.remove(&key);
            } else if let Some(inner) = m.get_mut(&key) {
                mutate(rng, inner);
            }
            return;
        }
        serde_json::Value::Array(a) if !a.is_empty() && rng.chance(70) => {
            let i = rng.below(a.len());
            mutate(rng, &mut a[i]);
            return;
        }
        _ => {}
    }
    *v = rng.pick(&weird).clone();
}

#[test]
fn mutated_configurations_are_accepted_or_rejected_never_trap() {
    let mut rng = Rng::new(0xc0f1);
    let host = meshgate_tests::Host::new();
    host.set_now(NOW);
    let (mut accepted, mut rejected) = (0, 0);
    for case in 0..300 {
        let mut c = config();
        for _ in 0..1 + rng.below(3) {
            mutate(&mut rng, &mut c);
        }
        let mut vm = Vm::new(&host, Program::filter(), VmOptions::with_config(c.to_string())).unwrap();
        match vm.configure() {
            Ok(()) => {
                accepted += 1;
                for req in [Request::get("/api/x").bearer(&token()), request(&mut rng)] {
                    if let Err(e) = vm.roundtrip(&req) {
                        panic!("case {case}: request trapped under config {c}:\n{e}");
                    }
                }
            }
            Err(meshgate_tests::HostError::ConfigureRejected { .. }) => rejected += 1,
            Err(e) => panic!("case {case}: configure trapped on {c}:\n{e}"),
        }
    }
    eprintln!("300 mutated configs: {accepted} accepted, {rejected} rejected");
    assert!(accepted > 10 && rejected > 10, "{accepted} / {rejected}");
}

#[test]
fn huge_requests_are_answered_without_trapping() {
    let mut many = Request::get("/api/x").bearer(&token());
    for i in 0..2000 {
        many = many.header(&format!("x-filler-{i}"), "v");
    }
    for _ in 0..50 {
        many = many.header("x-user-id", "spoof");
    }
    let big = Request::get("/api/x").bearer(&format!("{}{}", token(), "A".repeat(100_000)));
    let long_path = Request::get(&format!("/api/{}", "a/".repeat(50_000))).bearer(&token());
    let host = meshgate_tests::Host::new();
    host.set_now(NOW);
    let mut vm = Vm::filter(&host, VmOptions::with_config(config().to_string())).unwrap();
    let (o, s) = vm.roundtrip(&many).unwrap_or_else(|e| panic!("{e}"));
    assert_eq!(o, Outcome::Continued);
    assert_eq!(s.request_headers.get_all("x-user-id"), ["user-42"]);
    for req in [big, long_path] {
        let (o, _) = vm.roundtrip(&req).unwrap_or_else(|e| panic!("{e}"));
        assert!(matches!(o, Outcome::Responded(ref r) if r.status == 400 || r.status == 401), "{o:?}");
    }
}
