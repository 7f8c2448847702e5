//! Timers as data: each owner names its timers in an enum and keeps their deadlines in
//! one [`TimerTable`]; `poll_timeout` is the table's earliest deadline, and the handlers
//! ask the table which timers are due. (quinn-proto keeps its connection timers so.)

use std::time::Instant;

/// A named timer: an enum whose variants index a [`TimerTable`].
pub(crate) trait Timer: Copy {
    /// How many timers the enum names.
    const COUNT: usize;
    /// This timer's slot.
    fn index(self) -> usize;
}

/// The deadlines of one owner's timers (`None`: stopped).
#[derive(Debug, Clone)]
pub(crate) struct TimerTable<T: Timer, const N: usize> {
    at: [Option<Instant>; N],
    _names: std::marker::PhantomData<T>,
}

impl<T: Timer, const N: usize> TimerTable<T, N> {
    /// Every timer stopped.
    pub(crate) fn new() -> Self {
        const { assert!(T::COUNT == N) };
        TimerTable {
            at: [None; N],
            _names: std::marker::PhantomData,
        }
    }

    /// Arm `t` for `at` (re-arming moves it).
    pub(crate) fn set(&mut self, t: T, at: Instant) {
        self.at[t.index()] = Some(at);
    }

    /// Stop `t`.
    pub(crate) fn stop(&mut self, t: T) {
        self.at[t.index()] = None;
    }

    /// When `t` fires, if armed.
    pub(crate) fn get(&self, t: T) -> Option<Instant> {
        self.at[t.index()]
    }

    /// Whether `t` is armed and due at `now`.
    pub(crate) fn is_due(&self, t: T, now: Instant) -> bool {
        self.get(t).is_some_and(|at| now >= at)
    }

    /// The earliest armed deadline.
    pub(crate) fn next(&self) -> Option<Instant> {
        self.at.iter().flatten().min().copied()
    }
}

#[cfg(test)]
mod tests {
    use std::time::Duration;

    use super::*;

    #[derive(Debug, Clone, Copy)]
    enum Two {
        A,
        B,
    }

    impl Timer for Two {
        const COUNT: usize = 2;
        fn index(self) -> usize {
            self as usize
        }
    }

    #[test]
    #[allow(clippy::disallowed_methods)] // an origin for the test's deadlines
    fn the_earliest_armed_deadline_is_next() {
        let t0 = Instant::now();
        let mut t = TimerTable::<Two, 2>::new();
        assert_eq!(t.next(), None);
        t.set(Two::B, t0 + Duration::from_secs(2));
        t.set(Two::A, t0 + Duration::from_secs(1));
        assert_eq!(t.next(), Some(t0 + Duration::from_secs(1)));
        assert!(!t.is_due(Two::A, t0));
        assert!(t.is_due(Two::A, t0 + Duration::from_secs(1)));
        t.stop(Two::A);
        assert_eq!(t.next(), Some(t0 + Duration::from_secs(2)));
        assert_eq!(t.get(Two::A), None);
    }
}
