//! Failed authentications per client address: after [`MAX_FAILURES`] unknown keys from
//! one address within [`WINDOW`], that address is refused (`429`) until the window ends,
//! without a Postgres lookup. In-process and bounded: at most [`MAX_CLIENTS`] addresses
//! are tracked; when the table is full, expired windows are dropped first, then the
//! oldest window.

use std::collections::HashMap;
use std::net::IpAddr;
use std::sync::Mutex;
use std::time::{Duration, Instant};

/// Unknown keys one client address may present per window.
pub const MAX_FAILURES: u32 = 20;

/// The window over which failures count.
pub const WINDOW: Duration = Duration::from_secs(10);

/// Addresses tracked at once.
pub const MAX_CLIENTS: usize = 10_000;

/// Failures of one address since `start`.
#[derive(Clone, Copy)]
struct Window {
    start: Instant,
    failures: u32,
}

/// Counts failed authentications per client address (see the module doc).
pub struct FailureLimiter {
    max_failures: u32,
    window: Duration,
    max_clients: usize,
    clients: Mutex<HashMap<IpAddr, Window>>,
}

impl Default for FailureLimiter {
    fn default() -> Self {
        Self::new(MAX_FAILURES, WINDOW)
    }
}

impl FailureLimiter {
    pub fn new(max_failures: u32, window: Duration) -> Self {
        Self {
            max_failures: max_failures.max(1),
            window,
            max_clients: MAX_CLIENTS,
            clients: Mutex::new(HashMap::new()),
        }
    }

    /// Failures an address may have per window.
    pub fn max_failures(&self) -> u32 {
        self.max_failures
    }

    /// How long `client` must still wait, if it used up its failures.
    pub fn blocked(&self, client: IpAddr, now: Instant) -> Option<Duration> {
        let clients = self.clients.lock().expect("limiter lock");
        let w = clients.get(&client_key(client))?;
        let ends = w.start + self.window;
        (w.failures >= self.max_failures && now < ends).then(|| ends - now)
    }

    /// Counts one failed authentication of `client`.
    pub fn record_failure(&self, client: IpAddr, now: Instant) {
        let key = client_key(client);
        let mut clients = self.clients.lock().expect("limiter lock");
        if clients.len() >= self.max_clients && !clients.contains_key(&key) {
            let window = self.window;
            clients.retain(|_, w| now.saturating_duration_since(w.start) < window);
            if clients.len() >= self.max_clients {
                let oldest = clients.iter().min_by_key(|(_, w)| w.start).map(|(k, _)| *k);
                if let Some(oldest) = oldest {
                    clients.remove(&oldest);
                }
            }
        }
        let w = clients.entry(key).or_insert(Window {
            start: now,
            failures: 0,
        });
        if now.saturating_duration_since(w.start) >= self.window {
            *w = Window {
                start: now,
                failures: 0,
            };
        }
        w.failures = w.failures.saturating_add(1);
        if w.failures == self.max_failures {
            tracing::warn!(
                client = %key,
                failures = w.failures,
                window_secs = self.window.as_secs(),
                "too many unknown API keys from one address; refusing it for the rest of the window"
            );
        }
    }

    #[cfg(test)]
    fn tracked(&self) -> usize {
        self.clients.lock().unwrap().len()
    }
}

/// The unit a limit applies to: an IPv4 address, or the /64 network of an IPv6 address
/// (one host commonly holds a whole /64). IPv4-mapped IPv6 addresses count as IPv4.
fn client_key(addr: IpAddr) -> IpAddr {
    match addr.to_canonical() {
        IpAddr::V4(v4) => IpAddr::V4(v4),
        IpAddr::V6(v6) => {
            let bits = u128::from(v6) & !((1u128 << 64) - 1);
            IpAddr::V6(bits.into())
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ip(s: &str) -> IpAddr {
        s.parse().unwrap()
    }

    #[test]
    fn blocks_after_the_limit_until_the_window_ends() {
        let limiter = FailureLimiter::new(3, Duration::from_secs(10));
        let t0 = Instant::now();
        let a = ip("192.0.2.1");
        for i in 0..3 {
            assert_eq!(limiter.blocked(a, t0), None, "after {i} failures");
            limiter.record_failure(a, t0 + Duration::from_secs(i));
        }
        let wait = limiter.blocked(a, t0 + Duration::from_secs(4)).unwrap();
        assert_eq!(wait, Duration::from_secs(6));
        // Another address is not affected.
        assert_eq!(limiter.blocked(ip("192.0.2.2"), t0), None);
        // The window ends: the address may try again, and its count starts over.
        let later = t0 + Duration::from_secs(10);
        assert_eq!(limiter.blocked(a, later), None);
        limiter.record_failure(a, later);
        assert_eq!(limiter.blocked(a, later), None);
    }

    #[test]
    fn ipv6_counts_per_64_network_and_mapped_ipv4_as_ipv4() {
        let limiter = FailureLimiter::new(2, Duration::from_secs(10));
        let now = Instant::now();
        limiter.record_failure(ip("2001:db8::1"), now);
        limiter.record_failure(ip("2001:db8::ffff:2"), now);
        assert!(limiter.blocked(ip("2001:db8::3"), now).is_some());
        assert!(limiter.blocked(ip("2001:db8:0:1::1"), now).is_none());
        limiter.record_failure(ip("::ffff:192.0.2.9"), now);
        limiter.record_failure(ip("192.0.2.9"), now);
        assert!(limiter.blocked(ip("192.0.2.9"), now).is_some());
    }

    #[test]
    fn memory_is_bounded() {
        let mut limiter = FailureLimiter::new(2, Duration::from_secs(10));
        limiter.max_clients = 100;
        let now = Instant::now();
        for i in 0..1_000u32 {
            limiter.record_failure(IpAddr::V4(i.into()), now + Duration::from_millis(i.into()));
        }
        assert!(limiter.tracked() <= 100);
        // The newest addresses are still tracked.
        limiter.record_failure(IpAddr::V4(999u32.into()), now + Duration::from_secs(1));
        assert!(limiter
            .blocked(IpAddr::V4(999u32.into()), now + Duration::from_secs(1))
            .is_some());
    }
}
