//! meshgate's own ES256 and EdDSA signature checks (`meshgate_core::es256`,
//! `meshgate_core::ed25519`) against the libraries they replace (p256's
//! `VerifyingKey`, ed25519-compact), on any key, signature and message.
//!
//! Input: one mode byte, then
//! - bit 0: the algorithm (0 ES256, 1 EdDSA);
//! - bit 1: the key is read from the input (65 bytes of SEC1, or 33 with bit
//!   2 set, for ES256; 32 for EdDSA) rather than the fixed valid key;
//! - bit 3: the signature is the fixed key's own signature of the message
//!   XOR the next 64 input bytes (all zero: a valid signature), so mangled
//!   valid signatures are reached; otherwise it is the next 64 bytes raw;
//! - the rest is the message.
//!
//! Properties: no panic; a key is accepted exactly when the reference
//! accepts it; a signature verifies exactly when the reference says so.
#![no_main]

use ed25519_compact::{KeyPair, Seed};
use libfuzzer_sys::fuzz_target;
use meshgate_core::ed25519::Ed25519Key;
use meshgate_core::es256::Es256Key;
use p256::ecdsa::signature::{Signer, Verifier};
use p256::ecdsa::{Signature, SigningKey, VerifyingKey};
use std::sync::OnceLock;

fn es_signer() -> &'static SigningKey {
    static KEY: OnceLock<SigningKey> = OnceLock::new();
    KEY.get_or_init(|| SigningKey::from_slice(&[0x5a; 32]).expect("below n"))
}

fn ed_pair() -> &'static KeyPair {
    static KEY: OnceLock<KeyPair> = OnceLock::new();
    KEY.get_or_init(|| KeyPair::from_seed(Seed::new([0x5a; 32])))
}

fn take<'a>(data: &mut &'a [u8], n: usize) -> &'a [u8] {
    let (head, tail) = data.split_at(n.min(data.len()));
    *data = tail;
    head
}

fn xor(a: &[u8], mask: &[u8]) -> Vec<u8> {
    a.iter().enumerate().map(|(i, b)| b ^ mask.get(i).copied().unwrap_or(0)).collect()
}

fuzz_target!(|data: &[u8]| {
    let Some((&mode, mut rest)) = data.split_first() else { return };
    let ed = mode & 1 == 1;
    let key_bytes = match (mode & 2 != 0, ed) {
        (true, true) => take(&mut rest, 32).to_vec(),
        (true, false) => take(&mut rest, if mode & 4 != 0 { 33 } else { 65 }).to_vec(),
        (false, true) => ed_pair().pk.to_vec(),
        (false, false) => es_signer().verifying_key().to_sec1_point(false).as_bytes().to_vec(),
    };
    let sig_input = take(&mut rest, 64);
    let message = rest;
    let signature = if mode & 8 != 0 {
        let own = if ed {
            ed_pair().sk.sign(message, None).to_vec()
        } else {
            let sig: Signature = es_signer().sign(message);
            sig.to_bytes().to_vec()
        };
        xor(&own, sig_input)
    } else {
        sig_input.to_vec()
    };
    if ed {
        let reference = ed25519_compact::PublicKey::from_slice(&key_bytes).ok().filter(|k| k.validate().is_ok());
        let ours = Ed25519Key::from_bytes(&key_bytes);
        assert_eq!(ours.is_some(), reference.is_some(), "EdDSA key {key_bytes:02x?}");
        if let (Some(ours), Some(reference)) = (ours, reference) {
            let expected =
                ed25519_compact::Signature::from_slice(&signature).is_ok_and(|s| reference.verify(message, &s).is_ok());
            assert_eq!(ours.verify(message, &signature), expected, "EdDSA signature {signature:02x?}");
        }
    } else {
        let reference = VerifyingKey::from_sec1_bytes(&key_bytes).ok();
        let ours = Es256Key::from_sec1(&key_bytes);
        assert_eq!(ours.is_some(), reference.is_some(), "ES256 key {key_bytes:02x?}");
        if let (Some(ours), Some(reference)) = (ours, reference) {
            let expected = Signature::from_slice(&signature).is_ok_and(|s| reference.verify(message, &s).is_ok());
            assert_eq!(ours.verify(message, &signature), expected, "ES256 signature {signature:02x?}");
        }
    }
});
