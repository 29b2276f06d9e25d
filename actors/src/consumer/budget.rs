//! How many deliveries the consumer lets the broker push at once, so that the memory they take
//! stays bounded whatever the message size.
//!
//! A prefetch counts messages, not bytes: 512 deliveries of 1 MiB are half a gigabyte before
//! the worker has looked at any of them. The budget keeps the prefetch at what the byte budget
//! affords for the sizes seen lately (an average that follows recent messages): it starts small,
//! doubles while messages are small up to the configured prefetch, and drops at once when they
//! grow. What it cannot prevent is the overshoot of one change: when small messages give way to
//! large ones, the deliveries the broker already pushed at the old prefetch arrive anyway
//! (docs/performance.md gives the measured figures).

/// The prefetch to start with, before any size is known.
const INITIAL: u16 = 32;
/// Weight of the newest size in the running average.
const NEWEST: f64 = 0.2;

#[derive(Debug, Clone, PartialEq)]
pub struct PrefetchBudget {
    max_bytes: u64,
    configured: u16,
    current: u16,
    average: Option<f64>,
}

impl PrefetchBudget {
    pub fn new(max_bytes: u64, configured: u16) -> Self {
        Self { max_bytes, configured, current: configured.min(INITIAL), average: None }
    }

    /// The prefetch in force.
    pub fn current(&self) -> u16 {
        self.current
    }

    /// A delivery of `size` bytes arrived; returns the new prefetch when it should change.
    pub fn received(&mut self, size: usize) -> Option<u16> {
        let size = size.max(1) as f64;
        let average = self.average.map_or(size, |average| average + NEWEST * (size - average));
        self.average = Some(average);
        let affordable = (self.max_bytes as f64 / average).clamp(1.0, f64::from(self.configured)) as u16;
        let next = if affordable < self.current {
            affordable
        } else if affordable >= self.current.saturating_mul(2) || affordable == self.configured {
            affordable.min(self.current.saturating_mul(2))
        } else {
            self.current
        };
        (next != self.current).then(|| {
            self.current = next;
            next
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const MIB: u64 = 1024 * 1024;

    #[test]
    fn small_messages_reach_the_configured_prefetch_in_a_few_deliveries() {
        let mut budget = PrefetchBudget::new(32 * MIB, 512);
        assert_eq!(budget.current(), 32);
        let changes: Vec<_> = (0..10).filter_map(|_| budget.received(400)).collect();
        assert_eq!(changes, [64, 128, 256, 512]);
    }

    #[test]
    fn large_messages_bring_it_down_to_what_the_budget_affords() {
        let mut budget = PrefetchBudget::new(32 * MIB, 512);
        (0..10).for_each(|_| {
            budget.received(400);
        });
        assert_eq!(budget.current(), 512);
        for _ in 0..20 {
            budget.received(MIB as usize);
        }
        assert!(budget.current() <= 40, "{}", budget.current());
        assert!(budget.current() >= 32, "{}", budget.current());
        // Messages larger than the whole budget: one at a time.
        for _ in 0..30 {
            budget.received(64 * MIB as usize);
        }
        assert_eq!(budget.current(), 1);
    }

    #[test]
    fn a_backlog_of_large_messages_never_sees_more_than_the_initial_prefetch() {
        let mut budget = PrefetchBudget::new(32 * MIB, 512);
        let seen: Vec<u16> = (0..50).map(|_| budget.received(MIB as usize).unwrap_or(budget.current())).collect();
        assert!(seen.iter().all(|p| *p <= 32), "{seen:?}");
    }
}
