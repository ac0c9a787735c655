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

#[cfg(test)]
mod tests {
    use super::*;

    /// A map with exactly the given count, length table and data: lets a
    /// test lie in any one part.
    fn raw(count: u32, lens: &[(u32, u32)], data: &[u8]) -> Vec<u8> {
        let mut out = count.to_le_bytes().to_vec();
        for (n, v) in lens {
            out.extend_from_slice(&n.to_le_bytes());
            out.extend_from_slice(&v.to_le_bytes());
        }
        out.extend_from_slice(data);
        out
    }

    fn map(pairs: &[HeaderPair<'_>]) -> Vec<u8> {
        serialize(pairs.iter().copied()).unwrap()
    }

    #[test]
    fn well_formed_maps_parse_to_borrowed_pairs() {
        let rows: &[(&str, &[HeaderPair<'_>])] = &[
            ("no headers", &[]),
            ("one", &[(":method", b"GET")]),
            ("empty name and value", &[("", b"")]),
            ("repeated name kept twice", &[("authorization", b"a"), ("authorization", b"b")]),
            ("binary value, NUL inside", &[("x-bin", b"\xff\x00\xfe")]),
            ("utf-8 name", &[("x-caf\u{e9}", b"v")]),
            (
                "pseudo and regular",
                &[(":method", b"GET"), (":path", b"/a?b"), (":authority", b"h"), ("x-api-key", b"k_1")],
            ),
        ];
        for (label, pairs) in rows {
            let buf = map(pairs);
            assert_eq!(parse(&buf).as_deref(), Ok(*pairs), "{label}");
        }
    }

    #[test]
    fn parsed_pairs_point_into_the_buffer() {
        let buf = map(&[("a", b"1")]);
        let pairs = parse(&buf).unwrap();
        let range = buf.as_ptr_range();
        assert!(range.contains(&pairs[0].0.as_ptr()) && range.contains(&pairs[0].1.as_ptr()));
    }

    #[test]
    fn empty_buffer_is_an_empty_map_and_trailing_bytes_are_ignored() {
        assert_eq!(parse(&[]), Ok(vec![]));
        let mut buf = map(&[("a", b"1")]);
        buf.extend_from_slice(b"junk");
        assert_eq!(parse(&buf), Ok(vec![("a", &b"1"[..])]));
    }

    #[test]
    fn hostile_maps_are_refused_without_panicking() {
        use MapError::*;
        let rows: Vec<(&str, Vec<u8>, MapError)> = vec![
            ("count cut short", vec![1, 0], Truncated),
            ("count without table", raw(1, &[], b""), Truncated),
            ("table cut mid-entry", raw(1, &[], &[1, 0, 0, 0, 1, 0]), Truncated),
            ("count u32::MAX", raw(u32::MAX, &[(1, 1)], b"a\0b\0"), Truncated),
            ("count larger than table", raw(2, &[(1, 1)], b"a\0b\0"), Truncated),
            ("no data at all", raw(1, &[(1, 1)], b""), Truncated),
            ("name longer than data", raw(1, &[(5, 0)], b"ab\0\0"), Truncated),
            ("value longer than data", raw(1, &[(1, 9)], b"a\0bc\0"), Truncated),
            ("name len u32::MAX", raw(1, &[(u32::MAX, 0)], b"a\0\0"), Truncated),
            ("value len u32::MAX", raw(1, &[(1, u32::MAX)], b"a\0b\0"), Truncated),
            ("both lens u32::MAX", raw(1, &[(u32::MAX, u32::MAX)], &[0; 16]), Truncated),
            ("final NUL missing", raw(1, &[(1, 1)], b"a\0b"), Truncated),
            ("name NUL missing", raw(1, &[(1, 1)], b"ab\0\0"), MissingNul),
            ("value NUL missing", raw(1, &[(1, 1)], b"a\0bc"), MissingNul),
            ("lengths one short", raw(1, &[(1, 1)], b"ab\0cd\0"), MissingNul),
            ("second entry overruns", raw(2, &[(1, 1), (1, 3)], b"a\0b\0c\0d\0"), Truncated),
            ("name not utf-8", raw(1, &[(2, 1)], b"\xc3\x28\0v\0"), NameNotUtf8),
            ("name lone continuation", raw(1, &[(1, 0)], b"\x80\0\0"), NameNotUtf8),
        ];
        for (label, buf, want) in rows {
            assert_eq!(parse(&buf), Err(want), "{label}");
        }
    }

    #[test]
    fn every_truncation_of_a_real_map_is_refused() {
        let buf = map(&[(":method", b"GET"), ("authorization", b"Bearer x"), ("x", b"")]);
        for len in 1..buf.len() {
            assert!(parse(&buf[..len]).is_err(), "cut at {len}");
        }
    }

    #[test]
    fn arbitrary_bytes_never_panic() {
        // A cheap deterministic sweep: every one-byte corruption of a real
        // map either parses or is refused.
        let buf = map(&[(":path", b"/x"), ("x-api-key", b"k")]);
        for at in 0..buf.len() {
            for byte in [0x00, 0x01, 0x7f, 0x80, 0xff] {
                let mut bad = buf.clone();
                bad[at] = byte;
                let _ = parse(&bad);
            }
        }
    }

    #[test]
    fn serialize_matches_the_abi_layout() {
        let buf = map(&[("ab", b"c")]);
        assert_eq!(buf, raw(1, &[(2, 1)], b"ab\0c\0"));
        assert_eq!(map(&[]), 0u32.to_le_bytes());
    }
}
