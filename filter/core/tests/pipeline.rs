//! Table tests of the whole decision pipeline at a fixed `now`.
//!
//! Each row is one request and the exact outcome: either the reason it is
//! refused, or that it passes (and with which identity headers).

mod support;

use meshgate_core::Reason;
use meshgate_core::engine::Decision;
use meshgate_core::ratelimit::table::MemoryStore;
use serde_json::json;
use support::*;

/// Expected outcome of a row.
enum Want {
    Allow(&'static [(&'static str, &'static str)]),
    Deny(Reason),
}

fn check(name: &str, req: Req, want: Want) {
    let engine = engine();
    let decision = engine.decide(&req.view(), NOW_US, &MemoryStore::default());
    match (decision, want) {
        (Decision::Allow(allow), Want::Allow(headers)) => {
            for (h, v) in headers {
                let got = allow.set().find(|(n, _)| n == h).map(|(_, v)| v.to_string());
                assert_eq!(got.as_deref(), Some(*v), "{name}: header {h}");
            }
        }
        (Decision::Deny(d), Want::Deny(reason)) => assert_eq!(d.reason, reason, "{name}"),
        (Decision::Allow(a), Want::Deny(reason)) => panic!("{name}: allowed ({a:?}), wanted {reason:?}"),
        (Decision::Deny(d), Want::Allow(_)) => panic!("{name}: denied {:?}, wanted allow", d.reason),
    }
}

fn rows() -> Vec<(&'static str, Req, Want)> {
    use Reason::*;
    use Want::*;
    let good = hs(claims(|_| {}));
    let no_admin = hs(claims(|c| c.custom.roles = Some(vec!["user".into()])));
    let payload = valid_payload();
    let rsa_pub = keys().rs.public_key().to_der().expect("der");
    vec![
        // Public routes and anonymous access.
        ("public no credentials", Req::get("/health"), Allow(&[])),
        ("public prefix", Req::get("/public/docs"), Allow(&[])),
        ("public with valid token injects", Req::get("/public/x").bearer(&good), Allow(&[("x-user-id", "user-1")])),
        ("public with bad token stays anonymous", Req::get("/public/x").bearer("a.b.c"), Allow(&[])),
        ("protected no credentials", Req::get("/api/orders"), Deny(MissingCredentials)),
        ("default deny when no rule matches", Req::get("/nowhere"), Deny(RouteDenied)),
        ("deny route", Req::get("/blocked/x").bearer(&good), Deny(RouteDenied)),
        // JWT happy paths, every algorithm.
        (
            "hs256 ok",
            Req::get("/api/orders").bearer(&good),
            Allow(&[
                ("x-user-id", "user-1"),
                ("x-user-roles", "admin,ops"),
                ("x-app-id", "shop"),
                ("x-auth-method", "jwt"),
                ("x-session-id", "sid-1"),
                ("x-user-scopes", "reports:read,orders:write"),
            ]),
        ),
        ("eddsa ok", Req::get("/api/x").bearer(&ed(claims(|_| {}))), Allow(&[("x-user-id", "user-1")])),
        ("es256 ok", Req::get("/api/x").bearer(&es(claims(|_| {}))), Allow(&[("x-user-id", "user-1")])),
        ("rs256 ok", Req::get("/api/x").bearer(&rs(claims(|_| {}))), Allow(&[("x-user-id", "user-1")])),
        (
            "scheme is case-insensitive",
            Req::get("/api/x").header("authorization", &format!("bearer {good}")),
            Allow(&[]),
        ),
        (
            "non-bearer scheme is not a credential",
            Req::get("/api/x").header("authorization", "Basic dXNlcjpwYXNz"),
            Deny(MissingCredentials),
        ),
        // Malformed tokens.
        ("bearer without token", Req::get("/api/x").header("authorization", "Bearer"), Deny(MalformedCredential)),
        (
            "bearer with two tokens",
            Req::get("/api/x").header("authorization", &format!("Bearer {good} x")),
            Deny(MalformedCredential),
        ),
        ("two segments", Req::get("/api/x").bearer("abc.def"), Deny(MalformedToken)),
        ("four segments", Req::get("/api/x").bearer("a.b.c.d"), Deny(MalformedToken)),
        ("malformed base64 header", Req::get("/api/x").bearer("!!!.e30.sig"), Deny(MalformedToken)),
        ("header not json", Req::get("/api/x").bearer("bm90anNvbg.e30.c2ln"), Deny(MalformedToken)),
        (
            "empty payload segment",
            Req::get("/api/x").bearer(&format!("{}..sig", good.split('.').next().unwrap_or(""))),
            Deny(MalformedToken),
        ),
        ("oversized token", Req::get("/api/x").bearer(&format!("{}{}", good, "A".repeat(9000))), Deny(TokenTooLarge)),
        (
            "payload not json",
            Req::get("/api/x").bearer(&hs_raw(&json!({"alg":"HS256","kid":"hs1"}), &json!("x"), HS_SECRET)),
            Deny(MalformedToken),
        ),
        // Algorithms.
        (
            "alg none",
            Req::get("/api/x").bearer(&raw_token(&json!({"alg":"none"}), &payload, b"")),
            Deny(UnsupportedAlgorithm),
        ),
        (
            "alg None",
            Req::get("/api/x").bearer(&raw_token(&json!({"alg":"None","kid":"hs1"}), &payload, b"x")),
            Deny(UnsupportedAlgorithm),
        ),
        (
            "alg NONE",
            Req::get("/api/x").bearer(&raw_token(&json!({"alg":"NONE"}), &payload, b"")),
            Deny(UnsupportedAlgorithm),
        ),
        (
            "alg hs512 unknown",
            Req::get("/api/x").bearer(&raw_token(&json!({"alg":"HS512","kid":"hs1"}), &payload, b"x")),
            Deny(UnsupportedAlgorithm),
        ),
        (
            "hs/rs confusion",
            Req::get("/api/x").bearer(&hs_raw(&json!({"alg":"HS256","kid":"rs1"}), &payload, &rsa_pub)),
            Deny(AlgorithmMismatch),
        ),
        (
            "hs/eddsa confusion",
            Req::get("/api/x").bearer(&hs_raw(
                &json!({"alg":"HS256","kid":"ed1"}),
                &payload,
                &keys().ed.public_key().to_bytes(),
            )),
            Deny(AlgorithmMismatch),
        ),
        (
            "unknown kid",
            Req::get("/api/x").bearer(&hs_raw(&json!({"alg":"HS256","kid":"nope"}), &payload, HS_SECRET)),
            Deny(UnknownKey),
        ),
        (
            "kid path traversal",
            Req::get("/api/x").bearer(&hs_raw(&json!({"alg":"HS256","kid":"../../etc/passwd"}), &payload, HS_SECRET)),
            Deny(UnknownKey),
        ),
        (
            "no kid, unique hs key",
            Req::get("/api/x").bearer(&hs_raw(&json!({"alg":"HS256"}), &payload, HS_SECRET)),
            Allow(&[("x-user-id", "user-1")]),
        ),
        (
            "crit header refused",
            Req::get("/api/x").bearer(&hs_raw(&json!({"alg":"HS256","kid":"hs1","crit":["exp"]}), &payload, HS_SECRET)),
            Deny(MalformedToken),
        ),
        (
            "wrong typ",
            Req::get("/api/x").bearer(&hs_raw(
                &json!({"alg":"HS256","kid":"hs1","typ":"dpop+jwt"}),
                &payload,
                HS_SECRET,
            )),
            Deny(InvalidTokenType),
        ),
        (
            "at+jwt typ accepted",
            Req::get("/api/x").bearer(&hs_raw(&json!({"alg":"HS256","kid":"hs1","typ":"at+jwt"}), &payload, HS_SECRET)),
            Allow(&[("x-user-id", "user-1")]),
        ),
        (
            "bad signature",
            Req::get("/api/x").bearer(&hs_raw(
                &json!({"alg":"HS256","kid":"hs1"}),
                &payload,
                b"another-secret-another-secret-xx",
            )),
            Deny(InvalidSignature),
        ),
        (
            "tampered payload",
            Req::get("/api/x").bearer(&{
                let mut parts: Vec<String> = good.split('.').map(str::to_owned).collect();
                parts[1] =
                    hs(claims(|c| c.subject = Some("someone-else".into()))).split('.').nth(1).unwrap_or("").to_owned();
                parts.join(".")
            }),
            Deny(InvalidSignature),
        ),
        (
            "eddsa signature from another key",
            Req::get("/api/x").bearer(&{
                use jwt_simple::prelude::EdDSAKeyPairLike;
                let other = jwt_simple::prelude::Ed25519KeyPair::generate().with_key_id("ed1");
                other.sign(claims(|_| {})).unwrap_or_default()
            }),
            Deny(InvalidSignature),
        ),
        // Time.
        (
            "expired within skew",
            Req::get("/api/x")
                .bearer(&hs(claims(|c| c.expires_at = Some(jwt_simple::prelude::Duration::from_secs(NOW - 30))))),
            Allow(&[]),
        ),
        (
            "expired 1s beyond skew",
            Req::get("/api/x")
                .bearer(&hs(claims(|c| c.expires_at = Some(jwt_simple::prelude::Duration::from_secs(NOW - 31))))),
            Deny(TokenExpired),
        ),
        (
            "nbf in the future",
            Req::get("/api/x")
                .bearer(&hs(claims(|c| c.invalid_before = Some(jwt_simple::prelude::Duration::from_secs(NOW + 120))))),
            Deny(TokenNotYetValid),
        ),
        (
            "iat in the future",
            Req::get("/api/x")
                .bearer(&hs(claims(|c| c.issued_at = Some(jwt_simple::prelude::Duration::from_secs(NOW + 120))))),
            Deny(TokenNotYetValid),
        ),
        ("missing exp", Req::get("/api/x").bearer(&hs(claims(|c| c.expires_at = None))), Deny(MissingClaim)),
        ("missing sub", Req::get("/api/x").bearer(&hs(claims(|c| c.subject = None))), Deny(MissingClaim)),
        // Issuer and audience.
        (
            "wrong iss",
            Req::get("/api/x").bearer(&hs(claims(|c| c.issuer = Some("https://evil.test".into())))),
            Deny(InvalidIssuer),
        ),
        ("missing iss", Req::get("/api/x").bearer(&hs(claims(|c| c.issuer = None))), Deny(InvalidIssuer)),
        (
            "wrong aud",
            Req::get("/api/x")
                .bearer(&hs(claims(|c| c.audiences = Some(jwt_simple::prelude::Audiences::AsString("other".into()))))),
            Deny(InvalidAudience),
        ),
        (
            "aud array containing ours",
            Req::get("/api/x").bearer(&hs_raw(
                &json!({"alg":"HS256","kid":"hs1"}),
                &json!({"iss": ISS, "aud": ["x", "api"], "sub": "u", "exp": NOW + 60}),
                HS_SECRET,
            )),
            Allow(&[("x-user-id", "u")]),
        ),
        // Claims that become headers.
        (
            "role with comma",
            Req::get("/api/x").bearer(&hs(claims(|c| c.custom.roles = Some(vec!["admin,root".into()])))),
            Deny(InvalidClaim),
        ),
        (
            "sub with CRLF",
            Req::get("/api/x").bearer(&hs(claims(|c| c.subject = Some("u\r\nx-user-id: admin".into())))),
            Deny(InvalidClaim),
        ),
        (
            "roles not an array",
            Req::get("/api/x").bearer(&hs_raw(
                &json!({"alg":"HS256","kid":"hs1"}),
                &json!({"iss": ISS, "aud": "api", "sub": "u", "exp": NOW + 60, "roles": "admin"}),
                HS_SECRET,
            )),
            Deny(MalformedToken),
        ),
        // Revocation, before signature work.
        (
            "revoked jti",
            Req::get("/api/x").bearer(&hs(claims(|c| c.jwt_id = Some("jti-revoked".into())))),
            Deny(Revoked),
        ),
        (
            "revoked jti with forged signature",
            Req::get("/api/x").bearer(&hs_raw(
                &json!({"alg":"HS256","kid":"hs1"}),
                &json!({"jti": "jti-revoked"}),
                b"forged-forged-forged-forged-forg",
            )),
            Deny(Revoked),
        ),
        (
            "revoked session",
            Req::get("/api/x").bearer(&hs(claims(|c| c.custom.sid = Some("sid-revoked".into())))),
            Deny(Revoked),
        ),
        (
            "subject logged out before iat",
            Req::get("/api/x").bearer(&hs(claims(|c| c.subject = Some("user-logged-out".into())))),
            Deny(Revoked),
        ),
        (
            "subject token after logout",
            Req::get("/api/x").bearer(&hs(claims(|c| {
                c.subject = Some("user-logged-out".into());
                c.issued_at = Some(jwt_simple::prelude::Duration::from_secs(NOW - 5));
            }))),
            Allow(&[("x-user-id", "user-logged-out")]),
        ),
        // Authorization.
        ("admin role ok", Req::get("/admin/users").bearer(&good), Allow(&[("x-user-roles", "admin,ops")])),
        ("admin role missing", Req::get("/admin/users").bearer(&no_admin), Deny(InsufficientRole)),
        (
            "roles_all on admin host",
            Req::get("/")
                .host("admin.example.com:443")
                .bearer(&hs(claims(|c| c.custom.roles = Some(vec!["admin".into()])))),
            Deny(InsufficientRole),
        ),
        ("roles_all satisfied", Req::get("/").host("ADMIN.example.com").bearer(&good), Allow(&[])),
        ("scope ok", Req::get("/reports/7").bearer(&good), Allow(&[])),
        (
            "scope missing",
            Req::get("/reports/7").bearer(&hs(claims(|c| c.custom.scope = Some("orders:write".into())))),
            Deny(InsufficientScope),
        ),
        ("template method mismatch falls to default", Req::new("POST", "/reports/7").bearer(&good), Deny(RouteDenied)),
        ("wrong app", Req::get("/billing/invoices").bearer(&good), Deny(WrongApp)),
        (
            "right app via api key",
            Req::get("/billing/invoices").header("x-api-key", &api_key(1)),
            Allow(&[
                ("x-app-id", "billing"),
                ("x-auth-method", "api_key"),
                ("x-key-id", "key_good"),
                ("x-user-id", "user-k"),
            ]),
        ),
        (
            "jwt-only route refuses api key",
            Req::get("/jwt/x").header("x-api-key", &api_key(1)),
            Deny(CredentialNotAccepted),
        ),
        // Paths.
        ("dot segments resolve to denied", Req::get("/public/../admin/users"), Deny(MissingCredentials)),
        ("admin/../public is public", Req::get("/admin/../public"), Allow(&[])),
        ("encoded admin", Req::get("/%61dmin/users").bearer(&no_admin), Deny(InsufficientRole)),
        ("double slash admin", Req::get("//admin").bearer(&no_admin), Deny(InsufficientRole)),
        ("encoded slash", Req::get("/admin%2f").bearer(&good), Deny(InvalidPath)),
        ("encoded backslash", Req::get("/public%5c..%5cadmin"), Deny(InvalidPath)),
        ("upper-case path is another path", Req::get("/ADMIN").bearer(&good), Deny(RouteDenied)),
        ("overlong utf-8", Req::get("/public/%c0%ae%c0%ae/admin"), Deny(InvalidPath)),
        ("semicolon parameter", Req::get("/public/..;/admin"), Deny(InvalidPath)),
        ("administrator is not admin", Req::get("/administrator").bearer(&good), Deny(RouteDenied)),
        // Headers and conflicts.
        ("duplicate authorization", Req::get("/api/x").bearer(&good).bearer(&good), Deny(DuplicateCredential)),
        (
            "duplicate api key header",
            Req::get("/api/x").header("x-api-key", &api_key(1)).header("X-API-Key", &api_key(1)),
            Deny(DuplicateCredential),
        ),
        (
            "jwt plus api key",
            Req::get("/api/x").bearer(&good).header("x-api-key", &api_key(1)),
            Deny(ConflictingCredentials),
        ),
        (
            "non-utf8 authorization",
            Req::get("/api/x").raw_header("authorization", b"Bearer \xff\xfe"),
            Deny(MalformedCredential),
        ),
        (
            "spoofed x-user-id without credential",
            Req::get("/api/x").header("x-user-id", "admin"),
            Deny(MissingCredentials),
        ),
        // API keys.
        ("api key header ok", Req::get("/api/x").header("x-api-key", &api_key(1)), Allow(&[("x-key-id", "key_good")])),
        ("api key as bearer", Req::get("/api/x").bearer(&api_key(1)), Allow(&[("x-auth-method", "api_key")])),
        ("unknown api key", Req::get("/api/x").header("x-api-key", &api_key(9)), Deny(UnknownApiKey)),
        ("expired api key", Req::get("/api/x").header("x-api-key", &api_key(2)), Deny(ApiKeyExpired)),
        ("revoked api key", Req::get("/api/x").header("x-api-key", &api_key(3)), Deny(Revoked)),
        (
            "api key checksum typo",
            Req::get("/api/x").header("x-api-key", &{
                let mut k = api_key(1);
                let last = k.pop().unwrap_or('x');
                k.push(if last == 'z' { 'y' } else { 'z' });
                k
            }),
            Deny(MalformedApiKey),
        ),
        ("api key wrong shape", Req::get("/api/x").header("x-api-key", "hello"), Deny(MalformedApiKey)),
        (
            "api key in service header",
            Req::get("/internal/x").header("x-service-key", &api_key(1)),
            Deny(UnknownApiKey),
        ),
        // Service, admin, guest.
        (
            "service key",
            Req::get("/internal/jobs").header("x-service-key", &service_key()),
            Allow(&[("x-auth-method", "service"), ("x-user-id", "billing-svc")]),
        ),
        ("jwt on service route", Req::get("/internal/jobs").bearer(&good), Deny(CredentialNotAccepted)),
        ("admin key", Req::get("/ops/flush").header("x-admin-key", &admin_key()), Allow(&[("x-auth-method", "admin")])),
        ("admin key on api", Req::get("/api/x").header("x-admin-key", &admin_key()), Allow(&[("x-user-id", "root")])),
        (
            "guest read",
            Req::get("/catalog/items").header("x-guest-id", "g-123"),
            Allow(&[("x-auth-method", "guest"), ("x-guest-id", "g-123")]),
        ),
        ("guest write", Req::new("POST", "/catalog/items").header("x-guest-id", "g-123"), Deny(GuestReadOnly)),
        ("guest header off guest routes", Req::get("/api/x").header("x-guest-id", "g-123"), Deny(MissingCredentials)),
        ("guest id malformed", Req::get("/catalog/items").header("x-guest-id", "bad id!"), Deny(MalformedCredential)),
        (
            "guest plus jwt conflict",
            Req::get("/catalog/items").header("x-guest-id", "g").bearer(&good),
            Deny(ConflictingCredentials),
        ),
    ]
}

#[test]
fn pipeline_table() {
    let rows = rows();
    assert!(rows.len() >= 60, "table has {} rows", rows.len());
    for (name, req, want) in rows {
        check(name, req, want);
    }
}

#[test]
fn cached_tokens_still_honour_revocation_and_expiry() {
    use meshgate_core::ratelimit::table::MemoryStore;
    let store = MemoryStore::default();
    let mut engine = engine();
    let token = es(claims(|c| {
        c.jwt_id = Some("jti-cache".into());
        c.custom.sid = Some("sid-cache".into());
    }));
    let req = Req::get("/api/x").bearer(&token);
    let decide = |e: &meshgate_core::Engine, at: u64| match e.decide(&req.view(), at * 1_000_000, &store) {
        Decision::Allow(_) => None,
        Decision::Deny(d) => Some(d.reason),
    };
    assert_eq!(decide(&engine, NOW), None);
    assert_eq!(engine.token_cache.len(), 1, "verified token cached");
    assert_eq!(decide(&engine, NOW), None, "cache hit");
    // Expiry is re-checked on hits (exp = NOW + 900, skew 30).
    assert_eq!(decide(&engine, NOW + 930), None);
    assert_eq!(decide(&engine, NOW + 931), Some(Reason::TokenExpired));
    // Revocations made after caching apply at once: token, session, subject.
    engine.revocations.revoke_session("sid-cache", NOW + 3600);
    assert_eq!(decide(&engine, NOW), Some(Reason::Revoked));
    let mut engine = self::engine();
    assert_eq!(decide(&engine, NOW), None);
    engine.revocations.revoke_subject("user-1", NOW, NOW + 3600);
    assert_eq!(decide(&engine, NOW), Some(Reason::Revoked));
    let mut engine = self::engine();
    assert_eq!(decide(&engine, NOW), None);
    engine.revocations.revoke_token("jti-cache", NOW + 3600);
    assert_eq!(decide(&engine, NOW), Some(Reason::Revoked));
    // Failures are not cached.
    let engine = self::engine();
    let forged = format!("{}x", &token[..token.len() - 1]);
    let bad = Req::get("/api/x").bearer(&forged);
    assert!(matches!(engine.decide(&bad.view(), NOW_US, &store), Decision::Deny(_)));
    assert!(engine.token_cache.is_empty());
}

#[test]
fn token_cache_is_bounded() {
    let cache = meshgate_core::token_cache::TokenCache::new(3);
    let identity = meshgate_core::identity::Identity {
        method: meshgate_wire::config::CredentialKind::Jwt,
        subject: "u".into(),
        roles: Vec::new(),
        scopes: Vec::new(),
        app_id: None,
        key_id: None,
        session_id: None,
        guest_id: None,
        key_limit: None,
    };
    for i in 0..10u8 {
        let v = meshgate_core::token_cache::Verified {
            identity: std::sync::Arc::new(identity.clone()),
            valid_until: NOW,
            jti: None,
            iat: None,
        };
        cache.put(u128::from(i), meshgate_core::token_cache::CachedToken { verified: v, checked: 0 });
        assert!(cache.len() <= 3);
    }
}

#[test]
fn cached_keys_still_honour_revocation_and_expiry() {
    use meshgate_core::ratelimit::table::MemoryStore;
    let store = MemoryStore::default();
    let mut engine = engine();
    let req = Req::get("/api/x").header("x-api-key", &api_key(1));
    let decide = |e: &meshgate_core::Engine, at: u64| match e.decide(&req.view(), at * 1_000_000, &store) {
        Decision::Allow(_) => None,
        Decision::Deny(d) => Some(d.reason),
    };
    assert_eq!(decide(&engine, NOW), None);
    assert_eq!(engine.key_digests.len(), 1, "verified key remembered");
    assert_eq!(decide(&engine, NOW), None, "cache hit");
    engine.revocations.revoke_key("key_good", NOW + 60);
    assert_eq!(decide(&engine, NOW), Some(Reason::Revoked), "revocation applies to cached keys");
    // Unknown and malformed keys are never remembered.
    let engine = self::engine();
    for key in [api_key(9), "mg_nope".to_owned()] {
        let bad = Req::get("/api/x").header("x-api-key", &key);
        assert!(matches!(engine.decide(&bad.view(), NOW_US, &store), Decision::Deny(_)));
    }
    assert!(engine.key_digests.is_empty());
}
