//! The seam through which a bound on the data waiting in the broker holds ingest back.
//! Nothing is bounded unless the process sets a [`Backpressure`] (only `standalone` does,
//! for its embedded broker, which drops data past a size); without one, neither ingest
//! nor the aggregator estimates anything.
//!
//! The flow, per partition: ingest reserves the cost of the samples of a request before
//! producing them (all of the request's partitions or none: a refusal is a `503`), and
//! adds each message's own cost when it sends one; a batch the broker did not take is
//! released by ingest. The aggregator counts the cost of the same messages and samples
//! as it folds them, with the same [`Backpressure::sample_cost`] and
//! [`Backpressure::message_cost`], and releases that count once the Postgres transaction
//! applying them has committed. Both sides count alike, so what is reserved is released.

/// A bound on the cost of what waits in the broker, per partition. Costs are in the
/// implementation's own unit (an estimate of bytes for the embedded broker).
pub trait Backpressure: Send + Sync {
    /// The cost of one sample in a message.
    fn sample_cost(&self, service: &str, metric: &str, tags: &[(&str, &str)]) -> u64;

    /// The cost of one message besides its samples.
    fn message_cost(&self) -> u64;

    /// Adds `cost` to the partition unless that would pass the bound; returns whether it
    /// did.
    fn try_reserve(&self, partition: i32, cost: u64) -> bool;

    /// Adds `cost` whatever the bound: a message's cost, known only once the samples it
    /// carries were admitted.
    fn add(&self, partition: i32, cost: u64);

    /// Takes `cost` off the partition: what the aggregator committed, or what the broker
    /// never took.
    fn release(&self, partition: i32, cost: u64);

    /// Reserves `costs[p]` on every partition `p` for one request, all or nothing: when
    /// a partition refuses, what was reserved on the others is released.
    fn try_reserve_all(&self, costs: &[u64]) -> bool {
        for (p, &cost) in costs.iter().enumerate() {
            if !self.try_reserve(p as i32, cost) {
                for (q, &reserved) in costs.iter().enumerate().take(p) {
                    self.release(q as i32, reserved);
                }
                return false;
            }
        }
        true
    }
}
