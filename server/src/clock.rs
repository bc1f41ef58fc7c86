//! The wall clock, in Unix milliseconds: what records, metrics, sessions and
//! the audit log are stamped with. Its own leaf, so reading the time does
//! not mean naming the database module.

pub fn now_ms() -> i64 {
    std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).map(|d| d.as_millis() as i64).unwrap_or(0)
}
