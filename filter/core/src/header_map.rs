//! The proxy-wasm ABI's serialized header map, read in place.
//!
//! `proxy_get_header_map_pairs` hands the filter the whole request header
//! map in one buffer:
//!
//! ```text
//! u32 count
//! count × (u32 name_len, u32 value_len)
//! count × (name bytes, 0, value bytes, 0)
//! ```
//!
//! (all integers little-endian). [`parse`] returns the headers as slices of
//! that buffer: one allocation for the list, none per header, where the
//! SDK's `get_map_bytes` makes a `String` and a `Vec` for every header.
//!
//! The buffer comes from the host, so [`parse`] trusts nothing in it: every
//! length is checked against what is left before it is used, and a map that
//! does not add up is refused whole ([`MapError`]) rather than read in part.
//! Skipping one bad entry is not an option: the entry skipped could be a
//! second `Authorization` header, and the credential rules depend on seeing
//! every copy. The caller treats a refusal like any other host failure.

/// A request header as the filter sees it: name and raw value, borrowed from
/// the host's buffer. Names are UTF-8 (Envoy's codecs only admit token
/// characters); values are bytes, checked by whoever reads them.
pub type HeaderPair<'a> = (&'a str, &'a [u8]);

/// Why a serialized header map was refused.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
pub enum MapError {
    /// The buffer ends before the count, the length table, or an entry.
    #[error("header map truncated")]
    Truncated,
    /// A name or value is not followed by the NUL the format puts there:
    /// the lengths do not describe this buffer.
    #[error("header map entry not NUL-terminated")]
    MissingNul,
    /// A header name is not UTF-8.
    #[error("header name is not UTF-8")]
    NameNotUtf8,
}

/// Parses a serialized header map (see the [module docs](self)).
///
/// An empty buffer is an empty map (hosts return no buffer at all for one).
/// Bytes after the last entry are ignored, as the SDK does. Never panics,
/// and allocates nothing before the length table is known to fit, so a
/// forged count cannot ask for a huge `Vec`.
pub fn parse(buf: &[u8]) -> Result<Vec<HeaderPair<'_>>, MapError> {
    let Some((count, rest)) = buf.split_first_chunk::<4>() else {
        return if buf.is_empty() { Ok(Vec::new()) } else { Err(MapError::Truncated) };
    };
    let count = usize::try_from(u32::from_le_bytes(*count)).map_err(|_| MapError::Truncated)?;
    let table_len = count.checked_mul(8).ok_or(MapError::Truncated)?;
    let (table, mut data) = rest.split_at_checked(table_len).ok_or(MapError::Truncated)?;
    let (table, _) = table.as_chunks::<8>();
    let mut pairs = Vec::with_capacity(count);
    for &[n0, n1, n2, n3, v0, v1, v2, v3] in table {
        let (name, after_name) = field(data, u32::from_le_bytes([n0, n1, n2, n3]))?;
        let (value, after_value) = field(after_name, u32::from_le_bytes([v0, v1, v2, v3]))?;
        data = after_value;
        pairs.push((std::str::from_utf8(name).map_err(|_| MapError::NameNotUtf8)?, value));
    }
    Ok(pairs)
}

/// Splits `len` bytes and their NUL terminator off the front of `data`.
fn field(data: &[u8], len: u32) -> Result<(&[u8], &[u8]), MapError> {
    let len = usize::try_from(len).map_err(|_| MapError::Truncated)?;
    let (field, rest) = data.split_at_checked(len).ok_or(MapError::Truncated)?;
    match rest.split_first() {
        Some((0, rest)) => Ok((field, rest)),
        Some(_) => Err(MapError::MissingNul),
        None => Err(MapError::Truncated),
    }
}

/// A header value to write: bytes as they are, or a list written
/// comma-joined (identity roles and scopes, which are header-safe tokens
/// without commas), so a request joins nothing into a new `String`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Value<'a> {
    /// The value's bytes.
    Bytes(&'a [u8]),
    /// Elements written with `,` between them.
    List(&'a [String]),
}

impl Value<'_> {
    /// The written length in bytes.
    pub fn len(&self) -> usize {
        match self {
            Value::Bytes(b) => b.len(),
            Value::List(l) => l.iter().fold(l.len().saturating_sub(1), |n, e| n.saturating_add(e.len())),
        }
    }

    /// Whether the written value is empty.
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// Appends the written value to `out`.
    pub fn write_to(&self, out: &mut Vec<u8>) {
        let start = out.len();
        out.resize(start + self.len(), 0);
        if let Some(slot) = out.get_mut(start..) {
            self.write_into(slot);
        }
    }

    /// Writes the value over the start of `out` (exactly [`Value::len`]
    /// bytes; a shorter `out` gets what fits).
    fn write_into(&self, out: &mut [u8]) {
        match self {
            Value::Bytes(b) => copy_prefix(out, b),
            Value::List(l) => {
                let mut out = out;
                for (i, e) in l.iter().enumerate() {
                    if i > 0 {
                        out = put(out, b",");
                    }
                    out = put(out, e.as_bytes());
                }
            }
        }
    }
}

/// Copies as much of `src` as fits over the start of `dst`.
fn copy_prefix(dst: &mut [u8], src: &[u8]) {
    let n = src.len().min(dst.len());
    if let (Some(d), Some(s)) = (dst.get_mut(..n), src.get(..n)) {
        d.copy_from_slice(s);
    }
}

/// Writes `src` at the start of `dst` and returns the rest of `dst`.
fn put<'o>(dst: &'o mut [u8], src: &[u8]) -> &'o mut [u8] {
    copy_prefix(dst, src);
    dst.get_mut(src.len()..).unwrap_or_default()
}

impl std::fmt::Display for Value<'_> {
    /// The written value (bytes that are not UTF-8 shown lossily).
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let mut out = Vec::with_capacity(self.len());
        self.write_to(&mut out);
        f.write_str(&String::from_utf8_lossy(&out))
    }
}

/// Serializes `pairs` in the same format (what `proxy_set_header_map_pairs`
/// takes): the filter's one header write per request, and round trips in
/// the tests and the `header_map` fuzz target. `None` when a count or
/// length does not fit a `u32`. Sizes are summed first, so the buffer is
/// allocated once, zeroed (the NUL terminators), and written in place.
pub fn serialize(pairs: &[(&str, Value<'_>)]) -> Option<Vec<u8>> {
    let count = u32::try_from(pairs.len()).ok()?;
    let mut bytes = 0usize;
    for (name, value) in pairs {
        bytes = bytes.checked_add(name.len())?.checked_add(value.len())?;
    }
    let table = pairs.len().checked_mul(8)?.checked_add(4)?;
    let size = table.checked_add(bytes)?.checked_add(pairs.len().checked_mul(2)?)?;
    let mut out = vec![0u8; size];
    let (head, mut data) = out.split_at_mut_checked(table)?;
    let (count_field, mut lengths) = head.split_first_chunk_mut::<4>()?;
    *count_field = count.to_le_bytes();
    for (name, value) in pairs {
        let (entry, rest) = lengths.split_first_chunk_mut::<8>()?;
        lengths = rest;
        let value_len = value.len();
        let [name_field, value_field] = entry.as_chunks_mut::<4>().0 else { return None };
        *name_field = u32::try_from(name.len()).ok()?.to_le_bytes();
        *value_field = u32::try_from(value_len).ok()?.to_le_bytes();
        data = put(data, name.as_bytes()).get_mut(1..)?;
        value.write_into(data);
        data = data.get_mut(value_len + 1..)?;
    }
    Some(out)
}
