//! Credential extraction: which credential a request carries, if any.
//!
//! Exactly zero or one credential is accepted. A credential header sent
//! twice, or two different credentials, is a 400: picking one would let a
//! client (or a proxy in between) steer which identity the upstream sees.

use crate::denial::Reason;
use crate::identity::Headers;

pub use crate::header_map::HeaderPair;

/// The one credential found in a request.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Credential<'a> {
    /// `Authorization: Bearer <jwt>`.
    Jwt(&'a str),
    /// An API key, from `X-API-Key` or from `Authorization: Bearer`.
    ApiKey {
        /// The key.
        key: &'a str,
        /// Whether it came in `Authorization` (so hiding it removes that).
        in_authorization: bool,
    },
    /// `X-Service-Key`.
    Service(&'a str),
    /// `X-Admin-Key`.
    Admin(&'a str),
    /// `X-Guest-ID`.
    Guest(&'a str),
}

/// Bytes of a header value, eight at a time: whether any is outside
/// visible ASCII and space (`0x20..=0x7e`), and whether any is a space.
/// One pass without a branch per byte: a token is hundreds of bytes, and a
/// byte-at-a-time loop over it was a quarter of a warm request's Wasm
/// instructions (Wasm has no vector instructions by default, so the
/// compiler cannot do this for us).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
struct Scan {
    invisible: bool,
    space: bool,
}

const ONES: u64 = 0x0101_0101_0101_0101;
const HIGHS: u64 = 0x8080_8080_8080_8080;

/// The high bit of each byte of `x` that is zero (exact as a whole: a
/// spurious bit only ever sits above a real one).
fn zero_bytes(x: u64) -> u64 {
    x.wrapping_sub(ONES) & !x & HIGHS
}

fn scan(bytes: &[u8]) -> Scan {
    let word = |x: u64| {
        // Below 0x20, 0x80 and above, or DEL.
        let invisible = (x.wrapping_sub(ONES * 0x20) & !x & HIGHS) | (x & HIGHS) | zero_bytes(x ^ (ONES * 0x7f));
        (invisible, zero_bytes(x ^ (ONES * u64::from(b' '))))
    };
    let (words, tail) = bytes.as_chunks::<8>();
    let (mut invisible, mut space) = (0, 0);
    for w in words {
        let (i, s) = word(u64::from_le_bytes(*w));
        invisible |= i;
        space |= s;
    }
    // The tail padded with a visible byte that is not a space.
    let mut last = [b'A'; 8];
    last.iter_mut().zip(tail).for_each(|(d, s)| *d = *s);
    let (i, s) = word(u64::from_le_bytes(last));
    Scan { invisible: invisible | i != 0, space: space | s != 0 }
}

/// A credential header's value, trimmed; [`Reason::MalformedCredential`]
/// when empty or not visible ASCII (spaces allowed).
fn credential_value(raw: &[u8]) -> Result<&str, Reason> {
    let raw = raw.trim_ascii();
    if raw.is_empty() || scan(raw).invisible {
        return Err(Reason::MalformedCredential);
    }
    // All bytes are ASCII, so this cannot fail.
    std::str::from_utf8(raw).map_err(|_| Reason::MalformedCredential)
}

/// One credential header across the request: absent, once, or repeated.
#[derive(Debug, Clone, Copy)]
enum Seen<'a> {
    Absent,
    Once(&'a [u8]),
    Repeated,
}

impl<'a> Seen<'a> {
    fn add(&mut self, value: &'a [u8]) {
        *self = match self {
            Seen::Absent => Seen::Once(value),
            _ => Seen::Repeated,
        };
    }

    /// The single value, trimmed: `Ok(None)` when absent,
    /// [`Reason::DuplicateCredential`] when repeated,
    /// [`Reason::MalformedCredential`] when not visible ASCII.
    fn value(self) -> Result<Option<&'a str>, Reason> {
        match self {
            Seen::Absent => Ok(None),
            Seen::Once(raw) => credential_value(raw).map(Some),
            Seen::Repeated => Err(Reason::DuplicateCredential),
        }
    }
}

/// Parses an `Authorization` value. Non-Bearer schemes are not ours:
/// `Ok(None)`, and the header passes through untouched.
fn bearer<'a>(value: &'a str, prefixes: &[String]) -> Result<Option<Credential<'a>>, Reason> {
    let Some((scheme, rest)) = value.split_once(' ') else {
        return if value.eq_ignore_ascii_case("bearer") { Err(Reason::MalformedCredential) } else { Ok(None) };
    };
    if !scheme.eq_ignore_ascii_case("bearer") {
        return Ok(None);
    }
    let token = rest.trim_start_matches(' ');
    let bytes = token.as_bytes();
    if bytes.is_empty() || scan(bytes).space {
        return Err(Reason::MalformedCredential);
    }
    // Compare the short configured prefixes first: a JWT (`eyJ…`) is told
    // apart without scanning it.
    let is_key = prefixes
        .iter()
        .any(|p| bytes.len() > p.len() && bytes.starts_with(p.as_bytes()) && bytes.get(p.len()) == Some(&b'_'))
        && !bytes.contains(&b'.');
    Ok(Some(if is_key { Credential::ApiKey { key: token, in_authorization: true } } else { Credential::Jwt(token) }))
}

/// Whether a guest id is acceptable: 1–128 chars of `[A-Za-z0-9._-]`.
pub fn is_valid_guest_id(id: &str) -> bool {
    (1..=128).contains(&id.len()) && id.bytes().all(|b| b.is_ascii_alphanumeric() || matches!(b, b'.' | b'_' | b'-'))
}

/// Finds the request's credential. `guests` says whether the route looks
/// at the guest header at all (elsewhere it is only stripped).
pub fn extract<'a>(
    headers: &'a [HeaderPair<'a>],
    names: &Headers,
    prefixes: &[String],
    guests: bool,
) -> Result<Option<Credential<'a>>, Reason> {
    let mut found: Option<Credential<'a>> = None;
    let mut add = |c: Credential<'a>| {
        if found.replace(c).is_some() { Err(Reason::ConflictingCredentials) } else { Ok(()) }
    };
    // One pass over the headers for every credential name (a request has
    // a dozen headers; comparing lengths first rules out almost all).
    let guest_name = if guests { names.guest_id.as_str() } else { "" };
    let wanted = ["authorization", &names.api_key, &names.service_key, &names.admin_key, guest_name];
    let mut seen = [Seen::Absent; 5];
    for &(name, value) in headers {
        for (w, s) in wanted.iter().zip(seen.iter_mut()) {
            if name.len() == w.len() && !w.is_empty() && name.eq_ignore_ascii_case(w) {
                s.add(value);
            }
        }
    }
    let [authorization, api_key, service_key, admin_key, guest] = seen;
    if let Some(auth) = authorization.value()?
        && let Some(c) = bearer(auth, prefixes)?
    {
        add(c)?;
    }
    if let Some(key) = api_key.value()? {
        add(Credential::ApiKey { key, in_authorization: false })?;
    }
    if let Some(key) = service_key.value()? {
        add(Credential::Service(key))?;
    }
    if let Some(key) = admin_key.value()? {
        add(Credential::Admin(key))?;
    }
    if let Some(id) = guest.value()? {
        if !is_valid_guest_id(id) {
            return Err(Reason::MalformedCredential);
        }
        add(Credential::Guest(id))?;
    }
    Ok(found)
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The word-at-a-time scan against the byte-at-a-time rule, for every
    /// byte value at every position of lengths around the word size.
    #[test]
    fn scan_agrees_with_the_byte_rule() {
        let rule = |bytes: &[u8]| Scan {
            invisible: bytes.iter().any(|b| !(0x20..=0x7e).contains(b)),
            space: bytes.contains(&b' '),
        };
        for len in 0..=17 {
            for pos in 0..len.max(1) {
                for b in 0..=255u8 {
                    let mut bytes = vec![b'x'; len];
                    if let Some(slot) = bytes.get_mut(pos) {
                        *slot = b;
                    }
                    assert_eq!(scan(&bytes), rule(&bytes), "{bytes:?}");
                    // A second odd byte after it must not hide or invent the first.
                    if pos + 1 < len {
                        bytes[pos + 1] = 0x7f;
                        assert_eq!(scan(&bytes), rule(&bytes), "{bytes:?}");
                    }
                }
            }
        }
    }
}
