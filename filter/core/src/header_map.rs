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

/// Serializes `pairs` in the same format (what `proxy_set_header_map_pairs`
/// takes), for round trips in the tests and the `header_map` fuzz target;
/// the filter's own header write goes through the SDK. `None` when a count
/// or length does not fit a `u32`. The iterator is walked three times
/// (sizes, length table, bytes), so the buffer is allocated once.
pub fn serialize<'p, I>(pairs: I) -> Option<Vec<u8>>
where
    I: Iterator<Item = (&'p str, &'p [u8])> + Clone,
{
    let (count, bytes) = pairs.clone().fold((0usize, 0usize), |(c, b), (n, v)| {
        (c.saturating_add(1), b.saturating_add(n.len()).saturating_add(v.len()))
    });
    let size = count.checked_mul(10)?.checked_add(bytes)?.checked_add(4)?;
    let mut out = Vec::with_capacity(size);
    out.extend_from_slice(&u32::try_from(count).ok()?.to_le_bytes());
    for (name, value) in pairs.clone() {
        out.extend_from_slice(&u32::try_from(name.len()).ok()?.to_le_bytes());
        out.extend_from_slice(&u32::try_from(value.len()).ok()?.to_le_bytes());
    }
    for (name, value) in pairs {
        out.extend_from_slice(name.as_bytes());
        out.push(0);
        out.extend_from_slice(value);
        out.push(0);
    }
    Some(out)
}
