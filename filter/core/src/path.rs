//! Request-target normalization.
//!
//! Route rules are matched against a canonical path, and the same canonical
//! path is what the upstream receives, so the filter and the service can
//! never disagree about which resource was asked for. Forms whose meaning
//! depends on the upstream's parser (encoded `/` or `\`, NUL, invalid UTF-8,
//! `;` path parameters by default) are rejected rather than guessed.

use std::borrow::Cow;

/// A normalized request target, borrowed from the raw one where nothing
/// had to change (the common case costs no allocation).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct NormalizedPath<'a> {
    /// The canonical path: percent-decoded unreserved characters, other
    /// escapes upper-cased, dot segments resolved, duplicate slashes merged.
    pub path: Cow<'a, str>,
    /// The raw query string (after `?`), untouched.
    pub query: Option<&'a str>,
    /// Whether `path?query` differs from the raw target, i.e. the upstream
    /// must be sent the rewritten form.
    pub changed: bool,
}

impl NormalizedPath<'_> {
    /// `path` and `?query` joined, as the upstream should receive it.
    pub fn target(&self) -> String {
        match &self.query {
            Some(q) => format!("{}?{q}", self.path),
            None => self.path.clone().into_owned(),
        }
    }
}

/// Why a request target was refused (all answered with 400).
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
pub enum PathError {
    /// Longer than the configured limit.
    #[error("request path is too long")]
    TooLong,
    /// Not origin-form (`/…`): empty, `*`, or absolute-form.
    #[error("request path must start with '/'")]
    NotOriginForm,
    /// A `%` not followed by two hex digits, or a control character.
    #[error("request path has an invalid percent-encoding or character")]
    InvalidEncoding,
    /// Encoded `/`, `\`, NUL, a raw `\`, or a fragment: meaning depends on
    /// the upstream's parser.
    #[error("request path has an ambiguous encoding")]
    Ambiguous,
    /// `;` path parameters while they are not allowed.
    #[error("request path has ';' parameters")]
    PathParameters,
    /// Percent-decoded bytes are not valid UTF-8 (e.g. overlong forms).
    #[error("request path is not valid UTF-8 once decoded")]
    InvalidUtf8,
}

/// Limits and switches for [`normalize`].
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct PathLimits {
    /// Largest raw target accepted, in bytes.
    pub max_bytes: usize,
    /// Accept `;` in the path.
    pub allow_parameters: bool,
}

fn is_unreserved(b: u8) -> bool {
    b.is_ascii_alphanumeric() || matches!(b, b'-' | b'.' | b'_' | b'~')
}

fn hex_value(b: u8) -> Option<u8> {
    match b {
        b'0'..=b'9' => Some(b - b'0'),
        b'a'..=b'f' => Some(b - b'a' + 10),
        b'A'..=b'F' => Some(b - b'A' + 10),
        _ => None,
    }
}

fn push_escaped(out: &mut String, b: u8) {
    const HEX: &[u8; 16] = b"0123456789ABCDEF";
    out.push('%');
    out.push(char::from(HEX[usize::from(b >> 4)]));
    out.push(char::from(HEX[usize::from(b & 0x0f)]));
}

/// Decodes unreserved escapes and canonicalizes the rest. Returns the
/// re-encoded path and the fully decoded bytes (for the UTF-8 check).
fn decode(raw: &[u8], limits: PathLimits) -> Result<(String, Vec<u8>), PathError> {
    let mut out = String::with_capacity(raw.len());
    let mut decoded = Vec::with_capacity(raw.len());
    let mut i = 0;
    while i < raw.len() {
        let b = raw[i];
        let byte = if b == b'%' {
            let hi = raw.get(i + 1).copied().and_then(hex_value);
            let lo = raw.get(i + 2).copied().and_then(hex_value);
            let (Some(hi), Some(lo)) = (hi, lo) else {
                return Err(PathError::InvalidEncoding);
            };
            i += 3;
            let d = (hi << 4) | lo;
            if matches!(d, b'/' | b'\\' | 0) {
                return Err(PathError::Ambiguous);
            }
            if is_unreserved(d) {
                out.push(char::from(d));
            } else {
                push_escaped(&mut out, d);
            }
            d
        } else {
            i += 1;
            match b {
                b'\\' | b'#' => return Err(PathError::Ambiguous),
                0..=0x1f | 0x7f | b' ' => return Err(PathError::InvalidEncoding),
                b';' if !limits.allow_parameters => return Err(PathError::PathParameters),
                0x80..=0xff => push_escaped(&mut out, b),
                _ => out.push(char::from(b)),
            }
            b
        };
        decoded.push(byte);
    }
    Ok((out, decoded))
}

/// Resolves `.` and `..` (RFC 3986 §5.2.4, clamped at the root) and merges
/// empty segments; keeps a trailing slash.
fn resolve_segments(encoded: &str) -> String {
    let mut stack: Vec<&str> = Vec::new();
    let mut trailing_slash = false;
    for segment in encoded.split('/').skip(1) {
        trailing_slash = false;
        match segment {
            "" => trailing_slash = true,
            "." => trailing_slash = true,
            ".." => {
                stack.pop();
                trailing_slash = true;
            }
            s => stack.push(s),
        }
    }
    let mut path = String::with_capacity(encoded.len());
    for segment in &stack {
        path.push('/');
        path.push_str(segment);
    }
    if path.is_empty() || trailing_slash {
        path.push('/');
    }
    path
}

/// Whether `raw_path` (origin-form, before any `?`) is already what
/// [`decode`] and [`resolve_segments`] would make of it: only bytes
/// `decode` copies as they are (no `%`, nothing it refuses), no empty
/// segment but a trailing one, no `.` or `..` segment. Most requests are;
/// they skip the two passes and their four allocations.
fn is_canonical(raw_path: &[u8], limits: PathLimits) -> bool {
    let plain = raw_path.iter().all(|&b| match b {
        b'%' | b'\\' | b'#' | 0..=b' ' | 0x7f..=0xff => false,
        b';' => limits.allow_parameters,
        _ => true,
    });
    let mut segments = raw_path.split(|&b| b == b'/').skip(1).peekable();
    plain
        && std::iter::from_fn(|| segments.next().map(|s| (s, segments.peek().is_none())))
            .all(|(segment, last)| !matches!(segment, b"." | b"..") && (last || !segment.is_empty()))
}

/// The canonical form of an origin-form path: decoded, checked, resolved.
fn canonical(raw_path: &[u8], limits: PathLimits) -> Result<String, PathError> {
    let (encoded, decoded) = decode(raw_path, limits)?;
    if std::str::from_utf8(&decoded).is_err() {
        return Err(PathError::InvalidUtf8);
    }
    Ok(resolve_segments(&encoded))
}

/// Normalizes a raw `:path` value.
pub fn normalize(raw: &[u8], limits: PathLimits) -> Result<NormalizedPath<'_>, PathError> {
    if raw.len() > limits.max_bytes {
        return Err(PathError::TooLong);
    }
    let (raw_path, raw_query) = match raw.iter().position(|&b| b == b'?') {
        Some(q) => (&raw[..q], Some(&raw[q + 1..])),
        None => (raw, None),
    };
    if raw_path.first() != Some(&b'/') {
        return Err(PathError::NotOriginForm);
    }
    let path = if is_canonical(raw_path, limits) {
        // ASCII by construction.
        Cow::Borrowed(std::str::from_utf8(raw_path).map_err(|_| PathError::InvalidUtf8)?)
    } else {
        Cow::Owned(canonical(raw_path, limits)?)
    };
    let query = match raw_query {
        Some(q) if q.contains(&b'#') => return Err(PathError::Ambiguous),
        Some(q) => {
            let text = std::str::from_utf8(q).map_err(|_| PathError::InvalidUtf8)?;
            if text.bytes().any(|b| b.is_ascii_control() || b == b' ') {
                return Err(PathError::InvalidEncoding);
            }
            Some(text)
        }
        None => None,
    };
    let changed = path.as_bytes() != raw_path;
    Ok(NormalizedPath { path, query, changed })
}

#[cfg(test)]
mod tests {
    use super::*;

    const LIMITS: PathLimits = PathLimits { max_bytes: 8192, allow_parameters: false };

    fn norm(raw: &str) -> Result<String, PathError> {
        normalize(raw.as_bytes(), LIMITS).map(|n| n.path.into_owned())
    }

    #[test]
    fn canonical_forms() {
        let table = [
            ("/", "/"),
            ("/api/users", "/api/users"),
            ("/admin/../public", "/public"),
            ("/%61dmin", "/admin"),
            ("//admin", "/admin"),
            ("/a//b///c", "/a/b/c"),
            ("/a/./b/", "/a/b/"),
            ("/a/b/..", "/a/"),
            ("/../../etc", "/etc"),
            ("/%2e%2e/admin", "/admin"),
            ("/.%2E/admin", "/admin"),
            ("/caf%c3%a9", "/caf%C3%A9"),
            ("/sp%20ace", "/sp%20ace"),
            ("/ADMIN", "/ADMIN"),
            ("/a/.", "/a/"),
        ];
        for (raw, want) in table {
            assert_eq!(norm(raw).as_deref(), Ok(want), "raw {raw}");
        }
    }

    #[test]
    fn ambiguous_and_invalid_forms_are_rejected() {
        let table = [
            ("/admin%2f", PathError::Ambiguous),
            ("/admin%2F..%2Fsecret", PathError::Ambiguous),
            ("/a%5cb", PathError::Ambiguous),
            ("/a\\b", PathError::Ambiguous),
            ("/a%00", PathError::Ambiguous),
            ("/a#frag", PathError::Ambiguous),
            ("/a%zz", PathError::InvalidEncoding),
            ("/a%4", PathError::InvalidEncoding),
            ("/a b", PathError::InvalidEncoding),
            ("/a\tb", PathError::InvalidEncoding),
            ("/%c0%af", PathError::InvalidUtf8),
            ("/%ff", PathError::InvalidUtf8),
            ("/public/..;/admin", PathError::PathParameters),
            ("*", PathError::NotOriginForm),
            ("", PathError::NotOriginForm),
            ("http://evil/admin", PathError::NotOriginForm),
        ];
        for (raw, want) in table {
            assert_eq!(norm(raw), Err(want), "raw {raw}");
        }
    }

    #[test]
    fn query_is_kept_and_change_is_reported() -> Result<(), PathError> {
        let n = normalize(b"//a/../b?x=1&y=%2F", LIMITS)?;
        assert_eq!(n.path, "/b");
        assert_eq!(n.query, Some("x=1&y=%2F"));
        assert!(n.changed);
        assert_eq!(n.target(), "/b?x=1&y=%2F");
        let same = normalize(b"/b?x=1", LIMITS)?;
        assert!(!same.changed);
        Ok(())
    }

    /// The shortcut must only take paths the full pass leaves as they are:
    /// every path of up to 6 bytes over an alphabet of the bytes that
    /// matter, with and without `;` parameters.
    #[test]
    fn paths_taken_as_canonical_are_what_the_full_pass_returns() {
        const ALPHABET: &[u8] = b"/a.%;\\#\x20\xc3";
        let mut shortcuts = 0;
        for len in 0..=6u32 {
            for n in 0..ALPHABET.len().pow(len) {
                let mut raw = vec![b'/'];
                let mut rest = n;
                for _ in 0..len {
                    raw.push(ALPHABET[rest % ALPHABET.len()]);
                    rest /= ALPHABET.len();
                }
                for allow_parameters in [false, true] {
                    let limits = PathLimits { max_bytes: 64, allow_parameters };
                    if is_canonical(&raw, limits) {
                        shortcuts += 1;
                        assert_eq!(canonical(&raw, limits).as_deref().map(str::as_bytes), Ok(&raw[..]), "{raw:?}");
                    }
                }
            }
        }
        assert!(shortcuts > 1000, "{shortcuts}");
        assert!(
            is_canonical(b"/api/v1/users/42", LIMITS) && is_canonical(b"/", LIMITS) && is_canonical(b"/a/", LIMITS)
        );
        assert!(!is_canonical(b"//a", LIMITS) && !is_canonical(b"/a/.", LIMITS) && !is_canonical(b"/a/../b", LIMITS));
    }

    #[test]
    fn limits_apply() -> Result<(), PathError> {
        let long = format!("/{}", "a".repeat(100));
        let tight = PathLimits { max_bytes: 50, allow_parameters: false };
        assert_eq!(normalize(long.as_bytes(), tight), Err(PathError::TooLong));
        let params = PathLimits { max_bytes: 100, allow_parameters: true };
        assert_eq!(normalize(b"/a;v=1", params)?.path, "/a;v=1");
        Ok(())
    }
}
