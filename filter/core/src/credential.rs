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

/// The single value of header `name`, trimmed; `Ok(None)` when absent,
/// [`Reason::DuplicateCredential`] when repeated, and
/// [`Reason::MalformedCredential`] when not visible ASCII.
pub fn single_value<'a>(headers: &'a [HeaderPair<'a>], name: &str) -> Result<Option<&'a str>, Reason> {
    let mut found = None;
    for (n, v) in headers {
        if n.eq_ignore_ascii_case(name) {
            if found.is_some() {
                return Err(Reason::DuplicateCredential);
            }
            found = Some(v);
        }
    }
    let Some(raw) = found else { return Ok(None) };
    let raw = raw.trim_ascii();
    // Visible ASCII or space only. A fold without early exit lets the
    // compiler vectorize the scan of a long token.
    let visible = raw.iter().fold(true, |ok, &b| ok & ((0x21..=0x7e).contains(&b) | (b == b' ')));
    if raw.is_empty() || !visible {
        return Err(Reason::MalformedCredential);
    }
    // All bytes are ASCII, so this cannot fail.
    std::str::from_utf8(raw).map(Some).map_err(|_| Reason::MalformedCredential)
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
    if bytes.is_empty() || bytes.contains(&b' ') {
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
    if let Some(auth) = single_value(headers, "authorization")?
        && let Some(c) = bearer(auth, prefixes)?
    {
        add(c)?;
    }
    if let Some(key) = single_value(headers, &names.api_key)? {
        add(Credential::ApiKey { key, in_authorization: false })?;
    }
    if let Some(key) = single_value(headers, &names.service_key)? {
        add(Credential::Service(key))?;
    }
    if let Some(key) = single_value(headers, &names.admin_key)? {
        add(Credential::Admin(key))?;
    }
    if guests && let Some(id) = single_value(headers, &names.guest_id)? {
        if !is_valid_guest_id(id) {
            return Err(Reason::MalformedCredential);
        }
        add(Credential::Guest(id))?;
    }
    Ok(found)
}
