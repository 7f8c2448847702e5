//! A sliding replay window over packet numbers (docs/PROTOCOL.md §3.3).
//!
//! `check` before decrypting, `insert` only after the tag verified: a forged datagram
//! can never move the window. The bitmap is a ring (RFC 6479 style): advancing clears only
//! the words it passes, with no shifting.

//= https://www.rfc-editor.org/rfc/rfc4303#section-3.4.3
//# Duplicates are rejected through the use of a sliding receive window.

/// Packets behind the highest one that are still accepted once.
pub const WINDOW: u64 = 2048;
const WORDS: usize = (WINDOW / 64) as usize;

/// Why a packet number was refused.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
pub enum ReplayError {
    /// Seen before: a duplicate or a replay.
    #[error("duplicate packet number")]
    Duplicate,
    /// Older than the window: cannot be told from a replay.
    #[error("packet number older than the replay window")]
    TooOld,
}

/// The window of one sender epoch.
#[derive(Debug, Clone)]
pub struct ReplayWindow {
    top: Option<u64>,
    bits: [u64; WORDS],
}

impl Default for ReplayWindow {
    fn default() -> Self {
        ReplayWindow {
            top: None,
            bits: [0; WORDS],
        }
    }
}

impl ReplayWindow {
    fn slot(n: u64) -> (usize, u64) {
        (((n / 64) % WORDS as u64) as usize, 1u64 << (n % 64))
    }

    /// Whether `n` would be accepted. Changes nothing.
    pub fn check(&self, n: u64) -> Result<(), ReplayError> {
        let Some(top) = self.top else { return Ok(()) };
        if n > top {
            return Ok(());
        }
        if top - n >= WINDOW - 64 {
            // Keep one word of slack so the ring's current word is never ambiguous.
            return Err(ReplayError::TooOld);
        }
        let (w, bit) = Self::slot(n);
        if self.bits[w] & bit != 0 {
            Err(ReplayError::Duplicate)
        } else {
            Ok(())
        }
    }

    /// Record `n` as received. Call only after [`ReplayWindow::check`] passed and the
    /// packet authenticated.
    pub fn insert(&mut self, n: u64) {
        match self.top {
            Some(top) if n <= top => {}
            Some(top) => {
                // Clear the words between the old top's word and the new one.
                let (from, to) = (top / 64, n / 64);
                for word in (from + 1..=to).take(WORDS) {
                    self.bits[(word % WORDS as u64) as usize] = 0;
                }
                self.top = Some(n);
            }
            None => {
                self.bits = [0; WORDS];
                self.top = Some(n);
            }
        }
        let (w, bit) = Self::slot(n);
        self.bits[w] |= bit;
    }

    /// The highest packet number received, if any.
    pub fn top(&self) -> Option<u64> {
        self.top
    }
}

#[cfg(test)]
mod tests {
    use std::collections::BTreeSet;

    use proptest::prelude::*;

    use super::*;

    #[test]
    fn duplicates_and_old_packets_are_refused() {
        let mut w = ReplayWindow::default();
        for n in [5, 3, 9, 4] {
            assert_eq!(w.check(n), Ok(()));
            w.insert(n);
        }
        assert_eq!(w.check(3), Err(ReplayError::Duplicate));
        assert_eq!(w.check(9), Err(ReplayError::Duplicate));
        assert_eq!(w.check(6), Ok(()));
        w.insert(10_000);
        assert_eq!(w.check(9), Err(ReplayError::TooOld));
        assert_eq!(w.check(10_000 - 100), Ok(()));
    }

    proptest! {
        /// Against a naive model: within the window, accepted exactly once; never a
        /// packet accepted twice.
        #[test]
        fn matches_a_set_model(ns in proptest::collection::vec(0u64..6000, 1..500)) {
            let mut w = ReplayWindow::default();
            let mut seen = BTreeSet::new();
            for n in ns {
                let top = seen.iter().next_back().copied();
                match w.check(n) {
                    Ok(()) => {
                        prop_assert!(seen.insert(n), "{n} accepted twice");
                        w.insert(n);
                    }
                    Err(ReplayError::Duplicate) => prop_assert!(seen.contains(&n)),
                    Err(ReplayError::TooOld) => {
                        prop_assert!(top.is_some_and(|t| t - n >= WINDOW - 64));
                    }
                }
            }
        }
    }
}
