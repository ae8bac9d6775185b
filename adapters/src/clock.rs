//! The adapter's clock. Every time the adapter reads (for the node, for
//! discovery, for its own deadlines) comes from a [`Clock`], and its one
//! timer sleeps on it, so that tests can run the adapter in time they
//! control: a [`Clock::manual`] clock stands still until
//! [`Clock::advance`] moves it, and a timer due by then fires at once.
//! Everything that waits for time waits for the test to move it, shutdown
//! included (closing connections wait for QUIC's timers).

use std::fmt;
use std::pin::Pin;
use std::sync::{Arc, Mutex, MutexGuard};
use std::task::{Context, Poll, Waker};
use std::time::{Duration, Instant};

use crate::runtime::Timer;

/// Where a node's adapter reads the time: the system's monotonic clock, or
/// (for tests) a clock that moves only when told to.
///
/// Not part of the supported API: a hook for tests (see [`crate::testing`]).
#[derive(Clone, Default)]
pub struct Clock(Option<Arc<Manual>>);

struct Manual {
    state: Mutex<ManualState>,
}

struct ManualState {
    now: Instant,
    /// Timers waiting for the clock to reach their deadline.
    sleepers: Vec<Waker>,
}

impl Clock {
    /// The system's monotonic clock ([`Instant::now`]).
    pub fn system() -> Self {
        Self(None)
    }

    /// A clock that starts at the current instant and stands still until
    /// [`Clock::advance`] moves it.
    pub fn manual() -> Self {
        Self(Some(Arc::new(Manual {
            state: Mutex::new(ManualState {
                now: Instant::now(),
                sleepers: Vec::new(),
            }),
        })))
    }

    /// The current time.
    pub fn now(&self) -> Instant {
        match &self.0 {
            None => Instant::now(),
            Some(manual) => manual.lock().now,
        }
    }

    /// Move a manual clock forward by `by` and wake the tasks whose timers
    /// sleep on it (they fire if due). Does nothing to the system clock.
    ///
    /// The wakers stay registered: a driver that read the clock just before
    /// this call and has not yet gone back to sleep is woken all the same
    /// (a task woken while it runs is polled again), so no advance is
    /// missed.
    pub fn advance(&self, by: Duration) {
        let Some(manual) = &self.0 else { return };
        let sleepers = {
            let mut state = manual.lock();
            state.now += by;
            state.sleepers.clone()
        };
        sleepers.iter().for_each(Waker::wake_by_ref);
    }

    /// The driver's timer on this clock: `system`, the runtime's own timer,
    /// for the system clock; for a manual clock, a timer that fires when
    /// the clock reaches its deadline.
    pub(crate) fn timer(&self, system: Pin<Box<dyn Timer>>, at: Instant) -> Pin<Box<dyn Timer>> {
        match &self.0 {
            None => system,
            Some(manual) => Box::pin(ManualTimer {
                clock: manual.clone(),
                at,
            }),
        }
    }
}

impl Manual {
    fn lock(&self) -> MutexGuard<'_, ManualState> {
        self.state.lock().unwrap_or_else(|e| e.into_inner())
    }
}

impl fmt::Debug for Clock {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match &self.0 {
            None => f.write_str("Clock::system"),
            Some(manual) => f
                .debug_tuple("Clock::manual")
                .field(&manual.lock().now)
                .finish(),
        }
    }
}

/// A timer on a manual clock.
struct ManualTimer {
    clock: Arc<Manual>,
    at: Instant,
}

impl fmt::Debug for ManualTimer {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("ManualTimer").field("at", &self.at).finish()
    }
}

impl Timer for ManualTimer {
    fn reset(mut self: Pin<&mut Self>, at: Instant) {
        self.at = at;
    }

    fn poll_expired(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<()> {
        let mut state = self.clock.lock();
        if state.now >= self.at {
            return Poll::Ready(());
        }
        // Woken by every later `advance`: one entry per task, however
        // often it polls.
        if !state.sleepers.iter().any(|w| w.will_wake(cx.waker())) {
            state.sleepers.push(cx.waker().clone());
        }
        Poll::Pending
    }
}
