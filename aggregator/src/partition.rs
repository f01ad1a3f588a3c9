//! The lifecycle of the partitions an aggregator reads, as a state machine: the phase of
//! every partition it holds a lease on, the events that move one, and what the aggregator
//! must do after each. Pure: the aggregator (`lib.rs`) does the I/O (Postgres, the
//! consumer) and reports its outcome here as events.
//!
//! ```text
//!                                                       committed
//!                lease gained            resumed       ┌──◄──┐    fenced
//!  (not owned) ─────────────► Resuming ─────────────► Consuming ─────────────► Fenced
//!       ▲                      ▲   ▲                   │  │  ▲
//!       │                      │   └── unloaded ───────┘  │  │
//!       │ lease lost           │                 isolated │  │ take_range
//!       │ (from any phase)     │                          ▼  │
//!                              └────── unloaded ──────── Isolating
//! ```
//!
//! | phase     | its messages                  | moves on (event: the method here)          |
//! |-----------|-------------------------------|--------------------------------------------|
//! | Resuming  | dropped                       | `resumed` (its fence loaded) → Consuming   |
//! | Consuming | folded in offset order        | `committed` → Consuming; `isolated` → Isolating; `fenced` → Fenced; `unloaded` → Resuming |
//! | Isolating | held until its range is whole | `take_range` → Consuming; `unloaded` → Resuming |
//! | Fenced    | dropped                       | only by the lease                          |
//!
//! In every phase, a lease lost (`lease`) drops the partition with whatever it had not
//! flushed, for its next owner to read again from the stored offset. A dropped message
//! is read again the same way once the partition is resumed. Each method says what
//! causes its event and what the aggregator does next: load, fetch (again), release
//! backpressure.

use std::collections::{BTreeMap, HashMap};

use crate::lease::Owned;
use crate::state::PartitionState;

/// Where an owned partition is in its lifecycle.
#[derive(Debug)]
enum Phase {
    /// Its lease is held but its state is not loaded, or its fetch not placed (Postgres
    /// or the broker was unavailable): tried again at every tick.
    Resuming,
    /// Loaded from its fence and fetched: its messages are folded in offset order. Its
    /// state is in [`Partitions::states`], the map a flush reads.
    Consuming,
    /// Re-reading a refused range from its fence, holding the messages. Its state
    /// travels here, out of a flush's reach: the offsets it holds are not applied.
    Isolating(Box<(PartitionState, Isolation)>),
    /// Another owner advanced its stored offset; its deltas are dropped and nothing is
    /// consumed until the lease changes.
    Fenced,
}

/// The messages of a flush that Postgres refused for their data, re-read from the fence:
/// those up to `until` are held whole, then applied in ever smaller ranges until the one
/// at fault is found and quarantined (see `Aggregator::isolate`).
#[derive(Debug)]
pub struct Isolation {
    until: i64,
    held: Vec<(i64, Vec<u8>)>,
}

impl Isolation {
    /// Holds the message at `offset` and moves `st` past it. Past `until` only when
    /// offsets at the range's end are missing for good: the range then ends with it.
    pub fn hold(&mut self, st: &mut PartitionState, offset: i64, payload: &[u8]) {
        self.held.push((offset, payload.to_vec()));
        self.until = self.until.max(offset + 1);
        st.next_offset = offset + 1;
    }
}

/// The partitions whose leases the aggregator acts on, each in its [`Phase`].
#[derive(Debug, Default)]
pub struct Partitions {
    /// The leases held, with their epochs.
    owned: Owned,
    /// The phase of every partition in `owned`.
    phases: BTreeMap<i32, Phase>,
    /// The state of every Consuming partition.
    states: HashMap<i32, PartitionState>,
}

/// The partitions a change of leases took away and brought.
#[derive(Debug, PartialEq, Eq)]
pub struct LeaseChange {
    pub lost: Vec<i32>,
    pub gained: Vec<i32>,
}

impl Partitions {
    /// The leases held.
    pub fn owned(&self) -> &Owned {
        &self.owned
    }

    /// The Consuming partitions' states: what a flush commits.
    pub fn states(&self) -> &HashMap<i32, PartitionState> {
        &self.states
    }

    /// The Resuming partitions, in order.
    pub fn resuming(&self) -> Vec<i32> {
        self.phases
            .iter()
            .filter(|(_, phase)| matches!(phase, Phase::Resuming))
            .map(|(p, _)| *p)
            .collect()
    }

    /// The state of a Consuming or Isolating partition.
    pub fn state(&self, partition: i32) -> Option<&PartitionState> {
        match self.phases.get(&partition)? {
            Phase::Consuming => self.states.get(&partition),
            Phase::Isolating(isolating) => Some(&isolating.0),
            Phase::Resuming | Phase::Fenced => None,
        }
    }

    /// The Consuming and Isolating partitions, in order, with their states: those the
    /// consumer fetches.
    pub fn loaded(&self) -> impl Iterator<Item = (i32, &PartitionState)> {
        self.phases
            .keys()
            .filter_map(|&p| self.state(p).map(|st| (p, st)))
    }

    /// Where a message of `partition` goes: the state it advances, with the isolation
    /// that holds it when Isolating. `None`: the message is dropped.
    pub fn loaded_mut(
        &mut self,
        partition: i32,
    ) -> Option<(&mut PartitionState, Option<&mut Isolation>)> {
        match self.phases.get_mut(&partition)? {
            Phase::Consuming => self.states.get_mut(&partition).map(|st| (st, None)),
            Phase::Isolating(isolating) => {
                let (st, isolation) = &mut **isolating;
                Some((st, Some(isolation)))
            }
            Phase::Resuming | Phase::Fenced => None,
        }
    }

    /// The state of a Consuming partition.
    pub fn consuming_mut(&mut self, partition: i32) -> Option<&mut PartitionState> {
        self.states.get_mut(&partition)
    }

    /// Whether `partition` is Isolating and holds every message of its range, so the
    /// range can be taken.
    pub fn holds_whole_range(&self, partition: i32) -> bool {
        matches!(
            self.phases.get(&partition),
            Some(Phase::Isolating(isolating)) if isolating.0.next_offset >= isolating.1.until
        )
    }

    /// Event: the lease round published the leases held now. A partition whose lease is
    /// gone, or held under another epoch, is lost whatever its phase, with its unflushed
    /// deltas and held messages (the next owner reads them again from the stored
    /// offset); one newly held is Resuming. A partition held under a new epoch is both.
    /// The aggregator then resumes the gained ones and assigns the consumer the
    /// partitions loaded.
    pub fn lease(&mut self, owned: Owned) -> LeaseChange {
        let lost: Vec<i32> = self
            .owned
            .iter()
            .filter(|(p, epoch)| owned.get(p) != Some(epoch))
            .map(|(p, _)| *p)
            .collect();
        let gained: Vec<i32> = owned
            .iter()
            .filter(|(p, epoch)| self.owned.get(p) != Some(epoch))
            .map(|(p, _)| *p)
            .collect();
        for p in &lost {
            self.phases.remove(p);
            self.states.remove(p);
        }
        for p in &gained {
            self.phases.insert(*p, Phase::Resuming);
        }
        self.owned = owned;
        LeaseChange { lost, gained }
    }

    /// Event: a Resuming partition's state was loaded from its stored offset; it is
    /// Consuming, and the aggregator places its fetch (`assign`). A partition in any
    /// other phase keeps it (one no longer owned stays so), and the state is dropped.
    pub fn resumed(&mut self, partition: i32, state: PartitionState) {
        if let Some(phase @ Phase::Resuming) = self.phases.get_mut(&partition) {
            *phase = Phase::Consuming;
            self.states.insert(partition, state);
        }
    }

    /// Event: a Consuming or Isolating partition's fetch could not be placed, or its
    /// refused range fetched again; it is Resuming, its state dropped, and the aggregator
    /// resumes it from its stored offset at the next tick. A partition in any other
    /// phase keeps it.
    pub fn unloaded(&mut self, partition: i32) {
        if let Some(phase @ (Phase::Consuming | Phase::Isolating(_))) =
            self.phases.get_mut(&partition)
        {
            *phase = Phase::Resuming;
            self.states.remove(&partition);
        }
    }

    /// Event: a flush committed a Consuming partition; it goes on from the new fence.
    /// Returns its state as committed, whose backpressure cost the aggregator releases,
    /// and whose samples, set-aside messages and offset it reports.
    pub fn committed(&mut self, partition: i32, cluster_id: &str) -> PartitionState {
        let st = self
            .states
            .get_mut(&partition)
            .expect("committed partitions are consuming");
        let next = st.committed(cluster_id);
        std::mem::replace(st, next)
    }

    /// Event: a flush found that another owner advanced a Consuming partition's stored
    /// offset; it is Fenced, its deltas dropped. The consumer is no longer assigned it
    /// once it is assigned again.
    pub fn fenced(&mut self, partition: i32) {
        if self.states.remove(&partition).is_some() {
            self.phases.insert(partition, Phase::Fenced);
        }
    }

    /// Event: Postgres refused a Consuming partition's flush (`until`: where the flush
    /// reached), or folding the message before `until` panicked. It is Isolating, its
    /// state reset to the fence, holding the messages re-read up to `until`. Returns the
    /// fence's offset, from before which the aggregator must fetch again.
    pub fn isolated(&mut self, partition: i32, until: i64) -> i64 {
        let st = self
            .states
            .remove(&partition)
            .expect("isolated partitions are consuming")
            .reset();
        let start = st.start;
        let isolation = Isolation {
            until,
            held: Vec::new(),
        };
        self.phases
            .insert(partition, Phase::Isolating(Box::new((st, isolation))));
        start
    }

    /// Event: an Isolating partition holds its whole range. It is Consuming again, from
    /// its fence; returns the held messages, which the aggregator applies in ranges,
    /// halving one Postgres refuses until the message at fault is quarantined.
    pub fn take_range(&mut self, partition: i32) -> Vec<(i64, Vec<u8>)> {
        let Some(Phase::Isolating(isolating)) = self.phases.insert(partition, Phase::Consuming)
        else {
            panic!("taking the range of a partition not isolating");
        };
        let (st, isolation) = *isolating;
        self.states.insert(partition, st.reset());
        isolation.held
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::state::Fence;

    fn owned(leases: &[(i32, i64)]) -> Owned {
        leases.iter().copied().collect()
    }

    fn fresh(next: i64) -> PartitionState {
        PartitionState::new(Fence::Row(next, "c".into()), next)
    }

    /// Partitions 1 and 2 Consuming from offset 10, 3 Resuming.
    fn running() -> Partitions {
        let mut ps = Partitions::default();
        ps.lease(owned(&[(1, 1), (2, 1), (3, 1)]));
        ps.resumed(1, fresh(10));
        ps.resumed(2, fresh(10));
        ps
    }

    #[test]
    fn a_gained_partition_is_resumed_before_it_consumes() {
        let mut ps = Partitions::default();
        let change = ps.lease(owned(&[(4, 7), (2, 7)]));
        assert_eq!(
            change,
            LeaseChange {
                lost: vec![],
                gained: vec![2, 4]
            }
        );
        assert_eq!(ps.resuming(), [2, 4]);
        assert!(ps.loaded_mut(2).is_none(), "its messages are dropped");
        ps.resumed(2, fresh(10));
        assert_eq!(ps.resuming(), [4]);
        assert!(matches!(ps.loaded_mut(2), Some((st, None)) if st.next_offset == 10));
        assert!(ps.states().contains_key(&2), "flushed from now on");
        assert_eq!(ps.loaded().map(|(p, _)| p).collect::<Vec<_>>(), [2]);
    }

    #[test]
    fn a_lost_partition_is_dropped_whatever_its_phase() {
        let mut ps = running();
        ps.isolated(2, 12);
        ps.lease(owned(&[(1, 1), (2, 1), (3, 1), (4, 1)]));
        ps.fenced(1);
        let change = ps.lease(owned(&[]));
        assert_eq!(change.lost, [1, 2, 3, 4]);
        assert!(ps.phases.is_empty() && ps.states.is_empty());
        assert!(
            (1..=4).all(|p| ps.loaded_mut(p).is_none()),
            "messages dropped"
        );
        ps.resumed(3, fresh(10));
        assert!(
            ps.states.is_empty() && ps.phases.is_empty(),
            "a state loaded for a partition lost meanwhile is dropped"
        );
    }

    #[test]
    fn a_lease_under_a_new_epoch_is_lost_and_gained() {
        let mut ps = running();
        let change = ps.lease(owned(&[(1, 2), (2, 1), (3, 1)]));
        assert_eq!((change.lost, change.gained), (vec![1], vec![1]));
        assert_eq!(ps.resuming(), [1, 3], "read again from its stored offset");
        assert!(!ps.states().contains_key(&1), "its deltas dropped");
    }

    #[test]
    fn only_a_resuming_partition_takes_a_loaded_state() {
        let mut ps = running();
        ps.resumed(1, fresh(99));
        assert_eq!(ps.state(1).map(|st| st.next_offset), Some(10), "kept");
        ps.resumed(9, fresh(99));
        assert!(ps.state(9).is_none(), "not owned");
    }

    #[test]
    fn an_isolating_partition_holds_its_range_out_of_a_flush() {
        let mut ps = running();
        ps.consuming_mut(1).unwrap().next_offset = 13;
        assert_eq!(ps.isolated(1, 13), 10, "fetched again from the fence");
        assert!(
            !ps.states().contains_key(&1),
            "never flushed while isolating"
        );
        assert_eq!(ps.state(1).map(|st| st.next_offset), Some(10), "reset");
        for offset in 10..13 {
            assert!(!ps.holds_whole_range(1));
            let (st, isolation) = ps.loaded_mut(1).unwrap();
            isolation
                .expect("isolating")
                .hold(st, offset, &[offset as u8]);
        }
        assert!(ps.holds_whole_range(1));
        let held = ps.take_range(1);
        assert_eq!(
            held.iter().map(|(o, _)| *o).collect::<Vec<_>>(),
            [10, 11, 12]
        );
        let st = &ps.states()[&1];
        assert_eq!(st.next_offset, 10, "consuming again, from the fence");
        assert!(!ps.holds_whole_range(1));
    }

    #[test]
    fn a_range_whose_end_is_missing_ends_with_the_message_past_it() {
        let mut ps = running();
        ps.isolated(1, 13);
        let (st, isolation) = ps.loaded_mut(1).unwrap();
        isolation.unwrap().hold(st, 15, b"m");
        assert!(ps.holds_whole_range(1));
        assert_eq!(ps.state(1).unwrap().next_offset, 16);
    }

    #[test]
    fn a_commit_goes_on_from_the_new_fence() {
        let mut ps = running();
        let st = ps.consuming_mut(1).unwrap();
        st.next_offset = 20;
        st.cost = 300;
        let done = ps.committed(1, "c");
        assert_eq!((done.next_offset, done.cost), (20, 300));
        let st = &ps.states()[&1];
        assert_eq!(st.fence, Fence::Row(20, "c".into()));
        assert!(!st.is_flushable() && st.cost == 0);
    }

    #[test]
    fn a_fenced_partition_consumes_nothing_until_its_lease_changes() {
        let mut ps = running();
        ps.fenced(1);
        assert!(ps.loaded_mut(1).is_none() && !ps.states().contains_key(&1));
        assert_eq!(ps.resuming(), [3], "not resumed either");
        ps.lease(owned(&[(2, 1), (3, 1)]));
        ps.lease(owned(&[(1, 2), (2, 1), (3, 1)]));
        assert_eq!(ps.resuming(), [1, 3], "resumed once held again");
    }

    #[test]
    fn an_unloaded_partition_is_resumed_again() {
        let mut ps = running();
        ps.isolated(2, 12);
        ps.unloaded(1);
        ps.unloaded(2);
        ps.unloaded(3);
        assert_eq!(ps.resuming(), [1, 2, 3]);
        assert!(ps.states.is_empty() && ps.loaded().next().is_none());
        ps.fenced(1);
        assert_eq!(ps.resuming(), [1, 2, 3], "only a consuming one is fenced");
    }
}
