//! Writes an output's destination acknowledges later (a Kafka producer's delivery
//! reports): numbered as they are written, so that a caller can wait, outside the
//! pipeline's lock, until everything written up to a point is acknowledged.

use std::{
    collections::BTreeSet,
    sync::{Arc, Condvar, Mutex},
    time::{Duration, Instant},
};

use tokio::sync::watch;

/// The shared state: the next number, the numbers not yet acknowledged.
#[derive(Debug, Default)]
struct Book {
    next: u64,
    outstanding: BTreeSet<u64>,
}

impl Book {
    /// Every number below this one is acknowledged.
    fn acknowledged_below(&self) -> u64 {
        self.outstanding.first().copied().unwrap_or(self.next)
    }
}

#[derive(Debug)]
struct Inner {
    book: Mutex<Book>,
    changed: Condvar,
    below: watch::Sender<u64>,
}

/// Numbers writes and tracks their acknowledgements; cheap to clone (one shared book).
///
/// The output calls [`issue`](Acknowledgements::issue) for each write it hands to
/// its destination and [`acknowledge`](Acknowledgements::acknowledge) when the
/// destination confirms it; a caller takes a [`mark`](Acknowledgements::mark) after
/// its writes and waits ([`wait`](Acknowledgements::wait),
/// [`wait_blocking`](Acknowledgements::wait_blocking)) until every write before it is
/// acknowledged.
#[derive(Clone, Debug)]
pub struct Acknowledgements {
    inner: Arc<Inner>,
}

impl Default for Acknowledgements {
    fn default() -> Acknowledgements {
        Acknowledgements::new()
    }
}

impl Acknowledgements {
    /// An empty book.
    pub fn new() -> Acknowledgements {
        Acknowledgements {
            inner: Arc::new(Inner {
                book: Mutex::new(Book::default()),
                changed: Condvar::new(),
                below: watch::Sender::new(0),
            }),
        }
    }

    fn book(&self) -> std::sync::MutexGuard<'_, Book> {
        self.inner.book.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// Numbers `count` new writes; returns the first number.
    pub fn issue(&self, count: u64) -> u64 {
        let mut book = self.book();
        let first = book.next;
        let next = first.saturating_add(count);
        book.next = next;
        book.outstanding.extend(first..next);
        first
    }

    /// Notes write `number` as acknowledged (or given up for good: either way nothing
    /// waits for it any more).
    pub fn acknowledge(&self, number: u64) {
        let below = {
            let mut book = self.book();
            if !book.outstanding.remove(&number) {
                return;
            }
            book.acknowledged_below()
        };
        self.inner.below.send_if_modified(|v| {
            let changed = *v != below;
            *v = below;
            changed
        });
        self.inner.changed.notify_all();
    }

    /// The number the next write will get: once everything below it is acknowledged,
    /// every write made so far is.
    pub fn mark(&self) -> u64 {
        self.book().next
    }

    /// Every write below this number is acknowledged.
    pub fn acknowledged_below(&self) -> u64 {
        self.book().acknowledged_below()
    }

    /// Writes issued and not yet acknowledged.
    pub fn outstanding(&self) -> u64 {
        self.book().outstanding.len() as u64
    }

    /// Whether every write below `mark` is acknowledged.
    pub fn reached(&self, mark: u64) -> bool {
        self.book().acknowledged_below() >= mark
    }

    /// Waits until every write below `mark` is acknowledged, at most `timeout`;
    /// returns whether it was.
    pub async fn wait(&self, mark: u64, timeout: Duration) -> bool {
        if self.reached(mark) {
            return true;
        }
        let mut below = self.inner.below.subscribe();
        let waited = tokio::time::timeout(timeout, async {
            loop {
                if self.reached(mark) {
                    return true;
                }
                if below.changed().await.is_err() {
                    return false;
                }
            }
        })
        .await;
        waited.unwrap_or_else(|_| self.reached(mark))
    }

    /// Like [`wait`](Acknowledgements::wait), blocking the thread.
    pub fn wait_blocking(&self, mark: u64, timeout: Duration) -> bool {
        let deadline = Instant::now() + timeout;
        let mut book = self.book();
        loop {
            if book.acknowledged_below() >= mark {
                return true;
            }
            let left = deadline.saturating_duration_since(Instant::now());
            if left.is_zero() {
                return false;
            }
            book = self
                .inner
                .changed
                .wait_timeout(book, left)
                .map(|(b, _)| b)
                .unwrap_or_else(|p| p.into_inner().0);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_mark_is_reached_once_everything_before_it_is_acknowledged() {
        let acks = Acknowledgements::new();
        assert!(acks.reached(acks.mark()));
        let first = acks.issue(3);
        let mark = acks.mark();
        assert_eq!(mark, first + 3);
        acks.acknowledge(first + 2);
        acks.acknowledge(first);
        assert!(!acks.reached(mark));
        assert!(acks.reached(first + 1));
        acks.acknowledge(first + 1);
        assert!(acks.reached(mark));
        // Later writes do not hold back an earlier mark.
        acks.issue(1);
        assert!(acks.reached(mark));
        assert!(!acks.reached(acks.mark()));
        assert_eq!(acks.outstanding(), 1);
    }

    #[test]
    fn waits_end_at_the_acknowledgement_or_the_timeout() {
        let acks = Acknowledgements::new();
        let n = acks.issue(1);
        let mark = acks.mark();
        assert!(!acks.wait_blocking(mark, Duration::from_millis(20)));
        let other = acks.clone();
        let t = std::thread::spawn(move || other.wait_blocking(mark, Duration::from_secs(10)));
        std::thread::sleep(Duration::from_millis(20));
        acks.acknowledge(n);
        assert!(t.join().unwrap_or(false));
    }

    #[tokio::test]
    async fn the_async_wait_wakes_on_acknowledgement() {
        let acks = Acknowledgements::new();
        let n = acks.issue(2);
        let mark = acks.mark();
        let other = acks.clone();
        let waiter = tokio::spawn(async move { other.wait(mark, Duration::from_secs(10)).await });
        tokio::time::sleep(Duration::from_millis(10)).await;
        acks.acknowledge(n);
        acks.acknowledge(n + 1);
        assert!(waiter.await.unwrap_or(false));
        assert!(!acks.wait(acks.mark() + 1, Duration::from_millis(10)).await);
    }
}
