//! More than one batch per partition (`ParallelizationFactor`): a
//! partition's records are spread over lanes by a hash of their key, so one
//! key's records stay in offset order while different keys run at once.
//! Each lane is a pipeline of its own (batch, invoke, retries, failures);
//! this book keeps what they finished, so the partition's committed offset
//! is always the lowest offset not yet done in any lane.

use std::collections::VecDeque;
use std::hash::{Hash, Hasher};
use std::sync::Mutex;

use rdkafka::message::{Message, OwnedMessage};

/// The lane of a record: by its key (the same key, the same lane); a
/// record without a key goes by its offset, round robin.
pub fn lane_of(m: &OwnedMessage, lanes: usize) -> usize {
    match m.key() {
        Some(k) => {
            // SipHash with fixed keys: the same lane in every process.
            let mut h = std::hash::DefaultHasher::new();
            k.hash(&mut h);
            (h.finish() % lanes as u64) as usize
        }
        None => (m.offset().rem_euclid(lanes as i64)) as usize,
    }
}

#[derive(Default)]
struct Book {
    /// Per lane, the offsets handed to it and not yet done, ascending.
    pending: Vec<VecDeque<i64>>,
    /// The offset after the last record handed to any lane.
    next: Option<i64>,
    /// The last offset reported as the partition's (never goes back).
    committed: Option<i64>,
    /// Per lane, the timestamp of its oldest record not done (0: none).
    oldest_ms: Vec<i64>,
}

/// One partition's lanes: what was handed to each, and what is done.
pub struct Lanes {
    book: Mutex<Book>,
    count: usize,
}

impl Lanes {
    pub fn new(count: usize) -> Lanes {
        let count = count.max(1);
        Lanes {
            book: Mutex::new(Book {
                pending: vec![VecDeque::new(); count],
                oldest_ms: vec![0; count],
                ..Book::default()
            }),
            count,
        }
    }

    pub fn count(&self) -> usize {
        self.count
    }

    fn book(&self) -> std::sync::MutexGuard<'_, Book> {
        self.book.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// A record goes to `lane` (before the lane can see it).
    pub fn handed(&self, lane: usize, offset: i64) {
        let mut b = self.book();
        b.pending[lane].push_back(offset);
        b.next = Some(offset + 1);
    }

    /// `lane` finished every record of its own before `next_offset`. The
    /// partition's new committed offset, if it moved: the lowest offset
    /// still pending in any lane, or past everything handed out.
    pub fn done(&self, lane: usize, next_offset: i64) -> Option<i64> {
        let mut b = self.book();
        while b.pending[lane].front().is_some_and(|o| *o < next_offset) {
            b.pending[lane].pop_front();
        }
        let low = b.pending.iter().filter_map(|q| q.front().copied()).min().or(b.next)?;
        if b.committed.is_some_and(|c| c >= low) {
            return None;
        }
        b.committed = Some(low);
        Some(low)
    }

    /// Records a lane's oldest pending record time (0: none); answers the
    /// partition's: the oldest over all lanes.
    pub fn oldest(&self, lane: usize, ms: i64) -> i64 {
        let mut b = self.book();
        b.oldest_ms[lane] = ms;
        b.oldest_ms.iter().copied().filter(|t| *t > 0).min().unwrap_or(0)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use rdkafka::Timestamp;

    fn msg(key: Option<&str>, offset: i64) -> OwnedMessage {
        OwnedMessage::new(
            None,
            key.map(|k| k.as_bytes().to_vec()),
            "t".into(),
            Timestamp::NotAvailable,
            0,
            offset,
            None,
        )
    }

    #[test]
    fn one_key_one_lane_and_keyless_records_round_robin() {
        let a: Vec<usize> = (0..20).map(|o| lane_of(&msg(Some("customer-7"), o), 10)).collect();
        assert!(a.iter().all(|l| *l == a[0]), "{a:?}");
        let spread: std::collections::HashSet<usize> =
            (0..200).map(|k| lane_of(&msg(Some(&format!("k{k}")), 0), 10)).collect();
        assert_eq!(spread.len(), 10, "200 keys reach every lane");
        let keyless: Vec<usize> = (0..4).map(|o| lane_of(&msg(None, o), 3)).collect();
        assert_eq!(keyless, [0, 1, 2, 0]);
    }

    #[test]
    fn the_partition_commits_the_lowest_offset_not_done_in_any_lane() {
        let l = Lanes::new(2);
        for (lane, offset) in [(0, 10), (1, 11), (0, 12), (1, 13)] {
            l.handed(lane, offset);
        }
        assert_eq!(l.done(1, 14), Some(10), "lane 0 still holds 10");
        assert_eq!(l.done(0, 11), Some(12), "12 (lane 0) is the lowest left");
        assert_eq!(l.done(0, 13), Some(14), "everything handed out is done");
        l.handed(1, 14);
        assert_eq!(l.done(0, 13), None, "nothing moves backwards or twice");
        assert_eq!(l.done(1, 15), Some(15));
        assert_eq!(l.oldest(0, 500), 500);
        assert_eq!(l.oldest(1, 300), 300);
        assert_eq!(l.oldest(1, 0), 500);
    }
}
