//! Dense, bounded bin store: the counts of one sign's logarithmic bins.
//!
//! Counts live in a contiguous `Vec<u64>` covering the index range
//! `[offset, offset + len)`, growing at either end as needed. Memory is bounded
//! by [`MAX_BINS`]: when the range would exceed it, the lowest-magnitude bins
//! are folded into the lowest bin that is kept. The representation is
//! canonical (empty, or first and last counts non-zero), so derived equality
//! compares contents, and folding depends only on the highest index ever seen,
//! so merge order never changes the result.

/// Maximum number of bins the store of one sign spans (32 KiB of counts).
///
/// With gamma = 1.01/0.99 this covers a magnitude ratio of gamma^4095 ≈ 3e35
/// below the largest value of the same sign; values smaller than that lose
/// their accuracy guarantee (they are reported as that floor), larger ones
/// never do.
pub const MAX_BINS: usize = 4096;

/// Counts of the bins `offset..offset + counts.len()`, by bin index.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub(crate) struct Store {
    offset: i32,
    counts: Vec<u64>,
}

impl Store {
    /// Builds a store from the dense counts of bins starting at `offset`.
    ///
    /// The caller guarantees the canonical shape: at most [`MAX_BINS`]
    /// counts, the first and last non-zero (or none at all with offset 0).
    pub(crate) fn from_dense(offset: i32, counts: Vec<u64>) -> Self {
        Self { offset, counts }
    }

    pub(crate) fn is_empty(&self) -> bool {
        self.counts.is_empty()
    }

    /// Adds `count` to bin `index` (or to the lowest kept bin if `index` falls
    /// below the collapsing floor).
    pub(crate) fn add(&mut self, index: i32, count: u64) {
        if count == 0 {
            return;
        }
        if self.counts.is_empty() {
            self.offset = index;
            self.counts.push(count);
            return;
        }
        self.cover(index, index);
        let slot = self.slot(index);
        self.counts[slot] = self.counts[slot].saturating_add(count);
    }

    /// Adds every bin of `other` into `self`.
    pub(crate) fn merge(&mut self, other: &Store) {
        if other.is_empty() {
            return;
        }
        if self.is_empty() {
            self.clone_from(other);
            return;
        }
        self.cover(other.offset, other.max_index());
        for (index, count) in other.bins() {
            let slot = self.slot(index);
            self.counts[slot] = self.counts[slot].saturating_add(count);
        }
    }

    /// Non-zero bins as `(index, count)`, in ascending index order.
    pub(crate) fn bins(&self) -> impl DoubleEndedIterator<Item = (i32, u64)> + '_ {
        self.counts
            .iter()
            .enumerate()
            .filter(|&(_, &count)| count > 0)
            .map(|(slot, &count)| (self.offset + slot as i32, count))
    }

    /// Sum of all counts, saturating at `u64::MAX`.
    pub(crate) fn total(&self) -> u64 {
        self.counts.iter().fold(0, |sum, &c| sum.saturating_add(c))
    }

    /// Bytes of counts held on the heap (capacity, not length).
    pub(crate) fn heap_bytes(&self) -> usize {
        self.counts.capacity() * std::mem::size_of::<u64>()
    }

    /// Gives back spare capacity.
    pub(crate) fn shrink_to_fit(&mut self) {
        self.counts.shrink_to_fit();
    }

    /// Highest bin index; only meaningful when non-empty.
    fn max_index(&self) -> i32 {
        self.offset + self.counts.len() as i32 - 1
    }

    /// Position in `counts` for `index`, which `cover` made reachable.
    fn slot(&self, index: i32) -> usize {
        (index.max(self.offset) - self.offset) as usize
    }

    /// Grows the non-empty store so that it spans `hi` and reaches down to
    /// `lo`, as far as [`MAX_BINS`] allows, folding bins below the new floor.
    fn cover(&mut self, lo: i32, hi: i32) {
        let max = self.max_index().max(hi);
        let floor = max - (MAX_BINS as i32 - 1);
        if self.offset < floor {
            let fold = (floor - self.offset) as usize;
            if fold >= self.counts.len() {
                let total = self.total();
                self.counts.clear();
                self.counts.push(total);
            } else {
                let folded = self.counts[..=fold]
                    .iter()
                    .fold(0, |sum: u64, &c| sum.saturating_add(c));
                self.counts.drain(..fold);
                self.counts[0] = folded;
            }
            self.offset = floor;
        }
        let len = (max - self.offset + 1) as usize;
        if len > self.counts.len() {
            self.counts.resize(len, 0);
        }
        let min = lo.max(floor);
        if min < self.offset {
            let grow = (self.offset - min) as usize;
            self.counts.splice(0..0, std::iter::repeat_n(0, grow));
            self.offset = min;
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn grows_both_ways_and_stays_canonical() {
        let mut store = Store::default();
        store.add(10, 1);
        store.add(7, 2);
        store.add(12, 3);
        assert_eq!(store, Store::from_dense(7, vec![2, 0, 0, 1, 0, 3]));
        assert_eq!(store.bins().collect::<Vec<_>>(), [(7, 2), (10, 1), (12, 3)]);
        assert_eq!(store.total(), 6);
    }

    #[test]
    fn collapses_lowest_bins_beyond_capacity() {
        let mut store = Store::default();
        store.add(0, 1);
        store.add(1, 1);
        store.add(5000, 1);
        let floor = 5000 - (MAX_BINS as i32 - 1);
        assert_eq!(store.counts.len(), MAX_BINS);
        assert_eq!(store.bins().next(), Some((floor, 2)));
        store.add(-3, 4);
        assert_eq!(store.bins().next(), Some((floor, 6)));
        assert_eq!(store.total(), 7);
    }

    #[test]
    fn merge_is_order_independent_with_collapsing() {
        let mut a = Store::default();
        a.add(-100, 1);
        a.add(3000, 2);
        let mut b = Store::default();
        b.add(500, 3);
        b.add(6000, 4);
        let mut ab = a.clone();
        ab.merge(&b);
        let mut ba = b.clone();
        ba.merge(&a);
        let mut sequential = Store::default();
        for (index, count) in [(-100, 1), (3000, 2), (500, 3), (6000, 4)] {
            sequential.add(index, count);
        }
        assert_eq!(ab, ba);
        assert_eq!(ab, sequential);
        assert!(ab.counts.len() <= MAX_BINS);
    }

    #[test]
    fn counts_saturate() {
        let mut store = Store::default();
        store.add(1, u64::MAX);
        store.add(1, 5);
        store.add(2, 5);
        assert_eq!(store.total(), u64::MAX);
        assert_eq!(store.bins().next(), Some((1, u64::MAX)));
    }
}
