//! The order in which batches persist. Batches of one replica reach the processor in the order
//! they were formed, and it commits them in that order (several in one transaction when they pile
//! up), so order ids follow the queue's order; the other steps of different batches overlap.

use std::collections::BTreeSet;
use std::sync::Arc;
use tokio::sync::watch;

/// Hands out turns in the order batches are formed and lets each batch persist only in its turn.
#[derive(Clone, Default)]
pub struct Sequencer {
    state: watch::Sender<Turns>,
    issued: Arc<std::sync::atomic::AtomicU64>,
}

#[derive(Default)]
struct Turns {
    next: u64,
    /// Turns passed before an earlier one (a batch that had nothing to persist, or failed early).
    passed_early: BTreeSet<u64>,
}

impl Sequencer {
    pub fn next_turn(&self) -> Turn {
        let number = self.issued.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
        Turn { number, state: self.state.clone(), passed: false }
    }
}

/// One batch's place in the persisting order. Passed when dropped, so a batch that fails or is
/// abandoned never blocks those after it.
pub struct Turn {
    number: u64,
    state: watch::Sender<Turns>,
    passed: bool,
}

impl Turn {
    /// Waits until every earlier batch has persisted (or given up).
    pub async fn wait(&self) {
        let mut state = self.state.subscribe();
        let _ = state.wait_for(|turns| turns.next == self.number).await;
    }

    pub fn pass(mut self) {
        self.release();
    }

    fn release(&mut self) {
        if std::mem::replace(&mut self.passed, true) {
            return;
        }
        let number = self.number;
        self.state.send_modify(|turns| {
            if turns.next == number {
                turns.next += 1;
                while turns.passed_early.remove(&turns.next) {
                    turns.next += 1;
                }
            } else {
                turns.passed_early.insert(number);
            }
        });
    }
}

impl Drop for Turn {
    fn drop(&mut self) {
        self.release();
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::time::Duration;

    #[tokio::test]
    async fn turns_come_in_the_order_they_were_issued_whatever_order_they_are_awaited_in() {
        let sequencer = Sequencer::default();
        let turns: Vec<Turn> = (0..4).map(|_| sequencer.next_turn()).collect();
        let order = Arc::new(std::sync::Mutex::new(Vec::new()));
        let mut tasks = Vec::new();
        for (i, turn) in turns.into_iter().enumerate().rev() {
            let order = order.clone();
            tasks.push(tokio::spawn(async move {
                if i == 2 {
                    drop(turn); // a batch that had nothing to persist
                    return;
                }
                turn.wait().await;
                order.lock().unwrap().push(i);
                tokio::time::sleep(Duration::from_millis(5)).await;
                turn.pass();
            }));
        }
        for task in tasks {
            task.await.unwrap();
        }
        assert_eq!(*order.lock().unwrap(), vec![0, 1, 3]);
    }
}
