//! A circuit breaker in front of one ChatHub account: after N consecutive
//! failures it opens for a while (pages go out without the widget at once,
//! and ChatHub gets no calls), then lets exactly one trial call through.

use std::sync::Mutex;
use std::time::{Duration, Instant};

/// Breaker state; the clock is passed in so the state machine tests need no sleeps.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum State {
    Closed {
        failures: u32,
    },
    Open {
        until: Instant,
    },
    /// One trial call is out; everyone else is refused until it reports.
    HalfOpen,
}

/// What a caller may do.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Admission {
    /// Call ChatHub normally.
    Call,
    /// Call ChatHub as the single half-open trial.
    Trial,
    /// Do not call.
    Refused,
}

/// A change worth a log line and a gauge update.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Transition {
    Opened,
    Closed,
}

/// The breaker of one account.
#[derive(Debug)]
pub struct Breaker {
    threshold: u32,
    open_for: Duration,
    state: Mutex<State>,
}

impl Breaker {
    /// Opens after `threshold` consecutive failures, for `open_for`.
    pub fn new(threshold: u32, open_for: Duration) -> Self {
        Breaker {
            threshold: threshold.max(1),
            open_for,
            state: Mutex::new(State::Closed { failures: 0 }),
        }
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, State> {
        // A panic while holding this lock cannot leave the small state invalid,
        // so a poisoned lock is still usable.
        self.state.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// May a call go out now?
    pub fn admit(&self, now: Instant) -> Admission {
        let mut s = self.lock();
        match *s {
            State::Closed { .. } => Admission::Call,
            State::Open { until } if now >= until => {
                *s = State::HalfOpen;
                Admission::Trial
            }
            State::Open { .. } | State::HalfOpen => Admission::Refused,
        }
    }

    /// Whether calls are refused right now (without taking the trial slot).
    #[cfg(test)]
    pub fn is_open(&self, now: Instant) -> bool {
        match *self.lock() {
            State::Closed { .. } => false,
            State::Open { until } => now < until,
            State::HalfOpen => true,
        }
    }

    /// Report the outcome of an admitted call.
    pub fn record(&self, admission: Admission, success: bool, now: Instant) -> Option<Transition> {
        let mut s = self.lock();
        match (admission, *s) {
            (Admission::Refused, _) => None,
            (_, _) if success => {
                let was_closed = matches!(*s, State::Closed { .. });
                *s = State::Closed { failures: 0 };
                (!was_closed).then_some(Transition::Closed)
            }
            (Admission::Trial, _) => {
                *s = State::Open {
                    until: now + self.open_for,
                };
                None
            }
            (Admission::Call, State::Closed { failures }) => {
                let failures = failures + 1;
                if failures >= self.threshold {
                    *s = State::Open {
                        until: now + self.open_for,
                    };
                    Some(Transition::Opened)
                } else {
                    *s = State::Closed { failures };
                    None
                }
            }
            // A normal call that started before the breaker opened: already open.
            (Admission::Call, _) => None,
        }
    }

    /// The trial was abandoned without an answer (its task was cancelled):
    /// let the next caller try at once.
    pub fn abandon(&self, admission: Admission, now: Instant) {
        if admission == Admission::Trial {
            let mut s = self.lock();
            if *s == State::HalfOpen {
                *s = State::Open { until: now };
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn opens_after_consecutive_failures_only() {
        let b = Breaker::new(3, Duration::from_secs(10));
        let t = Instant::now();
        for _ in 0..2 {
            assert_eq!(b.admit(t), Admission::Call);
            assert_eq!(b.record(Admission::Call, false, t), None);
        }
        // A success resets the count.
        assert_eq!(b.record(Admission::Call, true, t), None);
        for _ in 0..2 {
            assert_eq!(b.record(Admission::Call, false, t), None);
        }
        assert!(!b.is_open(t));
        assert_eq!(
            b.record(Admission::Call, false, t),
            Some(Transition::Opened)
        );
        assert!(b.is_open(t));
        assert_eq!(b.admit(t + Duration::from_secs(9)), Admission::Refused);
    }

    #[test]
    fn half_open_lets_one_trial_through_and_success_closes() {
        let b = Breaker::new(1, Duration::from_secs(10));
        let t = Instant::now();
        b.record(Admission::Call, false, t);
        let later = t + Duration::from_secs(10);
        assert_eq!(b.admit(later), Admission::Trial);
        assert_eq!(b.admit(later), Admission::Refused, "only one trial");
        assert!(b.is_open(later));
        assert_eq!(
            b.record(Admission::Trial, true, later),
            Some(Transition::Closed)
        );
        assert_eq!(b.admit(later), Admission::Call);
    }

    #[test]
    fn failed_trial_reopens_for_a_full_period() {
        let b = Breaker::new(1, Duration::from_secs(10));
        let t = Instant::now();
        b.record(Admission::Call, false, t);
        let t1 = t + Duration::from_secs(11);
        assert_eq!(b.admit(t1), Admission::Trial);
        assert_eq!(b.record(Admission::Trial, false, t1), None);
        assert_eq!(b.admit(t1 + Duration::from_secs(9)), Admission::Refused);
        assert_eq!(b.admit(t1 + Duration::from_secs(10)), Admission::Trial);
    }

    #[test]
    fn abandoned_trial_frees_the_slot() {
        let b = Breaker::new(1, Duration::from_secs(10));
        let t = Instant::now();
        b.record(Admission::Call, false, t);
        let t1 = t + Duration::from_secs(10);
        assert_eq!(b.admit(t1), Admission::Trial);
        b.abandon(Admission::Trial, t1);
        assert_eq!(b.admit(t1), Admission::Trial);
    }

    #[test]
    fn late_results_of_normal_calls_do_not_disturb_an_open_breaker() {
        let b = Breaker::new(1, Duration::from_secs(10));
        let t = Instant::now();
        b.record(Admission::Call, false, t);
        assert_eq!(b.record(Admission::Call, false, t), None);
        // A late success of a call admitted before opening closes it: ChatHub
        // answered, which is the evidence the breaker waits for.
        assert_eq!(b.record(Admission::Call, true, t), Some(Transition::Closed));
    }
}
