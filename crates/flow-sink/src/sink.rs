//! The one interface every destination of chunks implements.

use std::sync::Arc;

use async_trait::async_trait;
use flow_batch::{Chunk, wire::BatchId};

use crate::error::SinkError;

/// Where a sink put a chunk it took ([`FlowSink::accept`]).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
#[non_exhaustive]
pub enum Accepted {
    /// Written to the sink's spool (`fsync`ed): durable.
    Spooled,
    /// The sink could keep it only in memory (its spool could not take it): sent from
    /// there, but lost if the process dies first. The chunk is not durable yet: a
    /// caller with a record journal keeps its intent open until the sink names it in
    /// [`FlowSink::take_settled`], so that a crash meanwhile sends it again (under the
    /// same batch ID) at the next start.
    InMemory,
    /// Delivered (or, for a sink without a spool, taken for good).
    Sent,
}

impl Accepted {
    /// Whether the chunk is delivered or kept durably: the caller may forget it.
    pub fn is_durable(self) -> bool {
        self != Accepted::InMemory
    }
}

/// A destination for the chunks a [`MinuteBatcher`](flow_batch::MinuteBatcher) emits.
///
/// A sink implements [`deliver`](FlowSink::deliver) (and [`name`](FlowSink::name));
/// everything else has a default that is right for a sink that either delivers a chunk
/// or fails. The exporter's pipeline (the `flowexporter` crate) calls
/// [`accept`](FlowSink::accept) for every new chunk, [`replay`](FlowSink::replay) for
/// the chunks its journal recovered after a crash, [`take_settled`](FlowSink::take_settled)
/// on every tick, and [`flush`](FlowSink::flush) then [`close`](FlowSink::close) when it
/// stops; the crash guarantees hold for every sink that keeps this contract:
///
/// - [`deliver`](FlowSink::deliver) returns `Ok` once the chunk has been delivered
///   **or** kept durably (spooled, or set aside as rejected) by the sink: from then on
///   the caller may forget it (and end its intent in the journal). It returns `Err`
///   only when the chunk could be neither delivered nor kept; the caller then still
///   owns it.
/// - [`accept`](FlowSink::accept) takes a chunk under its batch ID, and says where it
///   went. A sink that rides out a full disk may keep a chunk in a bounded memory
///   buffer ([`Accepted::InMemory`]), and report its batch ID from
///   [`take_settled`](FlowSink::take_settled) once it is delivered, spooled or dropped.
///   The default calls `deliver` and answers [`Accepted::Sent`].
/// - [`replay`](FlowSink::replay) takes a chunk recovered from the journal after a
///   crash, under the batch ID it had then, so that a collector drops the copy it may
///   already have. The default is [`accept`](FlowSink::accept): a sink that cannot drop
///   duplicates delivers the chunk again (at least once).
/// - Chunks are delivered one call at a time, in the order of their sequence
///   numbers (replayed chunks first, in their old order). A sink may be called from
///   any task.
/// - [`flush`](FlowSink::flush) waits, as far as the sink can, until what it holds in
///   memory or in a spool has gone out; [`close`](FlowSink::close) stops the sink's own
///   tasks. Call them, in that order, on shutdown.
///
/// Composition comes free, as with `tracing` layers: `Box<S>`, `Arc<S>` and `&S` are
/// sinks; `Option<S>` is a sink that does nothing when `None`; `Vec<S>` delivers
/// every chunk to each of its sinks in turn.
///
/// ```
/// use async_trait::async_trait;
/// use flow_batch::Chunk;
/// use flow_sink::{FlowSink, SinkError};
///
/// /// Counts records and drops them.
/// #[derive(Default)]
/// struct Counting(std::sync::atomic::AtomicU64);
///
/// #[async_trait]
/// impl FlowSink for Counting {
///     fn name(&self) -> &str {
///         "counting"
///     }
///
///     async fn deliver(&self, chunk: &Chunk) -> Result<(), SinkError> {
///         self.0.fetch_add(chunk.records.len() as u64, std::sync::atomic::Ordering::Relaxed);
///         Ok(())
///     }
/// }
///
/// // A counting sink plus an optional second one that is switched off.
/// let sinks: Vec<Box<dyn FlowSink>> = vec![Box::new(Counting::default()), Box::new(None::<Counting>)];
/// # let _ = sinks;
/// ```
#[async_trait]
pub trait FlowSink: Send + Sync {
    /// A short name for logs and errors (`collector`, `stdout`, `file`, ...).
    fn name(&self) -> &str;

    /// Delivers `chunk`, or keeps it durably; see the trait's contract.
    async fn deliver(&self, chunk: &Chunk) -> Result<(), SinkError>;

    /// Takes `chunk`, whose batch ID is `id`, and says where it went. The default
    /// delivers it and answers [`Accepted::Sent`].
    async fn accept(&self, chunk: &Chunk, id: &BatchId) -> Result<Accepted, SinkError> {
        let _ = id;
        self.deliver(chunk).await.map(|()| Accepted::Sent)
    }

    /// Takes a chunk recovered from a record journal after a crash, under the batch
    /// ID it had then (`id`). The default is [`accept`](FlowSink::accept).
    async fn replay(&self, chunk: &Chunk, id: &BatchId) -> Result<Accepted, SinkError> {
        self.accept(chunk, id).await
    }

    /// The batch IDs of the chunks answered [`Accepted::InMemory`] that were settled
    /// (delivered, spooled, rejected or dropped) since the last call. The default has
    /// none.
    fn take_settled(&self) -> Vec<BatchId> {
        Vec::new()
    }

    /// Waits until what the sink holds has gone out, as far as it can. The default
    /// does nothing.
    async fn flush(&self) -> Result<(), SinkError> {
        Ok(())
    }

    /// Stops the sink's own tasks; what it could not send stays where the sink keeps
    /// it (its spool) or is settled. Called once, after [`flush`](FlowSink::flush);
    /// the sink takes no chunk afterwards. The default does nothing.
    async fn close(&self) -> Result<(), SinkError> {
        Ok(())
    }
}

#[async_trait]
impl<S: FlowSink + ?Sized> FlowSink for Box<S> {
    fn name(&self) -> &str {
        (**self).name()
    }

    async fn deliver(&self, chunk: &Chunk) -> Result<(), SinkError> {
        (**self).deliver(chunk).await
    }

    async fn accept(&self, chunk: &Chunk, id: &BatchId) -> Result<Accepted, SinkError> {
        (**self).accept(chunk, id).await
    }

    async fn replay(&self, chunk: &Chunk, id: &BatchId) -> Result<Accepted, SinkError> {
        (**self).replay(chunk, id).await
    }

    fn take_settled(&self) -> Vec<BatchId> {
        (**self).take_settled()
    }

    async fn flush(&self) -> Result<(), SinkError> {
        (**self).flush().await
    }

    async fn close(&self) -> Result<(), SinkError> {
        (**self).close().await
    }
}

#[async_trait]
impl<S: FlowSink + ?Sized> FlowSink for Arc<S> {
    fn name(&self) -> &str {
        (**self).name()
    }

    async fn deliver(&self, chunk: &Chunk) -> Result<(), SinkError> {
        (**self).deliver(chunk).await
    }

    async fn accept(&self, chunk: &Chunk, id: &BatchId) -> Result<Accepted, SinkError> {
        (**self).accept(chunk, id).await
    }

    async fn replay(&self, chunk: &Chunk, id: &BatchId) -> Result<Accepted, SinkError> {
        (**self).replay(chunk, id).await
    }

    fn take_settled(&self) -> Vec<BatchId> {
        (**self).take_settled()
    }

    async fn flush(&self) -> Result<(), SinkError> {
        (**self).flush().await
    }

    async fn close(&self) -> Result<(), SinkError> {
        (**self).close().await
    }
}

#[async_trait]
impl<S: FlowSink + ?Sized> FlowSink for &S {
    fn name(&self) -> &str {
        (**self).name()
    }

    async fn deliver(&self, chunk: &Chunk) -> Result<(), SinkError> {
        (**self).deliver(chunk).await
    }

    async fn accept(&self, chunk: &Chunk, id: &BatchId) -> Result<Accepted, SinkError> {
        (**self).accept(chunk, id).await
    }

    async fn replay(&self, chunk: &Chunk, id: &BatchId) -> Result<Accepted, SinkError> {
        (**self).replay(chunk, id).await
    }

    fn take_settled(&self) -> Vec<BatchId> {
        (**self).take_settled()
    }

    async fn flush(&self) -> Result<(), SinkError> {
        (**self).flush().await
    }

    async fn close(&self) -> Result<(), SinkError> {
        (**self).close().await
    }
}

/// `None` accepts every chunk and does nothing with it.
#[async_trait]
impl<S: FlowSink> FlowSink for Option<S> {
    fn name(&self) -> &str {
        match self {
            Some(s) => s.name(),
            None => "none",
        }
    }

    async fn deliver(&self, chunk: &Chunk) -> Result<(), SinkError> {
        match self {
            Some(s) => s.deliver(chunk).await,
            None => Ok(()),
        }
    }

    async fn accept(&self, chunk: &Chunk, id: &BatchId) -> Result<Accepted, SinkError> {
        match self {
            Some(s) => s.accept(chunk, id).await,
            None => Ok(Accepted::Sent),
        }
    }

    async fn replay(&self, chunk: &Chunk, id: &BatchId) -> Result<Accepted, SinkError> {
        match self {
            Some(s) => s.replay(chunk, id).await,
            None => Ok(Accepted::Sent),
        }
    }

    fn take_settled(&self) -> Vec<BatchId> {
        self.as_ref().map(|s| s.take_settled()).unwrap_or_default()
    }

    async fn flush(&self) -> Result<(), SinkError> {
        match self {
            Some(s) => s.flush().await,
            None => Ok(()),
        }
    }

    async fn close(&self) -> Result<(), SinkError> {
        match self {
            Some(s) => s.close().await,
            None => Ok(()),
        }
    }
}

/// Fan-out: every chunk goes to each sink, in order. Every sink is tried even when
/// an earlier one fails; the first failure is returned (as [`SinkError::Sink`], naming
/// the sink) and the others are logged. A caller that retries a failed chunk sends it
/// again to the sinks that had accepted it, so fan-out to sinks that cannot drop
/// duplicates should use sinks that spool rather than fail.
///
/// A chunk the exporter's pipeline retries (a member failed with an error a retry may
/// fix) goes to every member again: members that took it see it twice (at least
/// once). It is given up only when every failing member's error is permanent.
///
/// A chunk is [`Accepted::InMemory`] when any sink kept it in memory, and settled when
/// such a sink names it. When two sinks of one fan-out both keep the same chunk in
/// memory (two collector sinks on one full disk), the first to settle it ends its
/// journal intent: a crash before the second settles loses that copy.
#[async_trait]
impl<S: FlowSink> FlowSink for Vec<S> {
    fn name(&self) -> &str {
        "fan-out"
    }

    async fn deliver(&self, chunk: &Chunk) -> Result<(), SinkError> {
        let mut first = None;
        for sink in self {
            if let Err(e) = sink.deliver(chunk).await {
                first = Some(note_failure(first, sink.name(), e));
            }
        }
        first.map_or(Ok(()), Err)
    }

    async fn accept(&self, chunk: &Chunk, id: &BatchId) -> Result<Accepted, SinkError> {
        fan_out_accept(self, chunk, id, false).await
    }

    async fn replay(&self, chunk: &Chunk, id: &BatchId) -> Result<Accepted, SinkError> {
        fan_out_accept(self, chunk, id, true).await
    }

    fn take_settled(&self) -> Vec<BatchId> {
        self.iter().flat_map(|s| s.take_settled()).collect()
    }

    async fn flush(&self) -> Result<(), SinkError> {
        let mut first = None;
        for sink in self {
            if let Err(e) = sink.flush().await {
                first = Some(note_failure(first, sink.name(), e));
            }
        }
        first.map_or(Ok(()), Err)
    }

    async fn close(&self) -> Result<(), SinkError> {
        let mut first = None;
        for sink in self {
            if let Err(e) = sink.close().await {
                first = Some(note_failure(first, sink.name(), e));
            }
        }
        first.map_or(Ok(()), Err)
    }
}

/// `accept` (or `replay`) on each sink of a fan-out; `InMemory` when any kept it in
/// memory, else `Spooled` when any spooled it, else `Sent`.
async fn fan_out_accept<S: FlowSink>(
    sinks: &[S],
    chunk: &Chunk,
    id: &BatchId,
    replay: bool,
) -> Result<Accepted, SinkError> {
    let mut first = None;
    let mut outcome = Accepted::Sent;
    for sink in sinks {
        let taken = match replay {
            true => sink.replay(chunk, id).await,
            false => sink.accept(chunk, id).await,
        };
        match taken {
            Ok(Accepted::InMemory) => outcome = Accepted::InMemory,
            Ok(Accepted::Spooled) if outcome == Accepted::Sent => outcome = Accepted::Spooled,
            Ok(_) => {}
            Err(e) => first = Some(note_failure(first, sink.name(), e)),
        }
    }
    first.map_or(Ok(outcome), Err)
}
/// Keeps the first failure of a fan-out and logs the later ones; a failure that a
/// retry may fix wins over one that it cannot (so that a caller retrying the chunk
/// gives up on it only when every failing member's failure is permanent).
fn note_failure(first: Option<SinkError>, name: &str, error: SinkError) -> SinkError {
    let error = SinkError::Sink {
        name: name.to_owned(),
        source: Box::new(error),
    };
    match first {
        None => error,
        Some(first) if first.is_permanent() && !error.is_permanent() => {
            tracing::warn!(error = %crate::error_chain(&first), "fan-out sink failed");
            error
        }
        Some(first) => {
            tracing::warn!(sink = name, error = %crate::error_chain(&error), "fan-out sink failed");
            first
        }
    }
}

#[cfg(test)]
mod tests {
    //! The trait's defaults and the forwarding of its blanket impls, sans IO: sinks
    //! that only note what they were asked.

    use std::sync::Mutex;

    use flow_batch::{Window, wire::InstanceId};

    use super::*;

    fn chunk(sequence: u64) -> Chunk {
        let window = Window::from_millis(0, 60_000).expect("window");
        Chunk::new(window, 0, sequence, false, Vec::new())
    }

    fn id(sequence: u64) -> BatchId {
        BatchId {
            host: "h".into(),
            instance: InstanceId::new(1),
            sequence,
        }
    }

    /// Implements only what a sink must: `name` and `deliver`.
    #[derive(Default)]
    struct Minimal {
        delivered: Mutex<Vec<u64>>,
    }

    #[async_trait]
    impl FlowSink for Minimal {
        fn name(&self) -> &str {
            "minimal"
        }

        async fn deliver(&self, chunk: &Chunk) -> Result<(), SinkError> {
            self.delivered.lock().expect("lock").push(chunk.sequence);
            Ok(())
        }
    }

    /// Implements everything, noting each call; `accept` and `replay` answer
    /// `answer`, `close` fails when `failing`.
    struct Probe {
        name: &'static str,
        answer: Accepted,
        failing: bool,
        calls: Mutex<Vec<String>>,
        settled: Mutex<Vec<BatchId>>,
    }

    impl Probe {
        fn new(name: &'static str, answer: Accepted) -> Probe {
            Probe {
                name,
                answer,
                failing: false,
                calls: Mutex::new(Vec::new()),
                settled: Mutex::new(vec![id(100)]),
            }
        }

        fn failing(mut self) -> Probe {
            self.failing = true;
            self
        }

        fn note(&self, call: String) {
            self.calls.lock().expect("lock").push(call);
        }

        fn calls(&self) -> Vec<String> {
            self.calls.lock().expect("lock").clone()
        }

        fn result(&self) -> Result<(), SinkError> {
            match self.failing {
                true => Err(SinkError::other(format!("{} fails", self.name))),
                false => Ok(()),
            }
        }
    }

    #[async_trait]
    impl FlowSink for Probe {
        fn name(&self) -> &str {
            self.name
        }

        async fn deliver(&self, chunk: &Chunk) -> Result<(), SinkError> {
            self.note(format!("deliver {}", chunk.sequence));
            self.result()
        }

        async fn accept(&self, _chunk: &Chunk, id: &BatchId) -> Result<Accepted, SinkError> {
            self.note(format!("accept {}", id.sequence));
            self.result().map(|()| self.answer)
        }

        async fn replay(&self, _chunk: &Chunk, id: &BatchId) -> Result<Accepted, SinkError> {
            self.note(format!("replay {}", id.sequence));
            self.result().map(|()| self.answer)
        }

        fn take_settled(&self) -> Vec<BatchId> {
            std::mem::take(&mut *self.settled.lock().expect("lock"))
        }

        async fn flush(&self) -> Result<(), SinkError> {
            self.note("flush".into());
            self.result()
        }

        async fn close(&self) -> Result<(), SinkError> {
            self.note("close".into());
            self.result()
        }
    }

    #[tokio::test]
    async fn the_defaults_deliver_and_answer_sent() {
        let sink = Minimal::default();
        assert_eq!(
            sink.accept(&chunk(1), &id(1)).await.ok(),
            Some(Accepted::Sent)
        );
        assert_eq!(
            sink.replay(&chunk(2), &id(2)).await.ok(),
            Some(Accepted::Sent)
        );
        assert_eq!(*sink.delivered.lock().expect("lock"), [1, 2]);
        assert!(sink.take_settled().is_empty());
        assert!(sink.flush().await.is_ok());
        assert!(sink.close().await.is_ok());
        assert!(Accepted::Sent.is_durable() && Accepted::Spooled.is_durable());
        assert!(!Accepted::InMemory.is_durable());
    }

    /// Every call of the trait, through `sink`, on `probe`.
    async fn every_call(sink: &impl FlowSink, probe: &Probe) {
        assert_eq!(sink.name(), probe.name);
        assert!(sink.deliver(&chunk(1)).await.is_ok());
        assert_eq!(
            sink.accept(&chunk(2), &id(2)).await.ok(),
            Some(probe.answer)
        );
        assert_eq!(
            sink.replay(&chunk(3), &id(3)).await.ok(),
            Some(probe.answer)
        );
        assert_eq!(sink.take_settled(), [id(100)]);
        assert!(sink.flush().await.is_ok());
        assert!(sink.close().await.is_ok());
        assert_eq!(
            probe.calls(),
            ["deliver 1", "accept 2", "replay 3", "flush", "close"]
        );
    }

    #[tokio::test]
    async fn box_arc_and_references_forward_every_call() {
        let probe = Probe::new("a", Accepted::InMemory);
        every_call(&&probe, &probe).await;

        let probe = Arc::new(Probe::new("b", Accepted::Spooled));
        every_call(&Arc::clone(&probe), &probe).await;

        let probe = Arc::new(Probe::new("c", Accepted::InMemory));
        let boxed: Box<dyn FlowSink> = Box::new(Arc::clone(&probe));
        every_call(&boxed, &probe).await;
    }

    #[tokio::test]
    async fn some_forwards_and_none_takes_everything() {
        let probe = Arc::new(Probe::new("d", Accepted::InMemory));
        every_call(&Some(Arc::clone(&probe)), &probe).await;

        let none = None::<Probe>;
        assert_eq!(none.name(), "none");
        assert!(none.deliver(&chunk(1)).await.is_ok());
        assert_eq!(
            none.accept(&chunk(1), &id(1)).await.ok(),
            Some(Accepted::Sent)
        );
        assert_eq!(
            none.replay(&chunk(1), &id(1)).await.ok(),
            Some(Accepted::Sent)
        );
        assert!(none.take_settled().is_empty());
        assert!(none.flush().await.is_ok() && none.close().await.is_ok());
    }

    #[tokio::test]
    async fn fan_out_answers_the_least_durable_place() {
        let sinks = |answers: &[Accepted]| -> Vec<Probe> {
            answers.iter().map(|a| Probe::new("p", *a)).collect()
        };
        let all_sent = sinks(&[Accepted::Sent, Accepted::Sent]);
        assert_eq!(
            all_sent.accept(&chunk(1), &id(1)).await.ok(),
            Some(Accepted::Sent)
        );
        let one_spooled = sinks(&[Accepted::Sent, Accepted::Spooled, Accepted::Sent]);
        assert_eq!(
            one_spooled.accept(&chunk(1), &id(1)).await.ok(),
            Some(Accepted::Spooled)
        );
        let one_in_memory = sinks(&[Accepted::InMemory, Accepted::Spooled]);
        assert_eq!(
            one_in_memory.replay(&chunk(1), &id(1)).await.ok(),
            Some(Accepted::InMemory)
        );
        // replay is forwarded as replay, accept as accept.
        for probe in &one_in_memory {
            assert_eq!(probe.calls(), ["replay 1"]);
        }
        // Every sink's settled IDs, in order.
        assert_eq!(one_in_memory.take_settled(), [id(100), id(100)]);
        assert!(one_in_memory.take_settled().is_empty());
    }

    #[tokio::test]
    async fn fan_out_tries_every_sink_and_returns_the_first_failure() {
        let sinks = vec![
            Probe::new("first", Accepted::Sent),
            Probe::new("second", Accepted::Sent).failing(),
            Probe::new("third", Accepted::Sent).failing(),
        ];
        for outcome in [
            sinks.accept(&chunk(1), &id(1)).await.err(),
            sinks.replay(&chunk(2), &id(2)).await.err(),
            sinks.close().await.err(),
        ] {
            match outcome {
                Some(SinkError::Sink { name, .. }) => assert_eq!(name, "second"),
                other => panic!("expected the second sink's failure, got {other:?}"),
            }
        }
        for probe in &sinks {
            assert_eq!(probe.calls(), ["accept 1", "replay 2", "close"]);
        }
    }

    /// Fails every delivery with the error `make` returns.
    struct Failing(fn() -> SinkError);

    #[async_trait]
    impl FlowSink for Failing {
        fn name(&self) -> &str {
            "failing"
        }

        async fn deliver(&self, _: &Chunk) -> Result<(), SinkError> {
            Err((self.0)())
        }
    }

    fn refused() -> SinkError {
        SinkError::Rejected {
            url: "http://peer".into(),
            batch_id: "h/1/0".into(),
            status: 400,
            body: "no".into(),
        }
    }

    fn down() -> SinkError {
        SinkError::other("peer down")
    }

    #[tokio::test]
    async fn a_fan_out_gives_up_only_when_every_failure_is_permanent() {
        for (members, permanent) in [
            (vec![Failing(refused), Failing(down)], false),
            (vec![Failing(down), Failing(refused)], false),
            (vec![Failing(refused), Failing(refused)], true),
        ] {
            let e = members.accept(&chunk(0), &id(0)).await.expect_err("fails");
            assert_eq!(e.is_permanent(), permanent, "{e:?}");
        }
        // A closed sink says nothing against the chunk.
        assert!(!SinkError::Closed { url: "u".into() }.is_permanent());
        // A full spool may take the chunk later, unless the chunk is larger than it.
        let full = |frame_bytes| SinkError::SpoolFull {
            path: "/spool".into(),
            spooled_bytes: 100,
            frame_bytes,
            max_bytes: 1_000,
        };
        assert!(!full(500).is_permanent());
        assert!(full(1_001).is_permanent());
    }
}
