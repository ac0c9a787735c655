//! `meshgate_core::header_map`: the host's serialized header map, parsed in
//! place — well-formed maps, and truncated, lying and arbitrary ones refused
//! without a panic.

use meshgate_core::header_map::*;

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
    serialize(&pairs.iter().map(|&(n, v)| (n, Value::Bytes(v))).collect::<Vec<_>>()).unwrap()
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
        ("pseudo and regular", &[(":method", b"GET"), (":path", b"/a?b"), (":authority", b"h"), ("x-api-key", b"k_1")]),
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

#[test]
fn list_values_are_written_comma_joined_with_their_exact_length() {
    let roles = ["reader".to_owned(), "ops".to_owned(), "x".to_owned()];
    for (list, written) in [(&roles[..0], ""), (&roles[..1], "reader"), (&roles[..], "reader,ops,x")] {
        let value = Value::List(list);
        assert_eq!(value.to_string(), written);
        assert_eq!(value.len(), written.len());
        assert_eq!(value.is_empty(), written.is_empty());
    }
    let buf = serialize(&[("x-user-roles", Value::List(&roles)), ("a", Value::Bytes(b"1"))]).unwrap();
    assert_eq!(parse(&buf).unwrap(), vec![("x-user-roles", &b"reader,ops,x"[..]), ("a", &b"1"[..])]);
}
