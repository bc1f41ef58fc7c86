//! Compile + match: any pattern text and any record bytes. A pattern either
//! compiles or is refused with a reason; a compiled pattern matches any
//! record without panicking or hanging (libFuzzer's -timeout catches hangs).
//! The filter module is compiled here on its own (it needs only serde_json).

#![no_main]

#[path = "../../app/src/filter.rs"]
#[allow(dead_code)]
mod filter;

use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    // Pattern and record are split at the first NUL byte.
    let (pattern, record) = match data.iter().position(|b| *b == 0) {
        Some(i) => (&data[..i], &data[i + 1..]),
        None => (data, &b"{\"a\":1}"[..]),
    };
    let Ok(pattern) = std::str::from_utf8(pattern) else { return };
    match filter::Pattern::compile(pattern) {
        Ok(p) => {
            let doc = filter::value_document(Some(record));
            // Parsing only what the pattern names changes nothing.
            let projected = filter::Projection::of(std::slice::from_ref(&p)).value_document(Some(record));
            assert_eq!(p.matches(&doc), p.matches(&projected), "projection changed the answer");
            // Matching straight off the bytes changes nothing either.
            let fast = filter::ValueFilters::new(std::slice::from_ref(&p)).admits(Some(record));
            assert_eq!(p.matches(&doc), fast, "matching off the bytes changed the answer");
            let _ = p.first_mismatch(&doc);
            let meta = filter::RecordMeta {
                key: Some(record),
                headers: vec![("h", Some(record))],
                topic: "t",
                partition: 0,
                timestamp_ms: 1,
            };
            let _ = p.matches(&filter::record_document(Some(record), &meta));
        }
        Err(reason) => assert!(!reason.is_empty(), "a refused pattern says why"),
    }
});
