//! JWT parsing and verification through the core's public API
//! (`KeyRing::verify`, then the whole pipeline with `Authorization: Bearer`).
//!
//! Input: one mode byte, then
//! - mode 0: the token itself (any bytes);
//! - mode 1: header JSON `0xff` payload JSON, signed with the fixture HS256
//!   secret, so claim handling behind a valid signature is reached;
//! - mode 2: header `0xff` payload `0xff` signature, base64url-encoded.
//!
//! Properties: no panic; a token that verifies names `HS256` in its header
//! (the only key is HS256: the key pins the algorithm) and yields
//! header-safe identity values that are valid at `NOW`.
#![no_main]

use base64::Engine as _;
use libfuzzer_sys::fuzz_target;
use meshgate_core::identity::is_header_safe_token;
use meshgate_fuzz::*;

fuzz_target!(|data: &[u8]| {
    let Some((&mode, rest)) = data.split_first() else { return };
    let engine = engine(false);
    let token = match mode % 3 {
        0 => String::from_utf8_lossy(rest).into_owned(),
        1 => {
            let (header, payload) = split(rest, 0xff);
            hs_sign(header, payload)
        }
        _ => {
            let (header, rest) = split(rest, 0xff);
            let (payload, sig) = split(rest, 0xff);
            format!("{}.{}.{}", b64(header), b64(payload), b64(sig))
        }
    };
    if let Ok(verified) = engine.keyring.verify(&token, &engine.revocations, NOW) {
        let header_b64 = token.split('.').next().unwrap_or_default();
        let header = base64::engine::general_purpose::URL_SAFE_NO_PAD.decode(header_b64).unwrap_or_default();
        // Lossy: serde skips unknown members without validating their UTF-8.
        let header: serde_json::Value = serde_json::from_str(&String::from_utf8_lossy(&header)).unwrap_or_default();
        assert_eq!(header["alg"].as_str(), Some("HS256"), "verified a token whose header is {header}");
        let id = &verified.identity;
        assert!(id.subject.is_empty() || is_header_safe_token(&id.subject), "subject {:?}", id.subject);
        assert!(id.roles.iter().chain(&id.scopes).all(|v| is_header_safe_token(v)), "{id:?}");
        assert!(verified.valid_until >= NOW, "expired token verified: {verified:?}");
    }
    let raw_value =
        if mode % 3 == 0 { [b"Bearer ".as_slice(), rest].concat() } else { format!("Bearer {token}").into_bytes() };
    let headers = [("authorization", raw_value.as_slice()), ("x-user-id", b"spoofed".as_slice())];
    decide_checked(&engine, &api_request(&headers));
});
