//! Bounded-memory duplicate suppression over a sliding window of sequence
//! numbers, shared by receivers (per message) and proxies (per packet: every
//! node keeps only the first of its H+1 hedged copies).

/// Outcome of [`SeqWindow::insert`].
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Seen {
    /// First time.
    New,
    /// Already inserted.
    Duplicate,
    /// Below the window: too old to tell, treated as already decided.
    Stale,
}

/// A sliding bitmap of `window` sequence numbers (power of two).
#[derive(Debug, Clone)]
pub struct SeqWindow {
    base: u64,
    bits: Vec<u64>,
}

impl SeqWindow {
    /// Window of at least `window` sequences, starting at `start`.
    pub fn new(window: u64, start: u64) -> Self {
        let w = window.max(64).next_power_of_two();
        SeqWindow {
            base: start,
            bits: vec![0; (w / 64) as usize],
        }
    }
    fn window(&self) -> u64 {
        self.bits.len() as u64 * 64
    }
    /// Lowest sequence still tracked.
    pub fn base(&self) -> u64 {
        self.base
    }
    /// Where the word holding `seq`'s bit lies (a hint for drivers that
    /// prefetch; read-only).
    pub fn word_addr(&self, seq: u64) -> *const u8 {
        let i = seq % self.window();
        self.bits.as_ptr().wrapping_add((i / 64) as usize).cast()
    }
    fn bit(&self, seq: u64) -> bool {
        let i = seq % self.window();
        self.bits[(i / 64) as usize] & (1 << (i % 64)) != 0
    }
    fn set(&mut self, seq: u64, on: bool) {
        let i = seq % self.window();
        let w = &mut self.bits[(i / 64) as usize];
        if on {
            *w |= 1 << (i % 64);
        } else {
            *w &= !(1 << (i % 64));
        }
    }
    fn slide_to(&mut self, seq: u64) {
        let w = self.window();
        if seq - self.base < w {
            return;
        }
        let new_base = seq - (w - 1);
        if new_base - self.base >= w {
            self.bits.iter_mut().for_each(|b| *b = 0);
        } else {
            for s in self.base..new_base {
                self.set(s, false);
            }
        }
        self.base = new_base;
    }
    /// What [`SeqWindow::insert`] would answer, without changing anything.
    pub fn peek(&self, seq: u64) -> Seen {
        if seq < self.base {
            Seen::Stale
        } else if seq - self.base < self.window() && self.bit(seq) {
            Seen::Duplicate
        } else {
            Seen::New
        }
    }

    /// Record `seq`; says whether it was new.
    pub fn insert(&mut self, seq: u64) -> Seen {
        if seq < self.base {
            return Seen::Stale;
        }
        self.slide_to(seq);
        if self.bit(seq) {
            return Seen::Duplicate;
        }
        self.set(seq, true);
        Seen::New
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn new_duplicate_stale() {
        let mut w = SeqWindow::new(64, 0);
        assert_eq!(w.insert(3), Seen::New);
        assert_eq!(w.insert(3), Seen::Duplicate);
        assert_eq!(w.insert(100), Seen::New);
        assert_eq!(w.base(), 37);
        assert_eq!(w.insert(3), Seen::Stale);
        assert_eq!(w.insert(40), Seen::New);
        assert_eq!(w.insert(u64::MAX - 1), Seen::New);
        assert_eq!(w.insert(u64::MAX - 1), Seen::Duplicate);
    }
}
