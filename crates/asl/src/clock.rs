//! Injectable time. Every wait the interpreter does (Wait states, retry
//! delays, Task and execution timeouts) goes through a [`Clock`], so tests use
//! a [`VirtualClock`] and never sleep in real time.

use std::sync::{Mutex, MutexGuard};
use std::time::Duration;

use async_trait::async_trait;
use chrono::{DateTime, Utc};
use tokio::sync::watch;

/// A source of the current time and of delays.
#[async_trait]
pub trait Clock: Send + Sync {
    /// The current time.
    fn now(&self) -> DateTime<Utc>;

    /// Waits for `duration` (a Wait state or a retry delay).
    async fn sleep(&self, duration: Duration);

    /// Waits until `deadline` without counting as a requested sleep; used to
    /// race timeouts against running work. The default sleeps for the
    /// remaining time.
    async fn sleep_until(&self, deadline: DateTime<Utc>) {
        let remaining = (deadline - self.now()).to_std().unwrap_or(Duration::ZERO);
        if !remaining.is_zero() {
            self.sleep(remaining).await;
        }
    }
}

/// The real clock: `Utc::now()` and `tokio::time::sleep`.
#[derive(Debug, Clone, Copy, Default)]
pub struct SystemClock;

#[async_trait]
impl Clock for SystemClock {
    fn now(&self) -> DateTime<Utc> {
        Utc::now()
    }

    async fn sleep(&self, duration: Duration) {
        tokio::time::sleep(duration).await;
    }
}

/// A clock for tests: [`Clock::sleep`] returns at once after advancing the
/// virtual time and recording the requested duration. Timeouts
/// ([`Clock::sleep_until`]) fire when the virtual time reaches their deadline,
/// by a sleep elsewhere or by [`VirtualClock::advance`] (e.g. from a test
/// invoker simulating a slow task).
#[derive(Debug)]
pub struct VirtualClock {
    now: watch::Sender<DateTime<Utc>>,
    sleeps: Mutex<Vec<Duration>>,
}

impl VirtualClock {
    /// A virtual clock starting at `start`.
    pub fn new(start: DateTime<Utc>) -> Self {
        VirtualClock {
            now: watch::Sender::new(start),
            sleeps: Mutex::new(Vec::new()),
        }
    }

    /// Moves the virtual time forward without recording a sleep.
    pub fn advance(&self, duration: Duration) {
        let step = chrono::Duration::from_std(duration).unwrap_or(chrono::Duration::MAX);
        self.now.send_modify(|t| {
            *t = t.checked_add_signed(step).unwrap_or(*t);
        });
    }

    /// Every duration passed to [`Clock::sleep`], in call order.
    pub fn sleeps(&self) -> Vec<Duration> {
        self.lock_sleeps().clone()
    }

    /// Sum of all recorded sleeps.
    pub fn total_slept(&self) -> Duration {
        self.lock_sleeps().iter().sum()
    }

    fn lock_sleeps(&self) -> MutexGuard<'_, Vec<Duration>> {
        self.sleeps.lock().unwrap_or_else(|e| e.into_inner())
    }
}

#[async_trait]
impl Clock for VirtualClock {
    fn now(&self) -> DateTime<Utc> {
        *self.now.borrow()
    }

    async fn sleep(&self, duration: Duration) {
        self.lock_sleeps().push(duration);
        self.advance(duration);
        // Let other concurrent work (and timeouts) observe the new time.
        tokio::task::yield_now().await;
    }

    async fn sleep_until(&self, deadline: DateTime<Utc>) {
        let mut rx = self.now.subscribe();
        // The sender lives as long as `self`, so this only ends at the deadline.
        let _ = rx.wait_for(|t| *t >= deadline).await;
    }
}

#[cfg(test)]
mod unit {
    use super::*;
    use chrono::TimeZone;

    #[tokio::test]
    async fn virtual_sleep_advances_and_records() {
        let start = Utc.with_ymd_and_hms(2024, 1, 1, 0, 0, 0).unwrap();
        let clock = VirtualClock::new(start);
        clock.sleep(Duration::from_secs(5)).await;
        clock.advance(Duration::from_secs(2));
        clock.sleep(Duration::from_millis(1500)).await;
        assert_eq!(clock.now(), start + chrono::Duration::milliseconds(8500));
        assert_eq!(
            clock.sleeps(),
            vec![Duration::from_secs(5), Duration::from_millis(1500)]
        );
        assert_eq!(clock.total_slept(), Duration::from_millis(6500));
    }

    #[tokio::test]
    async fn sleep_until_fires_on_advance() {
        let start = Utc.with_ymd_and_hms(2024, 1, 1, 0, 0, 0).unwrap();
        let clock = std::sync::Arc::new(VirtualClock::new(start));
        let c2 = clock.clone();
        let waiter = tokio::spawn(async move {
            c2.sleep_until(start + chrono::Duration::seconds(10)).await;
            c2.now()
        });
        tokio::task::yield_now().await;
        clock.advance(Duration::from_secs(4));
        tokio::task::yield_now().await;
        assert!(!waiter.is_finished());
        clock.advance(Duration::from_secs(7));
        let fired_at = waiter.await.unwrap();
        assert_eq!(fired_at, start + chrono::Duration::seconds(11));
        assert!(clock.sleeps().is_empty());
    }
}
