//! The opaque pagination cursor of message and conversation lists: `before=<cursor>` from a
//! client, decoded by the conversation service (`Cursor::decode`); `nextCursor` is
//! `Cursor::encode`.
//!
//! Properties: decoding never panics; a cursor that decodes re-encodes to exactly the same text
//! (one cursor per position, nothing else accepted); the empty cursor means "from the newest";
//! and, from the same bytes read as a (time, id) position, decode(encode(x)) == x for every
//! cursor short enough to be accepted.

#![no_main]

use arbitrary::{Arbitrary, Unstructured};
use crawbl_conversation::fuzzing::Cursor;
use libfuzzer_sys::fuzz_target;

/// Longest cursor `decode` takes.
const MAX_CURSOR_BYTES: usize = 256;

fuzz_target!(|data: &[u8]| {
    if let Ok(raw) = std::str::from_utf8(data) {
        match Cursor::decode(raw) {
            Ok(Some(cursor)) => {
                assert_eq!(cursor.encode(), raw, "{cursor:?} decoded from another text");
                assert_eq!(Cursor::decode(&cursor.encode()).ok(), Some(Some(cursor)));
            }
            Ok(None) => assert!(raw.is_empty(), "{raw:?} decoded to no cursor"),
            Err(_) => assert!(!raw.is_empty()),
        }
    }

    let mut input = Unstructured::new(data);
    let (Ok(at_ms), Ok(id)) = (i64::arbitrary(&mut input), String::arbitrary(&mut input)) else {
        return;
    };
    let cursor = Cursor { at_ms, id };
    let encoded = cursor.encode();
    let decoded = Cursor::decode(&encoded);
    if encoded.len() <= MAX_CURSOR_BYTES {
        assert_eq!(decoded.ok(), Some(Some(cursor)), "{encoded:?}");
    } else {
        assert!(
            decoded.is_err(),
            "{encoded:?} is longer than {MAX_CURSOR_BYTES}"
        );
    }
});
