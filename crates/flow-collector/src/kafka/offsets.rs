//! Which input offsets may be committed: a message's offset is committed only once
//! everything it brought is in the output, acknowledged (its chunk no longer pending
//! in the ledger), and every earlier message of its partition too. Sans-IO.

use std::{
    collections::{BTreeMap, HashMap},
    sync::Arc,
};

use flow_batch::wire::BatchId;
use flow_kafka::{
    ErrorKind,
    rdkafka::{
        Offset, TopicPartitionList,
        consumer::{BaseConsumer, CommitMode, Consumer, ConsumerContext},
    },
};

use super::stats::KafkaStats;

/// What a consumed message became.
#[derive(Clone, Debug, PartialEq, Eq)]
pub(crate) enum Taken {
    /// Its chunk (stored now, with this many records, or before): done once the
    /// ledger has its flows emitted.
    Chunk(Arc<BatchId>, Option<u32>),
    /// Nothing to wait for (not a frame: skipped and counted).
    Done,
    /// Never done: a message that could not be taken nor read again; nothing at or
    /// after it is committed.
    Never,
}

/// Consumed messages per partition, in offset order, until they may be committed.
#[derive(Debug, Default)]
pub(crate) struct OffsetBook {
    partitions: HashMap<i32, BTreeMap<i64, Taken>>,
}

impl OffsetBook {
    /// Notes the message at `offset` of `partition`.
    pub(crate) fn taken(&mut self, partition: i32, offset: i64, taken: Taken) {
        self.partitions
            .entry(partition)
            .or_default()
            .insert(offset, taken);
    }

    /// The offsets that may be committed now (the next offset to read, per
    /// partition, as Kafka wants it), for partitions where that moved; `written`
    /// says whether a chunk's flows are in the output.
    pub(crate) fn committable(
        &mut self,
        mut written: impl FnMut(&BatchId, Option<u32>) -> bool,
    ) -> Vec<(i32, i64)> {
        let mut out = Vec::new();
        for (partition, messages) in &mut self.partitions {
            let mut next = None;
            while let Some(entry) = messages.first_entry() {
                let done = match entry.get() {
                    Taken::Done => true,
                    Taken::Never => false,
                    Taken::Chunk(batch, records) => written(batch, *records),
                };
                if !done {
                    break;
                }
                next = Some(*entry.key() + 1);
                entry.remove();
            }
            if let Some(next) = next {
                out.push((*partition, next));
            }
        }
        out.sort_unstable();
        out
    }

    /// Forgets `partition` (revoked from this consumer): what was not committed is
    /// read again by its next owner.
    pub(crate) fn forget(&mut self, partition: i32) {
        self.partitions.remove(&partition);
    }

    /// Messages waiting.
    pub(crate) fn waiting(&self) -> usize {
        self.partitions.values().map(BTreeMap::len).sum()
    }
}

/// A consumer of `group` subscribed to `topic`, its callbacks in `context` (`what`
/// names the consumer in errors: `input`, `connection`).
pub(crate) fn subscribed<C: ConsumerContext>(
    settings: &flow_kafka::KafkaSettings,
    group: &str,
    topic: &str,
    context: C,
    what: (&'static str, &'static str),
) -> Result<BaseConsumer<C>, flow_kafka::KafkaError> {
    let consumer: BaseConsumer<C> = settings
        .consumer_config(Some(group))
        .create_with_context(context)
        .map_err(|source| flow_kafka::KafkaError::Client {
            what: what.0,
            source,
        })?;
    consumer
        .subscribe(&[topic])
        .map_err(|source| flow_kafka::KafkaError::Client {
            what: what.1,
            source,
        })?;
    Ok(consumer)
}

/// Commits `committable` (partition, next offset) of `topic`, counting the commit in
/// `commits` or the error by kind (`what` names the topic in the log).
pub(crate) fn commit_offsets<C: ConsumerContext>(
    consumer: &BaseConsumer<C>,
    topic: &str,
    committable: &[(i32, i64)],
    mode: CommitMode,
    stats: &KafkaStats,
    commits: &std::sync::atomic::AtomicU64,
    what: &str,
) {
    if committable.is_empty() {
        return;
    }
    let mut list = TopicPartitionList::new();
    for (partition, next) in committable {
        if list
            .add_partition_offset(topic, *partition, Offset::Offset(*next))
            .is_err()
        {
            return;
        }
    }
    match consumer.commit(&list, mode) {
        Ok(()) => KafkaStats::add(commits, 1),
        Err(error) => {
            KafkaStats::error(&stats.consumer_errors, ErrorKind::of(&error));
            tracing::warn!(error = %error, "committing {what} offsets failed; retried");
        }
    }
}

#[cfg(test)]
mod tests {
    use std::collections::HashSet;

    use flow_batch::wire::InstanceId;

    use super::*;

    fn batch(n: u64) -> Arc<BatchId> {
        Arc::new(BatchId {
            host: "h".into(),
            instance: InstanceId::new(7),
            sequence: n,
        })
    }

    #[test]
    fn a_partition_commits_up_to_its_first_pending_chunk() {
        let mut book = OffsetBook::default();
        book.taken(0, 10, Taken::Chunk(batch(1), None));
        book.taken(0, 11, Taken::Done);
        book.taken(0, 12, Taken::Chunk(batch(2), None));
        book.taken(0, 13, Taken::Chunk(batch(3), None));
        book.taken(1, 5, Taken::Chunk(batch(4), None));
        let mut pending: HashSet<u64> = [2, 4].into();
        let committable = book.committable(|b, _| !pending.contains(&b.sequence));
        assert_eq!(committable, vec![(0, 12)]);
        // Batch 3 is done but waits behind batch 2.
        assert_eq!(book.waiting(), 3);
        pending.remove(&2);
        assert_eq!(
            book.committable(|b, _| !pending.contains(&b.sequence)),
            vec![(0, 14)]
        );
        pending.clear();
        assert_eq!(book.committable(|_, _| true), vec![(1, 6)]);
        assert!(book.committable(|_, _| true).is_empty());
        assert_eq!(book.waiting(), 0);
    }

    #[test]
    fn a_revoked_partition_is_forgotten() {
        let mut book = OffsetBook::default();
        book.taken(3, 1, Taken::Chunk(batch(1), None));
        book.forget(3);
        assert!(book.committable(|_, _| true).is_empty());
    }
}
