//! The timer heap: every `call_later`/`call_at` of a loop lives here, ordered
//! by (deadline, sequence) so equal deadlines run in scheduling order. One
//! libuv timer per loop wakes the poll for the earliest entry.
//!
//! Cancelling is O(1): `TimerHandle.cancel()` marks the handle and tells the
//! loop, which counts cancelled entries and rebuilds the heap when they are
//! more than half of it (as asyncio does), dropping them lazily otherwise.

use std::cmp::Ordering;
use std::collections::BinaryHeap;

/// One scheduled timer.
pub struct Entry<T> {
    pub when: f64,
    pub seq: u64,
    pub handle: T,
}

impl<T> PartialEq for Entry<T> {
    fn eq(&self, other: &Self) -> bool {
        self.cmp(other) == Ordering::Equal
    }
}
impl<T> Eq for Entry<T> {}
impl<T> PartialOrd for Entry<T> {
    fn partial_cmp(&self, other: &Self) -> Option<Ordering> {
        Some(self.cmp(other))
    }
}
impl<T> Ord for Entry<T> {
    /// Reversed, so that `BinaryHeap` (a max-heap) pops the earliest first.
    fn cmp(&self, other: &Self) -> Ordering {
        other
            .when
            .total_cmp(&self.when)
            .then_with(|| other.seq.cmp(&self.seq))
    }
}

/// Below this many timers the heap is never compacted (asyncio's rule).
const MIN_SCHEDULED_FOR_COMPACT: usize = 100;

pub struct TimerHeap<T> {
    heap: BinaryHeap<Entry<T>>,
    seq: u64,
    cancelled: usize,
}

impl<T> Default for TimerHeap<T> {
    fn default() -> Self {
        TimerHeap {
            heap: BinaryHeap::new(),
            seq: 0,
            cancelled: 0,
        }
    }
}

impl<T> TimerHeap<T> {
    pub fn push(&mut self, when: f64, handle: T) {
        self.seq = self.seq.wrapping_add(1);
        self.heap.push(Entry {
            when,
            seq: self.seq,
            handle,
        });
    }

    #[cfg(test)]
    pub fn len(&self) -> usize {
        self.heap.len()
    }

    /// A timer in the heap was cancelled.
    pub fn note_cancelled(&mut self) {
        self.cancelled += 1;
    }

    /// Whether cancelled entries are now more than half of a large heap.
    pub fn should_compact(&self) -> bool {
        self.heap.len() > MIN_SCHEDULED_FOR_COMPACT && self.cancelled * 2 > self.heap.len()
    }

    /// Every entry's payload, in no particular order (GC traversal).
    pub fn iter(&self) -> impl Iterator<Item = &T> {
        self.heap.iter().map(|e| &e.handle)
    }

    /// Remove every entry for which `is_cancelled` holds; returns them (so the
    /// caller can drop them outside any lock).
    pub fn compact(&mut self, mut is_cancelled: impl FnMut(&T) -> bool) -> Vec<T> {
        let all = std::mem::take(&mut self.heap).into_vec();
        let mut gone = Vec::new();
        let mut keep = Vec::with_capacity(all.len());
        for e in all {
            if is_cancelled(&e.handle) {
                gone.push(e.handle);
            } else {
                keep.push(e);
            }
        }
        self.heap = BinaryHeap::from(keep);
        self.cancelled = 0;
        gone
    }

    /// Payload of the earliest entry.
    pub fn peek(&self) -> Option<&T> {
        self.heap.peek().map(|e| &e.handle)
    }

    /// Deadline of the earliest entry.
    pub fn next_when(&self) -> Option<f64> {
        self.heap.peek().map(|e| e.when)
    }

    /// Pop the earliest entry if `pred(when)` holds.
    pub fn pop_if(&mut self, pred: impl FnOnce(f64) -> bool) -> Option<Entry<T>> {
        match self.heap.peek() {
            Some(e) if pred(e.when) => self.heap.pop(),
            _ => None,
        }
    }

    pub fn is_empty(&self) -> bool {
        self.heap.is_empty()
    }

    /// One popped entry was a cancelled one (keeps the count honest).
    pub fn forget_cancelled(&mut self) {
        self.cancelled = self.cancelled.saturating_sub(1);
    }

    /// Take every entry out (loop close).
    pub fn drain(&mut self) -> Vec<T> {
        self.cancelled = 0;
        std::mem::take(&mut self.heap)
            .into_vec()
            .into_iter()
            .map(|e| e.handle)
            .collect()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn pop_all(h: &mut TimerHeap<u32>) -> Vec<u32> {
        let mut out = Vec::new();
        while let Some(e) = h.pop_if(|_| true) {
            out.push(e.handle);
        }
        out
    }

    #[test]
    fn earliest_deadline_first() {
        let mut h = TimerHeap::default();
        h.push(3.0, 3);
        h.push(1.0, 1);
        h.push(2.0, 2);
        assert_eq!(h.next_when(), Some(1.0));
        assert_eq!(pop_all(&mut h), vec![1, 2, 3]);
    }

    #[test]
    fn equal_deadlines_are_fifo() {
        let mut h = TimerHeap::default();
        for i in 0..1000 {
            h.push(5.0, i);
        }
        assert_eq!(pop_all(&mut h), (0..1000).collect::<Vec<_>>());
    }

    #[test]
    fn pop_if_respects_predicate() {
        let mut h = TimerHeap::default();
        h.push(1.0, 1);
        h.push(2.0, 2);
        assert!(h.pop_if(|w| w < 0.5).is_none());
        assert_eq!(h.pop_if(|w| w < 1.5).map(|e| e.handle), Some(1));
        assert_eq!(h.len(), 1);
    }

    #[test]
    fn compaction_after_half_cancelled() {
        let mut h = TimerHeap::default();
        for i in 0..200 {
            h.push(i as f64, i);
        }
        for _ in 0..100 {
            h.note_cancelled();
        }
        assert!(!h.should_compact());
        h.note_cancelled();
        assert!(h.should_compact());
        let gone = h.compact(|v| v % 2 == 0);
        assert_eq!(gone.len(), 100);
        assert_eq!(
            pop_all(&mut h),
            (0..200).filter(|v| v % 2 == 1).collect::<Vec<_>>()
        );
    }

    #[test]
    fn small_heaps_never_compact() {
        let mut h = TimerHeap::default();
        for i in 0..50 {
            h.push(1.0, i);
        }
        for _ in 0..50 {
            h.note_cancelled();
        }
        assert!(!h.should_compact());
    }
}
