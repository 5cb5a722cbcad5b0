use super::*;
use proptest::prelude::*;

fn kind(input: &[u8]) -> ErrorKind {
    decode(input).unwrap_err().kind
}

#[test]
fn decodes_scalars() {
    assert_eq!(decode(b"i42e").unwrap(), Value::Int(42));
    assert_eq!(decode(b"i-7e").unwrap(), Value::Int(-7));
    assert_eq!(decode(b"i0e").unwrap(), Value::Int(0));
    assert_eq!(decode(b"4:spam").unwrap(), Value::Bytes(b"spam"));
    assert_eq!(decode(b"0:").unwrap(), Value::Bytes(b""));
    assert_eq!(decode(b"i9223372036854775807e").unwrap(), Value::Int(i64::MAX));
    assert_eq!(decode(b"i-9223372036854775808e").unwrap(), Value::Int(i64::MIN));
}

#[test]
fn refuses_non_canonical_integers() {
    for bad in [&b"i-0e"[..], b"i03e", b"ie", b"i-e", b"i1-2e", b"i+1e", b"i 1e"] {
        assert_eq!(kind(bad), ErrorKind::BadInteger, "{}", String::from_utf8_lossy(bad));
    }
    assert_eq!(kind(b"i9223372036854775808e"), ErrorKind::IntegerOverflow);
    assert_eq!(kind(b"i99999999999999999999999999e"), ErrorKind::IntegerOverflow);
    assert_eq!(kind(b"i12"), ErrorKind::Eof);
}

#[test]
fn refuses_bad_strings() {
    assert_eq!(kind(b"5:abc"), ErrorKind::LengthPastEnd);
    assert_eq!(kind(b"05:abcde"), ErrorKind::BadLength);
    assert_eq!(kind(b"-1:a"), ErrorKind::UnexpectedByte('-'));
    assert_eq!(kind(b"3"), ErrorKind::Eof);
    assert_eq!(kind(b"99999999999999999999999:a"), ErrorKind::BadLength);
}

#[test]
fn structures_and_raw_spans() {
    let input = b"d3:cow3:moo4:spaml1:a1:bee";
    let v = decode(input).unwrap();
    let d = v.as_dict().unwrap();
    assert_eq!(d.raw, &input[..]);
    assert_eq!(d.get(b"cow").unwrap().as_str(), Some("moo"));
    assert_eq!(d.get(b"spam").unwrap().as_list().unwrap().len(), 2);

    // The raw span of a nested dictionary is exact even when its keys are unsorted.
    let input = b"d4:infod1:zi1e1:ai2ee1:xi0ee";
    let v = decode(input).unwrap();
    let info = v.get(b"info").unwrap().as_dict().unwrap();
    assert_eq!(info.raw, b"d1:zi1e1:ai2ee");
    assert_eq!(v.encode(), b"d4:infod1:ai2e1:zi1ee1:xi0ee");
}

#[test]
fn refuses_malformed_structures() {
    assert_eq!(kind(b"d1:ai1e1:ai2ee"), ErrorKind::DuplicateKey("a".into()));
    assert_eq!(kind(b"d1:bi1e1:ai2e1:bi3ee"), ErrorKind::DuplicateKey("b".into()));
    assert_eq!(kind(b"di1ei2ee"), ErrorKind::KeyNotString);
    assert_eq!(kind(b"l"), ErrorKind::Eof);
    assert_eq!(kind(b"d1:a"), ErrorKind::Eof);
    assert_eq!(kind(b"i1ei2e"), ErrorKind::TrailingData);
    assert_eq!(kind(b"x"), ErrorKind::UnexpectedByte('x'));
    assert_eq!(kind(b""), ErrorKind::Eof);
    let deep = [vec![b'l'; 10_000], vec![b'e'; 10_000]].concat();
    assert_eq!(kind(&deep), ErrorKind::TooDeep);
}

#[test]
fn errors_say_where() {
    let e = decode(b"d3:fooi1e3:bari0x").unwrap_err();
    assert_eq!(e.offset, 16);
    assert_eq!(e.to_string(), "invalid integer at byte 16");
}

#[test]
fn encoder_writes_canonical_output() {
    let mut e = Encoder::new();
    e.begin_dict().str("a").int(-12).str("b").begin_list().bytes(b"xy").end().end();
    assert_eq!(e.finish(), b"d1:ai-12e1:bl2:xyee");
    let mut e = Encoder::new();
    e.int(i64::MIN);
    assert_eq!(e.finish(), b"i-9223372036854775808e");
}

/// An owned tree for generating arbitrary values.
#[derive(Debug, Clone)]
enum Tree {
    Int(i64),
    Bytes(Vec<u8>),
    List(Vec<Tree>),
    Dict(std::collections::BTreeMap<Vec<u8>, Tree>),
}

fn tree() -> impl Strategy<Value = Tree> {
    let leaf = prop_oneof![
        any::<i64>().prop_map(Tree::Int),
        proptest::collection::vec(any::<u8>(), 0..24).prop_map(Tree::Bytes),
    ];
    leaf.prop_recursive(4, 64, 6, |inner| {
        prop_oneof![
            proptest::collection::vec(inner.clone(), 0..6).prop_map(Tree::List),
            proptest::collection::btree_map(proptest::collection::vec(any::<u8>(), 0..8), inner, 0..6)
                .prop_map(Tree::Dict),
        ]
    })
}

fn write(t: &Tree, e: &mut Encoder) {
    match t {
        Tree::Int(i) => {
            e.int(*i);
        }
        Tree::Bytes(b) => {
            e.bytes(b);
        }
        Tree::List(l) => {
            e.begin_list();
            l.iter().for_each(|x| write(x, e));
            e.end();
        }
        Tree::Dict(d) => {
            e.begin_dict();
            for (k, x) in d {
                e.bytes(k);
                write(x, e);
            }
            e.end();
        }
    }
}

/// Values in a tree, dictionary keys included (they are strings).
fn values(t: &Tree) -> usize {
    match t {
        Tree::Int(_) | Tree::Bytes(_) => 1,
        Tree::List(l) => 1 + l.iter().map(values).sum::<usize>(),
        Tree::Dict(d) => 1 + d.values().map(|x| 1 + values(x)).sum::<usize>(),
    }
}

#[test]
fn limited_decoding_counts_values_before_building() {
    // A dictionary, two keys, an integer, a list and a string: six values.
    assert_eq!(decode_limited(b"d1:ai1e1:bl1:xee", 6).unwrap().get(b"a"), Some(&Value::Int(1)));
    let e = decode_limited(b"d1:ai1e1:bl1:xee", 5).unwrap_err();
    assert_eq!(e, Error { offset: 11, kind: ErrorKind::TooManyValues(5) });
    assert_eq!(e.to_string(), "more than 5 values (integers, strings, lists and dictionaries) at byte 11");
    // A million values: refused at the limit without building anything.
    let mut big = b"l".to_vec();
    big.extend(std::iter::repeat_n(&b"i0e"[..], 1_000_000).flatten());
    big.push(b'e');
    assert!(matches!(decode_limited(&big, 1000).unwrap_err().kind, ErrorKind::TooManyValues(1000)));
    assert!(decode_limited(&big, 1_000_001).is_ok());
    // What the count cannot judge is left to the decoder, which names it.
    assert_eq!(kind_limited(b"d1:a"), ErrorKind::Eof);
    assert_eq!(kind_limited(b"5:ab"), ErrorKind::LengthPastEnd);
    assert_eq!(kind_limited(b"i01e"), ErrorKind::BadInteger);
    assert_eq!(kind_limited(b"x"), ErrorKind::UnexpectedByte('x'));
    let deep = [vec![b'l'; MAX_DEPTH + 1], vec![b'e'; MAX_DEPTH + 1]].concat();
    assert_eq!(kind_limited(&deep), ErrorKind::TooDeep);
}

fn kind_limited(input: &[u8]) -> ErrorKind {
    decode_limited(input, usize::MAX).unwrap_err().kind
}

proptest! {
    #[test]
    fn limited_decoding_agrees_with_decoding(t in tree()) {
        let mut e = Encoder::new();
        write(&t, &mut e);
        let bytes = e.finish();
        let n = values(&t);
        prop_assert_eq!(decode_limited(&bytes, n).unwrap(), decode(&bytes).unwrap());
        prop_assert!(matches!(decode_limited(&bytes, n - 1).unwrap_err().kind, ErrorKind::TooManyValues(_)));
    }

    #[test]
    fn limited_decoding_never_panics(data in proptest::collection::vec(any::<u8>(), 0..256), max in 0usize..64) {
        let _ = decode_limited(&data, max);
    }

    #[test]
    fn round_trip(t in tree()) {
        let mut e = Encoder::new();
        write(&t, &mut e);
        let bytes = e.finish();
        let v = decode(&bytes).unwrap();
        prop_assert_eq!(v.encode(), bytes.clone());
        if let Value::Dict(d) = &v {
            prop_assert_eq!(d.raw, &bytes[..]);
        }
    }

    #[test]
    fn never_panics(data in proptest::collection::vec(any::<u8>(), 0..256)) {
        let _ = decode(&data);
    }

    #[test]
    fn never_panics_on_near_valid(t in tree(), cut in any::<prop::sample::Index>(), flip in any::<u8>()) {
        let mut e = Encoder::new();
        write(&t, &mut e);
        let mut bytes = e.finish();
        let i = cut.index(bytes.len());
        bytes[i] ^= flip;
        let _ = decode(&bytes);
        bytes.truncate(i);
        // A strict prefix of one encoded value is never a complete value.
        prop_assert!(decode(&bytes).is_err());
    }
}
