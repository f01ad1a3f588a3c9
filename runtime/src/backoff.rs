//! Exponential backoff with jitter, shared by every retry loop (flushes to Postgres,
//! reloading a partition's offset), so retries neither spin nor synchronise.

use std::time::Duration;

use rand::Rng;

#[derive(Debug)]
pub struct Backoff {
    next: Duration,
    max: Duration,
    attempts: u32,
}

impl Backoff {
    /// Starts at `first` and doubles up to `max`.
    pub fn new(first: Duration, max: Duration) -> Self {
        Self {
            next: first,
            max,
            attempts: 0,
        }
    }

    /// How many waits so far.
    pub fn attempts(&self) -> u32 {
        self.attempts
    }

    /// The next delay: the current step plus up to half of it again at random.
    pub fn next_delay(&mut self) -> Duration {
        let jitter = rand::thread_rng().gen_range(0..=self.next.as_millis() as u64 / 2);
        let delay = self.next + Duration::from_millis(jitter);
        self.next = (self.next * 2).min(self.max);
        self.attempts += 1;
        delay
    }

    pub async fn wait(&mut self) {
        tokio::time::sleep(self.next_delay()).await;
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn delays_double_with_jitter_up_to_the_cap() {
        let mut b = Backoff::new(Duration::from_millis(100), Duration::from_millis(1000));
        let delays: Vec<u128> = (0..6).map(|_| b.next_delay().as_millis()).collect();
        for (d, base) in delays.iter().zip([100, 200, 400, 800, 1000, 1000]) {
            assert!((base..=base + base / 2).contains(d), "{delays:?}");
        }
        assert_eq!(b.attempts(), 6);
    }
}
